// The web UI in Chromium against a real `heed serve` on the bundled model:
// generate a run, check the drawn tokens and edges against the API's own
// split views, click, reset, move the step, reopen by URL and from the run
// list, export. Screenshots go to test-output/browser/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer, launchBrowser, getJson, screenshotPath, setRange as setRangeOf } from './lib.mjs';

let server, browser, page, run;

// Edge counts as the API gives them: step t's split edges at threshold thr.
const splitCache = new Map();
async function split(t, thr) {
  const key = `${t}/${thr}`;
  if (!splitCache.has(key))
    splitCache.set(key, await getJson(server.url, `/api/runs/${run.id}/attention?step=${t}&norm=split&threshold=${thr}`));
  return splitCache.get(key);
}
async function edgesOfStep(t, thr) {
  return (await split(t, thr)).edges.length;
}
async function edgesUpTo(t, thr) {
  let n = 0;
  for (let s = 0; s <= t; s++) n += await edgesOfStep(s, thr);
  return n;
}
async function edgesFromInput(k, t, thr) {
  let n = 0;
  for (let s = 0; s <= t; s++) n += (await split(s, thr)).split.prompt[k] >= thr ? 1 : 0;
  return n;
}

const graph = () => page.locator('#graph');
const attr = async (name) => graph().getAttribute(name);
const num = async (name) => Number(await attr(name));

const setRange = (sel, value) => setRangeOf(page, sel, value);

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (e) => console.error('page error:', e));
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the page loads with its controls and the model information', async () => {
  await page.goto(server.url + '/');
  assert.equal(await page.locator('#prompt').inputValue(), 'The old wizard walked through the forest');
  assert.equal(await page.locator('#max-tokens').inputValue(), '20');
  assert.equal(await page.locator('#max-tokens').getAttribute('min'), '1');
  assert.equal(await page.locator('#max-tokens').getAttribute('max'), await page.locator('#max-tokens-num').getAttribute('max')); // the slider and the box agree
  const thr = page.locator('#threshold');
  assert.equal(await thr.inputValue(), '0.05');
  assert.equal(await thr.getAttribute('min'), '0');
  assert.equal(await thr.getAttribute('max'), '0.2');
  assert.equal(await thr.getAttribute('step'), '0.001');
  await page.waitForFunction(() => /stories260K/.test(document.querySelector('#model-info')?.textContent || ''));
  // the bundled model has no chat template: the toggle says so and is off
  assert.equal(await page.locator('#chat').isDisabled(), true);
  assert.equal(await attr('data-status'), 'idle');
});

test('generating draws every token and the API\'s edges at the threshold', async () => {
  await page.locator('#max-tokens-num').fill('12');
  await page.locator('#max-tokens-num').dispatchEvent('change');
  await page.locator('#generate').click();
  await page.waitForSelector('#graph[data-status="done"]', { timeout: 60000 });
  const m = /run=([^&]+)/.exec(new URL(page.url()).hash);
  assert.ok(m, `the URL names the run: ${page.url()}`);
  run = await getJson(server.url, `/api/runs/${decodeURIComponent(m[1])}`);
  assert.equal(run.n_output, 12);
  assert.equal(await num('data-n-input'), run.n_prompt);
  assert.equal(await num('data-n-output'), run.n_output);
  assert.equal(await page.locator('button.token[data-side="input"]').count(), run.n_prompt);
  assert.equal(await page.locator('button.token[data-side="output"]').count(), run.n_output);
  // labels as the API gives them
  const firstIn = await page.locator('button.token[data-side="input"][data-index="1"]').textContent();
  assert.ok(firstIn.includes(run.tokens[1].label.trim()), `${firstIn} shows ${run.tokens[1].label}`);
  // the generated text, one span per output token
  assert.equal(await page.locator('#text .out-tok').count(), run.n_output);
  assert.equal((await page.locator('#text').textContent()).includes(run.text.trim().slice(0, 10)), true);

  const last = run.n_output - 1;
  assert.equal(await num('data-step'), last);
  assert.equal(await attr('data-mode'), 'current');
  assert.equal(await num('data-edge-count'), await edgesOfStep(last, 0.05));
  await page.screenshot({ path: screenshotPath('01-generated') });

  await page.locator('#show-all').click();
  assert.equal(await attr('data-mode'), 'all');
  const all = await edgesUpTo(last, 0.05);
  assert.ok(all > 0);
  assert.equal(await num('data-edge-count'), all);
  assert.equal(await num('data-edge-count-io') + (await num('data-edge-count-oo')), all);
  await page.screenshot({ path: screenshotPath('02-all-connections') });

  await setRange('#threshold', 0.1);
  assert.equal(await num('data-edge-count'), await edgesUpTo(last, 0.1));
  await setRange('#threshold', 0.05);
  assert.equal(await num('data-edge-count'), all);
});

