// Long runs in the graph (docs/UI.md, "Long runs"): a 6,000-token run made
// from a heed-trace/1 folder (tests/browser/longtrace.mjs: every step's
// strongest source is key j0 near the start, the second j1 mid-prompt,
// " Lily" planted three times) is uploaded and opened. The overview strip
// draws every token and its strongest mark is j0; clicking it scrolls the
// graph there; "jump to source" lists j0 first and reveals it; the search
// finds and counts " Lily"; zoom changes the rows in view; step moves read
// the rows of other steps (by range, in the binary form, which holds the
// JSON form's numbers exactly) and draw each step's top-k edges.
// Screenshots: test-output/browser/longrun-*.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root, openSession, closeSession, getJson, screenshotPath } from './lib.mjs';
import { makeLongRun, uploadRun } from './longtrace.mjs';

const bin = process.env.HEED_BIN || join(root, 'build', 'heed');
const T = 6000, N_OUT = 200;
let dir, session, server, page, run, id;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'heed-longrun-'));
  run = makeLongRun(bin, dir, T, N_OUT);
  session = await openSession();
  ({ server, page } = session);
  id = await uploadRun(server.url, run.file);
});

after(async () => {
  await closeSession(session);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const graphAttr = (a) => page.locator('#graph').getAttribute(a);
const stripAttr = (a) => page.locator('#overview').getAttribute(a);

// Whether input token k is on screen inside the graph's scroll box.
async function inputInView(k) {
  return page.evaluate((k) => {
    const b = document.querySelector(`#graph .col-in button.token[data-index="${k}"]`);
    if (!b) return false;
    const r = b.getBoundingClientRect();
    const v = document.querySelector('#graph .graph-scroll').getBoundingClientRect();
    return r.top >= v.top && r.bottom <= v.bottom;
  }, k);
}

// The strip's pixel (device px) at token position p, in lane y (css px).
async function stripPixel(p, y) {
  return page.evaluate(([p, y]) => {
    const c = document.querySelector('#overview');
    const n = Number(c.dataset.n);
    const dpr = c.width / c.clientWidth;
    const x = Math.floor(((p + 0.5) / n) * c.width);
    return Array.from(c.getContext('2d').getImageData(x, Math.floor(y * dpr), 1, 1).data);
  }, [p, y]);
}

async function settle() {
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

test('a long run opens by ranges of steps; the overview draws and its strongest mark is j0', async () => {
  const lazy = [];
  const workers = [];
  page.on('worker', (w) => workers.push(w.url()));
  page.on('request', (r) => {
    if (/\/graph\?/.test(r.url())) lazy.push(new URL(r.url()).searchParams);
  });
  await page.goto(`${server.url}/#run=${id}`);
  await page.waitForSelector('#graph[data-status="done"]', { timeout: 30000 });
  await page.waitForSelector('#graph[data-step-loaded="true"]');
  await page.waitForFunction((j0) => document.querySelector('#overview')?.dataset.maxPos === String(j0), run.j0);
  assert.equal(Number(await graphAttr('data-n-input')), run.nPrompt);
  assert.equal(Number(await stripAttr('data-n')), T);
  // every read of /graph named a range, none asked for every step
  assert.ok(lazy.length >= 2, 'the graph was read by ranges');
  for (const q of lazy) assert.ok(q.has('from') && q.has('to') && Number(q.get('to')) - Number(q.get('from')) < N_OUT);
  // the rows come in the binary form (the sizes' probe, from=0&to=0, is JSON)
  const rows = lazy.filter((q) => q.get('to') !== '0');
  assert.ok(rows.length >= 1 && rows.every((q) => q.get('format') === 'bin'), 'the rows are read as float32');
  assert.ok(workers.some((u) => /graph\.worker/.test(u)), `decoded and sorted in a worker: ${workers}`);
  // the caption names the quantity
  assert.match(await page.locator('#overview-title').textContent(), /normalized attention .* of step 200/);
  // j0's mark is the darkest; a weak far mark is lighter but drawn; the future (none at the last step) is not grey
  await settle();
  const dark = await stripPixel(run.j0, 12);
  const weak = await stripPixel(run.nPrompt - 900, 12);
  assert.ok(dark[0] < 60 && dark[2] < 140, `j0's mark is dark: ${dark}`);
  assert.ok(weak[0] > dark[0] + 60, `a weak mark is lighter: ${weak} vs ${dark}`);
  // the default filter: each step's 8 strongest (the run has > 1,000 tokens) besides the threshold's
  assert.equal(await graphAttr('data-topk'), '8');
  assert.match(await page.locator('#edge-filter').textContent(), /weight ≥ 0\.050, plus each step’s 8 strongest/);
  assert.ok(Number(await graphAttr('data-edge-count')) >= 8);
  await page.screenshot({ path: screenshotPath('longrun-open') });

  // the graph opened at the last step, far from j0; a click on j0's mark scrolls there
  assert.equal(await inputInView(run.j0), false);
  const box = await page.locator('#overview').boundingBox();
  await page.mouse.click(box.x + ((run.j0 + 0.5) / T) * box.width, box.y + 10);
  await page.waitForFunction((j0) => document.querySelector('#overview')?.dataset.jumped === String(j0), run.j0);
  await settle();
  assert.equal(await inputInView(run.j0), true, 'the overview jump shows j0');
  const inView = (await stripAttr('data-in-view')).split('-').map(Number);
  assert.ok(inView[0] <= run.j0 && run.j0 <= inView[1], `the focus box holds j0: ${inView}`);
  await page.screenshot({ path: screenshotPath('longrun-overview-jump') });

  // keyboard: End on the strip jumps to the last token's region, Home back
  await page.locator('#overview').focus();
  await page.keyboard.press('End');
  assert.equal(await stripAttr('data-jumped'), String(T - 1));
  await page.keyboard.press('Home');
  assert.equal(await stripAttr('data-jumped'), '0');
  await page.keyboard.press('PageDown');
  assert.equal(await stripAttr('data-jumped'), String(T / 10));
});

test('jump to source lists j0 first, then j1, and reveals it; "current token" comes back', async () => {
  const src = page.locator('#jump-sources button.lr-src');
  await page.waitForFunction(() => document.querySelectorAll('#jump-sources button.lr-src').length === 8);
  assert.equal(await src.nth(0).getAttribute('data-pos'), String(run.j0));
  assert.equal(await src.nth(1).getAttribute('data-pos'), String(run.j1));
  // its weight is the API's normalized weight of j0 at the last step
  const api = await getJson(server.url, `/api/runs/${id}/attention?step=${N_OUT - 1}&norm=split`);
  const w = api.split.prompt[run.j0];
  assert.match(await src.nth(0).textContent(), new RegExp(`${run.j0} · ${w.toFixed(3)}`));
  // away from j0 first (the strip's end), then the jump
  const box = await page.locator('#overview').boundingBox();
  await page.mouse.click(box.x + box.width - 2, box.y + 10);
  await settle();
  assert.equal(await inputInView(run.j0), false);
  await src.nth(0).click();
  await settle();
  assert.equal(await inputInView(run.j0), true);
  assert.equal(await graphAttr('data-revealed'), `input:${run.j0}`);
  const focused = await page.evaluate(() => {
    const a = document.activeElement;
    return a?.matches('button.token') ? `${a.dataset.side}:${a.dataset.index}:${a.classList.contains('revealed')}` : null;
  });
  assert.equal(focused, `input:${run.j0}:true`);
  await page.screenshot({ path: screenshotPath('longrun-jump-source') });
  // the current token is off screen now; the button brings it back
  await page.locator('#goto-current').click();
  await settle();
  assert.equal(await graphAttr('data-revealed'), `output:${N_OUT - 1}`);
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.index), String(N_OUT - 1));
});

test('search finds a token, counts its matches and walks them with Enter / Shift+Enter', async () => {
  if (!run.labelled) return; // no vocabulary: the labels are ids
  await page.locator('#graph-search').fill('lily');
  assert.equal(await page.locator('#search-count').getAttribute('data-count'), '3');
  assert.equal(await page.locator('#search-count').textContent(), '3 matches');
  // matches are ticked on the strip (orange, in the lane under the marks)
  await settle();
  const tick = await stripPixel(run.lily[1], 30);
  assert.ok(tick[0] > 200 && tick[2] < 100, `a match tick: ${tick}`);
  await page.locator('#overview').focus();
  await page.keyboard.press('Home'); // the cursor at the start: the first match is next
  await page.locator('#graph-search').press('Enter');
  assert.equal(await page.locator('#search-count').textContent(), '1 of 3');
  assert.equal(await page.locator('#search-count').getAttribute('data-at'), String(run.lily[0]));
  await settle();
  assert.equal(await inputInView(run.lily[0]), true);
  assert.match(await page.locator(`#graph .col-in button.token[data-index="${run.lily[0]}"]`).getAttribute('class'), /\bmatch\b/);
  await page.locator('#graph-search').press('Enter');
  assert.equal(await page.locator('#search-count').getAttribute('data-at'), String(run.lily[1]));
  await page.locator('#graph-search').press('Enter'); // the third is an output token
  assert.equal(await page.locator('#search-count').getAttribute('data-at'), String(run.lily[2]));
  assert.equal(await graphAttr('data-revealed'), `output:${run.lily[2] - run.nPrompt}`);
  await page.locator('#graph-search').press('Shift+Enter');
  assert.equal(await page.locator('#search-count').textContent(), '2 of 3');
  await page.screenshot({ path: screenshotPath('longrun-search') });
  await page.locator('#graph-search').fill('no such token here');
  assert.equal(await page.locator('#search-count').getAttribute('data-count'), '0');
  await page.locator('#graph-search').fill('');
});

test('zoom out shows more tokens in view with smaller text; zoom in (and the + key) back', async () => {
  const rows = async () => {
    await settle();
    const [a, b] = (await stripAttr('data-in-view')).split('-').map(Number);
    return b - a + 1;
  };
  const before = await rows();
  await page.locator('#zoom-out').click();
  assert.equal(await graphAttr('data-zoom'), '1');
  const after = await rows();
  assert.ok(after >= 1.8 * before, `zoomed out: ${after} rows in view against ${before}`);
  const font = await page.evaluate(() => getComputedStyle(document.querySelector('#graph .col-in button.token')).fontSize);
  assert.equal(font, '8px');
  await page.locator('#zoom-out').click();
  await page.locator('#zoom-out').click();
  assert.equal(await graphAttr('data-zoom'), '3');
  assert.ok((await rows()) >= 6 * before);
  assert.equal(await page.locator('#zoom-out').isDisabled(), true);
  await page.screenshot({ path: screenshotPath('longrun-zoomed-out') });
  await page.locator('body').click({ position: { x: 5, y: 5 } });
  for (let i = 0; i < 3; i++) await page.keyboard.press('+');
  assert.equal(await graphAttr('data-zoom'), '0');
  assert.equal(await rows(), before);
});

test('step moves read other ranges of steps; the top-k and the threshold decide the edges', async () => {
  await page.locator('body').click({ position: { x: 5, y: 5 } });
  await page.keyboard.press('Home');
  await page.waitForSelector('#graph[data-step="0"][data-step-loaded="true"]');
  await page.keyboard.press('ArrowRight');
  await page.waitForSelector('#graph[data-step="1"][data-step-loaded="true"]');
  // step 2's only earlier output takes all of the (normalized) output part: 1.0, above j0's share of the input part
  await page.waitForFunction((p) => document.querySelector('#jump-sources button.lr-src')?.dataset.pos === String(p), run.nPrompt);
  assert.equal(await page.locator('#jump-sources button.lr-src').nth(1).getAttribute('data-pos'), String(run.j0));
  assert.equal(await stripAttr('data-max-pos'), String(run.nPrompt));
  // a step in the middle (another range)
  const t = 117;
  await page.locator('#step').evaluate((s, t) => {
    s.value = String(t);
    s.dispatchEvent(new Event('input', { bubbles: true }));
  }, t);
  await page.waitForSelector(`#graph[data-step="${t}"][data-step-loaded="true"]`);
  await page.waitForFunction((j0) => document.querySelector('#overview')?.dataset.maxPos === String(j0), run.j0);
  const api = await getJson(server.url, `/api/runs/${id}/attention?step=${t}&norm=split&threshold=0.05`);
  const atThreshold = api.edges.filter((e) => e[0] !== 0).length;
  assert.ok(atThreshold < 8, `few edges reach the threshold on a long run (${atThreshold})`);
  assert.equal(Number(await graphAttr('data-edge-count')), 8, "the step's 8 strongest");
  await page.locator('#edge-topk').selectOption('0');
  assert.equal(Number(await graphAttr('data-edge-count')), atThreshold, 'top-k off: the threshold alone, as the API');
  await page.locator('#edge-topk').selectOption('16');
  assert.equal(Number(await graphAttr('data-edge-count')), 16);
  assert.match(await page.locator('#edge-filter').textContent(), /16 strongest/);
  await page.locator('#edge-topk').selectOption('auto');
  await page.screenshot({ path: screenshotPath('longrun-step') });
});

test('GET /graph?from=&to= reads a range of steps, equal to their split rows', async () => {
  const g = await getJson(server.url, `/api/runs/${id}/graph?from=5&to=7`);
  assert.equal(g.from, 5);
  assert.equal(g.to, 7);
  assert.equal(g.n_prompt, run.nPrompt);
  assert.equal(g.n_output, N_OUT);
  assert.equal(g.prompt.length, 2);
  assert.equal(g.output[1].length, 6); // step 6 has 6 earlier outputs
  const a = await getJson(server.url, `/api/runs/${id}/attention?step=6&norm=split`);
  for (const k of [0, run.j0, run.j1, run.nPrompt - 1]) assert.ok(Math.abs(g.prompt[1][k] - a.split.prompt[k]) < 1e-6);
  const none = await getJson(server.url, `/api/runs/${id}/graph?from=0&to=0`);
  assert.deepEqual([none.n_prompt, none.n_output, none.prompt.length, none.from, none.to], [run.nPrompt, N_OUT, 0, 0, 0]);
  const r = await fetch(`${server.url}/api/runs/${id}/graph?from=7&to=5`);
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error.param, 'to');
  assert.equal((await fetch(`${server.url}/api/runs/${id}/graph?to=${N_OUT + 1}`)).status, 400);
});

