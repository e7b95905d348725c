// Attribution in the web UI, in Chromium against a real `heed serve` on the
// bundled model: the graph's measure switched to value-weighted attention
// (legend, hover and hash say so; a hovered weight is the API's
// /graph?measure=value number; the edge count is the API's at the
// threshold), and "Verify sources" on the current step (a table of k rows,
// each the API's /verify numbers). The Sources tab of a run without
// documents says it has none; documents typed or loaded in the Generate form
// reach the request, and the Sources tab shades each sentence's spans and
// shows the verified drops (/provenance, ?verify=1). The /verify and
// /provenance parts are skipped (saying so) against a server that lacks
// those routes. Screenshots: test-output/browser/attribution-*.png.
//
// HEED_BIN=build-ui/heed picks the binary, HEED_WEB_DIR=web/dist serves the UI from disk.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openSession, closeSession, getJson, screenshotPath } from './lib.mjs';

let session, server, page, run;

const K = 5;

before(async () => {
  session = await openSession();
  ({ server, page } = session);
});

after(() => closeSession(session));

/** Whether the server has a route (an unknown one answers 404 with code not_found). */
async function hasRoute(base, path) {
  const r = await fetch(base + path);
  if (r.status !== 404) return true;
  const j = await r.json().catch(() => null);
  return j?.error?.code !== 'not_found';
}

/** The UI's label text for a token (src/model.ts displayLabel). */
function displayLabel(label) {
  if (label === undefined || label === null || label === '') return '∅';
  const s = label.replace(/\n/g, '↵').replace(/\t/g, '⇥').replace(/\r/g, '␍');
  return s.trim() === '' ? s.replace(/ /g, '␣') : s;
}

test('value-weighted line widths: legend, hover and edges are the API’s measure=value', async () => {
  await page.goto(server.url + '/');
  await page.waitForFunction(() => /stories260K/.test(document.querySelector('#model-info')?.textContent || ''));
  await page.locator('#prompt').fill('Once upon a time, there was a little cat');
  await page.locator('#max-tokens-num').fill('8');
  await page.locator('#max-tokens-num').dispatchEvent('change');
  await page.locator('#generate').click();
  await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
  const id = decodeURIComponent(/run=([^&]+)/.exec(new URL(page.url()).hash)[1]);
  run = await getJson(server.url, `/api/runs/${encodeURIComponent(id)}`);
  assert.equal(await page.locator('#graph').getAttribute('data-measure'), 'attention');

  await page.locator('#measure').selectOption('value');
  await page.waitForSelector('#graph[data-measure="value"][data-status="done"]', { state: 'attached', timeout: 30000 });
  assert.match(new URL(page.url()).hash, /measure=value/);
  assert.match(await page.locator('#lw-legend').textContent(), /normalized value-weighted attention/);
  assert.equal(await page.locator('#measure-note').isHidden(), true);

  const t = run.n_output - 1;
  assert.equal(await page.locator('#graph').getAttribute('data-step'), String(t));
  const g = await getJson(server.url, `/api/runs/${encodeURIComponent(id)}/graph?measure=value`);
  const ga = await getJson(server.url, `/api/runs/${encodeURIComponent(id)}/graph`);
  // the input with the largest value-weighted split weight at the current step
  let k = 1;
  for (let i = 1; i < g.prompt[t].length; i++) if (g.prompt[t][i] > g.prompt[t][k]) k = i;
  await page.locator(`button.token[data-side="input"][data-index="${k}"]`).hover();
  const tip = page.locator('#tooltip');
  await tip.waitFor({ state: 'visible' });
  const text = await tip.textContent();
  assert.match(text, /measure value-weighted/);
  assert.doesNotMatch(text, /raw attention/);
  const m = /normalized value-weighted → ▶ step (\d+) \(line width\)\s*([\d.]+)/.exec(text);
  assert.ok(m, text);
  assert.equal(Number(m[1]), t + 1);
  assert.equal(m[2], g.prompt[t][k].toFixed(4), `hover ${m[2]} vs the API's measure=value ${g.prompt[t][k]}`);
  // the measure changes the number: the attention row differs somewhere
  assert.ok(g.prompt[t].some((w, i) => Math.abs(w - ga.prompt[t][i]) > 1e-4), 'value-weighted rows differ from attention');

  // the edges drawn are the API's value-weighted weights >= the threshold (float32, as the UI compares)
  const thr = Math.fround(Number(await page.locator('#threshold').inputValue()));
  const f = (w) => Math.fround(w);
  const io = g.prompt[t].filter((w, i) => i > 0 && f(w) > 0 && f(w) >= thr).length;
  const oo = g.output[t].filter((w) => f(w) > 0 && f(w) >= thr).length;
  assert.equal(await page.locator('#graph').getAttribute('data-edge-count-io'), String(io));
  assert.equal(await page.locator('#graph').getAttribute('data-edge-count-oo'), String(oo));
  await page.screenshot({ path: screenshotPath('attribution-value') });

  // the hash reopens it; back to attention: the hover says attention
  await page.goto('about:blank');
  await page.goto(`${server.url}/#run=${encodeURIComponent(id)}&measure=value`);
  await page.waitForSelector('#graph[data-measure="value"][data-status="done"]', { state: 'attached', timeout: 30000 });
  assert.equal(await page.locator('#measure').inputValue(), 'value');
  await page.locator('#measure').selectOption('attention');
  await page.waitForSelector('#graph[data-measure="attention"][data-status="done"]', { state: 'attached', timeout: 30000 });
  assert.doesNotMatch(new URL(page.url()).hash, /measure=/);
  await page.locator(`button.token[data-side="input"][data-index="${k}"]`).hover();
  await page.waitForFunction(() => /measure attention/.test(document.querySelector('#tooltip')?.textContent || ''));
  assert.doesNotMatch(await tip.textContent(), /value-weighted/);
});

