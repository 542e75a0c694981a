// A fleet's history in etcd: roll back on the history page.
import { login, run, shot } from './lib.mjs';

await run(async (page, done) => {
  await login(page, '');
  await page.click('a[href="#/history"]');
  await page.waitForSelector('[data-testid=history] tbody tr');
  const actions = await page.$$eval('[data-testid=history] tbody tr td:nth-child(3)', (t) => t.map((x) => x.textContent));
  const oldest = await page.$eval('[data-testid=history] tbody tr:last-child', (r) => r.getAttribute('data-entry'));
  await page.click(`tr[data-entry="${oldest}"] button:text-is("Roll back")`);
  const message = await page.textContent('[data-testid=history-message]', { timeout: 15000 });
  await shot(page, 'history-etcd');
  await done({ actions, oldest: Number(oldest), message });
});
