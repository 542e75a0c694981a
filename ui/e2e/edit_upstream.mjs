// The config page: an invalid value shows its error next to its field and
// changes nothing; then the upstream's addrs are changed and applied.
import { login, run, shot } from './lib.mjs';

const [, , upstream, newAddr] = process.argv;

await run(async (page, done) => {
  await login(page);
  await page.click('a[href="#/config"]');
  await page.click(`.sections a:text-is("${upstream}")`);
  await page.waitForSelector('[data-key=addrs] textarea');
  const before = await page.inputValue('[data-key=addrs] textarea');
  // An invalid value: the loader's error next to its field.
  await page.click('summary:has-text("Other settings")');
  await page.fill('[data-key=connection_timeout] input', 'soon');
  await page.click('button:text-is("Check")');
  const fieldError = await page.textContent('[data-key=connection_timeout] .field-error', { timeout: 15000 });
  await shot(page, 'config-error');
  await page.fill('[data-key=connection_timeout] input', '');
  // The new member list, checked (the diff shows), then applied.
  await page.fill('[data-key=addrs] textarea', newAddr);
  await page.click('button:text-is("Check")');
  await page.waitForSelector('[data-testid=sections-changed]');
  const changed = await page.textContent('[data-testid=sections-changed]');
  const diff = await page.textContent('[data-testid=diff]');
  await shot(page, 'config-diff');
  await page.click('button:text-is("Apply")');
  const applied = await page.textContent('[data-testid=config-message]', { timeout: 15000 });
  await shot(page, 'config');
  await done({ before, fieldError, changed, diff, applied });
});
