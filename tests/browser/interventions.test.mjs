// Interventions from the web UI in Chromium against a real `heed serve` on the
// bundled model: ablating a head (toolbar and Heads dialog) and knocking out
// attention to a token branch the open run from the current step and open the
// new run on its Effects tab, whose rows are checked against GET /effects; the
// knocked-out key has weight exactly 0 in the new run's attention rows; the
// graph's "attention rollout" line widths follow GET /rollout (SVG export).
// Screenshots go to test-output/browser/interventions-*.png.
//
// HEED_WEB_DIR=web/dist serves the UI from disk (no rebuild of heed needed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer, launchBrowser, getJson, screenshotPath } from './lib.mjs';

let server, browser, page, base;

const STEP = 3; // the branch step (0-based), as in the hash

async function generate(prompt, extra = {}) {
  const r = await fetch(server.url + '/api/runs', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: 10, temperature: 0, ...extra }),
  });
  assert.equal(r.status, 200, `POST /api/runs: ${r.status}`);
  const text = await r.text();
  const m = /event: done\ndata: (\{.*\})/.exec(text);
  assert.ok(m, `a done event in:\n${text.slice(-400)}`);
  return getJson(server.url, `/api/runs/${JSON.parse(m[1]).run_id}`);
}

/** The UI's label text for a token (src/model.ts displayLabel). */
function displayLabel(label) {
  if (label === undefined || label === null || label === '') return '∅';
  const s = label.replace(/\n/g, '↵').replace(/\t/g, '⇥').replace(/\r/g, '␍');
  return s.trim() === '' ? s.replace(/ /g, '␣') : s;
}

async function open(hash) {
  await page.goto('about:blank');
  await page.goto(`${server.url}/#${hash}`);
  await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
}

/** Waits for the branch run the UI generated and opened on its Effects tab; returns its document. */
async function branchOpened() {
  await page.waitForFunction(
    (b) => {
      const m = /run=([^&]+)/.exec(location.hash);
      return !!m && decodeURIComponent(m[1]) !== b;
    },
    base.id,
    { timeout: 30000 },
  );
  await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
  await page.waitForSelector('#view-effects[data-status="ready"]', { timeout: 30000 });
  assert.equal(await page.locator('#tab-effects').getAttribute('aria-selected'), 'true');
  const id = decodeURIComponent(/run=([^&]+)/.exec(await page.evaluate(() => location.hash))[1]);
  assert.notEqual(id, base.id);
  return getJson(server.url, `/api/runs/${encodeURIComponent(id)}`);
}

