// What every number is: the graph's legend names the quantity its lines
// show, the toggle switches them between normalized (split) and raw
// attention, the hover shows both as the API gives them, one step numbering,
// and a refused max-tokens value is said beside the control and not sent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer, launchBrowser, getJson, screenshotPath } from './lib.mjs';

let server, browser, page, run;

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

const graph = () => page.locator('#graph');

test('an out-of-range or empty value is refused beside its control and not sent', async () => {
  await page.goto(server.url + '/');
  await page.waitForFunction(() => /stories260K/.test(document.querySelector('#model-info')?.textContent || ''));
  const model = await getJson(server.url, '/api/model');
  const lim = model.limits?.max_tokens ?? 512;
  // the slider and the box agree and reach the server's limit
  assert.equal(await page.locator('#max-tokens').getAttribute('max'), String(lim));
  assert.equal(await page.locator('#max-tokens-num').getAttribute('max'), String(lim));
  let posts = 0;
  page.on('request', (r) => {
    if (r.method() === 'POST' && /\/api\/runs$/.test(r.url())) posts++;
  });
  for (const bad of ['0', '-5', String(lim + 1), '']) {
    await page.locator('#max-tokens-num').fill(bad);
    await page.locator('#max-tokens-num').dispatchEvent('change');
    const msg = page.locator('#max-tokens-msg');
    assert.equal(await msg.isVisible(), true, `a message for ${JSON.stringify(bad)}`);
    assert.match(await msg.textContent(), new RegExp(String(lim)));
    assert.equal(await page.locator('#max-tokens-num').inputValue(), bad, 'the value is not silently changed');
    await page.locator('#generate').click();
    await page.waitForTimeout(100);
    assert.equal(posts, 0, `${JSON.stringify(bad)} is not sent`);
  }
  await page.screenshot({ path: screenshotPath('trust-max-tokens') });
  // an empty prompt: refused with a message
  await page.locator('#max-tokens-num').fill('8');
  await page.locator('#max-tokens-num').dispatchEvent('change');
  assert.equal(await page.locator('#max-tokens-msg').isVisible(), false);
  const prompt = await page.locator('#prompt').inputValue();
  await page.locator('#prompt').fill('');
  await page.locator('#generate').click();
  await page.waitForTimeout(100);
  assert.equal(await page.locator('#prompt-msg').isVisible(), true);
  assert.equal(posts, 0);
  await page.locator('#prompt').fill(prompt);
  assert.equal(await page.locator('#prompt-msg').isVisible(), false);
  // a valid value is sent as typed
  await page.locator('#generate').click();
  await page.waitForSelector('#graph[data-status="done"]', { timeout: 60000 });
  assert.equal(posts, 1);
  const m = /run=([^&]+)/.exec(new URL(page.url()).hash);
  run = await getJson(server.url, `/api/runs/${decodeURIComponent(m[1])}`);
  assert.equal(run.n_output, 8);
});

