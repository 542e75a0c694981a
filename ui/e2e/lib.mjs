// Shared by the browser tests (tests/integration/test_ui.py runs each
// script with node): Debian's Chromium driven by playwright-core, never a
// downloaded browser. A script prints one JSON line of what it saw; the
// Python side asserts on it and on what weir and the backends did.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

export const URL = process.env.WEIR_URL;
export const TOKEN = process.env.WEIR_TOKEN;
const SHOTS = process.env.WEIR_SHOTS;

export async function open({ width = 1280, height = 900 } = {}) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width, height } });
  const seen = { outside: [], violations: [], errors: [], failed: [] };
  const origin = new globalThis.URL(URL).origin;
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith('data:')) seen.outside.push(u);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) seen.failed.push(r.status() + ' ' + new globalThis.URL(r.url()).pathname);
  });
  page.on('console', (m) => {
    // A failed fetch is in seen.failed, with its path.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) seen.errors.push(m.text());
  });
  page.on('pageerror', (e) => seen.errors.push(String(e)));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window.__violations = window.__violations || []).push(e.violatedDirective + ' ' + e.blockedURI);
    });
  });
  page.on('dialog', (d) => d.accept());
  const done = async (result) => {
    seen.violations = await page.evaluate(() => window.__violations || []).catch(() => ['(page gone)']);
    await browser.close();
    process.stdout.write(JSON.stringify({ ...result, seen }) + '\n');
  };
  return { browser, page, done };
}

export async function login(page, token = TOKEN) {
  await page.goto(URL + '/');
  await page.fill('#token', token);
  await page.click('button[type=submit]');
}

export async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: SHOTS + '/' + name + '.png', fullPage: true });
}

// Runs f; on a failure prints {"error"} (and a screenshot) so the Python
// side shows why.
export async function run(f) {
  let ctx;
  try {
    ctx = await open(f.viewport);
    await f(ctx.page, ctx.done);
  } catch (e) {
    if (ctx) {
      await shot(ctx.page, 'failure-' + (process.argv[1] || 'x').split('/').pop()).catch(() => {});
      await ctx.done({ error: String(e && e.stack || e) }).catch(() => {});
    } else {
      process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + '\n');
    }
    process.exitCode = 1;
  }
}

// Waits until f() is true (page.waitForFunction evaluates a string, which
// the page's CSP refuses, as it should).
export async function until(f, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return;
    if (Date.now() > end) throw new Error('timed out waiting for ' + f);
    await new Promise((r) => setTimeout(r, 200));
  }
}