/** The Effects rows on screen equal GET /effects?base= and the two documents' tokens. */
async function checkEffects(run) {
  const eff = await getJson(server.url, `/api/runs/${encodeURIComponent(run.id)}/effects?base=${encodeURIComponent(base.id)}`);
  const rows = await page.locator('#view-effects tr.eff-row').evaluateAll((trs) =>
    trs.map((tr) => ({
      d: { ...tr.dataset },
      cls: tr.className,
      base: tr.querySelector('.eff-base-tok').textContent,
      run: tr.querySelector('.eff-run-tok').textContent,
      prob: tr.querySelector('.eff-prob').textContent,
    })),
  );
  assert.equal(rows.length, eff.steps.length);
  assert.equal(await page.locator('#view-effects').getAttribute('data-first-diff'), eff.first_diff === null ? '' : String(eff.first_diff));
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    const s = eff.steps[i];
    assert.equal(Number(r.d.step), s.step);
    assert.equal(Number(r.d.baseId), s.base_id);
    assert.equal(Number(r.d.id), s.id);
    assert.equal(Number(r.d.kl), s.kl_lower_bound, `step ${i} kl`);
    assert.equal(Number(r.d.pBase), s.base_token_prob_base);
    assert.equal(r.d.p === '' ? null : Number(r.d.p), s.base_token_prob);
    assert.equal(r.d.pBelow === '' ? null : Number(r.d.pBelow), s.base_token_prob_below);
    if (s.base_token_prob === null) assert.match(r.prob, /→ < /);
    assert.equal(r.cls.includes('first-diff'), eff.first_diff === s.step);
    assert.equal(r.cls.includes('differs'), s.differs);
    assert.equal(r.base, displayLabel(base.tokens[base.n_prompt + s.step].label));
    assert.ok(r.run.startsWith(displayLabel(run.tokens[run.n_prompt + s.step].label)));
  }
  // the KL column says it is a lower bound
  assert.match(await page.locator('#view-effects th.eff-kl-h').getAttribute('title'), /lower bound/i);
}

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  base = await generate('Once upon a time, there was a little');
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('ablate a head from the toolbar: a branch with the intervention opens on its Effects', async () => {
  await open(`run=${encodeURIComponent(base.id)}&step=${STEP}&layer=1&head=2`);
  assert.equal(await page.locator('#tab-effects').isHidden(), true); // not a branch
  const btn = page.locator('#ablate-head');
  assert.equal(await btn.isDisabled(), false);
  await btn.click();
  const run = await branchOpened();
  assert.deepEqual(run.interventions, [{ type: 'ablate', layer: 1, head: 2 }]);
  assert.equal(run.branch.run, base.id);
  assert.equal(run.branch.step, STEP);
  assert.equal(run.n_prompt, base.n_prompt);
  assert.deepEqual(run.params, base.params);
  // the reused outputs are the base's
  for (let t = 0; t < STEP; t++) assert.equal(run.tokens[run.n_prompt + t].id, base.tokens[base.n_prompt + t].id);
  await checkEffects(run);
  assert.match(await page.locator('#view-effects .eff-ivs').textContent(), /ablate layer 1, head 2/);
  await page.screenshot({ path: screenshotPath('interventions-effects') });
  // a row moves the step
  await page.locator('#view-effects tr.eff-row[data-step="5"]').click();
  assert.equal(await page.locator('#graph').getAttribute('data-step'), '5');
});

test('mean-ablate a head from the Heads dialog', async () => {
  await open(`run=${encodeURIComponent(base.id)}&step=${STEP}&view=heads`);
  await page.waitForSelector('#view-heads[data-status="ready"]', { timeout: 30000 });
  await page.locator('#view-heads .mg-cell[data-layer="2"][data-head="5"]').click();
  await page.waitForSelector('dialog.mg-dialog[open]');
  const b = page.locator('#mg-ablate-mean');
  assert.match(await b.textContent(), new RegExp(`step ${STEP + 1}`));
  await b.click();
  const run = await branchOpened();
  assert.deepEqual(run.interventions, [{ type: 'ablate_mean', layer: 2, head: 5 }]);
  assert.deepEqual(run.branch.run, base.id);
  assert.equal(run.branch.step, STEP);
  await checkEffects(run);
});

test('knock out attention to a token: exactly 0 at that key from the branch step on', async () => {
  const key = 2;
  await open(`run=${encodeURIComponent(base.id)}&step=${STEP}`);
  assert.equal(await page.locator('#knockout-token').isDisabled(), true); // nothing selected
  await page.locator(`#graph button.token[data-side="input"][data-index="${key}"]`).click();
  assert.equal(await page.locator('#graph').getAttribute('data-selected'), `input:${key}`);
  await page.locator('#knockout-token').click();
  const run = await branchOpened();
  assert.equal(run.interventions.length, 1);
  const iv = run.interventions[0];
  assert.equal(iv.type, 'knockout');
  assert.equal(iv.layer ?? null, null);
  assert.equal(iv.head ?? null, null);
  assert.deepEqual(iv.keys, [key, key]);
  const q0 = run.n_prompt - 1 + STEP;
  assert.equal(iv.queries[0], q0);
  assert.ok(iv.queries[1] >= run.n_prompt + run.n_output - 2);
  assert.equal(run.branch.step, STEP);
  await checkEffects(run);
  const rid = encodeURIComponent(run.id);
  // before the branch step the key is still attended to; from it on, in every layer and head, never
  const before = await getJson(server.url, `/api/runs/${rid}/attention?step=${STEP - 1}`);
  assert.ok(before.row[key] > 0);
  for (let t = STEP; t < run.n_output; t++) {
    const a = await getJson(server.url, `/api/runs/${rid}/attention?step=${t}`);
    assert.equal(a.pos, q0 + (t - STEP));
    assert.equal(a.row[key], 0, `step ${t}: mean over layers and heads`);
    const max = await getJson(server.url, `/api/runs/${rid}/attention?step=${t}&agg=max`);
    assert.equal(max.row[key], 0, `step ${t}: max over layers and heads`);
  }
  const l0 = await getJson(server.url, `/api/runs/${rid}/attention?step=${STEP}&layer=0&head=0`);
  assert.equal(l0.row[key], 0);
});