// Parses /graph?format=bin: the header line, then float32 rows (docs/API.md).
async function getGraphBin(path) {
  const r = await fetch(server.url + path);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'application/octet-stream');
  const b = Buffer.from(await r.arrayBuffer());
  const nl = b.indexOf(10);
  const h = JSON.parse(b.subarray(0, nl).toString('utf8'));
  const body = b.subarray(nl + 1);
  assert.equal(body.length, h.shape[0] * h.shape[1] * 4, 'the body is rows x cols float32');
  const at = (i, k) => body.readFloatLE(4 * (i * h.shape[1] + k));
  return { h, at };
}

test('GET /graph?format=bin holds the JSON reply\'s numbers exactly, as float32 rows', async () => {
  const from = 117, to = 121;
  const g = await getJson(server.url, `/api/runs/${id}/graph?from=${from}&to=${to}`);
  const { h, at } = await getGraphBin(`/api/runs/${id}/graph?from=${from}&to=${to}&format=bin`);
  assert.deepEqual([h.n_prompt, h.n_output, h.from, h.to, h.dtype], [run.nPrompt, N_OUT, from, to, 'float32']);
  assert.deepEqual(h.shape, [to - from, run.nPrompt + to - 1]);
  // the masses are the JSON reply's, digit for digit
  assert.deepEqual(h.prompt_mass, g.prompt_mass);
  assert.deepEqual(h.output_mass, g.output_mass);
  let nonzero = 0;
  for (let i = 0; i < to - from; i++) {
    for (let k = 0; k < run.nPrompt; k++) {
      assert.equal(at(i, k), Math.fround(g.prompt[i][k]), `step ${from + i}, input ${k}`);
      if (at(i, k) > 0) nonzero++;
    }
    for (let j = 0; j < from + i; j++) assert.equal(at(i, run.nPrompt + j), Math.fround(g.output[i][j]), `step ${from + i}, output ${j}`);
    for (let j = from + i; j < to - 1; j++) assert.equal(at(i, run.nPrompt + j), 0, 'padding after the step\'s outputs');
  }
  assert.ok(nonzero > run.nPrompt, 'real rows, not zeros');
  // the whole graph (no range) names the range it holds; the sizes alone; errors as JSON
  const all = await getGraphBin(`/api/runs/${id}/graph?format=bin&layer=0&head=1`);
  assert.deepEqual([all.h.from, all.h.to, all.h.shape[0], all.h.shape[1]], [0, N_OUT, N_OUT, run.nPrompt + N_OUT - 1]);
  const one = await getJson(server.url, `/api/runs/${id}/graph?from=3&to=4&layer=0&head=1`);
  for (const k of [run.j0, run.j1, run.nPrompt - 1]) assert.equal(all.at(3, k), Math.fround(one.prompt[0][k]));
  const none = await getGraphBin(`/api/runs/${id}/graph?from=0&to=0&format=bin`);
  assert.deepEqual([none.h.shape[0], none.h.prompt_mass.length], [0, 0]);
  const bad = await fetch(`${server.url}/api/runs/${id}/graph?format=png`);
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).error.param, 'format');
});

