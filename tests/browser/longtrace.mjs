// A long run without generating one: a heed-trace/1 folder (docs/TRACE_FORMAT.md)
// of a tiny geometry (1 layer, 2 heads, head_dim 4) over T tokens of the
// bundled stories260K vocabulary, imported with `heed import` into a run
// file. Used by tests/browser/longrun.test.mjs and bench/ui_bench.mjs.
//
// The attention is made to have a known shape: every query of head 0 puts
// almost all of its mass on key j0 (near the start), every query of head 1
// about half on key j1 (the middle of the prompt), the rest spread over
// recent keys (a slow rotation in dims 1-2). So in the mean of the heads, j0
// is every step's strongest source and j1 the second, however long the run.
// " Lily" (id 317) is planted at LILY_AT (and nowhere else).
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { root, sharedPath } from './lib.mjs';

// " Once upon a time, there was a little girl named Tom. She loved to play in the park with her dog."
const CYCLE = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 338, 426, 338, 401, 396, 267, 337, 322, 265, 282, 295, 433, 335, 311, 400, 428, 426];
export const LILY = 317;

/** Where the strong sources and the planted tokens are, for T tokens of which nOut are generated. */
export function longRunShape(T, nOut) {
  const nPrompt = T - nOut;
  return { T, nPrompt, nOut, j0: 37, j1: Math.floor(nPrompt / 2) + 3, lily: [100, Math.floor(nPrompt / 3), T - Math.min(50, Math.floor(nOut / 2))] };
}

function safetensors(path, tensors) {
  // an 8-byte little-endian header length, the JSON header, then the raw data
  const header = {};
  let off = 0;
  for (const [name, shape, data] of tensors) {
    header[name] = { dtype: 'F32', shape, data_offsets: [off, off + data.byteLength] };
    off += data.byteLength;
  }
  let hj = JSON.stringify(header);
  while ((8 + hj.length) % 8) hj += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hj.length));
  writeFileSync(path, Buffer.concat([len, Buffer.from(hj, 'utf8'), ...tensors.map((t) => Buffer.from(t[2].buffer, t[2].byteOffset, t[2].byteLength))]));
}

/**
 * Writes the trace into dir/trace and imports it into dir/long.heedrun
 * (with `bin`); returns the run file's path and the shape.
 */
export function makeLongRun(bin, dir, T, nOut) {
  const s = longRunShape(T, nOut);
  const tdir = join(dir, 'trace');
  mkdirSync(tdir, { recursive: true });
  const ids = new Array(T);
  ids[0] = 1; // BOS
  for (let i = 1; i < T; i++) ids[i] = CYCLE[(i - 1) % CYCLE.length];
  for (const p of s.lily) ids[p] = LILY;
  const nh = 2, hd = 4;
  const q = new Float32Array(T * nh * hd), k = new Float32Array(T * nh * hd);
  const w = 0.05; // the rotation: nearby keys score a little higher
  for (let i = 0; i < T; i++) {
    for (let h = 0; h < nh; h++) {
      const o = (i * nh + h) * hd;
      // scores are 0.5 q.k: the rest score cos((i - j) w) <= 1, j0 scores 20 (head 0), j1 ln(1.27 i) (head 1)
      q[o] = h === 0 ? 1 : Math.log(1.27 * Math.max(2, i)) / 18; // head 1: exp(score of j1) ~ the rest's sum
      q[o + 1] = 2 * Math.cos(i * w);
      q[o + 2] = 2 * Math.sin(i * w);
      k[o + 1] = Math.cos(i * w);
      k[o + 2] = Math.sin(i * w);
      const strong = h === 0 ? s.j0 : s.j1;
      if (i === strong) k[o] = h === 0 ? 40 : 36;
    }
  }
  safetensors(join(tdir, 'layer_000.safetensors'), [['q', [T, nh, hd], q], ['k', [T, nh, hd], k]]);
  const vocab = [join(root, 'models', 'stories260K.gguf'), sharedPath('models/stories260K.gguf')].find((p) => p && existsSync(p));
  const trace = { format: 'heed-trace/1', n_layer: 1, n_head: nh, head_dim: hd, token_ids: ids, n_prompt: s.nPrompt, model: 'long-trace', source: 'tests/browser/longtrace.mjs' };
  if (vocab) {
    copyFileSync(vocab, join(tdir, 'vocab.gguf'));
    trace.tokenizer = 'vocab.gguf';
  }
  writeFileSync(join(tdir, 'trace.json'), JSON.stringify(trace));
  const file = join(dir, `long-${T}.heedrun`);
  execFileSync(bin, ['import', tdir, '-o', file], { stdio: 'pipe' });
  return { file, ...s, labelled: !!vocab };
}

/** Uploads a run file to a server (POST /api/runs/upload); resolves its id. */
export async function uploadRun(base, file) {
  const { readFileSync } = await import('node:fs');
  const r = await fetch(base + '/api/runs/upload', { method: 'POST', body: readFileSync(file), headers: { 'Content-Type': 'application/octet-stream' } });
  if (r.status !== 201) throw new Error(`upload: ${r.status} ${await r.text()}`);
  return (await r.json()).id;
}
