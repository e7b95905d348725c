// Help for newcomers and the fingerprint manifold, in Chromium against a real
// `heed serve` on the bundled model: the glossary opens from the header and
// lists every term, each tab's "?" page opens and Esc closes it (the focus
// goes back), every control of the page has a title or an aria-label, and
// the Statistics tab's manifold projects two runs, shows the zones in its
// legend, toggles to clusters, and a point opens its run at its step.
// Screenshots go to test-output/browser/help-*.png.
//
// HEED_WEB_DIR=web/dist serves the UI from disk (no rebuild of heed needed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { openSession, closeSession, getJson, root, screenshotPath } from './lib.mjs';

let s, page, runA, runB;

async function generate(prompt) {
  const r = await fetch(s.server.url + '/api/runs', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: 16, temperature: 0 }),
  });
  assert.equal(r.status, 200, `POST /api/runs: ${r.status}`);
  const m = /event: done\ndata: (\{.*\})/.exec(await r.text());
  assert.ok(m, 'a done event');
  return getJson(s.server.url, `/api/runs/${JSON.parse(m[1]).run_id}`);
}

before(async () => {
  s = await openSession();
  page = s.page;
  runA = await generate('Once upon a time there was a little girl');
  runB = await generate('The cat sat on the mat and looked at the dog');
});

after(async () => {
  await closeSession(s);
});

const GLOSSARY_TERMS = ['token', 'attention', 'head', 'layer', 'bos', 'normalization', 'logit-lens', 'zones', 'fingerprints'];
const TABS = ['graph', 'text', 'lens', 'stats', 'tokens', 'sampling', 'compare', 'heatmap', 'heads', 'experts', 'effects', 'sources'];

test('the glossary opens from the header, lists every term, and Esc closes it', async () => {
  await page.goto(s.server.url + '/');
  await page.waitForSelector('#help-glossary');
  await page.click('#help-glossary');
  await page.waitForSelector('#help-dialog[open][data-page="glossary"]');
  const terms = await page.locator('#help-dialog dt[data-term]').evaluateAll((els) => els.map((e) => e.dataset.term));
  for (const t of GLOSSARY_TERMS) assert.ok(terms.includes(t), `the glossary has "${t}"`);
  const texts = await page.locator('#help-dialog dd').allTextContents();
  assert.ok(texts.every((x) => x.trim().length > 40), 'every entry is explained');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'help-close', 'the focus is in the dialog');
  await page.screenshot({ path: screenshotPath('help-glossary') });
  await page.keyboard.press('Escape');
  await page.waitForSelector('#help-dialog:not([open])', { state: 'attached' });
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'help-glossary', 'the focus goes back to the button');
});

test('each tab has a "?" page that opens and links into the glossary', async () => {
  await page.goto(`${s.server.url}/#run=${encodeURIComponent(runA.id)}`);
  await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
  for (const v of TABS) {
    const b = page.locator(`#panel-${v} > button.view-help[data-help="${v}"]`);
    assert.equal(await b.count(), 1, `a "?" button in #panel-${v}`);
    assert.match((await b.getAttribute('title')) ?? '', /How to read/);
    assert.ok(((await page.locator(`#tab-${v}`).getAttribute('title')) ?? '').length > 10, `#tab-${v} has a title`);
    // open it where it is shown, else through the same handler (a hidden panel's button cannot be clicked)
    if (await b.isVisible()) await b.click();
    else await b.evaluate((e) => e.click());
    await page.waitForSelector(`#help-dialog[open][data-page="tab-${v}"]`);
    const body = await page.locator('#help-body').textContent();
    assert.ok(body.length > 150, `the ${v} page says something (${body.length} chars)`);
    if (v === 'stats') await page.screenshot({ path: screenshotPath('help-tab-stats') });
    await page.keyboard.press('Escape');
    await page.waitForSelector('#help-dialog:not([open])', { state: 'attached' });
  }
  // the Graph page's words open the glossary at their entry
  await page.click('#panel-graph > .view-help');
  await page.click('#help-dialog .help-term[data-term="normalization"]');
  await page.waitForSelector('#help-dialog[open][data-page="glossary"]');
  assert.match(await page.locator('#help-dialog dt[data-term="normalization"] + dd').textContent(), /BOS/);
  await page.keyboard.press('Escape');
  // the keyboard reaches the "?" of the open tab
  await page.locator('#panel-graph > .view-help').focus();
  await page.keyboard.press('Enter');
  await page.waitForSelector('#help-dialog[open][data-page="tab-graph"]');
  await page.keyboard.press('Escape');
});

