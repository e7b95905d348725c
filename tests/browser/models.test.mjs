// Views that depend on the model family, in Chromium against a real `heed
// serve` on the shared test models (skipped, saying so, when
// /work/shared/models is absent; HEED_SHARED names another shared folder):
//  - tiny-qwen3moe (4 layers, 8 experts, 2 per token): the Experts tab is
//    there, its strip's cells are the API's expert ids (/experts), its load
//    bars the API's counts, for the layer picked by click, keyboard or the
//    layer selector;
//  - tiny-gemma2 (a sliding window of 8 keys on layers 0 and 2): the text
//    view strikes out the tokens outside the hovered token's window (their
//    weights are exactly 0 in /attention) and says so; the heatmap marks
//    the window and its tooltip says a cell is outside; layer 1 and the mean
//    of all layers (windows differ) draw nothing.
// Screenshots go to test-output/browser/models-*.png.
//
// HEED_WEB_DIR=web/dist serves the UI from disk (no rebuild of heed needed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer, launchBrowser, getJson, screenshotPath, sharedPath } from './lib.mjs';

const moeModel = sharedPath('models/tiny-qwen3moe.gguf');
const gemmaModel = sharedPath('models/tiny-gemma2.gguf');
const skipMoe = moeModel ? false : 'shared data models/tiny-qwen3moe.gguf is absent (set HEED_SHARED to the shared folder)';
const skipGemma = gemmaModel ? false : 'shared data models/tiny-gemma2.gguf is absent (set HEED_SHARED to the shared folder)';
if (skipMoe) console.log(`SKIP: ${skipMoe}`);
if (skipGemma) console.log(`SKIP: ${skipGemma}`);

let browser;

before(async () => {
  if (moeModel || gemmaModel) browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

async function newPage() {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
  page.on('pageerror', (e) => console.error('page error:', e));
  return page;
}

async function generate(server, prompt, maxTokens = 12) {
  const r = await fetch(server.url + '/api/runs', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0 }),
  });
  assert.equal(r.status, 200, `POST /api/runs: ${r.status}`);
  const text = await r.text();
  const m = /event: done\ndata: (\{.*\})/.exec(text);
  assert.ok(m, `a done event in:\n${text.slice(-400)}`);
  return getJson(server.url, `/api/runs/${JSON.parse(m[1]).run_id}`);
}

async function openView(page, server, run, view, extra = '') {
  await page.goto('about:blank');
  await page.mouse.move(0, 0);
  await page.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&view=${view}${extra}`);
  await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
  await page.waitForSelector(`#view-${view}[data-status="ready"]`, { timeout: 30000 });
}

/** The load bars on screen: expert -> count, weight. */
async function bars(page) {
  return page.locator('#view-experts .ex-bar-row').evaluateAll((els) => els.map((e) => ({ expert: +e.dataset.expert, count: +e.dataset.count, weight: +e.dataset.weight })));
}

function assertLoad(got, load, what) {
  assert.equal(got.length, load.count.length, `${what}: one bar per expert`);
  for (const b of got) {
    assert.equal(b.count, load.count[b.expert], `${what}: expert ${b.expert}'s count`);
    assert.ok(Math.abs(b.weight - load.weight[b.expert]) < 1e-9, `${what}: expert ${b.expert}'s weight`);
  }
}

// ---------------------------------------------------------------- experts