test('the legend names the quantity; raw lines are the API\'s raw row', async () => {
  const t = run.n_output - 1;
  const thr = 0.01;
  await page.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&step=${t}&threshold=${thr}`);
  await page.waitForSelector('#graph[data-status="done"]', { timeout: 30000 });
  assert.equal(await graph().getAttribute('data-weights'), 'split');
  assert.match(await page.locator('#lw-legend').textContent(), /normalized attention \(BOS removed; input and output parts each sum to 1\)/);
  await page.locator('#edge-weights').selectOption('raw');
  assert.equal(await graph().getAttribute('data-weights'), 'raw');
  assert.match(await page.locator('#lw-legend').textContent(), /lines show: raw attention/);
  assert.match(await page.evaluate(() => location.hash), /weights=raw/);
  // the API's raw row of step t (query n_prompt - 1 + t), BOS left out
  const row = (await getJson(server.url, `/api/runs/${run.id}/attention?step=${t}`)).row;
  const want = [];
  for (let k = 1; k < row.length; k++) if (row[k] >= thr) want.push(row[k]);
  // the SVG export draws the same edges as the canvas: its widths follow the raw weights
  const [svg] = await Promise.all([page.waitForEvent('download'), page.locator('#export-svg').click()]);
  const text = readFileSync(await svg.path(), 'utf8');
  assert.match(text, /lines: raw attention/);
  const edges = [...text.matchAll(/class="edge (io|oo)"[^>]*stroke-width="([\d.]+)"><title>([\d.]+)<\/title>/g)].map((x) => ({
    width: Number(x[2]),
    w: Number(x[3]),
  }));
  // edges within 1e-5 of the threshold may fall either side (split x mass is rounded)
  const near = want.filter((w) => Math.abs(w - thr) < 1e-5).length;
  assert.ok(Math.abs(edges.length - want.length) <= near, `${edges.length} edges, the raw row has ${want.length}`);
  const got = edges.map((e) => e.w).sort((a, b) => a - b);
  const exp = want.map((w) => Number(w.toFixed(4))).sort((a, b) => a - b);
  for (let i = 0; i < Math.min(got.length, exp.length); i++) assert.ok(Math.abs(got[i] - exp[i]) <= 1.01e-4, `${got[i]} vs ${exp[i]}`);
  for (const e of edges) assert.ok(Math.abs(e.width - (0.5 + 2.5 * e.w)) < 0.01);
  // the data export says which quantity it holds
  const [js] = await Promise.all([page.waitForEvent('download'), page.locator('#export-json').click()]);
  const doc = JSON.parse(readFileSync(await js.path(), 'utf8'));
  assert.equal(doc.quantity, 'raw');
  assert.ok(Math.abs(doc.prompt[t][1] - row[1]) < 1e-5, 'the exported rows are the raw row');
  await page.screenshot({ path: screenshotPath('trust-raw') });
});

test('the hover shows raw and normalized as the API gives them; one step numbering', async () => {
  const t = run.n_output - 1;
  await page.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&step=${t}`);
  await page.waitForSelector('#graph[data-status="done"]', { timeout: 30000 });
  const row = (await getJson(server.url, `/api/runs/${run.id}/attention?step=${t}`)).row;
  const split = (await getJson(server.url, `/api/runs/${run.id}/attention?step=${t}&norm=split`)).split;
  // the input with the largest split weight
  let k = 1;
  for (let i = 1; i < split.prompt.length; i++) if (split.prompt[i] > split.prompt[k]) k = i;
  await page.locator(`button.token[data-side="input"][data-index="${k}"]`).hover();
  const tip = page.locator('#tooltip');
  await tip.waitFor({ state: 'visible' });
  const text = await tip.textContent();
  const rawM = /raw attention → ▶ step (\d+)[^\d]*?([\d.]+)/.exec(text);
  const normM = /normalized → ▶ step (\d+)[^\d]*?([\d.]+)/.exec(text);
  assert.ok(rawM && normM, text);
  assert.ok(Math.abs(Number(rawM[2]) - row[k]) <= 1.01e-4, `raw ${rawM[2]} vs the API's ${row[k]}`);
  assert.equal(normM[2], split.prompt[k].toFixed(4));
  // one numbering: the tooltip's step is the step label's
  const label = await page.locator('#step-label').textContent();
  const lm = /Step (\d+) of (\d+)/.exec(label);
  assert.ok(lm, label);
  assert.equal(rawM[1], lm[1]);
  assert.equal(Number(lm[1]), t + 1);
  assert.equal(Number(lm[2]), run.n_output);
  // an output token's tooltip names its step the same way
  await page.locator(`button.token[data-side="output"][data-index="${t}"]`).hover();
  await page.waitForFunction((s) => document.querySelector('#tooltip')?.textContent?.includes(`step ${s}`), t + 1);
  await page.screenshot({ path: screenshotPath('trust-hover') });
});
