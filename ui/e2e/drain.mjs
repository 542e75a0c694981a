// The upstreams page: drain a backend, without a reload.
import { login, run, shot } from './lib.mjs';

const [, , upstream, addr] = process.argv;

await run(async (page, done) => {
  await login(page);
  await page.click('a[href="#/upstreams"]');
  const row = `[data-upstream="${upstream}"] tr[data-backend="${addr}"]`;
  await page.click(`${row} button:text-is("Drain")`);
  const message = await page.textContent('[data-testid=upstream-message]', { timeout: 15000 });
  await page.waitForSelector(`${row} button:text-is("Undrain")`);
  const state = await page.textContent(`${row} td:nth-child(2)`);
  await shot(page, 'upstreams');
  await done({ message, state });
});