test('experts: the strip is the API routing, the bars the API load', { skip: skipMoe }, async () => {
  const server = await startServer(['-m', moeModel]);
  const page = await newPage();
  try {
    const model = await getJson(server.url, '/api/model');
    assert.equal(model.n_expert, 8);
    assert.equal(model.n_expert_used, 2);
    const run = await generate(server, 'The quick brown fox jumps over the lazy dog', 12);
    assert.deepEqual(run.experts, { n_expert: 8, n_used: 2 });
    const ex = await getJson(server.url, `/api/runs/${run.id}/experts`);
    const nPos = run.n_prompt + run.n_output - 1;
    assert.equal(ex.n_pos, nPos);

    // the tab is shown for this run and opens the view
    await page.goto(`${server.url}/#run=${encodeURIComponent(run.id)}`);
    await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
    assert.equal(await page.locator('#tab-experts').isVisible(), true);
    await page.locator('#tab-experts').click();
    await page.waitForSelector('#view-experts[data-status="ready"]', { timeout: 30000 });
    assert.match(new URL(page.url()).hash, /view=experts/);
    const root = page.locator('#view-experts');
    assert.equal(Number(await root.getAttribute('data-n-layer')), 4);
    assert.equal(Number(await root.getAttribute('data-n-pos')), nPos);
    assert.equal(Number(await root.getAttribute('data-n-expert')), 8);

    // every cell on screen: the API's ids, best first, the top one's colour
    const cells = await page.locator('#view-experts .ec').evaluateAll((els) =>
      els.map((e) => ({ pos: +e.dataset.pos, layer: +e.dataset.layer, ids: e.dataset.ids, top: +e.dataset.top, text: e.textContent, bg: e.style.background })),
    );
    assert.ok(cells.length >= 4 * Math.min(nPos, 8), `${cells.length} cells rendered`);
    const seen = new Set();
    for (const c of cells) {
      const want = ex.positions[c.pos].layers[c.layer];
      assert.equal(c.ids, want.ids.join(','), `pos ${c.pos} layer ${c.layer}`);
      assert.equal(c.text, want.ids.join('·'));
      assert.equal(c.top, want.ids[0]);
      assert.ok(want.weights[0] >= want.weights[1]);
      assert.ok(c.bg !== '', 'coloured by the top expert');
      seen.add(`${c.pos},${c.layer}`);
    }
    const q = run.n_prompt - 1 + (run.n_output - 1); // the position that chose the last step: the current column
    assert.ok(seen.has(`${q},0`) && seen.has(`${q},3`), 'the current step’s column is on screen');
    // same top expert, same colour
    const byTop = new Map();
    for (const c of cells) {
      if (byTop.has(c.top)) assert.equal(byTop.get(c.top), c.bg, `expert ${c.top}'s colour`);
      else byTop.set(c.top, c.bg);
    }

    // the load chart: layer 0 first
    assert.equal(await root.getAttribute('data-load-layer'), '0');
    assertLoad(await bars(page), ex.load[0], 'layer 0');
    let total = 0;
    for (const b of await bars(page)) total += b.count;
    assert.equal(total, 2 * nPos, 'two experts per position');
    // a row label picks another layer
    await page.locator('#view-experts .ex-rowlabel[data-layer="2"]').click();
    assert.equal(await page.locator('#view-experts .ex-rowlabel[data-layer="2"]').getAttribute('aria-pressed'), 'true');
    assertLoad(await bars(page), ex.load[2], 'layer 2');
    // the keyboard: ↓ to layer 3, the focused cell's weights are said
    await page.locator('#view-experts .ex-scroll').focus();
    await page.keyboard.press('ArrowDown');
    assert.equal(await root.getAttribute('data-load-layer'), '3');
    assertLoad(await bars(page), ex.load[3], 'layer 3');
    const said = await page.locator('#ex-live').textContent();
    const w3 = ex.positions[q].layers[3];
    assert.ok(said.includes(`expert ${w3.ids[0]}: ${w3.weights[0].toFixed(4)}`), said);
    // the weight metric
    await page.locator('#view-experts button[data-metric="weight"]').click();
    assert.equal(await page.locator('#view-experts .ex-bars').getAttribute('data-metric'), 'weight');
    const heavy = ex.load[3].weight.indexOf(Math.max(...ex.load[3].weight));
    const width = await page.locator(`#view-experts .ex-bar-row[data-expert="${heavy}"] .ex-bar`).evaluate((e) => e.style.width);
    assert.equal(parseFloat(width), 100);

    // hover: the weights
    await page.locator(`#view-experts .ec[data-pos="${q - 1}"][data-layer="1"]`).hover();
    const tip = await page.locator('#tooltip').textContent();
    const w = ex.positions[q - 1].layers[1];
    assert.ok(tip.includes(`expert ${w.ids[0]}: ${w.weights[0].toFixed(4)}`) && tip.includes(`expert ${w.ids[1]}: ${w.weights[1].toFixed(4)}`), tip);
    await page.screenshot({ path: screenshotPath('models-experts') });

    // a click on an output position's column moves the step; the layer selector picks the load's layer
    await page.locator(`#view-experts .ec[data-pos="${run.n_prompt - 1 + 4}"][data-layer="0"]`).click();
    await page.waitForFunction(() => document.querySelector('#graph').dataset.step === '4');
    await page.locator('#sel-layer').selectOption('1');
    await page.waitForFunction(() => document.querySelector('#view-experts').dataset.loadLayer === '1');
    await page.locator('#view-experts button[data-metric="count"]').click();
    assertLoad(await bars(page), ex.load[1], 'layer 1 from the selector');

    // the data export: every position's ids
    const [d] = await Promise.all([page.waitForEvent('download'), page.locator('#export-csv').click()]);
    const csv = readFileSync(await d.path(), 'utf8').trim().split(/\r\n/);
    assert.equal(csv[0], 'pos,label,layer,rank,expert,weight');
    assert.equal(csv.length - 1, nPos * 4 * 2);

    // a fresh load on the URL opens the view directly
    await openView(page, server, run, 'experts', '&step=2');
    assert.ok((await page.locator('#view-experts .ec.current').count()) === 4, 'the current step’s column is marked');
  } finally {
    await page.close();
    await server.stop();
  }
});

