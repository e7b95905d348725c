// "Open a run file…": a run file made by `heed generate --save` is chosen in
// the file picker, uploaded (POST /api/runs/upload) and opened: its tokens
// are on screen and it is in the run list. A file that is not a run is
// refused with the server's message in the status line.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root, openSession, closeSession, getJson, screenshotPath } from './lib.mjs';

const bin = process.env.HEED_BIN || join(root, 'build', 'heed');
let dir, session, server, page;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'heed-upload-'));
  session = await openSession();
  ({ server, page } = session);
});

after(async () => {
  await closeSession(session);
  rmSync(dir, { recursive: true, force: true });
});

async function choose(file) {
  const chooser = page.waitForEvent('filechooser');
  await page.locator('#open-run-file').click();
  await (await chooser).setFiles(file);
}

test('a saved run file uploads through the button and opens with its tokens', async () => {
  const file = join(dir, 'story.heedrun');
  execFileSync(bin, ['generate', '-p', 'Once upon a time', '-n', '9', '--save', file], { stdio: 'ignore' });
  await page.goto(server.url + '/');
  await page.waitForSelector('#runs .note'); // the list was read (empty)
  assert.equal((await getJson(server.url, '/api/runs')).runs.length, 0);
  await choose(file);
  await page.waitForSelector('#graph[data-status="done"]', { timeout: 30000 });
  const runs = (await getJson(server.url, '/api/runs')).runs;
  assert.equal(runs.length, 1, 'the upload stored one run');
  const id = runs[0].id;
  assert.match(decodeURIComponent(new URL(page.url()).hash), new RegExp(`run=${id}`));
  const doc = await getJson(server.url, `/api/runs/${id}`);
  assert.equal(doc.n_output, 9);
  assert.equal(await page.locator('button.token[data-side="input"]').count(), doc.n_prompt);
  assert.equal(await page.locator('button.token[data-side="output"]').count(), doc.n_output);
  for (let i = 0; i < doc.n_output; i++) {
    const shown = await page.locator(`button.token[data-side="output"][data-index="${i}"]`).textContent();
    assert.ok(shown.includes(doc.tokens[doc.n_prompt + i].label.trim()), `output ${i}: '${shown}' shows '${doc.tokens[doc.n_prompt + i].label}'`);
  }
  assert.match(await page.locator('#status').textContent(), new RegExp(`Opened ${id}`));
  await page.waitForSelector(`#runs .run-item[data-run-id="${id}"][aria-current="true"]`);
  await page.screenshot({ path: screenshotPath('upload') });
});

test('a file that is not a run is refused with the server\'s message', async () => {
  const bad = join(dir, 'bad.heedrun');
  writeFileSync(bad, 'this is not a run file at all');
  await choose(bad);
  await page.waitForSelector('#status.error', { timeout: 10000 });
  const msg = await page.locator('#status').textContent();
  assert.match(msg, /^Could not open bad\.heedrun: /);
  assert.ok(msg.length > 'Could not open bad.heedrun: '.length + 5, msg);
  assert.equal((await getJson(server.url, '/api/runs')).runs.length, 1, 'nothing was stored');
  assert.equal(await page.locator('#open-run-file').isDisabled(), false);
});
