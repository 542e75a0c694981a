// Logging in: a wrong token is refused on the page, the right one opens
// the dashboard, whose numbers follow the traffic the test sends.
import { login, run, shot, TOKEN, until } from './lib.mjs';

await run(async (page, done) => {
  await login(page, 'wrong-' + TOKEN);
  const refused = await page.textContent('.login .error', { timeout: 10000 });
  const stored = await page.evaluate(() => sessionStorage.getItem('weir.token'));
  await shot(page, 'login');
  await page.fill('#token', TOKEN);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=revision]', { timeout: 15000 });
  // Live numbers: the rate comes off zero and the location shows up.
  await until(async () => Number(await page.textContent('[data-testid=total-rate]')) > 0);
  await page.waitForSelector('tr[data-location=site]', { timeout: 30000 });
  const rate = await page.textContent('[data-testid=total-rate]');
  const backends = await page.$$eval('[data-testid=backends] tbody tr', (rs) => rs.length);
  await page.waitForSelector('[data-testid=certificates] tbody tr', { timeout: 15000 });
  const certs = await page.$$eval('[data-testid=certificates] tbody tr', (rs) =>
    rs.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent).concat([r.querySelector('td:nth-child(2)').className])));
  await shot(page, 'dashboard');
  const cookies = await page.context().cookies();
  await done({ refused, stored, rate: Number(rate), backends, certs, cookies: cookies.length,
    token: await page.evaluate(() => sessionStorage.getItem('weir.token')) });
});