// ---------------------------------------------------------------- sliding windows

test('sliding windows: the text view and the heatmap mark the keys outside layer 0’s window', { skip: skipGemma }, async () => {
  const server = await startServer(['-m', gemmaModel]);
  const page = await newPage();
  try {
    const model = await getJson(server.url, '/api/model');
    assert.deepEqual(model.layer_window, [8, 0, 8, 0]);
    assert.equal(model.attn_softcap, 10);
    const run = await generate(server, 'The quick brown fox jumps over the lazy dog and runs far away', 12);
    const nPos = run.n_prompt + run.n_output - 1;
    assert.ok(nPos > 12, `${nPos} positions`);
    const p = nPos - 1; // the last row

    // text view, layer 0: hover the last row's token
    await openView(page, server, run, 'text', '&layer=0');
    const root = page.locator('#view-text');
    assert.equal(await root.getAttribute('data-sliding-window'), '8');
    assert.match(await page.locator('#tv-window .tv-window-text').textContent(), /Layer 0: sliding window of 8 tokens/);
    await page.locator(`#view-text .tt[data-pos="${p}"]`).hover();
    await page.waitForFunction((p) => document.querySelector('#view-text').dataset.focus === String(p), p);
    const out = await page.locator('#view-text .tt.outside-window').evaluateAll((els) => els.map((e) => +e.dataset.pos));
    const want = [];
    for (let k = 0; k <= p - 8; k++) want.push(k);
    assert.deepEqual(out, want, 'the keys before the window are struck out');
    const row = (await getJson(server.url, `/api/runs/${run.id}/attention?pos=${p}&layer=0`)).row;
    for (const k of want) assert.equal(row[k], 0, `key ${k} outside the window has weight 0`);
    assert.ok(row.slice(p - 7, p + 1).some((x) => x > 0), 'the window has the weight');
    assert.match(await page.locator('#tv-window .tv-window-text').textContent(), new RegExp(`sees positions ${p - 7}–${p}`));
    // an outside token's tooltip says so (freeze on p first: hovering moves the focus)
    await page.locator(`#view-text .tt[data-pos="${p}"]`).dblclick();
    await page.locator(`#view-text .tt[data-pos="1"]`).hover();
    await page.waitForFunction(() => /outside the sliding window of 8 tokens \(layer 0\)/.test(document.querySelector('#tooltip').textContent));
    await page.screenshot({ path: screenshotPath('models-window-text') });

    // layer 1 is global: nothing struck out, no note
    await openView(page, server, run, 'text', '&layer=1');
    assert.equal(await root.getAttribute('data-sliding-window'), '0');
    await page.locator(`#view-text .tt[data-pos="${p}"]`).hover();
    await page.waitForFunction((p) => document.querySelector('#view-text').dataset.focus === String(p), p);
    assert.equal(await page.locator('#view-text .tt.outside-window').count(), 0);
    assert.equal(await page.locator('#tv-window').isHidden(), true);
    // all layers: the windows differ, so no marks, and the note says why
    await openView(page, server, run, 'text');
    assert.equal(await root.getAttribute('data-sliding-window'), '0');
    assert.match(await page.locator('#tv-window .tv-window-text').textContent(), /Layers 0, 2: sliding window of 8 tokens; the other layers see every earlier token/);
    await page.locator(`#view-text .tt[data-pos="${p}"]`).hover();
    assert.equal(await page.locator('#view-text .tt.outside-window').count(), 0);

    // heatmap, layer 0: the legend says it; a cell outside the window is 0 and its tooltip says outside
    await openView(page, server, run, 'heatmap', '&layer=0');
    const hm = page.locator('#view-heatmap');
    assert.equal(await hm.getAttribute('data-sliding-window'), '8');
    assert.match(await hm.locator('.hm-window-key').textContent(), /outside the window, exactly 0 \(layer 0: sliding window of 8 tokens\)/);
    const [left, top, x0, y0, s] = (await hm.getAttribute('data-transform')).split(',').map(Number);
    const box = await hm.locator('.hm-canvas').boundingBox();
    const at = async (q, k) => {
      const x = box.x + left + (k - x0 + 0.5) * s;
      const y = box.y + top + (q - y0 + 0.5) * s;
      await page.mouse.move(x - 1, y - 1);
      await page.mouse.move(x, y);
      await page.waitForFunction(([q, k]) => {
        const t = document.querySelector('#view-heatmap .hm-tip');
        return t && !t.hidden && t.dataset.q === String(q) && t.dataset.k === String(k) && !/loading/.test(t.textContent);
      }, [q, k]);
      return page.locator('#view-heatmap .hm-tip').evaluate((t) => ({ text: t.textContent, ...t.dataset }));
    };
    const outside = await at(p, 1);
    assert.equal(outside.outside, 'true');
    assert.equal(Number(outside.value), 0);
    assert.match(outside.text, /outside the sliding window of 8 tokens: keys \d+–\d+ only/);
    const inside = await at(p, p - 3);
    assert.equal(inside.outside, 'false');
    // the band is drawn: a pixel outside the window is veiled (lighter than viridis' 0, #440154)
    const px = await page.evaluate(([q, k, left, top, x0, y0, s]) => {
      const c = document.querySelector('#view-heatmap .hm-canvas');
      const dpr = c.width / c.clientWidth;
      const x = Math.floor((left + (k - x0 + 0.5) * s) * dpr);
      const y = Math.floor((top + (q - y0 + 0.5) * s) * dpr);
      return [...c.getContext('2d').getImageData(x, y, 1, 1).data];
    }, [p, 0, left, top, x0, y0, s]);
    assert.ok(px[1] > 100, `a veiled cell (${px})`);
    await page.screenshot({ path: screenshotPath('models-window-heatmap') });
    // layer 1: no window
    await openView(page, server, run, 'heatmap', '&layer=1');
    assert.equal(await hm.getAttribute('data-sliding-window'), '0');
    assert.equal(await hm.locator('.hm-window-key').isHidden(), true);
  } finally {
    await page.close();
    await server.stop();
  }
});
