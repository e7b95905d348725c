// paths.mjs - the paths users take, against the engine with no capture, in
// one run: `heed generate` (no capture) as the baseline, `generate --save`
// (the recording as shipped), `POST /api/runs` (what the web UI does: SSE,
// recording on) and `/v1/completions` streamed with return_attention_tokens.
// The modes take turns within each repeat and the best of each is kept; the
// summary prints decode and prompt rates as ratios to the baseline.
//
//   node bench/paths.mjs MODEL [--threads 2] [--prompt 64] [--tokens 128] [--repeats 3] [--heed build/heed]
//
// Decode rate: tokens after the first over the time from the first token to
// the last (CLI: heed's own timing line). Prompt rate: prompt tokens over the
// time to the first token (HTTP: from the request; it includes the request's
// parsing and the first sample, so it is a little pessimistic). The random-
// weight models have no chat template, so the OpenAI path is /v1/completions
// (the same generation and streaming code as /v1/chat/completions).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const model = args[0];
if (!model || model.startsWith('--')) {
  console.error('usage: node bench/paths.mjs MODEL [--threads N] [--prompt N] [--tokens N] [--repeats N] [--heed PATH]');
  process.exit(2);
}
const threads = Number(opt('--threads', '2'));
const nPrompt = Number(opt('--prompt', '64'));
const nTok = Number(opt('--tokens', '128'));
const repeats = Number(opt('--repeats', '3'));
const heed = opt('--heed', 'build/heed');
const dir = mkdtempSync(join(tmpdir(), 'heed-paths-'));

// a prompt of about nPrompt tokens (random-weight models: any text will do)
const words = 'the quick brown fox jumps over a lazy dog while seven small birds sing'.split(' ');
const prompt = Array.from({ length: nPrompt - 1 }, (_, i) => words[i % words.length]).join(' ');

function cli(save) {
  const a = ['generate', '-m', model, '-p', prompt, '-n', String(nTok), '--threads', String(threads), '--temp', '0'];
  if (save) a.push('--save', join(dir, 'run.heed'));
  const r = spawnSync(heed, a, { encoding: 'utf8' });
  const m = /prompt (\d+) tokens in ([\d.]+) ms \((\d+) tok\/s\), generated (\d+) tokens \((\d+) tok\/s\)/.exec(r.stderr);
  if (!m) throw new Error(`heed generate: no timing line: ${r.stderr}`);
  return { prompt: Number(m[1]), pp: Number(m[3]), tg: Number(m[5]), n: Number(m[4]) };
}

async function startServer() {
  const p = spawn(heed, ['serve', '--port', '0', '-m', model, '--threads', String(threads), '--data-dir', join(dir, 'data'),
    '--max-tokens', String(nTok), '--max-prompt', '100000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[^\s]+)/.exec(out);
      if (m) resolve(m[1]);
    });
    p.on('exit', () => reject(new Error('heed serve exited')));
  });
  return { p, url };
}

/** One streamed request: times of the request, the first token and the last. */
async function stream(url, path, body, isToken) {
  let t0 = performance.now();
  const post = () =>
    fetch(url + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  let r;
  try {
    r = await post();
  } catch (e) {
    /* a kept-alive connection the server closed while idle (its header
     * deadline passed while the CLI modes ran): once more on a new one */
    if (e?.cause?.code !== 'UND_ERR_SOCKET') throw e;
    t0 = performance.now();
    r = await post();
  }
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = '', first = 0, last = 0, n = 0, timings = null;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (ev.startsWith('event: done')) {
        try {
          timings = JSON.parse(ev.slice(ev.indexOf('data: ') + 6)).timings ?? null;
        } catch {
          timings = null;
        }
      }
      if (isToken(ev)) {
        const t = performance.now();
        if (!first) first = t;
        last = t;
        n++;
      }
    }
  }
  if (!n) throw new Error(`${path}: no token events`);
  return { pp: promptTokens / ((first - t0) / 1e3), tg: n > 1 ? (n - 1) / ((last - first) / 1e3) : 0, ttft: first - t0, n,
    serverFirst: timings ? timings.first_token_ms : null };
}

const heedRun = (url) =>
  stream(url, '/api/runs', { prompt, max_tokens: nTok, temperature: 0, cache: false }, (ev) => ev.startsWith('event: token'));
const oaiRun = (url) =>
  stream(url, '/v1/completions', { prompt, max_tokens: nTok, temperature: 0, stream: true, return_attention_tokens: true },
    (ev) => ev.startsWith('data: {') && ev.includes('"attention_tokens"'));

const promptTokens = cli(false).prompt; // the prompt's length in tokens, for the HTTP prompt rates
const { p: server, url } = await startServer();
const best = { off: null, save: null, api: null, v1: null };
const keep = (k, r) => {
  const b = best[k];
  best[k] = b
    ? { pp: Math.max(b.pp, r.pp), tg: Math.max(b.tg, r.tg), ttft: Math.min(b.ttft ?? Infinity, r.ttft ?? Infinity),
        serverFirst: Math.min(b.serverFirst ?? Infinity, r.serverFirst ?? Infinity) }
    : r;
};
try {
  await heedRun(url); // warm the server's page cache and code
  for (let i = 0; i < repeats; i++) {
    keep('off', cli(false));
    keep('save', cli(true));
    keep('api', await heedRun(url));
    keep('v1', await oaiRun(url));
  }
} finally {
  server.kill('SIGTERM');
}
rmSync(dir, { recursive: true, force: true });

const base = best.off;
const name = model.split('/').pop();
console.log(`== paths: ${name}, ${threads} threads, prompt ${promptTokens} tokens, ${nTok} generated, best of ${repeats}`);
console.log('path                              decode tok/s  x engine   prompt tok/s  x engine');
const line = (label, r) =>
  console.log(`${label.padEnd(34)}${r.tg.toFixed(1).padStart(12)}${(r.tg / base.tg).toFixed(2).padStart(10)}` +
    `${r.pp.toFixed(1).padStart(15)}${(r.pp / base.pp).toFixed(2).padStart(10)}`);
line('heed generate (no capture)', base);
line('heed generate --save', best.save);
line('POST /api/runs (SSE, the web UI)', best.api);
line('/v1/completions stream + attn', best.v1);
console.log(`time to the first streamed token: /api/runs ${best.api.ttft.toFixed(1)} ms, /v1 ${best.v1.ttft.toFixed(1)} ms ` +
  `(the prompt alone: ${(promptTokens / base.pp * 1e3).toFixed(1)} ms in the engine)`);
if (best.api.serverFirst != null)
  console.log(`first token event after the prompt, measured by the server (the done event's timings): ` +
    `${best.api.serverFirst.toFixed(2)} ms`);
