// `heed export RUN -o run.html`: the file opens from file:// in Chromium
// with no server and shows the run's token graph, with the same tokens and
// edges as the live UI computes from the API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { root, launchBrowser, screenshotPath } from './lib.mjs';

const bin = process.env.HEED_BIN || join(root, 'build', 'heed');
let dir, browser;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'heed-export-'));
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  rmSync(dir, { recursive: true, force: true });
});

function exportRun(n) {
  const run = join(dir, `r${n}.heed`), html = join(dir, `r${n}.html`), json = join(dir, `r${n}.json`);
  execFileSync(bin, ['generate', '-p', 'Once upon a time', '-n', String(n), '--save', run], { stdio: 'ignore' });
  execFileSync(bin, ['export', run, '-o', html]);
  execFileSync(bin, ['export', run, '-o', json]);
  return { html, json };
}

test('the exported file shows the graph from file:// with no server', async () => {
  const { html } = exportRun(12);
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const external = [];
  page.on('request', (r) => { if (!r.url().startsWith('file:') && !r.url().startsWith('data:')) external.push(r.url()); });
  await page.goto(pathToFileURL(html).href);
  await page.waitForSelector('#graph[data-status="done"]', { timeout: 30000 });
  assert.equal(await page.locator('#graph').getAttribute('data-n-output'), '12');
  assert.equal(await page.locator('button.token[data-side="input"]').count(), 5); // BOS + 4 prompt tokens
  assert.ok(Number(await page.locator('#graph').getAttribute('data-edge-count')) > 0);
  // a step and a layer/head selection work from the embedded views
  await page.locator('#step').focus();
  await page.keyboard.press('Home');
  await page.waitForFunction(() => document.querySelector('#graph').dataset.step === '0');
  await page.locator('#sel-layer').selectOption('1');
  await page.locator('#sel-head').selectOption('2');
  await page.waitForSelector('#graph[data-status="done"]');
  await page.screenshot({ path: screenshotPath('export-file') });
  assert.deepEqual(errors, []);
  assert.deepEqual(external, [], 'nothing is loaded from outside the file');
  await page.close();
});

test('the other views work offline from the embedded data', async () => {
  const { html } = exportRun(10);
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const open = async (view) => {
    await page.goto('about:blank');
    await page.goto(`${pathToFileURL(html).href}#run=run&step=4&view=${view}`);
    await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
  };
  await open('lens');
  await page.waitForFunction(() => document.querySelectorAll('#view-lens .lc').length >= 5 * 10);
  await open('heatmap');
  await page.waitForFunction(() => [...document.querySelectorAll('.hm-root')].some((r) => r.dataset.status === 'ready' && +r.dataset.cellsLoaded > 0));
  await open('heads');
  await page.waitForFunction(() => document.querySelectorAll('.mg-cell[data-state="loaded"]').length === 40, null, { timeout: 30000 });
  await page.screenshot({ path: screenshotPath('export-heads') });
  await open('stats');
  await page.waitForFunction(() => /syntax|semantic|structure|none/i.test(document.querySelector('#view-stats')?.textContent || ''));
  // generating needs a server: Generate is hidden; a request that still reaches the file (Ctrl+Enter
  // in the prompt) is refused with the reason, and the run stays on screen
  await open('graph');
  assert.equal(await page.locator('#generate').isVisible(), false);
  const nOut = await page.locator('#graph').getAttribute('data-n-output');
  await page.locator('#prompt').press('Control+Enter');
  await page.waitForSelector('#graph[data-status="error"]', { state: 'attached' });
  assert.match(await page.locator('#status').textContent(), /exported file/);
  assert.equal(await page.locator('#graph').getAttribute('data-n-output'), nOut);
  assert.deepEqual(errors, []);
  await page.close();
});

test('the exported file stays small on a long run: views, not the tensor', async () => {
  const { html } = exportRun(400);
  const size = statSync(html).size;
  // 404 positions x 5 layers x 8 heads of full f32 rows would be ~13 MB
  assert.ok(size < 9e6, `${size} bytes`);
  // its graph rows are stored sparse (weights under 0.001 dropped): the
  // viewer expands them, and the edges at the default threshold are all there
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(pathToFileURL(html).href + '#run=run&step=399');
  await page.waitForSelector('#graph[data-status="done"]', { timeout: 30000 });
  assert.equal(await page.locator('#graph').getAttribute('data-n-output'), '400');
  await page.locator('#show-all').click();
  assert.ok(Number(await page.locator('#graph').getAttribute('data-edge-count')) > 400);
  await page.close();
});