test('clicking an input token leaves only its edges; reset restores the view', async () => {
  const last = run.n_output - 1;
  // the input token with the most edges to outputs
  let best = 1, bestN = -1;
  for (let k = 1; k < run.n_prompt; k++) {
    const n = await edgesFromInput(k, last, 0.05);
    if (n > bestN) (best = k), (bestN = n);
  }
  const tok = page.locator(`button.token[data-side="input"][data-index="${best}"]`);
  await tok.click();
  assert.equal(await attr('data-selected'), `input:${best}`);
  assert.equal(await tok.getAttribute('aria-pressed'), 'true');
  assert.equal(await num('data-edge-count'), bestN);
  assert.equal(await num('data-edge-count-oo'), 0);
  await page.screenshot({ path: screenshotPath('03-input-selected') });

  // an output token shows its incoming edges
  const out = page.locator(`button.token[data-side="output"][data-index="${last}"]`);
  await out.click();
  assert.equal(await attr('data-selected'), `output:${last}`);
  assert.equal(await num('data-edge-count'), await edgesOfStep(last, 0.05));

  await page.locator('#reset-selection').click();
  assert.equal(await attr('data-selected'), '');
  assert.equal(await attr('data-mode'), 'current');
  assert.equal(await num('data-edge-count'), await edgesOfStep(last, 0.05));
  assert.equal(await tok.getAttribute('aria-pressed'), 'false');
});

test('the step slider and the arrow keys move through the generation', async () => {
  const step = page.locator('#step');
  await step.focus();
  await page.keyboard.press('Home');
  await page.waitForFunction(() => document.querySelector('#graph').dataset.step === '0');
  assert.equal(await num('data-n-output'), 1);
  assert.equal(await num('data-edge-count'), await edgesOfStep(0, 0.05));
  assert.equal(await page.locator('#text .out-tok.current').getAttribute('data-index'), '0');
  await page.keyboard.press('ArrowRight');
  await page.waitForFunction(() => document.querySelector('#graph').dataset.step === '1');
  assert.equal(await num('data-n-output'), 2);
  assert.equal(await num('data-edge-count'), await edgesOfStep(1, 0.05));
  await setRange('#step', 5);
  assert.equal(await num('data-step'), 5);
  assert.equal(await num('data-edge-count'), await edgesOfStep(5, 0.05));
  await page.locator('#show-all').click();
  assert.equal(await num('data-edge-count'), await edgesUpTo(5, 0.05));
  assert.match(new URL(page.url()).hash, /step=5/);
  await page.screenshot({ path: screenshotPath('04-step-5') });
  // arrow keys on the page (focus outside text fields) move the step too
  await page.locator('#reset-selection').focus();
  await page.keyboard.press('ArrowLeft');
  await page.waitForFunction(() => document.querySelector('#graph').dataset.step === '4');
});

test('hovering a token shows its id and weight', async () => {
  await setRange('#step', run.n_output - 1);
  const k = 1;
  await page.locator(`button.token[data-side="input"][data-index="${k}"]`).hover();
  const tip = page.locator('#tooltip');
  await tip.waitFor({ state: 'visible' });
  const text = await tip.textContent();
  assert.match(text, new RegExp(`(?<!\\d)${run.tokens[k].id}(?!\\d)`), text);
  assert.match(text, /\d\.\d{3}/, `a weight in: ${text}`);
});

test('a link with the run and step reopens that view', async () => {
  const p2 = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  await p2.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&step=3`);
  await p2.waitForSelector('#graph[data-status="done"]', { timeout: 30000 });
  assert.equal(await p2.locator('#graph').getAttribute('data-step'), '3');
  assert.equal(Number(await p2.locator('#graph').getAttribute('data-edge-count')), await edgesOfStep(3, 0.05));
  await p2.close();
});

test('one layer or one head redraws from that selection', async () => {
  await page.locator('#reset-selection').click();
  await page.locator('#sel-layer').selectOption('2');
  await page.locator('#sel-head').selectOption('1');
  const t = Number(await attr('data-step'));
  const want = (await getJson(server.url, `/api/runs/${run.id}/attention?step=${t}&norm=split&threshold=0.05&layer=2&head=1`)).edges.length;
  await page.waitForFunction((n) => document.querySelector('#graph').dataset.edgeCount === String(n), want);
  await page.screenshot({ path: screenshotPath('05-layer2-head1') });
  await page.locator('#sel-layer').selectOption({ index: 0 });
  await page.waitForFunction(() => document.querySelector('#sel-head').disabled);
});

test('the run list reopens a saved run', async () => {
  const p2 = await browser.newPage();
  await p2.goto(server.url + '/');
  const item = p2.locator(`#runs .run-item[data-run-id="${run.id}"]`);
  await item.click();
  await p2.waitForSelector('#graph[data-status="done"]', { timeout: 30000 });
  assert.equal(Number(await p2.locator('#graph').getAttribute('data-n-input')), run.n_prompt);
  await p2.close();
});

