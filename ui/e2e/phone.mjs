// A phone-sized screen: every page fits its width (tables scroll in their
// own boxes), and each is photographed.
import { login, run, shot } from './lib.mjs';

const f = async (page, done) => {
  await login(page);
  const widths = {};
  const ready = { dashboard: '[data-testid=revision]', upstreams: 'section.upstream', config: 'nav.sections', history: '[data-testid=history]' };
  for (const [p, sel] of Object.entries(ready)) {
    await page.click(`a[href="#/${p}"]`);
    await page.waitForSelector(sel, { timeout: 15000 });
    widths[p] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    await shot(page, 'phone-' + p);
  }
  await done({ widths });
};
f.viewport = { width: 390, height: 844 };
await run(f);