test('every control of the page has a title or an aria-label', async () => {
  await page.goto(`${s.server.url}/#run=${encodeURIComponent(runA.id)}&view=stats`);
  await page.waitForSelector('#view-manifold[data-status="ready"]', { timeout: 60000 });
  // the controls index.html holds (the source, not what the views add), checked in the page
  const html = await (await fetch(s.server.url + '/')).text();
  const ids = [...html.matchAll(/<(?:button|input|select|textarea)\b[^>]*\bid="([^"]+)"/g)].map((m) => m[1]);
  assert.ok(ids.length > 30, `index.html has its controls (${ids.length})`);
  const bare = await page.evaluate((ids) => {
    const named = (e) => (e.getAttribute('title') ?? '').trim() || (e.getAttribute('aria-label') ?? '').trim();
    const out = ids.filter((id) => {
      const e = document.getElementById(id);
      return e && !named(e);
    });
    // and the help's and the manifold's own controls
    for (const e of document.querySelectorAll('.view-help, #help-glossary, #view-manifold button, #view-manifold input, #view-manifold select'))
      if (!named(e)) out.push(e.id || e.outerHTML.slice(0, 60));
    return out;
  }, ids);
  assert.deepEqual(bare, [], 'controls without a title or aria-label');
  // report (not fail on) the controls the views make at run time without one
  const others = await page.evaluate(() =>
    [...document.querySelectorAll('button, input, select, textarea')]
      .filter((e) => !(e.getAttribute('title') ?? '').trim() && !(e.getAttribute('aria-label') ?? '').trim() && !e.labels?.length && !(e.textContent ?? '').trim())
      .map((e) => e.id || e.className || e.tagName),
  );
  if (others.length) console.log(`controls made by the views with no title, aria-label, label or text: ${others.join(', ')}`);
});