test('Verify sources: k rows, each the API’s ablation numbers', async (t) => {
  assert.ok(run, 'the first test generated a run');
  if (!(await hasRoute(server.url, `/api/runs/${encodeURIComponent(run.id)}/verify?step=0&k=1`))) {
    t.skip('this server has no /verify route yet');
    return;
  }
  const step = run.n_output - 1;
  await page.goto('about:blank');
  await page.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&step=${step}&measure=value`);
  await page.waitForSelector('#graph[data-measure="value"][data-status="done"]', { state: 'attached', timeout: 30000 });
  assert.equal(await page.locator('#verify-panel').isHidden(), true);
  await page.locator('#verify-sources').click();
  await page.waitForSelector('#verify-panel[data-status="ready"], #verify-panel[data-status="error"]', { timeout: 30000 });
  assert.equal(await page.locator('#verify-panel').getAttribute('data-status'), 'ready', await page.locator('#verify-panel .vf-status').textContent());
  assert.equal(await page.locator('#verify-panel').getAttribute('data-step'), String(step));
  assert.equal(await page.locator('#verify-panel').getAttribute('data-measure'), 'value');
  const api = await getJson(server.url, `/api/runs/${encodeURIComponent(run.id)}/verify?step=${step}&k=${K}&measure=value`);
  const rows = await page.locator('#verify-table tr.vf-row').evaluateAll((trs) =>
    trs.map((tr) => ({ d: { ...tr.dataset }, src: tr.querySelector('.vf-src').textContent, weight: tr.querySelector('.vf-weight').textContent, still: tr.querySelector('.vf-still').textContent })),
  );
  const avail = run.n_prompt + step; // keys of the step's query
  assert.equal(rows.length, Math.min(K, avail));
  assert.equal(rows.length, api.sources.length);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    const s = api.sources[i];
    assert.equal(Number(r.d.pos), s.pos);
    assert.equal(Number(r.d.drop), s.drop);
    assert.equal(r.d.still, String(s.still_chosen));
    assert.equal(r.src, `“${displayLabel(s.label)}”`);
    assert.equal(r.weight, `value-weighted ${s.weight.toFixed(4)}`);
    assert.equal(r.still.startsWith('yes'), s.still_chosen);
  }
  await page.screenshot({ path: screenshotPath('attribution-verify') });
  // another step: the panel says to press again (nothing is fetched by moving)
  await page.keyboard.press('Home');
  await page.waitForSelector('#verify-panel[data-step="0"][data-status="idle"]', { timeout: 5000 });
  await page.locator('#verify-close').click();
  assert.equal(await page.locator('#verify-panel').isHidden(), true);
});

test('Sources of a run without documents says there are none', async (t) => {
  assert.ok(run, 'the first test generated a run');
  if (!(await hasRoute(server.url, `/api/runs/${encodeURIComponent(run.id)}/provenance`))) {
    t.skip('this server has no /provenance route yet');
    return;
  }
  // a completion run: no Sources tab unless asked for in the hash
  await page.goto('about:blank');
  await page.goto(`${server.url}/#run=${encodeURIComponent(run.id)}&view=sources`);
  await page.waitForSelector('#view-sources[data-status="ready"]', { timeout: 30000 });
  assert.equal(await page.locator('#view-sources').getAttribute('data-n-docs'), '0');
  assert.match(await page.locator('#view-sources .prov-none').textContent(), /no documents/);
  assert.equal(await page.locator('#prov-verify').isDisabled(), true);
});

