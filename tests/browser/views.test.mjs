// The deep views of the web UI (the tabs above the main area) in Chromium
// against a real `heed serve` on the bundled model: each tab is opened by
// URL on a run made through the API, used, and checked against the API's own
// numbers (text shading vs /attention rows and columns, lens cells vs
// /logit-lens, zone counts vs /stats, tokens vs /api/tokenize, sampling
// survivors, compare alignment vs an LCS of the run tokens, data exports).
// Screenshots go to test-output/browser/views-*.png.
//
// HEED_WEB_DIR=web/dist serves the UI from disk (no rebuild of heed needed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer, launchBrowser, getJson, screenshotPath, setRange as setRangeOf } from './lib.mjs';

let server, browser, page, runA, runB;

// ---------------------------------------------------------------- helpers

async function generate(prompt, extra = {}) {
  const r = await fetch(server.url + '/api/runs', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: 12, temperature: 0, ...extra }),
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

/** Parses one CSV line (RFC 4180 quoting). */
function csvLine(line) {
  const out = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let v = '';
      i++;
      while (i < line.length) {
        if (line[i] === '"' && line[i + 1] === '"') (v += '"'), (i += 2);
        else if (line[i] === '"') break;
        else v += line[i++];
      }
      out.push(v);
      i += 2; // closing quote and comma
    } else {
      const j = line.indexOf(',', i);
      const end = j < 0 ? line.length : j;
      out.push(line.slice(i, end));
      i = end + 1;
    }
  }
  return out;
}

function lcsLength(a, b) {
  const dp = Array.from({ length: a.length + 1 }, () => new Array(b.length + 1).fill(0));
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) dp[i][j] = a[i - 1] === b[j - 1] ? dp[i - 1][j - 1] + 1 : Math.max(dp[i - 1][j], dp[i][j - 1]);
  return dp[a.length][b.length];
}

async function openView(view, run = runA, extra = '') {
  await page.goto('about:blank'); // a fresh page: no state (or ready flag) of the last view
  await page.mouse.move(0, 0);
  await page.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&view=${view}${extra}`);
  await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
  await page.waitForSelector(`#view-${view}[data-status="ready"]`, { timeout: 30000 });
}

const data = (sel, name) => page.locator(sel).getAttribute(`data-${name}`);

const setRange = (sel, value) => setRangeOf(page, sel, value);

/** Clicks a button that downloads; returns the file's bytes. */
async function download(sel) {
  const [d] = await Promise.all([page.waitForEvent('download'), page.locator(sel).click()]);
  return readFileSync(await d.path());
}

