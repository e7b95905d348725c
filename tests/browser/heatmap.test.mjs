// The heatmap and heads views in Chromium. Against a real `heed serve` on the
// bundled model (5 layers x 8 heads): a run generated through the API, opened
// as /#run=ID&view=heatmap and &view=heads; the hovered weights are checked
// against /attention and /heatmap. Then a synthetic long run (1500 positions,
// 16 layers x 32 heads) served through Playwright's request routing: pooled
// tiles at the fit zoom, exact ones once zoomed in, the pool toggle, pan,
// click-to-step, and that the heads grid only fetches cells near the viewport,
// at most 4 at a time. Screenshots go to test-output/browser/.
//
// HEED_WEB_DIR=DIR serves the UI from DIR (heed serve --web-dir) instead of
// the copy embedded in the binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, getJson, screenshotPath } from './lib.mjs';

let server, browser, run;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function newPage(viewport = { width: 1400, height: 900 }) {
  const page = await browser.newPage({ viewport });
  page.on('pageerror', (e) => console.error('page error:', e));
  return page;
}

/** POST /api/runs and reads the event stream to `done`. */
async function generate(body) {
  const r = await fetch(server.url + '/api/runs', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 200);
  const text = await r.text(); // the stream ends after `done`
  const m = /event: done\ndata: (.*)\n/.exec(text);
  assert.ok(m, `a done event in: ${text.slice(-300)}`);
  return JSON.parse(m[1]);
}

// The main heatmap (not the copy in the heads view's dialog).
const heatRoot = (page) => page.locator('.hm-root:not(.mg-dialog .hm-root)').filter({ visible: true }).first();
const data = (loc, name) => loc.getAttribute(`data-${name}`);

async function waitReady(root, timeout = 30000) {
  await root.waitFor({ state: 'visible', timeout });
  await root.page().waitForFunction((el) => el.dataset.status === 'ready' || el.dataset.status === 'error', await root.elementHandle(), { timeout });
  assert.equal(await data(root, 'status'), 'ready', `status; ${await root.locator('.hm-status').textContent().catch(() => '')}`);
}

/** Page coordinates of the centre of position (q, k) from the root's data-transform. */
async function cellPoint(root, q, k) {
  const [left, top, x0, y0, s] = (await data(root, 'transform')).split(',').map(Number);
  const box = await root.locator('.hm-canvas').boundingBox();
  return { x: box.x + left + (k - x0 + 0.5) * s, y: box.y + top + (q - y0 + 0.5) * s };
}

/** Hovers position (q, k) and reads the tooltip: text, weight (4 decimals), its data. */
async function hover(root, q, k) {
  const page = root.page();
  const p = await cellPoint(root, q, k);
  await page.mouse.move(p.x - 1, p.y - 1);
  await page.mouse.move(p.x, p.y);
  const tip = root.locator('.hm-tip');
  await tip.waitFor({ state: 'visible' });
  await page.waitForFunction(
    ([el, q, k]) => !el.hidden && el.dataset.q === String(q) && el.dataset.k === String(k) && !/loading/.test(el.textContent),
    [await tip.elementHandle(), q, k],
  );
  return tip.evaluate((el) => ({ text: el.textContent, weight: el.querySelector('.hm-tip-weight')?.textContent ?? null, ...el.dataset }));
}

// ------------------------------------------------------------------ a real server

