// Nothing is lost and the status tells the truth: a refused request leaves
// the open run as it was and says why beside the control; the prompt box
// shows the opened run's prompt; typed text survives a reload; a run
// downloads as a run file and as offline HTML (which hides what needs a
// server); branches show their parent and step, and as a tree; the counts
// after Stop are the store's; the run list follows changes made elsewhere.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { openSession, closeSession, getJson, screenshotPath } from './lib.mjs';

const MAX_PROMPT = 24; // prompt tokens the server takes: a longer prompt is refused (422, param "prompt")
let s, page, dir, first; // the session, its page, a folder for downloads, the first run

before(async () => {
  s = await openSession(['--max-prompt', String(MAX_PROMPT)]);
  page = s.page;
  dir = mkdtempSync(join(tmpdir(), 'heed-nl-'));
});
after(async () => {
  await closeSession(s);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const runInHash = () => {
  const m = /run=([^&]+)/.exec(new URL(page.url()).hash);
  return m ? decodeURIComponent(m[1]) : null;
};

async function ready(url = s.server.url + '/') {
  await page.goto('about:blank'); // a whole load, even where only the hash differs
  await page.goto(url);
  await page.waitForFunction(() => /stories260K/.test(document.querySelector('#model-info')?.textContent || ''));
}

async function generateFromForm(prompt, n) {
  await page.locator('#prompt').fill(prompt);
  await page.locator('#max-tokens-num').fill(String(n));
  await page.locator('#max-tokens-num').dispatchEvent('change');
  await page.locator('#generate').click();
  await page.waitForFunction(() => /^Done/.test(document.querySelector('#status').textContent), null, { timeout: 60000 });
  return runInHash();
}

/** A run made through the API (a branch when `branch` is given); resolves with the done event. */
async function apiRun(body) {
  const r = await fetch(s.server.url + '/api/runs', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  const m = /event: done\ndata: (.*)\n/.exec(text);
  assert.ok(m, `a done event in ${text.slice(-300)}`);
  return JSON.parse(m[1]);
}

test('a refused Generate leaves the open run as it was and says why beside the prompt', async () => {
  await ready(); // a fresh server: a new origin, nothing stored
  first = await generateFromForm('Once upon a time', 8);
  assert.ok(first, 'the run is in the URL');
  const text = await page.locator('#text').textContent();
  const nIn = await page.locator('#graph').getAttribute('data-n-input');
  // a prompt over --max-prompt: the server refuses it (422)
  await page.locator('#prompt').fill('Once upon a time there was a little girl who lived in a house near the big dark forest with her mother.');
  await page.locator('#generate').click();
  const msg = page.locator('#prompt-msg');
  await msg.waitFor({ state: 'visible', timeout: 30000 });
  assert.match(await msg.textContent(), new RegExp(`limit is ${MAX_PROMPT}`));
  assert.match(await msg.textContent(), /unchanged/);
  assert.equal(await page.locator('#prompt').getAttribute('aria-invalid'), 'true');
  // the run on screen is the same run, whole
  assert.equal(runInHash(), first);
  assert.equal(await page.locator('#text').textContent(), text);
  assert.equal(await page.locator('#graph').getAttribute('data-n-output'), '8');
  assert.equal(await page.locator('#graph').getAttribute('data-n-input'), nIn);
  assert.equal(await page.locator('#graph').getAttribute('data-status'), 'error', 'the status says the request failed');
  assert.match(await page.locator('#status').textContent(), /Not generated: .*unchanged/);
  assert.equal(await page.locator('#delete-run').isDisabled(), false, 'the run can still be deleted');
  assert.equal(await page.locator('#download-run').isDisabled(), false);
  await page.screenshot({ path: screenshotPath('nothinglost-refused') });
});

test('every sampling field shows its limits and refuses a bad value with a message, unchanged and unsent', async () => {
  await ready();
  let posts = 0;
  const count = (r) => {
    if (r.method() === 'POST' && /\/api\/runs$/.test(r.url())) posts++;
  };
  page.on('request', count);
  await page.locator('#advanced summary').click();
  for (const id of ['temperature', 'top-k', 'top-p', 'min-p', 'seed']) assert.ok((await page.locator(`#${id}-limit`).textContent()).length > 3, `${id}'s limit is shown`);
  assert.match(await page.locator('#max-tokens-limit').textContent(), /^1 to \d+$/);
  const cases = [
    ['temperature', '-1', /at least 0/],
    ['top-k', '1.5', /whole number/],
    ['top-p', '0', /above 0/],
    ['min-p', '2', /at most 1/],
    ['seed', '', /Enter the seed/],
    ['seed', '-3', /at least 0/],
  ];
  for (const [id, bad, why] of cases) {
    const input = page.locator(`#${id}`);
    const good = await input.inputValue();
    await input.fill(bad);
    await input.dispatchEvent('change');
    await page.locator('#generate').click();
    const msg = page.locator(`#${id}-msg`);
    assert.equal(await msg.isVisible(), true, `${id} = ${JSON.stringify(bad)} is refused beside the field`);
    assert.match(await msg.textContent(), why);
    assert.equal(await input.inputValue(), bad, 'kept as typed');
    assert.equal(await input.getAttribute('aria-invalid'), 'true');
    assert.match(await page.locator('#status').textContent(), /Not generated/);
    await input.fill(good);
    await input.dispatchEvent('change');
    assert.equal(await msg.isVisible(), false);
  }
  await page.waitForTimeout(100);
  assert.equal(posts, 0, 'nothing was sent');
  page.off('request', count);
});

test('the prompt box shows the opened run\'s prompt; typed text survives a reload', async () => {
  await ready(`${s.server.url}/#run=${encodeURIComponent(first)}`);
  await page.waitForSelector('#graph[data-status="done"]');
  assert.equal(await page.locator('#prompt').inputValue(), 'Once upon a time');
  assert.equal(await page.locator('#prompt-source').isVisible(), true);
  assert.match(await page.locator('#prompt-source').textContent(), new RegExp(first));
  // the Tokens tab reads the box: it now tokenizes the run's prompt
  // typed text, a sampling value: kept across a reload
  await page.locator('#prompt').fill('A draft I am still writing');
  await page.locator('#advanced summary').click();
  await page.locator('#temperature').fill('0.7');
  await page.locator('#temperature').dispatchEvent('change');
  await page.goto(s.server.url + '/');
  await page.reload();
  await page.waitForFunction(() => /stories260K/.test(document.querySelector('#model-info')?.textContent || ''));
  assert.equal(await page.locator('#prompt').inputValue(), 'A draft I am still writing');
  assert.equal(await page.locator('#temperature').inputValue(), '0.7');
  assert.equal(await page.locator('#prompt-source').isVisible(), false);
  // a link to a run: the box shows its prompt, the draft is one click away
  await page.goto(`${s.server.url}/#run=${encodeURIComponent(first)}`);
  await page.reload();
  await page.waitForSelector('#graph[data-status="done"]');
  assert.equal(await page.locator('#prompt').inputValue(), 'Once upon a time');
  await page.screenshot({ path: screenshotPath('nothinglost-run-prompt') });
  await page.locator('#prompt-restore').click();
  assert.equal(await page.locator('#prompt').inputValue(), 'A draft I am still writing');
  await page.locator('#advanced').evaluate((d) => (d.open = true));
  await page.locator('#temperature').fill('0');
  await page.locator('#temperature').dispatchEvent('change');
});

test('the open run downloads as a run file and as offline HTML without Generate', async () => {
  await ready(`${s.server.url}/#run=${encodeURIComponent(first)}`);
  await page.waitForSelector('#graph[data-status="done"]');
  const [d1] = await Promise.all([page.waitForEvent('download'), page.locator('#download-run').click()]);
  const runFile = join(dir, 'run.heedrun');
  await d1.saveAs(runFile);
  const bytes = readFileSync(runFile);
  assert.equal(bytes.subarray(0, 8).toString('latin1'), 'HEEDRUN\0', 'a run file');
  assert.match(d1.suggestedFilename(), /\.heedrun$/);
  const [d2] = await Promise.all([page.waitForEvent('download'), page.locator('#download-html').click()]);
  const html = join(dir, 'run.html');
  await d2.saveAs(html);
  assert.match(readFileSync(html, 'utf8').slice(0, 200), /<!doctype html>/i);
  // the file works with no server, and hides what cannot work offline
  const off = await s.browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  off.on('pageerror', (e) => errors.push(String(e)));
  await off.goto(pathToFileURL(html).href);
  await off.waitForSelector('#graph[data-status="done"]', { timeout: 30000 });
  assert.equal(await off.locator('#graph').getAttribute('data-n-output'), '8');
  for (const sel of ['#generate', '#stop', '#delete-run', '#open-run-file', '#download-run', '#download-html', '#max-tokens'])
    assert.equal(await off.locator(sel).isVisible(), false, `${sel} is hidden offline`);
  assert.equal(await off.locator('#prompt').inputValue(), 'Once upon a time', 'the exported run\'s prompt');
  assert.equal(await off.locator('#prompt').getAttribute('readonly'), '');
  await off.screenshot({ path: screenshotPath('nothinglost-offline') });
  assert.deepEqual(errors, []);
  await off.close();
});

test('branches show their parent and step, and the list shows them as a tree', async () => {
  await ready(`${s.server.url}/#run=${encodeURIComponent(first)}`);
  await page.waitForSelector('#graph[data-status="done"]');
  const b1 = await apiRun({ branch: { run: first, step: 2 }, max_tokens: 8, temperature: 1, seed: 3 });
  const b2 = await apiRun({ branch: { run: b1.run_id, step: 5 }, max_tokens: 8, temperature: 1, seed: 4 });
  const list = await getJson(s.server.url, '/api/runs');
  const byId = Object.fromEntries(list.runs.map((r) => [r.id, r]));
  assert.equal(byId[b1.run_id].parent, first);
  assert.equal(byId[b1.run_id].step, 2);
  assert.equal(byId[b2.run_id].parent, b1.run_id);
  assert.equal(byId[first].parent, null);
  // the list refreshes by itself (no reload): the branches appear with their parent and step
  const item = (id) => page.locator(`#runs a.run-item[data-run-id="${id}"]`);
  await item(b2.run_id).waitFor({ timeout: 20000 });
  assert.equal(await item(b1.run_id).getAttribute('data-parent'), first);
  assert.equal(await item(b1.run_id).getAttribute('data-step'), '2');
  assert.match(await item(b1.run_id).locator('.run-branch').textContent(), new RegExp(`branch of .*${first}.* at step 3`));
  assert.match(await item(b2.run_id).locator('.run-branch').textContent(), new RegExp(`${b1.run_id}.* at step 6`));
  assert.equal(await item(first).locator('.run-branch').count(), 0);
  // the tree: each branch inside its parent's entry
  await page.locator('#runs-tree').check();
  await page.waitForSelector('#runs[data-view="tree"]');
  const parentOf = (id) => item(id).evaluate((a) => a.closest('ul').closest('li')?.querySelector(':scope > a.run-item')?.dataset.runId ?? null);
  assert.equal(await parentOf(b1.run_id), first);
  assert.equal(await parentOf(b2.run_id), b1.run_id);
  assert.equal(await parentOf(first), null);
  await page.screenshot({ path: screenshotPath('nothinglost-tree') });
  // the choice is kept
  await page.reload();
  await page.waitForSelector('#runs[data-view="tree"]');
  await page.locator('#runs-tree').uncheck();
});

test('after Stop the status gives the stored run\'s counts, not the tokens the page happened to read', async () => {
  await ready();
  const lim = (await getJson(s.server.url, '/api/model')).limits?.max_tokens ?? 512;
  // a slow connection: the page reads the stream behind the server, as a loaded browser does
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: 40000, uploadThroughput: -1 });
  await page.locator('#prompt').fill('Once upon a time');
  await page.locator('#max-tokens-num').fill(String(Math.min(lim, 300)));
  await page.locator('#max-tokens-num').dispatchEvent('change');
  await page.locator('#generate').click();
  await page.waitForFunction(() => document.querySelectorAll('#text .out-tok').length >= 3, null, { timeout: 60000 });
  // while tokens stream the status counts them by the server's numbering, never "Queued"
  await page.waitForFunction(() => /^Generating: \d+ of \d+ tokens/.test(document.querySelector('#status').textContent), null, { timeout: 10000 });
  await page.locator('#stop').click();
  const received = await page.locator('#text .out-tok').count();
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await page.waitForFunction(() => /^Stopped: /.test(document.querySelector('#status').textContent), null, { timeout: 40000 });
  const id = runInHash();
  assert.ok(id, 'the stored run is opened');
  const run = await getJson(s.server.url, `/api/runs/${encodeURIComponent(id)}`);
  const status = await page.locator('#status').textContent();
  const m = /(\d+) generated/.exec(status);
  assert.ok(m, status);
  assert.equal(Number(m[1]), run.n_output, `the status (${status}) gives the store's count`);
  assert.equal(await page.locator('#graph').getAttribute('data-n-output'), String(run.n_output));
  assert.equal(await page.locator('#text .out-tok').count(), run.n_output);
  console.log(`stop: the page had read ${received} tokens, the store has ${run.n_output} (${run.stop})`);
  await page.screenshot({ path: screenshotPath('nothinglost-stopped') });
});

test('the run list follows a delete made in another tab and by another client', async () => {
  await ready(`${s.server.url}/#run=${encodeURIComponent(first)}`);
  await page.waitForSelector('#graph[data-status="done"]');
  const extra = await apiRun({ prompt: 'The cat sat', max_tokens: 4 });
  const item = (p, id) => p.locator(`#runs a.run-item[data-run-id="${id}"]`);
  await item(page, extra.run_id).waitFor({ timeout: 20000 });
  // another tab of this browser deletes it with its Delete button
  const ctx = await s.browser.newContext();
  const mine = await ctx.newPage(); // two tabs of one browser profile
  await mine.goto(`${s.server.url}/`);
  await item(mine, extra.run_id).waitFor({ timeout: 20000 });
  const other = await ctx.newPage();
  other.on('dialog', (d) => d.accept());
  await other.goto(`${s.server.url}/#run=${encodeURIComponent(extra.run_id)}`);
  await other.waitForSelector('#graph[data-status="done"]');
  await other.locator('#delete-run').click();
  await other.waitForFunction(() => /^Deleted/.test(document.querySelector('#status').textContent));
  await item(mine, extra.run_id).waitFor({ state: 'detached', timeout: 3000 }); // told at once, not at the next poll
  await item(page, extra.run_id).waitFor({ state: 'detached', timeout: 20000 }); // another profile: the poll
  await ctx.close();
  // another client deletes the open run: the list drops it and says so; the page keeps what it shows
  const r = await fetch(`${s.server.url}/api/runs/${encodeURIComponent(first)}`, { method: 'DELETE' });
  assert.equal(r.status, 200);
  await item(page, first).waitFor({ state: 'detached', timeout: 20000 });
  await page.locator('#runs-msg').waitFor({ state: 'visible' });
  assert.match(await page.locator('#runs-msg').textContent(), /no longer stored/);
  assert.equal(await page.locator('#graph').getAttribute('data-n-output'), '8');
  await page.screenshot({ path: screenshotPath('nothinglost-deleted-elsewhere') });
});

test('a prompt loads from a text file; a binary file is refused beside the box and the prompt kept', async () => {
  await ready();
  const text = 'Once upon a time, a long prompt came from a file.\nIt had two lines.';
  await page.locator('#prompt-file').setInputFiles({ name: 'long.txt', mimeType: 'text/plain', buffer: Buffer.from(text) });
  await page.waitForFunction((t) => document.querySelector('#prompt').value === t, text);
  assert.equal(await page.locator('#prompt-msg').isHidden(), true);
  await page.locator('#prompt-file').setInputFiles({ name: 'x.bin', mimeType: 'application/octet-stream', buffer: Buffer.from([65, 0, 66]) });
  await page.waitForFunction(() => /NUL/.test(document.querySelector('#prompt-msg').textContent || ''));
  assert.equal(await page.locator('#prompt').inputValue(), text);
});