test('the manifold projects two runs, coloured by zone, and a point opens its run at its step', async () => {
  await page.goto('about:blank');
  await page.goto(`${s.server.url}/#run=${encodeURIComponent(runA.id)}&view=stats`);
  await page.waitForSelector('#view-manifold[data-status="ready"]', { timeout: 60000 });
  const statsA = await getJson(s.server.url, `/api/runs/${runA.id}/stats`);
  const statsB = await getJson(s.server.url, `/api/runs/${runB.id}/stats`);
  assert.equal(Number(await page.getAttribute('#view-manifold', 'data-n-points')), statsA.tokens.length, 'one point per position of the open run');
  assert.equal(await page.getAttribute('#view-manifold', 'data-thread'), 'worker', 'UMAP ran in the worker');
  // add run B
  await page.waitForSelector(`#mf-runs option[value="${runB.id}"]`, { state: 'attached' });
  await page.selectOption('#mf-runs', [runB.id]); // the open run is always in (its option is disabled)
  await page.waitForFunction(() => document.querySelector('#view-manifold')?.dataset.nRuns === '2' && document.querySelector('#view-manifold')?.dataset.status === 'ready', null, { timeout: 60000 });
  const n = statsA.tokens.length + statsB.tokens.length;
  assert.equal(Number(await page.getAttribute('#view-manifold', 'data-n-points')), n, 'the points of both runs');
  // the legend shows the zones with their counts (the API's)
  const zoneCount = {};
  for (const t of [...statsA.tokens, ...statsB.tokens]) zoneCount[t.zone] = (zoneCount[t.zone] ?? 0) + 1;
  for (const z of ['syntax_floor', 'semantic_bridge', 'structure_ripple', 'none']) {
    const c = page.locator(`#view-manifold .mf-lg-zone[data-zone="${z}"]`);
    assert.equal(await c.count(), 1, `a legend entry for ${z}`);
    assert.equal(Number(await c.getAttribute('data-count')), zoneCount[z] ?? 0, `${z} count`);
  }
  // the canvas has points drawn (non-blank pixels)
  const inked = await page.locator('#view-manifold .mf-canvas').evaluate((c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let k = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) k++;
    return k;
  });
  assert.ok(inked > 200, `points drawn (${inked} pixels)`);
  await page.locator('#st-manifold').scrollIntoViewIfNeeded();
  await page.screenshot({ path: screenshotPath('help-manifold-zones') });

  // colour by cluster: the legend lists the clusters (and noise), whose counts add up
  await page.check('#mf-by-cluster');
  await page.waitForSelector('#view-manifold[data-color-by="cluster"]');
  const cl = await page.locator('#view-manifold .mf-lg-cluster').evaluateAll((els) => els.map((e) => Number(e.dataset.count)));
  assert.ok(cl.length >= 1);
  assert.equal(
    cl.reduce((a, b) => a + b, 0),
    n,
  );
  await page.screenshot({ path: screenshotPath('help-manifold-clusters') });

  // the keyboard: move to a point of run B that a step chose from, hover it, click it
  await page.locator('#view-manifold .mf-canvas').focus();
  let found = false;
  for (let i = 0; i < n && !found; i++) {
    await page.keyboard.press('ArrowLeft'); // from the end: run B's points come last
    const ds = await page.locator('#view-manifold .mf-canvas').evaluate((c) => ({ ...c.dataset }));
    found = ds.cursorRun === runB.id && Number(ds.cursorStep) >= 2;
  }
  assert.ok(found, 'a point of run B with a step');
  const ds = await page.locator('#view-manifold .mf-canvas').evaluate((c) => ({ ...c.dataset }));
  const step = Number(ds.cursorStep);
  assert.equal(step, Number(ds.cursorPos) - (runB.n_prompt - 1), 'the step whose query is that position');
  const box = await page.locator('#view-manifold .mf-canvas').boundingBox();
  await page.mouse.move(box.x + Number(ds.cursorX), box.y + Number(ds.cursorY));
  const tip = await page.locator('#tooltip').textContent();
  assert.match(tip, new RegExp(`run ${runB.id}`));
  assert.match(tip, /zone /);
  assert.match(tip, /cluster /);
  assert.match(tip, /step/);
  await page.screenshot({ path: screenshotPath('help-manifold-hover') });
  await page.mouse.click(box.x + Number(ds.cursorX), box.y + Number(ds.cursorY));
  await page.waitForFunction((id) => location.hash.includes(`run=${encodeURIComponent(id)}`), runB.id);
  await page.waitForSelector('#graph[data-status="done"]', { state: 'attached', timeout: 30000 });
  await page.waitForFunction((t) => new URLSearchParams(location.hash.slice(1)).get('step') === String(t), step);
  assert.equal((await page.locator('#step-label').textContent()).trim().replace(/\s+/g, ' ').startsWith(`Step ${step + 1} of ${runB.n_output}`), true, 'the step label');
  assert.equal(new URLSearchParams((await page.evaluate(() => location.hash)).slice(1)).get('view'), 'stats', 'still on Statistics');
  // the picture keeps both runs (the run open before stays projected)
  await page.waitForSelector('#view-manifold[data-status="ready"]', { timeout: 60000 });
  assert.equal(await page.getAttribute('#view-manifold', 'data-n-runs'), '2');
  await page.screenshot({ path: screenshotPath('help-manifold-opened') });
});

test('the offline file (heed export -o run.html) projects its run on the page when no worker can start', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'heed-help-'));
  try {
    const bin = process.env.HEED_BIN || join(root, 'build', 'heed');
    const run = join(dir, 'r.heed');
    const html = join(dir, 'r.html');
    execFileSync(bin, ['generate', '-p', 'Once upon a time', '-n', '12', '--save', run], { stdio: 'ignore' });
    execFileSync(bin, ['export', run, '-o', html]);
    // the file holds the UI the binary embeds (not HEED_WEB_DIR's)
    if (!readFileSync(html, 'utf8').includes('mf-runs')) {
      t.skip(`${bin} embeds a UI without the manifold: rebuild it (make web, then make)`);
      return;
    }
    await page.goto('about:blank');
    await page.goto(`${pathToFileURL(html).href}#run=run&step=4&view=stats`);
    await page.waitForSelector('#view-manifold[data-status="ready"]', { timeout: 60000 });
    assert.equal(await page.getAttribute('#view-manifold', 'data-n-runs'), '1');
    assert.ok(Number(await page.getAttribute('#view-manifold', 'data-n-points')) > 10);
    assert.equal(await page.getAttribute('#view-manifold', 'data-thread'), 'main', 'the fallback on the page');
    assert.equal(await page.locator('#view-manifold .mf-lg-zone').count(), 4);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