test('the graph drawn from the binary rows: the hover shows the API\'s weight of the step\'s strongest source', async () => {
  const t = 150;
  await page.locator('#step').evaluate((s, t) => {
    s.value = String(t);
    s.dispatchEvent(new Event('input', { bubbles: true }));
  }, t);
  await page.waitForSelector(`#graph[data-step="${t}"][data-step-loaded="true"]`);
  const api = await getJson(server.url, `/api/runs/${id}/attention?step=${t}&norm=split`);
  const src = page.locator('#jump-sources button.lr-src').first();
  await page.waitForFunction((j0) => document.querySelector('#jump-sources button.lr-src')?.dataset.pos === String(j0), run.j0);
  // the sources list's title gives 4 decimals of the float32 weight the graph holds
  assert.match(await src.getAttribute('title'), new RegExp(`weight ${api.split.prompt[run.j0].toFixed(4)}`));
  const b = page.locator(`#graph .col-in button.token[data-index="${run.j0}"]`);
  await src.click();
  await b.hover();
  const tip = await page.locator('#tooltip').textContent();
  assert.ok(tip.includes(`normalized → ▶ step ${t + 1} (line width) ${Math.fround(api.split.prompt[run.j0]).toFixed(4)}`), tip);
});

test('without a Web Worker the rows are read and sorted on the main thread: the same graph', async () => {
  const p2 = await session.browser.newPage({ viewport: { width: 1400, height: 900 } });
  try {
    await p2.addInitScript(() => {
      delete window.Worker;
    });
    const workers = [];
    p2.on('worker', (w) => workers.push(w.url()));
    await p2.goto(`${server.url}/#run=${id}&step=117`);
    await p2.waitForSelector('#graph[data-status="done"][data-step="117"][data-step-loaded="true"]', { timeout: 30000 });
    await p2.waitForFunction((j0) => document.querySelector('#jump-sources button.lr-src')?.dataset.pos === String(j0), run.j0);
    assert.deepEqual(workers, [], 'no worker started');
    // the edges and the sources equal those the worker's rows give (the main page, same step)
    await page.locator('#step').evaluate((s) => {
      s.value = '117';
      s.dispatchEvent(new Event('input', { bubbles: true }));
    });
    await page.waitForSelector('#graph[data-step="117"][data-step-loaded="true"]');
    await page.waitForFunction((j0) => document.querySelector('#jump-sources button.lr-src')?.dataset.pos === String(j0), run.j0);
    const sources = (pg) => pg.evaluate(() => [...document.querySelectorAll('#jump-sources button.lr-src')].map((b) => b.title).join('\n'));
    assert.equal(await sources(p2), await sources(page));
    assert.equal(await p2.locator('#graph').getAttribute('data-edge-count'), await page.locator('#graph').getAttribute('data-edge-count'));
  } finally {
    await p2.close();
  }
});
