// A stock OpenAI client (the `openai` npm package, unchanged) against
// `heed serve`: completions (plain and streamed) and chat completions.
// Starts build/heed on a free port of 127.0.0.1; every wait is bounded.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const heed = join(root, 'build/heed');
const START_MS = 20000;

// A chat model: the first of these that exists (shared test models).
const chatModels = ['../shared/models/tiny-qwen2.gguf', '../shared/models/hf-tiny-llama3']
  .map((p) => resolve(root, p));

async function startServer(args) {
  const dir = mkdtempSync(join(tmpdir(), 'heed-node-'));
  const child = spawn(heed, ['serve', '--port', '0', '--threads', '1', '--data-dir', dir, ...args],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((ok, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`no address within ${START_MS} ms: ${out}`)), START_MS);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)\n/);
      if (m) { clearTimeout(timer); ok(Number(m[1])); }
    });
    child.on('exit', (code) => { clearTimeout(timer); fail(new Error(`heed serve exited ${code}: ${out}`)); });
  });
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', timeout: 30000,
    maxRetries: 0 });
  return { child, dir, client };
}

function stopServer(s) {
  if (!s) return Promise.resolve();
  return new Promise((ok) => {
    const timer = setTimeout(() => { s.child.kill('SIGKILL'); }, 10000);
    s.child.on('exit', () => { clearTimeout(timer); rmSync(s.dir, { recursive: true, force: true }); ok(); });
    s.child.kill('SIGTERM');
  });
}

let bundled;
before(async () => { bundled = await startServer([]); });
after(async () => { await stopServer(bundled); });

test('completions.create', async () => {
  const r = await bundled.client.completions.create({ model: 'stories260K.gguf', prompt: 'Once upon a time',
    max_tokens: 5, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.ok(r.choices[0].text.length > 0);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 5);
});

test('completions.create with stream', async () => {
  const stream = await bundled.client.completions.create({ model: 'x', prompt: 'Once upon a time',
    max_tokens: 5, temperature: 0, stream: true });
  let text = '', chunks = 0, finish = null;
  for await (const c of stream) {
    chunks++;
    text += c.choices[0].text;
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.ok(chunks >= 5);
  assert.equal(finish, 'length');
  const plain = await bundled.client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 5,
    temperature: 0 });
  assert.equal(text, plain.choices[0].text); // greedy: the same text either way
});

const chatModel = chatModels.find((p) => existsSync(p));
test('chat.completions.create on a model with a chat template',
  { skip: chatModel ? false : 'no chat model in ../shared/models (tiny-qwen2.gguf or hf-tiny-llama3)' },
  async () => {
    const s = await startServer(['-m', chatModel]);
    try {
      const r = await s.client.chat.completions.create({ model: 'x', max_tokens: 4, temperature: 0,
        messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello!' }] });
      assert.equal(r.object, 'chat.completion');
      assert.equal(r.choices[0].message.role, 'assistant');
      assert.equal(typeof r.choices[0].message.content, 'string');
      assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 4);
      const stream = await s.client.chat.completions.create({ model: 'x', max_tokens: 3, temperature: 0,
        stream: true, messages: [{ role: 'user', content: 'Hello!' }] });
      let finish = null;
      for await (const c of stream) if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
      assert.ok(finish === 'length' || finish === 'stop');
    } finally {
      await stopServer(s);
    }
  });