/** An .npy file's header dict and float32 values. */
function readNpy(bytes) {
  assert.deepEqual([...bytes.subarray(0, 8)], [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  const len = bytes[8] | (bytes[9] << 8);
  assert.equal((10 + len) % 64, 0, 'the header is padded to 64 bytes');
  const header = bytes.subarray(10, 10 + len).toString('latin1');
  assert.match(header, /^\{'descr': '<f4', 'fortran_order': False, 'shape': \(([\d, ]*)\), \} *\n$/);
  const shape = /'shape': \(([^)]*)\)/.exec(header)[1].split(',').filter((x) => x.trim() !== '').map(Number);
  const body = bytes.subarray(10 + len);
  const values = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
  assert.equal(values.length, shape.reduce((a, b) => a * b, 1));
  return { shape, values };
}

// ---------------------------------------------------------------- setup

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
  page.on('pageerror', (e) => console.error('page error:', e));
  runA = await generate('Once upon a time');
  runB = await generate('Once upon a day');
  assert.equal(runA.n_output, 12);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

// ---------------------------------------------------------------- tabs

test('the tab bar: nine tabs, arrow keys, the view in the URL', async () => {
  await page.goto(`${server.url}/#run=${encodeURIComponent(runA.id)}`);
  await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
  // a dense model's run: no Experts tab (tests/browser/models.test.mjs opens it on a mixture of experts)
  assert.equal(await page.locator('#tab-experts').isHidden(), true);
  const tabs = page.locator('#view-tabs [role="tab"]:not([hidden])');
  assert.equal(await page.locator('#view-tabs').getAttribute('role'), 'tablist');
  assert.deepEqual(await tabs.allTextContents(), ['Graph', 'Text', 'Logit lens', 'Statistics', 'Tokens', 'Sampling', 'Compare', 'Heatmap', 'Heads']);
  assert.equal(await page.locator('#tab-graph').getAttribute('aria-selected'), 'true');
  assert.equal(await page.locator('#panel-graph').getAttribute('role'), 'tabpanel');
  assert.equal(await page.locator('#panel-text').isHidden(), true);
  // one tab stop: the selected tab
  assert.equal(await page.locator('#tab-graph').getAttribute('tabindex'), '0');
  assert.equal(await page.locator('#tab-text').getAttribute('tabindex'), '-1');

  await page.locator('#tab-graph').focus();
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.locator('#tab-text').getAttribute('aria-selected'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-text');
  const ring = await page.evaluate(() => {
    const cs = getComputedStyle(document.activeElement);
    return cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0;
  });
  assert.ok(ring, 'the focused tab shows a focus ring');
  assert.match(new URL(page.url()).hash, /view=text/);
  assert.equal(await page.locator('#panel-text').isVisible(), true);
  assert.equal(await page.locator('#panel-graph').isHidden(), true);
  // the step did not move with the arrow key
  assert.equal(await page.locator('#graph').getAttribute('data-step'), String(runA.n_output - 1));
  await page.keyboard.press('End');
  assert.equal(await page.locator('#tab-heads').getAttribute('aria-selected'), 'true');
  await page.keyboard.press('ArrowRight'); // wraps
  assert.equal(await page.locator('#tab-graph').getAttribute('aria-selected'), 'true');
  assert.doesNotMatch(new URL(page.url()).hash, /view=/);
  await page.locator('#tab-lens').click();
  assert.match(new URL(page.url()).hash, /view=lens/);
  await page.locator('#tab-graph').click();
  // the graph is as it was
  assert.equal(await page.locator('button.token[data-side="output"]').count(), runA.n_output);
});

// ---------------------------------------------------------------- text

test('text view: observer shading follows the attention row, observed the column; freezing', async () => {
  await openView('text');
  const nPos = runA.n_prompt + runA.n_output - 1;
  assert.equal(Number(await data('#view-text', 'n-pos')), nPos);
  assert.equal(await page.locator('#view-text .tt').count(), runA.n_prompt + runA.n_output);
  const text = await page.locator('#view-text .tv-text').textContent();
  assert.ok(text.includes(runA.tokens[1].label.trim()), text);

  // observer: hover query P; the top-1 marker is the API row's argmax over the earlier tokens (BOS not in the scale)
  const P = nPos - 1;
  const { row } = await getJson(server.url, `/api/runs/${runA.id}/attention?pos=${P}`);
  assert.equal(row.length, P + 1);
  let best = 1;
  for (let k = 1; k < P; k++) if (row[k] > row[best]) best = k;
  await page.locator(`#view-text .tt[data-pos="${P}"]`).hover();
  await page.waitForFunction((p) => document.querySelector('#view-text').dataset.focus === String(p), P);
  const top1 = Number(await page.locator('#view-text .tt.rank1').getAttribute('data-pos'));
  assert.ok(row[top1] >= row[best] - 1e-3, `marked ${top1} (${row[top1]}) vs argmax ${best} (${row[best]})`);
  if (row[best] - Math.max(...row.slice(1, P).filter((_, i) => i + 1 !== best)) > 2e-3) assert.equal(top1, best);
  assert.equal(await page.locator('#view-text .tt.rank2').count(), 1);
  assert.equal(await page.locator('#view-text .tt.rank3').count(), 1);
  // the weight shown is the API's (float16 on the wire)
  const w = Number(await page.locator(`#view-text .tt[data-pos="${best}"]`).getAttribute('data-w'));
  assert.ok(Math.abs(w - row[best]) < 1e-3, `${w} vs ${row[best]}`);
  assert.equal(Number(await data('#view-text', 'shaded')), P);
  const bg = await page.locator(`#view-text .tt[data-pos="${top1}"]`).evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.match(bg, /rgba\(26, 86, 219, 0\.75/);
  // the tooltip names the position
  assert.match(await page.locator('#tooltip').textContent(), new RegExp(`pos\\s*${P}`));
  await page.screenshot({ path: screenshotPath('views-text-observer') });

  // freeze on P (double-click); hovering elsewhere keeps it
  await page.locator(`#view-text .tt[data-pos="${P}"]`).dblclick();
  assert.equal(await data('#view-text', 'frozen'), String(P));
  assert.equal(await page.locator('#tv-frozen').isVisible(), true);
  assert.match(await page.locator('#tv-frozen').textContent(), /Frozen.*click to unfreeze/);
  await page.locator('#view-text .tt[data-pos="2"]').hover();
  assert.equal(await data('#view-text', 'focus'), String(P));
  // the other mode freezes independently
  await page.locator('#view-text button[data-mode="observed"]').click();
  assert.equal(await data('#view-text', 'mode'), 'observed');
  assert.equal(await data('#view-text', 'frozen'), '');

  // observed: hover key K; the top-1 marker is the API column's argmax over the later queries
  const K = 2;
  const { col } = await getJson(server.url, `/api/runs/${runA.id}/attention?key=${K}`);
  assert.equal(col.length, nPos - K);
  let bi = 1;
  for (let i = 1; i < col.length; i++) if (col[i] > col[bi]) bi = i;
  await page.locator('#view-text .tt[data-pos="0"]').hover();
  await page.locator(`#view-text .tt[data-pos="${K}"]`).hover();
  await page.waitForFunction((k) => document.querySelector('#view-text').dataset.focus === String(k), K);
  const top1o = Number(await page.locator('#view-text .tt.rank1').getAttribute('data-pos'));
  assert.ok(col[top1o - K] >= col[bi] - 1e-3, `marked ${top1o} vs argmax ${K + bi}`);
  assert.equal(Number(await data('#view-text', 'shaded')), nPos - K - 1);
  await page.locator(`#view-text .tt[data-pos="${K}"]`).dblclick();
  assert.equal(await data('#view-text', 'frozen'), String(K));
  await page.screenshot({ path: screenshotPath('views-text-observed') });
  await page.locator('#view-text button[data-mode="observer"]').click();
  assert.equal(await data('#view-text', 'frozen'), String(P)); // remembered
  await page.keyboard.press('Escape');
  assert.equal(await data('#view-text', 'frozen'), '');
  await page.locator('#view-text button[data-mode="observed"]').click();
  assert.equal(await data('#view-text', 'frozen'), String(K));
  await page.locator('#tv-frozen').click();
  assert.equal(await data('#view-text', 'frozen'), '');

  // export: the dense matrix of the selection
  const npy = readNpy(await download('#export-npy'));
  assert.deepEqual(npy.shape, [nPos, nPos]);
  for (let k = 0; k <= P; k++) assert.ok(Math.abs(npy.values[P * nPos + k] - row[k]) < 1e-3);
  const csv = (await download('#export-csv')).toString('utf8');
  assert.equal(csv.split('\r\n').filter(Boolean).length, nPos + 1);
  const json = JSON.parse((await download('#export-json')).toString('utf8'));
  assert.deepEqual(json.shape, [nPos, nPos]);
});

test('text view: keyboard moves a cursor that shades like hovering', async () => {
  await openView('text');
  await page.locator('#view-text .tv-text').focus();
  const start = Number(await data('#view-text', 'focus'));
  assert.equal(start, runA.n_prompt + runA.n_output - 1); // the current step's token
  await page.keyboard.press('ArrowLeft');
  assert.equal(Number(await data('#view-text', 'focus')), start - 1);
  assert.equal(await page.locator('#graph').getAttribute('data-step'), String(runA.n_output - 1)); // not the step
  await page.keyboard.press('Enter');
  assert.equal(await data('#view-text', 'frozen'), String(start - 1));
  await page.keyboard.press('Escape');
  assert.equal(await data('#view-text', 'frozen'), '');
});

// ---------------------------------------------------------------- logit lens

test('logit lens: cells are the API top-1 labels, matches marked', async () => {
  await openView('lens', runA, '&step=3');
  const lens = await getJson(server.url, `/api/runs/${runA.id}/logit-lens`);
  assert.equal(Number(await data('#view-lens', 'n-layer')), lens.n_layer);
  assert.equal(Number(await data('#view-lens', 'n-step')), runA.n_output);
  const cells = await page.locator('#view-lens .lc').evaluateAll((els) =>
    els.map((e) => ({ step: +e.dataset.step, layer: +e.dataset.layer, text: e.querySelector('.lc-text').textContent, match: e.dataset.match === 'true', mark: !!e.querySelector('.lc-mark') })),
  );
  assert.ok(cells.length >= lens.n_layer * 3, `${cells.length} cells rendered`);
  for (const c of cells) {
    const L = lens.steps[c.step].layers[c.layer];
    assert.equal(c.text, displayLabel(L.top[0].label), `step ${c.step} layer ${c.layer}`);
    assert.equal(c.match, L.match);
    assert.equal(c.mark, L.match, 'a ✓ on the matches');
  }
  // top row is the last layer
  const first = await page.locator('#view-lens .lc').first().getAttribute('data-layer');
  assert.equal(Number(first), lens.n_layer - 1);
  // the current step's column is marked
  assert.ok((await page.locator('#view-lens .lc.current').count()) === lens.n_layer);
  // hover: the top 5 with probabilities
  await page.locator('#view-lens .lc[data-step="3"][data-layer="0"]').hover();
  const tip = await page.locator('#tooltip').textContent();
  for (const t of lens.steps[3].layers[0].top) assert.ok(tip.includes(displayLabel(t.label)), `${t.label} in ${tip}`);
  assert.match(tip, /\d+(\.\d+)?%/);
  await page.screenshot({ path: screenshotPath('views-lens') });
  // a click moves the step
  await page.locator('#view-lens .lc[data-step="5"][data-layer="1"]').click();
  await page.waitForFunction(() => document.querySelector('#graph').dataset.step === '5');
  assert.match(new URL(page.url()).hash, /step=5/);
  const npy = readNpy(await download('#export-npy'));
  assert.deepEqual(npy.shape, [lens.n_layer, runA.n_output]);
});

// ---------------------------------------------------------------- statistics

test('statistics: the zone histogram counts the API zones; heads, importance, PCA', async () => {
  await openView('stats');
  const s = await getJson(server.url, `/api/runs/${runA.id}/stats`);
  const want = { syntax_floor: 0, semantic_bridge: 0, structure_ripple: 0, none: 0 };
  for (const t of s.tokens) want[t.zone]++;
  let sum = 0;
  for (const z of Object.keys(want)) {
    const n = Number(await data(`#view-stats .zone-row[data-zone="${z}"]`, 'count'));
    assert.equal(n, want[z], z);
    sum += n;
  }
  assert.equal(sum, s.tokens.length);
  // the coloured tokens carry their zone letter
  assert.equal(await page.locator('#view-stats .zt').count(), s.tokens.length);
  const z1 = await page.locator('#view-stats .zt[data-pos="1"]').getAttribute('class');
  assert.ok(z1.includes(`z-${s.tokens[1].zone}`), z1);
  // importance bars: one per prompt token, the API's values
  assert.equal(await page.locator('#view-stats .imp-row').count(), runA.n_prompt);
  const v2 = Number(await data('#view-stats .imp-row[data-pos="2"]', 'value'));
  assert.ok(Math.abs(v2 - s.input_importance[2]) < 1e-6);
  assert.equal(Number(await data('#view-stats', 'pca-n')), s.tokens.length);
  assert.equal(Number(await data('#view-stats', 'es-n')), s.tokens.length);
  // the head table sorts by a score
  assert.equal(await page.locator('#view-stats .head-table tbody tr').count(), s.head_types.length);
  await page.locator('#view-stats button.sort[data-key="prev"]').click();
  const maxPrev = Math.max(...s.head_types.map((h) => h.prev));
  const firstPrev = Number(await page.locator('#view-stats .head-table tbody tr:first-child td.score').first().textContent());
  assert.ok(Math.abs(firstPrev - maxPrev) < 1e-3);
  assert.equal(await page.locator('#view-stats th:has(button[data-key="prev"])').getAttribute('aria-sort'), 'descending');
  await page.screenshot({ path: screenshotPath('views-stats') });
  // a row selects that head
  const row = page.locator('#view-stats .head-table tbody tr').first();
  const [L, H] = [await row.getAttribute('data-layer'), await row.getAttribute('data-head')];
  await row.click();
  await page.waitForFunction(([l, h]) => new URL(location.href).hash.includes(`layer=${l}&head=${h}`), [L, H]);
  assert.equal(await page.locator('#sel-layer').inputValue(), L);
  await page.waitForSelector('#view-stats[data-status="ready"]');
  const s2 = await getJson(server.url, `/api/runs/${runA.id}/stats?layer=${L}&head=${H}`);
  const n2 = s2.tokens.filter((t) => t.zone === 'syntax_floor').length;
  await page.waitForFunction((n) => document.querySelector('#view-stats .zone-row[data-zone="syntax_floor"]')?.dataset.count === String(n), n2);
  await page.locator('#sel-layer').selectOption({ index: 0 });
});

// ---------------------------------------------------------------- tokens

test('tokens view: the ids and bytes of /api/tokenize', async () => {
  await openView('tokens');
  const textIn = 'Once upon a time, café';
  await page.locator('#prompt').fill(textIn);
  const tok = await (
    await fetch(server.url + '/api/tokenize', { method: 'POST', body: JSON.stringify({ text: textIn }) })
  ).json();
  await page.waitForFunction((n) => document.querySelector('#view-tokens').dataset.count === String(n) && document.querySelector('#view-tokens').dataset.status === 'ready', tok.ids.length);
  const ids = await page.locator('#view-tokens .tk').evaluateAll((els) => els.map((e) => Number(e.dataset.id)));
  assert.deepEqual(ids, tok.ids);
  const hex = (b) => b.map((x) => x.toString(16).padStart(2, '0')).join(' ');
  const enc = (t) => (Array.isArray(t.bytes) ? t.bytes : [...new TextEncoder().encode(t.piece.replace(/\u2581/g, ' '))]);
  for (let i = 1; i < tok.tokens.length; i++)
    assert.equal(await page.locator(`#view-tokens .tk[data-index="${i}"] .tk-bytes`).textContent(), hex(enc(tok.tokens[i])) || '–');
  assert.match(await page.locator('#view-tokens .tk-summary').textContent(), new RegExp(`^${tok.ids.length} tokens`));
  await page.screenshot({ path: screenshotPath('views-tokens') });
  // the open run's prompt
  await page.locator('#tk-src-run').check();
  await page.waitForFunction((n) => document.querySelector('#view-tokens').dataset.count === String(n), runA.n_prompt);
  const ids2 = await page.locator('#view-tokens .tk').evaluateAll((els) => els.map((e) => Number(e.dataset.id)));
  assert.deepEqual(ids2, runA.prompt_ids);
  await page.locator('#tk-src-box').check();
  await page.locator('#prompt').fill('The old wizard walked through the forest');
});

// ---------------------------------------------------------------- sampling

test('sampling: top-k 3 leaves 3 survivors; choosing a token branches a run', async () => {
  await openView('sampling', runA, '&step=2');
  const c = await getJson(server.url, `/api/runs/${runA.id}/candidates?step=2`);
  assert.equal(await page.locator('#view-sampling button.cand').count(), c.candidates.length);
  // the run was greedy: one survivor
  assert.equal(await data('#view-sampling', 'survivors'), '1');
  await setRange('#samp-temp', 1);
  await setRange('#samp-topp', 1);
  await setRange('#samp-minp', 0);
  await setRange('#samp-topk', 3);
  assert.equal(await data('#view-sampling', 'survivors'), '3');
  assert.equal(await page.locator('#view-sampling button.cand[data-kept="true"]').count(), 3);
  const kept = await page.locator('#view-sampling button.cand[data-kept="true"]').evaluateAll((els) => els.map((e) => Number(e.dataset.id)));
  assert.deepEqual(kept, c.candidates.slice(0, 3).map((x) => x.id));
  await setRange('#samp-topk', 0);
  await setRange('#samp-minp', 0.05);
  const wantMinP = c.candidates.filter((x) => x.prob >= 0.05 * c.candidates[0].prob - 1e-12).length;
  assert.equal(Number(await data('#view-sampling', 'survivors')), wantMinP);
  await setRange('#samp-topk', 3);
  await setRange('#samp-minp', 0);
  await page.screenshot({ path: screenshotPath('views-sampling') });

  // choose the second candidate at step 2: a new run with outputs 0, 1 reused and token 2 forced
  const pick = c.candidates[1];
  await page.locator(`#view-sampling button.cand[data-id="${pick.id}"]`).click();
  assert.equal(await page.locator(`#view-sampling button.cand[data-id="${pick.id}"]`).getAttribute('aria-pressed'), 'true');
  await page.locator('#choose-token').click();
  await page.waitForFunction((id) => {
    const m = /run=([^&]+)/.exec(location.hash);
    return m && decodeURIComponent(m[1]) !== id && document.querySelector('#graph').dataset.status === 'done';
  }, runA.id, { timeout: 60000 });
  const newId = decodeURIComponent(/run=([^&]+)/.exec(new URL(page.url()).hash)[1]);
  const branched = await getJson(server.url, `/api/runs/${newId}`);
  assert.deepEqual(branched.output_ids.slice(0, 2), runA.output_ids.slice(0, 2));
  assert.equal(branched.output_ids[2], pick.id);
  assert.match(new URL(page.url()).hash, /view=sampling/);
  assert.match(new URL(page.url()).hash, /step=2/);

  // resample here (seeded) from the original run
  await openView('sampling', runA, '&step=4');
  await setRange('#samp-temp', 1);
  await setRange('#samp-topk', 3);
  await page.locator('#samp-seed').fill('7');
  await page.locator('#resample').click();
  await page.waitForFunction((id) => {
    const m = /run=([^&]+)/.exec(location.hash);
    return m && decodeURIComponent(m[1]) !== id && document.querySelector('#graph').dataset.status === 'done';
  }, runA.id, { timeout: 60000 });
  const rid = decodeURIComponent(/run=([^&]+)/.exec(new URL(page.url()).hash)[1]);
  const re = await getJson(server.url, `/api/runs/${rid}`);
  assert.deepEqual(re.output_ids.slice(0, 4), runA.output_ids.slice(0, 4));
  const c4 = await getJson(server.url, `/api/runs/${runA.id}/candidates?step=4`);
  assert.ok(c4.candidates.slice(0, 3).some((x) => x.id === re.output_ids[4]), 'token 4 is one of the top-3');
});

// ---------------------------------------------------------------- compare

test('compare: two runs differing in one word align by LCS, with B − A per token', async () => {
  const t = 3;
  await openView('compare', runA, `&step=${t}&cmp=${encodeURIComponent(runB.id)}`);
  const ida = runA.tokens.map((x) => x.id);
  const idb = runB.tokens.map((x) => x.id);
  assert.equal(Number(await data('#view-compare', 'matched')), lcsLength(ida, idb));
  assert.equal(await page.locator('#cmp-run').inputValue(), runB.id);
  // the changed word: a gap on each side
  const w = runA.n_prompt - 1; // "time" vs "day"
  assert.notEqual(ida[w], idb[w]);
  assert.equal(await page.locator(`#view-compare .cmp-row[data-a="${w}"]`).getAttribute('data-b'), '');
  assert.equal(await page.locator(`#view-compare .cmp-row[data-b="${w}"]`).getAttribute('data-a'), '');
  assert.equal(await page.locator(`#view-compare .cmp-row[data-a="${w}"] .gapcell`).count(), 1);
  // B − A on an aligned token equals the API's split rows
  const sa = (await getJson(server.url, `/api/runs/${runA.id}/attention?step=${t}&norm=split`)).split;
  const stepB = Number(await data('#view-compare', 'step-b'));
  const sb = (await getJson(server.url, `/api/runs/${runB.id}/attention?step=${stepB}&norm=split`)).split;
  const d = Number(await data('#view-compare .cmp-row[data-a="1"]', 'd'));
  assert.ok(Math.abs(d - (sb.prompt[1] - sa.prompt[1])) < 1e-6, `${d} vs ${sb.prompt[1] - sa.prompt[1]}`);
  const dw = Number(await data(`#view-compare .cmp-row[data-a="${w}"]`, 'd'));
  assert.ok(Math.abs(dw + sa.prompt[w]) < 1e-6, 'a gap in B: the difference is −A');
  const txt = await page.locator('#view-compare .cmp-row[data-a="1"] .diff-text').textContent();
  assert.match(txt, /^[+−]?\d\.\d{3}$/);
  await page.screenshot({ path: screenshotPath('views-compare') });
  // picking nothing clears; the URL keeps the second run
  assert.match(new URL(page.url()).hash, new RegExp(`cmp=${runB.id}`));
  await page.locator('#cmp-run').selectOption('');
  assert.doesNotMatch(new URL(page.url()).hash, /cmp=/);
});

// ---------------------------------------------------------------- heatmap, heads

test('heatmap and heads tabs open on the run; heatmap data exports as NPY', async () => {
  await openView('heatmap');
  await page.screenshot({ path: screenshotPath('views-heatmap') });
  const nPos = runA.n_prompt + runA.n_output - 1;
  const npy = readNpy(await download('#export-npy'));
  assert.deepEqual(npy.shape, [nPos, nPos]);
  await openView('heads');
  await page.screenshot({ path: screenshotPath('views-heads') });
});

// ---------------------------------------------------------------- graph export

test('the graph view exports its split rows as CSV, JSON and NPY', async () => {
  await page.goto(`${server.url}/#run=${encodeURIComponent(runA.id)}`);
  await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
  const g = await getJson(server.url, `/api/runs/${runA.id}/graph`);
  const npy = readNpy(await download('#export-npy'));
  const cols = g.n_prompt + g.n_output;
  assert.deepEqual(npy.shape, [g.n_output, cols]);
  for (let t = 0; t < g.n_output; t++) {
    for (let k = 0; k < g.n_prompt; k++) assert.ok(Math.abs(npy.values[t * cols + k] - g.prompt[t][k]) < 1e-6);
    for (let j = 0; j < t; j++) assert.ok(Math.abs(npy.values[t * cols + g.n_prompt + j] - g.output[t][j]) < 1e-6);
  }
  const json = JSON.parse((await download('#export-json')).toString('utf8'));
  assert.equal(json.n_prompt, g.n_prompt);
  assert.equal(json.prompt.length, g.n_output);
  const csv = (await download('#export-csv')).toString('utf8').split('\r\n').filter(Boolean);
  assert.equal(csv.length, g.n_output + 1);
  assert.equal(csvLine(csv[0]).length, cols + 1);
  assert.equal(csvLine(csv[1]).length, cols + 1);
  assert.ok(Math.abs(Number(csvLine(csv[1])[2]) - g.prompt[0][1]) < 1e-6);
});