test('a run generated through the API', async () => {
  const done = await generate({ prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
  run = await getJson(server.url, `/api/runs/${done.run_id}`);
  assert.equal(run.n_output, 12);
});

test('the heatmap view draws the exact matrix and hovers the API\'s weights', async () => {
  const page = await newPage();
  await page.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&view=heatmap`);
  const root = heatRoot(page);
  await waitReady(root);
  const n = run.n_prompt + run.n_output - 1;
  // a short run fits exactly at the fit zoom
  assert.equal(await data(root, 'window'), `0,${n},0,${n}`);
  assert.equal(await data(root, 'exact'), 'true');
  assert.equal(await data(root, 'selection'), 'all,all');
  // the canvas is drawn (not blank): the drawn matrix has viridis pixels
  const painted = await root.locator('.hm-canvas').evaluate((c) => {
    const g = c.getContext('2d');
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let colored = 0;
    for (let i = 0; i < d.length; i += 16) if (d[i + 3] === 255 && Math.abs(d[i] - d[i + 1]) > 30) colored++;
    return colored;
  });
  assert.ok(painted > 100, `coloured pixels: ${painted}`);

  for (const [q, k] of [[10, 3], [n - 1, 0], [6, 6]]) {
    const tip = await hover(root, q, k);
    const row = (await getJson(server.url, `/api/runs/${run.id}/attention?pos=${q}`)).row;
    assert.equal(tip.weight, row[k].toFixed(4), `weight of (${q}, ${k}): ${tip.text}`);
    const hm = await getJson(server.url, `/api/runs/${run.id}/heatmap?q0=${q}&q1=${q + 1}&k0=${k}&k1=${k + 1}`);
    assert.equal(hm.exact, true);
    assert.equal(tip.weight, hm.data[0].toFixed(4));
    assert.equal(tip.exact, 'true');
    assert.ok(tip.text.includes(run.tokens[q].label.trim() || '␣'), `query token in: ${tip.text}`);
    assert.ok(!/block/.test(tip.text), tip.text);
  }
  // above the diagonal: masked
  const m = await hover(root, 2, 9);
  assert.match(m.text, /masked/);
  await page.screenshot({ path: screenshotPath('heatmap-01-exact') });

  // zoom in: a smaller window, still exact
  await root.locator('.hm-zoom-in').click();
  await root.locator('.hm-zoom-in').click();
  await page.waitForFunction(([el, n]) => el.dataset.window !== `0,${n},0,${n}` && el.dataset.status === 'ready', [await root.elementHandle(), n]);
  const [q0, q1, k0, k1] = (await data(root, 'window')).split(',').map(Number);
  assert.ok(q1 - q0 < n || k1 - k0 < n, `zoomed window ${q0},${q1},${k0},${k1}`);
  assert.equal(await data(root, 'exact'), 'true');
  assert.equal(await data(root, 'level'), '1');
  const q = Math.min(q1 - 1, q0 + 2), k = Math.max(k0, Math.min(q, k1 - 1));
  const tip = await hover(root, q, k);
  const row = (await getJson(server.url, `/api/runs/${run.id}/attention?pos=${q}`)).row;
  assert.equal(tip.weight, row[k].toFixed(4));
  await page.screenshot({ path: screenshotPath('heatmap-02-zoomed') });

  // keys: 0 fits again, - cannot zoom out past it
  await root.locator('.hm-canvas').focus();
  await page.keyboard.press('0');
  await page.waitForFunction(([el, n]) => el.dataset.window === `0,${n},0,${n}`, [await root.elementHandle(), n]);
  await page.keyboard.press('-');
  await page.waitForTimeout(50);
  assert.equal(await data(root, 'window'), `0,${n},0,${n}`);

  // Shift+arrows: a keyboard cell cursor (from the step's row) with the same readout; Enter goes to its step
  await page.keyboard.press('Shift+ArrowLeft');
  await page.keyboard.press('Shift+ArrowLeft');
  const kt = root.locator('.hm-tip');
  await page.waitForFunction(([el, q]) => !el.hidden && el.dataset.q === String(q) && el.dataset.k === String(q - 1), [await kt.elementHandle(), n - 1]);
  const krow = (await getJson(server.url, `/api/runs/${run.id}/attention?pos=${n - 1}`)).row;
  assert.equal(await kt.locator('.hm-tip-weight').textContent(), krow[n - 2].toFixed(4));
  await page.waitForFunction((el) => /raw attention \d/.test(el.textContent), await root.locator('.hm-live').elementHandle());
  await page.keyboard.press('Shift+ArrowUp');
  await page.keyboard.press('Enter');
  await page.waitForFunction((el) => el.dataset.step === '10', await root.elementHandle());
  await page.close();
});

test('one layer and head: the heatmap shows that head\'s weights', async () => {
  const page = await newPage();
  await page.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&view=heatmap&layer=2&head=1`);
  const root = heatRoot(page);
  await page.waitForFunction((el) => el?.dataset.selection === '2,1', await root.elementHandle(), { timeout: 30000 });
  await waitReady(root);
  const tip = await hover(root, 12, 4);
  const row = (await getJson(server.url, `/api/runs/${run.id}/attention?pos=12&layer=2&head=1`)).row;
  assert.equal(tip.weight, row[4].toFixed(4));
  await page.close();
});

test('the heads view: 40 thumbnails, loaded on demand, one opens large', async () => {
  const page = await newPage();
  await page.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&view=heads`);
  const root = page.locator('.mg-root').filter({ visible: true }).first();
  await root.waitFor({ state: 'visible', timeout: 30000 });
  await page.waitForFunction((el) => el.dataset.status === 'ready', await root.elementHandle(), { timeout: 30000 });
  assert.equal(await root.locator('.mg-cell').count(), 40);
  assert.equal(await data(root, 'cells'), '40');
  const loaded = Number(await data(root, 'cells-loaded'));
  const visible = Number(await data(root, 'cells-visible'));
  const seen = Number(await data(root, 'cells-seen'));
  assert.ok(loaded > 0, 'some cells loaded');
  assert.ok(loaded <= visible && visible <= seen, `loaded ${loaded} <= visible ${visible} <= seen ${seen}`);
  assert.equal(await root.locator('.mg-cell[data-state="loaded"]').count(), loaded);
  await page.screenshot({ path: screenshotPath('heads-01-grid') });

  // hovering a loaded cell: layer, head, and its pooled weight
  const cell = root.locator('.mg-cell[data-layer="2"][data-head="5"]');
  await cell.scrollIntoViewIfNeeded();
  const box = await cell.boundingBox();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.9);
  const tip = root.locator('.mg-tip');
  await tip.waitFor({ state: 'visible' });
  assert.match(await tip.textContent(), /Layer 2, head 5/);
  if ((await cell.getAttribute('data-state')) === 'loaded') {
    const q = Number(await tip.getAttribute('data-q')), k = Number(await tip.getAttribute('data-k'));
    const hm = await getJson(server.url, `/api/runs/${run.id}/heatmap?layer=2&head=5&size=32&q0=${q}&q1=${q + 1}&k0=${k}&k1=${k + 1}`);
    // n_pos <= 32: the thumbnail is exact (float16: 3 significant digits)
    assert.ok(Math.abs(Number(await tip.locator('.mg-tip-weight').textContent()) - hm.data[0]) < 1e-3 + hm.data[0] / 1024);
  }

  // a click opens the large view of that head; Esc closes it and gives the focus back
  await cell.click();
  const dialog = page.locator('.mg-dialog[open]');
  await dialog.waitFor({ state: 'visible' });
  assert.equal(await dialog.getAttribute('data-layer'), '2');
  assert.equal(await dialog.getAttribute('data-head'), '5');
  const big = dialog.locator('.hm-root');
  await page.waitForFunction((el) => el.dataset.status === 'ready' && el.dataset.selection === '2,5', await big.elementHandle(), { timeout: 30000 });
  const t = await hover(big, 9, 2);
  const row = (await getJson(server.url, `/api/runs/${run.id}/attention?pos=9&layer=2&head=5`)).row;
  assert.equal(t.weight, row[2].toFixed(4));
  await page.screenshot({ path: screenshotPath('heads-02-open') });
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });
  assert.deepEqual(await page.evaluate(() => [document.activeElement.dataset.layer, document.activeElement.dataset.head]), ['2', '5']);

  // keyboard: the arrows move the focus between cells, Enter opens
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowRight');
  assert.deepEqual(await page.evaluate(() => [document.activeElement.dataset.layer, document.activeElement.dataset.head]), ['3', '6']);
  const ring = await page.evaluate(() => {
    const cs = getComputedStyle(document.activeElement);
    return cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0;
  });
  assert.ok(ring, 'the focused cell shows a focus ring');
  assert.equal(await root.locator('.mg-cell[tabindex="0"]').count(), 1);
  await page.keyboard.press('Enter');
  await page.locator('.mg-dialog[open][data-layer="3"][data-head="6"]').waitFor();
  await page.keyboard.press('Escape');
  await page.close();
});

// ------------------------------------------------------------------ a long synthetic run (mocked API)

const MOCK = { id: 'run_mock', nPrompt: 500, nOutput: 1001, nLayer: 16, nHead: 32 };
const N = MOCK.nPrompt + MOCK.nOutput - 1; // 1500 positions

// A deterministic weight per (selection, q, k), as float32, 0 above the diagonal.
function weight(sel, q, k) {
  if (k > q) return 0;
  let h = Math.imul(q + 1, 73856093) ^ Math.imul(k + 7, 19349663) ^ Math.imul(sel + 3, 83492791);
  h = Math.imul(h ^ (h >>> 13), 0x5bd1e995);
  h ^= h >>> 15;
  return Math.fround(((h >>> 0) % 10007) / 10007);
}

/** The server's /heatmap over the synthetic matrix (src/api.c view_heatmap). */
function heatmap(params) {
  const g = (k, d) => (params.has(k) ? Number(params.get(k)) : d);
  const sel = params.has('layer') ? g('layer', 0) * 64 + g('head', 63) : 999;
  const q0 = g('q0', 0), q1 = g('q1', N), k0 = g('k0', 0), k1 = g('k1', N), size = g('size', 256);
  const pool = params.get('pool') || 'max';
  const bq = Math.ceil((q1 - q0) / size), bk = Math.ceil((k1 - k0) / size);
  const rows = Math.ceil((q1 - q0) / bq), cols = Math.ceil((k1 - k0) / bk);
  const cell = new Float32Array(rows * cols), cnt = new Int32Array(rows * cols);
  for (let q = q0; q < q1; q++)
    for (let k = k0; k < k1 && k <= q; k++) {
      const i = Math.floor((q - q0) / bq) * cols + Math.floor((k - k0) / bk);
      const w = weight(sel, q, k);
      if (pool === 'max') cell[i] = Math.max(cell[i], w);
      else cell[i] += w;
      cnt[i]++;
    }
  if (pool === 'mean') for (let i = 0; i < cell.length; i++) cell[i] = cnt[i] ? cell[i] / cnt[i] : 0;
  const head = { q0, q1, k0, k1, bq, bk, rows, cols, pool, exact: bq === 1 && bk === 1 };
  if (params.get('format') !== 'bin') return { type: 'application/json', body: JSON.stringify({ ...head, data: [...cell] }) };
  const f16 = params.get('dtype') === 'float16';
  const line = Buffer.from(JSON.stringify({ ...head, dtype: f16 ? 'float16' : 'float32', shape: [rows, cols] }) + '\n');
  const body = Buffer.alloc(line.length + cell.length * (f16 ? 2 : 4));
  line.copy(body);
  for (let i = 0; i < cell.length; i++) {
    if (f16) body.writeUInt16LE(toHalf(cell[i]), line.length + i * 2);
    else body.writeFloatLE(cell[i], line.length + i * 4);
  }
  return { type: 'application/octet-stream', body };
}

function toHalf(x) {
  // weights in [0, 1]: normal or zero halves (truncated; the thumbnails only draw them)
  if (x < 2 ** -14) return 0;
  const e = Math.floor(Math.log2(x));
  return ((e + 15) << 10) | Math.floor((x / 2 ** e - 1) * 1024);
}

/** Routes /api/** to the synthetic run; records the heatmap requests and the most in flight at once. */
async function mockApi(page, { delay = 0 } = {}) {
  const log = { heatmaps: [], inFlight: 0, maxInFlight: 0 };
  const words = [' the', ' wizard', ' walked', ' through', ' forest', ',', ' and', ' saw', ' a', ' light', '.'];
  const tokens = Array.from({ length: MOCK.nPrompt + MOCK.nOutput }, (_, i) => ({ id: 100 + (i % 400), label: i === 0 ? '[BOS]' : words[i % words.length] }));
  const doc = {
    id: MOCK.id, kind: 'heed', created: 1700000000, model: 'mock.gguf', prompt: 'synthetic', params: {}, max_tokens: MOCK.nOutput,
    n_prompt: MOCK.nPrompt, n_output: MOCK.nOutput, stop: 'length',
    prompt_ids: tokens.slice(0, MOCK.nPrompt).map((t) => t.id), output_ids: tokens.slice(MOCK.nPrompt).map((t) => t.id), tokens,
    text: tokens.slice(MOCK.nPrompt).map((t) => t.label).join(''),
    steps: tokens.slice(MOCK.nPrompt).map((t, i) => ({ index: i, id: t.id, label: t.label, text: t.label, prob: 0.5, logprob: -0.69, top: [], attention: { top: [] } })),
  };
  const model = {
    id: 'mock.gguf', arch: 'llama', n_layer: MOCK.nLayer, n_head: MOCK.nHead, n_head_kv: 8, n_vocab: 32000, n_ctx: 4096,
    chat_template: null, bos: 1, eos: 2, limits: { max_tokens: 512, max_prompt: 2048, attention_tokens_top_k: 32 },
  };
  const graph = {
    n_prompt: MOCK.nPrompt, n_output: MOCK.nOutput,
    prompt: Array.from({ length: MOCK.nOutput }, () => [0, ...Array(MOCK.nPrompt - 1).fill(1 / (MOCK.nPrompt - 1))]),
    output: Array.from({ length: MOCK.nOutput }, (_, t) => Array(t).fill(1 / Math.max(1, t))),
    prompt_mass: Array(MOCK.nOutput).fill(0.7), output_mass: Array(MOCK.nOutput).fill(0.3),
  };
  const json = { '/api/model': model, [`/api/runs/${MOCK.id}`]: doc, [`/api/runs/${MOCK.id}/graph`]: graph, '/api/runs': { runs: [], total: 0, limit: 100, offset: 0 } };
  await page.route('**/api/**', async (route) => {
    const u = new URL(route.request().url());
    if (u.pathname === `/api/runs/${MOCK.id}/heatmap`) {
      log.heatmaps.push(u.searchParams);
      log.inFlight++;
      log.maxInFlight = Math.max(log.maxInFlight, log.inFlight);
      try {
        const r = heatmap(u.searchParams);
        if (delay) await new Promise((res) => setTimeout(res, delay));
        await route.fulfill({ status: 200, contentType: r.type, body: r.body });
      } catch {
        /* the page aborted it */
      } finally {
        log.inFlight--;
      }
      return;
    }
    const j = json[u.pathname];
    if (j) await route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(j) });
    else await route.fulfill({ status: 404, contentType: 'application/json', body: '{"error":{"message":"not found","code":"not_found"}}' });
  });
  return log;
}

test('a long run: pooled tiles at the fit zoom, exact ones zoomed in, pool toggle, pan, click to step', async () => {
  const page = await newPage();
  const log = await mockApi(page);
  await page.goto(`${server.url}/#run=${MOCK.id}&view=heatmap`);
  const root = heatRoot(page);
  await waitReady(root);
  assert.equal(await data(root, 'window'), `0,${N},0,${N}`);
  assert.equal(await data(root, 'exact'), 'false');
  const level = Number(await data(root, 'level'));
  assert.ok(level >= 2, `pooled level ${level}`);
  const first = log.heatmaps.length;
  assert.ok(first > 0 && first <= 10, `${first} tile requests for the whole matrix`);
  for (const p of log.heatmaps) {
    assert.equal(p.get('format'), 'bin');
    assert.ok(Number(p.get('size')) <= 1024);
    assert.ok(Number(p.get('k0')) <= Number(p.get('q1')) - 1, 'no tile wholly above the diagonal');
    assert.ok(!p.has('layer') && !p.has('head'), 'the mean of all layers and heads');
  }

  // hover: a pooled cell says so and has the block's max
  const tip = await hover(root, 1000, 400);
  assert.match(tip.text, new RegExp(`max of a ${level}×${level} block`), tip.text);
  const [cq0, cq1, ck0, ck1] = tip.cell.split(',').map(Number);
  assert.ok(cq0 <= 1000 && 1000 < cq1 && ck0 <= 400 && 400 < ck1);
  let mx = 0;
  for (let q = cq0; q < cq1; q++) for (let k = ck0; k < ck1; k++) mx = Math.max(mx, weight(999, q, k));
  assert.equal(tip.weight, mx.toFixed(4));
  await page.screenshot({ path: screenshotPath('heatmap-03-long-pooled') });

  // zoom in with the keyboard around the centre until exact (debounced: not every step is fetched)
  await root.locator('.hm-canvas').focus();
  const before = log.heatmaps.length;
  for (let i = 0; i < 8 && (await data(root, 'level')) !== '1'; i++) await page.keyboard.press('+');
  assert.equal(await data(root, 'level'), '1');
  await page.waitForFunction((el) => el.dataset.status === 'ready', await root.elementHandle(), { timeout: 30000 });
  assert.equal(await data(root, 'exact'), 'true');
  const fetched = log.heatmaps.length - before;
  assert.ok(fetched <= 8, `${fetched} requests while zooming in 8 steps`);
  assert.ok(log.heatmaps.slice(before).every((p) => Number(p.get('q1')) - Number(p.get('q0')) <= Number(p.get('size'))), 'exact windows');
  const [q0, q1, k0, k1] = (await data(root, 'window')).split(',').map(Number);
  assert.ok(q1 - q0 < 300 && k1 - k0 < 300, `window ${q0},${q1},${k0},${k1}`);
  // zooming keeps the diagonal in view: the bottom rows have causal keys
  const q = q1 - 10, k = Math.min(q, k1 - 4) - 3;
  assert.ok(k >= k0 + 2 && k <= q, `a causal cell in view: (${q}, ${k})`);
  const ex = await hover(root, q, k);
  assert.equal(ex.weight, weight(999, q, k).toFixed(4));
  assert.equal(ex.exact, 'true');
  assert.ok(!/block/.test(ex.text));
  // above the diagonal, not fetched: masked, for that position
  const mk = await hover(root, q0 + 2, k1 - 3);
  if (k1 - 3 > q0 + 2) {
    assert.match(mk.text, /masked/);
    assert.equal(mk.cell, `${q0 + 2},${q0 + 3},${k1 - 3},${k1 - 2}`);
  }
  await page.screenshot({ path: screenshotPath('heatmap-04-long-exact') });

  // pool: mean
  await root.locator('.hm-pool button[data-value="mean"]').click();
  await page.waitForFunction((el) => el.dataset.pool === 'mean' && el.dataset.status === 'ready', await root.elementHandle());
  assert.equal(log.heatmaps.at(-1).get('pool'), 'mean');

  // drag pans
  const w0 = await data(root, 'window');
  const box = await root.locator('.hm-canvas').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2 + 120, box.y + box.height / 2 + 90, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(([el, w]) => el.dataset.window !== w, [await root.elementHandle(), w0]);

  // a click on an output row moves the step
  await page.keyboard.press('0');
  await page.waitForFunction(([el, n]) => el.dataset.status === 'ready' && el.dataset.window === `0,${n},0,${n}`, [await root.elementHandle(), N]);
  const qRow = MOCK.nPrompt - 1 + 700; // step 700
  const pt = await cellPoint(root, qRow, 10);
  await page.mouse.click(pt.x, pt.y);
  await page.waitForFunction((el) => el.dataset.step === '700', await root.elementHandle(), { timeout: 10000 });
  await page.close();
});

test('a 16 x 32 model: the heads grid fetches only cells near the viewport, 4 at a time', async () => {
  const page = await newPage({ width: 1280, height: 800 });
  const log = await mockApi(page, { delay: 20 });
  await page.goto(`${server.url}/#run=${MOCK.id}&view=heads`);
  const root = page.locator('.mg-root').filter({ visible: true }).first();
  await root.waitFor({ state: 'visible', timeout: 30000 });
  await page.waitForFunction((el) => el.dataset.status === 'ready', await root.elementHandle(), { timeout: 30000 });
  assert.equal(await root.locator('.mg-cell').count(), 512);
  const loaded = Number(await data(root, 'cells-loaded'));
  const visible = Number(await data(root, 'cells-visible'));
  assert.ok(loaded > 0 && loaded <= visible, `loaded ${loaded} <= visible ${visible}`);
  assert.ok(visible < 512, `not every cell is near the viewport (${visible})`);
  assert.equal(log.heatmaps.length, loaded, 'one request per loaded cell');
  assert.ok(log.maxInFlight <= 4, `${log.maxInFlight} requests at once`);
  for (const p of log.heatmaps) {
    assert.ok(p.has('layer') && p.has('head'));
    assert.ok(Number(p.get('size')) <= 64);
    assert.equal(p.get('dtype'), 'float16');
  }
  assert.ok((await root.locator('.mg-cell[data-state="placeholder"]').count()) > 0, 'placeholders for the rest');
  await page.screenshot({ path: screenshotPath('heads-03-16x32') });

  // scrolling to the end loads the cells there
  await root.locator('.mg-scroll').evaluate((el) => el.scrollTo(el.scrollWidth, el.scrollHeight));
  await page.waitForFunction((el) => el.querySelector('.mg-cell[data-layer="15"][data-head="31"]')?.dataset.state === 'loaded', await root.elementHandle(), { timeout: 30000 });
  await page.waitForFunction((el) => el.dataset.status === 'ready', await root.elementHandle(), { timeout: 30000 });
  const loaded2 = Number(await data(root, 'cells-loaded'));
  const seen = Number(await data(root, 'cells-seen'));
  assert.ok(loaded2 > loaded && loaded2 <= seen && seen < 512, `loaded ${loaded2} <= seen ${seen}`);
  assert.ok(log.maxInFlight <= 4);
  // the last cell (keyboard: Ctrl+End) opens large
  await root.locator('.mg-cell[tabindex="0"]').focus();
  await page.keyboard.press('Control+End');
  assert.deepEqual(await page.evaluate(() => [document.activeElement.dataset.layer, document.activeElement.dataset.head]), ['15', '31']);
  await page.keyboard.press('Enter');
  const dialog = page.locator('.mg-dialog[open][data-layer="15"][data-head="31"]');
  await dialog.waitFor();
  await page.waitForFunction((el) => el.dataset.status === 'ready', await dialog.locator('.hm-root').elementHandle(), { timeout: 30000 });
  const hm = log.heatmaps.at(-1);
  assert.equal(hm.get('layer'), '15');
  assert.equal(hm.get('head'), '31');
  await page.screenshot({ path: screenshotPath('heads-04-16x32-open') });
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });
  await page.close();
});