test('documents from the Generate form reach the run; Sources shades each sentence’s spans and verifies them', async (t) => {
  if (!(await hasRoute(server.url, `/api/runs/${encodeURIComponent(run.id)}/provenance`))) {
    t.skip('this server has no /provenance route yet');
    return;
  }
  let body = null;
  const onReq = (r) => {
    if (r.method() === 'POST' && /\/api\/runs$/.test(r.url())) body = JSON.parse(r.postData());
  };
  page.on('request', onReq);
  try {
    await page.goto('about:blank');
    await page.goto(server.url + '/');
    await page.waitForFunction(() => /stories260K/.test(document.querySelector('#model-info')?.textContent || ''));
    await page.locator('#documents summary').click();
    await page.locator('#doc-add').click();
    await page.locator('#doc-list .doc-name').first().fill('tom');
    await page.locator('#doc-list .doc-text').first().fill('Tom had a big dog. The dog liked to run in the park.');
    await page.locator('#doc-file').setInputFiles({ name: 'lily.txt', mimeType: 'text/plain', buffer: Buffer.from('Lily had a red ball. She played with it every day.') });
    await page.waitForFunction(() => document.querySelectorAll('#doc-list fieldset.doc-item').length === 2);
    // a refused document is said beside it and not sent
    await page.locator('#doc-list .doc-name').nth(1).fill('tom');
    await page.locator('#generate').click();
    assert.equal(await page.locator('#documents-msg').isVisible(), true);
    assert.match(await page.locator('#documents-msg').textContent(), /Two documents are named “tom”/);
    assert.equal(await page.locator('#doc-list .doc-name').nth(1).getAttribute('aria-invalid'), 'true');
    assert.equal(body, null);
    await page.locator('#doc-list .doc-name').nth(1).fill('lily');
    assert.equal(await page.locator('#documents-msg').isVisible(), false);

    await page.locator('#prompt').fill('One day, Tom and Lily went to the park.');
    await page.locator('#max-tokens-num').fill('24');
    await page.locator('#max-tokens-num').dispatchEvent('change');
    await page.locator('#generate').click();
    await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
    assert.deepEqual(body.documents, [
      { name: 'tom', text: 'Tom had a big dog. The dog liked to run in the park.' },
      { name: 'lily', text: 'Lily had a red ball. She played with it every day.' },
    ]);
    assert.equal(body.prompt, 'One day, Tom and Lily went to the park.');
    assert.equal(await page.locator('#tab-sources').isVisible(), true);
    await page.locator('#tab-sources').click();
    await page.waitForSelector('#view-sources[data-status="ready"]', { timeout: 30000 });
    const id = decodeURIComponent(/run=([^&]+)/.exec(new URL(page.url()).hash)[1]);
    const doc = await getJson(server.url, `/api/runs/${encodeURIComponent(id)}`);
    const prov = await getJson(server.url, `/api/runs/${encodeURIComponent(id)}/provenance`);
    assert.deepEqual(prov.documents.map((d) => d.name), ['tom', 'lily']);
    assert.equal(await page.locator('#view-sources section.prov-doc').count(), 2);
    // each document shows its tokens, the run's labels
    const docText = await page.locator('#view-sources section.prov-doc').first().locator('.prov-doc-text').textContent();
    const d0 = prov.documents[0];
    assert.equal(docText, doc.tokens.slice(d0.first, d0.first + d0.n_tok).map((x) => x.label).join(''));
    assert.equal(await page.locator('#view-sources button.prov-sent').count(), prov.sentences.length);
    assert.ok(prov.sentences.length > 0, 'the run has a sentence');
    // every sentence: selecting it shades its sources' tokens, the top one double-underlined
    for (let i = 0; i < prov.sentences.length; i++) {
      const s = prov.sentences[i];
      await page.locator(`#view-sources button.prov-sent[data-index="${i}"]`).click();
      assert.equal(await page.locator(`#view-sources button.prov-sent[data-index="${i}"]`).getAttribute('aria-pressed'), 'true');
      const shaded = await page.locator('#view-sources .prov-tok.src').evaluateAll((els) => els.map((e) => Number(e.dataset.pos)));
      const want = new Set();
      for (const q of s.sources) if (q.score > 0) for (let p = q.first; p < q.first + q.n_tok; p++) want.add(p);
      assert.deepEqual(shaded.sort((a, b) => a - b), [...want].sort((a, b) => a - b));
      const rows = await page.locator('#view-sources tr.prov-src').evaluateAll((trs) => trs.map((tr) => ({ ...tr.dataset })));
      assert.deepEqual(rows.map((r) => [r.doc, Number(r.first), Number(r.nTok), Number(r.score)]), s.sources.map((q) => [q.doc, q.first, q.n_tok, q.score]));
    }
    await page.screenshot({ path: screenshotPath('attribution-sources') });
    // Verify top sources: each sentence's drop, as the API's verify=1
    await page.locator('#prov-verify').click();
    await page.waitForSelector('#view-sources[data-verified="yes"]', { timeout: 30000 });
    const pv = await getJson(server.url, `/api/runs/${encodeURIComponent(id)}/provenance?verify=1`);
    const sel = Number(await page.locator('#view-sources').getAttribute('data-selected'));
    const v = pv.sentences[sel].verified;
    if (v) {
      const verdict = await page.locator('#view-sources .prov-verdict').textContent();
      const num = Math.abs(v.drop) >= 0.01 ? Math.abs(v.drop).toFixed(2) : Math.abs(v.drop).toPrecision(2);
      assert.ok(verdict.includes(`${v.drop >= 0 ? 'falls' : 'rises'} by ${num} nats`), verdict);
    }
    assert.equal(await page.locator('#view-sources .prov-sent-verified').count(), pv.sentences.filter((s) => s.verified).length);
    await page.screenshot({ path: screenshotPath('attribution-sources-verified') });
  } finally {
    page.off('request', onReq);
  }
});
