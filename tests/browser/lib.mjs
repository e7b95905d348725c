// Shared by the browser tests (tests/browser) and the UI benchmark
// (bench/ui_bench.mjs): a real `heed serve` on a free port with its own data
// folder, and Debian's chromium driven by playwright-core.
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const outDir = join(root, 'test-output', 'browser');

// Starts HEED_BIN (default build/heed) serve; resolves { url, stop }.
// HEED_WEB_DIR=DIR serves the UI from DIR (--web-dir, e.g. web/dist while
// developing) instead of the copy embedded in the binary.
export async function startServer(extra = []) {
  const bin = process.env.HEED_BIN || join(root, 'build', 'heed');
  if (process.env.HEED_WEB_DIR) extra = ['--web-dir', process.env.HEED_WEB_DIR, ...extra];
  const data = mkdtempSync(join(tmpdir(), 'heed-ui-'));
  const proc = spawn(bin, ['serve', '--port', '0', '--data-dir', data, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`heed serve did not start:\n${log}`)), 20000);
    const onData = (d) => {
      log += d;
      const m = /listening on (http:\/\/\S+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', (d) => (log += d));
    proc.on('exit', (code) => reject(new Error(`heed serve exited (${code}):\n${log}`)));
  });
  const stop = async () => {
    if (proc.exitCode === null) {
      const exited = new Promise((r) => proc.on('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
    rmSync(data, { recursive: true, force: true });
  };
  return { url, stop };
}

// A file of the shared data folder (HEED_SHARED, else ../shared or ../../shared
// from the repository, as tests/testutil.h's tu_shared looks), or null.
export function sharedPath(rel) {
  const roots = [process.env.HEED_SHARED, join(root, '..', 'shared'), join(root, '..', '..', 'shared')].filter(Boolean);
  for (const r of roots) {
    const p = join(r, rel);
    try {
      accessSync(p, constants.R_OK);
      return p;
    } catch {
      /* not there */
    }
  }
  return null;
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.HEED_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

/* A suite's server, browser and page (1400 x 900, page errors logged), and
 * the matching stop: `const s = await openSession(); ... await closeSession(s)`. */
export async function openSession(extra = []) {
  const server = await startServer(extra);
  const browser = await launchBrowser();
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (e) => console.error('page error:', e));
  return { server, browser, page };
}

export async function closeSession(s) {
  await s?.browser?.close();
  await s?.server?.stop();
}

export async function getJson(base, path) {
  const r = await fetch(base + path);
  if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

export function screenshotPath(name) {
  mkdirSync(outDir, { recursive: true });
  return join(outDir, `${name}.png`);
}

// Sets a range (or any) input the way a user's drag ends: value, then the
// input and change events.
export async function setRange(page, sel, value) {
  await page.locator(sel).evaluate((el, v) => {
    el.value = String(v);
    el.dispatchEvent(new Event('input', { bubbles: true }));
    el.dispatchEvent(new Event('change', { bubbles: true }));
  }, value);
}