test('the graph draws the attention rollout of the step when asked', async () => {
  const step = 5;
  await open(`run=${encodeURIComponent(base.id)}&step=${step}&threshold=0.01&layer=1`);
  assert.equal(await page.locator('#graph').getAttribute('data-weights'), 'split');
  assert.equal(await page.locator('#sel-layer').isDisabled(), false);
  await page.locator('#edge-weights').selectOption('rollout');
  await page.waitForSelector('#graph[data-rollout="ready"]', { state: 'attached', timeout: 30000 });
  assert.equal(await page.locator('#graph').getAttribute('data-weights'), 'rollout');
  assert.equal(await page.locator('#sel-layer').isDisabled(), true); // rollout takes every layer
  assert.match(await page.evaluate(() => location.hash), /weights=rollout/);
  const P = base.n_prompt - 1 + step;
  assert.equal(await page.locator('#graph').getAttribute('data-rollout-pos'), String(P));
  const ro = (await getJson(server.url, `/api/runs/${encodeURIComponent(base.id)}/rollout?pos=${P}`)).rollout;
  assert.equal(ro.length, P + 1);
  // the edges: every position but BOS with a weight >= the threshold (float32, as the graph)
  const thr = Math.fround(0.01);
  const want = [];
  for (let k = 1; k <= P; k++) if (Math.fround(ro[k]) > 0 && Math.fround(ro[k]) >= thr) want.push(Math.fround(ro[k]));
  assert.ok(want.length > 0);
  assert.equal(Number(await page.locator('#graph').getAttribute('data-edge-count')), want.length);
  let io = 0;
  for (let k = 1; k < base.n_prompt; k++) if (Math.fround(ro[k]) > 0 && Math.fround(ro[k]) >= thr) io++;
  assert.equal(Number(await page.locator('#graph').getAttribute('data-edge-count-io')), io);
  // the exported SVG has those edges, each width 0.5 + 2.5 w
  const [svg] = await Promise.all([page.waitForEvent('download'), page.locator('#export-svg').click()]);
  const text = readFileSync(await svg.path(), 'utf8');
  assert.match(text, /attention rollout/);
  const edges = [...text.matchAll(/class="edge (io|oo)"[^>]*stroke-width="([\d.]+)"><title>([\d.]+)<\/title>/g)].map((m) => ({
    width: Number(m[2]),
    w: Number(m[3]),
  }));
  assert.equal(edges.length, want.length);
  const got = edges.map((e) => e.w).sort((a, b) => a - b);
  const exp = want.map((w) => Number(w.toFixed(4))).sort((a, b) => a - b);
  assert.deepEqual(got, exp);
  for (const e of edges) assert.ok(Math.abs(e.width - (0.5 + 2.5 * e.w)) < 0.01, `width ${e.width} for ${e.w}`);
  await page.screenshot({ path: screenshotPath('interventions-rollout') });
  // back to the normalized (split) rows: the selector is back
  await page.locator('#edge-weights').selectOption('split');
  assert.equal(await page.locator('#graph').getAttribute('data-weights'), 'split');
  assert.equal(await page.locator('#sel-layer').isDisabled(), false);
  const split = await getJson(server.url, `/api/runs/${encodeURIComponent(base.id)}/attention?step=${step}&norm=split&threshold=0.01&layer=1`);
  assert.equal(Number(await page.locator('#graph').getAttribute('data-edge-count')), split.edges.filter((e) => !(e[0] === 0)).length);
});
