// A fleet on etcd: the dashboard lists its instances; a section edited on
// the config page is written to its etcd key, and every instance applies it.
import { login, run, shot } from './lib.mjs';

const [, , upstream, newAddr] = process.argv;

await run(async (page, done) => {
  await login(page, '');
  await page.waitForSelector('[data-testid=fleet] tbody tr', { timeout: 20000 });
  const instances = await page.$$eval('[data-testid=fleet] tbody tr td:first-child', (t) => t.map((x) => x.textContent));
  await shot(page, 'dashboard-fleet');
  await page.click('a[href="#/config"]');
  await page.click(`.sections a:text-is("${upstream}")`);
  await page.fill('[data-key=addrs] textarea', newAddr);
  await page.click('button:text-is("Check")');
  await page.waitForSelector('[data-testid=sections-changed]');
  const changed = await page.textContent('[data-testid=sections-changed]');
  await page.click('button:text-is("Apply")');
  const applied = await page.textContent('[data-testid=config-message]', { timeout: 15000 });
  const raw = await page.$('button:text-is("Edit the whole file")');
  await shot(page, 'config-etcd');
  await done({ instances, changed, applied, rawEditor: raw !== null });
});