test('the view exports as SVG and PNG', async () => {
  const [svg] = await Promise.all([page.waitForEvent('download'), page.locator('#export-svg').click()]);
  const text = readFileSync(await svg.path(), 'utf8');
  assert.match(text, /^(<\?xml[^>]*>\s*)?<svg[\s>]/);
  assert.ok(text.includes('</svg>'));
  const [png] = await Promise.all([page.waitForEvent('download'), page.locator('#export-png').click()]);
  const bytes = readFileSync(await png.path());
  assert.deepEqual([...bytes.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
  assert.ok(bytes.length > 1000);
});

test('every control is reachable by keyboard with a visible focus', async () => {
  const ids = new Set();
  const p2 = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await p2.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&step=2`);
  await p2.waitForSelector('#graph[data-status="done"]', { timeout: 30000 });
  for (let i = 0; i < 40; i++) {
    await p2.keyboard.press('Tab');
    const f = await p2.evaluate(() => {
      const el = document.activeElement;
      const cs = getComputedStyle(el);
      const ring = (cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0) || cs.boxShadow !== 'none';
      return { id: el.id, what: `${el.tagName.toLowerCase()}#${el.id}.${el.className}`, ring };
    });
    if (f.what.startsWith('body')) break; // past the last control
    if (f.id) ids.add(f.id);
    assert.ok(f.ring, `${f.what} shows where the focus is`);
  }
  for (const id of ['prompt', 'max-tokens', 'threshold', 'generate', 'step', 'reset-selection', 'show-all'])
    assert.ok(ids.has(id), `Tab reaches #${id} (reached: ${[...ids].join(' ')})`);
  await p2.close();
});

test('live: tokens and edges appear while the run streams', async () => {
  const p2 = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await p2.goto(server.url + '/');
  await p2.waitForFunction(() => /stories260K/.test(document.querySelector('#model-info')?.textContent || ''));
  // a slow link (CDP throttling) so the stream takes about a second
  const cdp = await p2.context().newCDPSession(p2);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: 40 * 1024, uploadThroughput: -1 });
  // record what #graph shows during the stream
  await p2.evaluate(() => {
    window.seen = [];
    const g = document.querySelector('#graph');
    new MutationObserver(() => {
      if (g.dataset.status === 'generating') window.seen.push([+g.dataset.nOutput, +g.dataset.edgeCount, +g.dataset.step]);
    }).observe(g, { attributes: true });
  });
  await p2.locator('#prompt').fill('Once upon a time');
  await p2.locator('#max-tokens-num').fill('40');
  await p2.locator('#max-tokens-num').dispatchEvent('change');
  await p2.locator('#generate').click();
  await p2.waitForSelector('#graph[data-status="done"]', { timeout: 60000 });
  const seen = await p2.evaluate(() => window.seen);
  const counts = [...new Set(seen.map((x) => x[0]))];
  assert.ok(counts.length >= 3, `outputs appeared one by one: ${JSON.stringify(counts)}`);
  for (let i = 1; i < counts.length; i++) assert.ok(counts[i] > counts[i - 1], 'never fewer outputs');
  assert.ok(seen.some(([n, e]) => n > 0 && n < 40 && e > 0), 'edges drawn before the run ended');
  assert.ok(seen.every(([n, , t]) => n === 0 || t === n - 1), 'the step follows the newest token');
  assert.equal(await p2.locator('#graph').getAttribute('data-n-output'), '40');
  await p2.close();
});

test('a server error is shown, not swallowed', async () => {
  await page.locator('#prompt').fill('x'.repeat(5000)); // over the bundled model's context
  await page.locator('#generate').click();
  await page.waitForSelector('#graph[data-status="error"]', { timeout: 30000 });
  assert.match(await page.locator('#status').textContent(), /prompt|context|token/i);
});
