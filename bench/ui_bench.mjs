// The web UI at scale, in headless Chromium (Performance API): a run of 500
// input and 500 output tokens (synthetic attention, served through
// Playwright's request routing so no model is needed) is opened by URL; the
// first render (navigation start to the graph drawn) and step-slider moves
// (input event to the next frame, and the move's main-thread work) are
// timed. Figures, not pass/fail; the targets are < 1000 ms and < 50 ms.
//
// `long`: real runs of 4,000 + 4,000 and 32,768 (32,512 + 256) tokens, made
// from heed-trace/1 folders (tests/browser/longtrace.mjs: 1 layer, 2 heads,
// head_dim 4) by `heed import`, uploaded to a real `heed serve` (HEED_BIN)
// and opened by URL: first render (navigation start to the last step's rows
// read and drawn), step moves (input event to the next frame: +1 steps, as
// the arrow keys, and far jumps; and a far jump until its rows are read and
// drawn), and overview jumps (a click on the strip to the next frame).
// "To the next frame" waits for the display's next frame (60 Hz in headless
// Chromium), so a move that fits in one frame reads about 16.7 ms there
// whatever its cost; "main-thread work" is the move's own cost (the input
// handler, then the next frame's callbacks and rendering).
//
//   node bench/ui_bench.mjs [n_input] [n_output]      (after make; needs chromium)
//   HEED_BIN=build/heed node bench/ui_bench.mjs long
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root, startServer, launchBrowser } from '../tests/browser/lib.mjs';
import { makeLongRun, uploadRun } from '../tests/browser/longtrace.mjs';

if (process.argv[2] === 'long') {
  await benchLong();
  process.exit(0);
}

const nIn = Number(process.argv[2] || 500), nOut = Number(process.argv[3] || 500);

// xorshift: the same data every run
let seed = 12345;
const rnd = () => ((seed ^= seed << 13), (seed ^= seed >>> 17), (seed ^= seed << 5), (seed >>> 0) / 4294967296);

// A row shaped like real attention, normalized to sum 1: low noise, a few
// heavy sources, the recent positions favoured (entry 0 = BOS stays 0 in the
// prompt part). About 8 entries per row reach the 0.05 threshold.
function row(n, skipFirst) {
  const w = Array.from({ length: n }, (_, i) => (skipFirst && i === 0 ? 0 : 0.02 * rnd() * rnd()));
  for (let j = 0; j < 8 && n > 1; j++) {
    const i = rnd() < 0.5 ? n - 1 - Math.floor(rnd() * Math.min(n, 8)) : Math.floor(rnd() * n);
    if (!(skipFirst && i === 0)) w[i] += rnd();
  }
  const s = w.reduce((a, b) => a + b, 0) || 1;
  return w.map((x) => Number((x / s).toPrecision(6)));
}

const words = ['the', ' wizard', ' walked', ' through', ' forest', ',', ' and', ' saw', ' a', ' light', '.'];
const tokens = Array.from({ length: nIn + nOut }, (_, i) => ({ id: 100 + (i % 400), label: i === 0 ? '[BOS]' : words[i % words.length] }));
const graph = {
  n_prompt: nIn, n_output: nOut,
  prompt: Array.from({ length: nOut }, () => row(nIn, true)),
  output: Array.from({ length: nOut }, (_, t) => row(t, false)),
  prompt_mass: Array(nOut).fill(0.7), output_mass: Array(nOut).fill(0.3),
};
const id = 'run_bench';
const doc = {
  id, kind: 'heed', created: 1700000000, model: 'bench.gguf', prompt: 'synthetic', params: {},
  max_tokens: nOut, n_prompt: nIn, n_output: nOut, stop: 'length',
  prompt_ids: tokens.slice(0, nIn).map((t) => t.id), output_ids: tokens.slice(nIn).map((t) => t.id), tokens,
  text: tokens.slice(nIn).map((t) => t.label).join(''),
  steps: tokens.slice(nIn).map((t, i) => ({ index: i, id: t.id, label: t.label, text: t.label, prob: 0.5, logprob: -0.69, top: [], attention: { top: [] } })),
};
const model = {
  id: 'bench.gguf', arch: 'llama', n_layer: 16, n_head: 32, n_head_kv: 8, n_vocab: 128256, n_ctx: 4096,
  chat_template: null, bos: 1, eos: 2, limits: { max_tokens: 512, max_prompt: 2048, attention_tokens_top_k: 32 },
};

const server = await startServer();
const browser = await launchBrowser();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const body = { '/api/model': model, [`/api/runs/${id}`]: doc, [`/api/runs/${id}/graph`]: graph,
                 '/api/runs': { runs: [], total: 0, limit: 100, offset: 0 } };
  await page.route('**/api/**', (route) => {
    const u = new URL(route.request().url());
    const j = body[u.pathname];
    if (j) route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(j) });
    else route.fulfill({ status: 404, contentType: 'application/json', body: '{"error":{"message":"not found"}}' });
  });
  const firsts = [], moves = [];
  let edgesAll = 0;
  for (let rep = 0; rep < 3; rep++) {
    await page.goto('about:blank'); // a new document: the time origin is its navigation start
    await page.goto(`${server.url}/#run=${id}&step=${nOut - 1}`);
    await page.waitForSelector('#graph[data-status="done"]', { timeout: 60000 });
    // navigation start (time origin) to the frame after the graph was drawn
    firsts.push(await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => setTimeout(() => r(performance.now()), 0)))));
    for (const mode of ['current', 'all']) {
      if (mode === 'all') {
        await page.locator('#show-all').click();
        edgesAll = await page.locator('#graph').getAttribute('data-edge-count');
      }
      const t = await page.evaluate(async (n) => {
        const s = document.querySelector('#step');
        const times = [];
        for (let i = 0; i < 40; i++) {
          // as in `long`: the next frame, and the move's main-thread work (handler + that frame)
          let tf = 0;
          const next = new Promise((r) => requestAnimationFrame(() => ((tf = performance.now()), setTimeout(r, 0))));
          const t0 = performance.now();
          s.value = String(Math.floor((i * 7919) % n));
          s.dispatchEvent(new Event('input', { bubbles: true }));
          const t1 = performance.now();
          await next;
          const t2 = performance.now();
          times.push([t2 - t0, t1 - t0 + (t2 - tf)]);
        }
        return times;
      }, nOut);
      moves.push(...t.map(([x, busy]) => ({ mode, x, busy })));
    }
  }
  const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const p95 = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length * 0.95)];
  console.log(`ui: ${nIn} input + ${nOut} output tokens; at the last step, threshold 0.05, "show all" draws ${edgesAll} edges`);
  console.log(`ui: first render ${med(firsts).toFixed(0)} ms median of ${firsts.length} (target < 1000 ms; each: ${firsts.map((x) => x.toFixed(0)).join(', ')})`);
  for (const mode of ['current', 'all']) {
    const xs = moves.filter((m) => m.mode === mode).map((m) => m.x);
    const bs = moves.filter((m) => m.mode === mode).map((m) => m.busy);
    console.log(`ui: step move (${mode} mode) ${med(xs).toFixed(1)} ms median, ${p95(xs).toFixed(1)} ms p95, ${Math.max(...xs).toFixed(1)} ms max over ${xs.length} (target < 50 ms)`);
    console.log(`ui: step move (${mode} mode), main-thread work ${med(bs).toFixed(1)} ms median, ${p95(bs).toFixed(1)} ms p95, ${Math.max(...bs).toFixed(1)} ms max`);
  }
} finally {
  await browser.close();
  await server.stop();
}

async function benchLong() {
  const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const bin = process.env.HEED_BIN || join(root, 'build', 'heed');
  const dir = mkdtempSync(join(tmpdir(), 'heed-uibench-'));
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    for (const [T, nOut] of [[8000, 4000], [32768, 256]]) {
      const t0 = Date.now();
      const run = makeLongRun(bin, join(dir, String(T)), T, nOut);
      const id = await uploadRun(server.url, run.file);
      console.log(`ui long: ${T - nOut} input + ${nOut} output tokens (trace made and uploaded in ${Date.now() - t0} ms)`);
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      page.on('pageerror', (e) => console.error('page error:', e));
      const firsts = [], near = [], far = [], farRead = [], jumps = [], nearBusy = [], farBusy = [];
      for (let rep = 0; rep < 3; rep++) {
        await page.goto('about:blank');
        await page.goto(`${server.url}/#run=${id}`);
        await page.waitForSelector('#graph[data-status="done"][data-step-loaded="true"]', { timeout: 120000 });
        firsts.push(await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => setTimeout(() => r(performance.now()), 0)))));
        const m = await page.evaluate(async ([n, reps]) => {
          const s = document.querySelector('#step');
          const g = document.querySelector('#graph');
          const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
          // the move's main-thread work besides: the input handler, then the next frame from its start
          // (this rAF callback is asked for first, so it runs first) to its end (rendering included)
          const move = async (t, busy) => {
            let tf = 0;
            const next = new Promise((r) => requestAnimationFrame(() => ((tf = performance.now()), setTimeout(r, 0))));
            const t0 = performance.now();
            s.value = String(t);
            s.dispatchEvent(new Event('input', { bubbles: true }));
            const t1 = performance.now();
            await next;
            const t2 = performance.now();
            busy?.push(t1 - t0 + (t2 - tf));
            return t2 - t0;
          };
          const out = { near: [], far: [], farRead: [], jumps: [], nearBusy: [], farBusy: [] };
          // +1 steps from the last step down (the arrow keys): the ranges around are read ahead
          let t = n - 1;
          for (let i = 0; i < reps; i++) {
            out.near.push(await move(--t, out.nearBusy));
            if (g.dataset.stepLoaded !== 'true') await new Promise((r) => setTimeout(r, 30));
          }
          // far jumps: the frame, and until the step's rows are read and drawn
          for (let i = 0; i < 12; i++) {
            const to = Math.floor(((i + 1) * 7919) % n);
            const t0 = performance.now();
            out.far.push(await move(to, out.farBusy));
            while (g.dataset.stepLoaded !== 'true') await new Promise((r) => setTimeout(r, 2));
            await frame();
            out.farRead.push(performance.now() - t0);
          }
          // overview jumps: a click on the strip to the next frame
          const c = document.querySelector('#overview');
          const r = c.getBoundingClientRect();
          for (let i = 0; i < 20; i++) {
            const x = r.left + ((i * 0.37) % 1) * r.width;
            const t0 = performance.now();
            c.dispatchEvent(new PointerEvent('pointerdown', { clientX: x, clientY: r.top + 8, pointerId: 1, bubbles: true }));
            c.dispatchEvent(new PointerEvent('pointerup', { clientX: x, clientY: r.top + 8, pointerId: 1, bubbles: true }));
            await frame();
            out.jumps.push(performance.now() - t0);
          }
          return out;
        }, [nOut, Math.min(40, nOut - 2)]);
        near.push(...m.near);
        nearBusy.push(...m.nearBusy);
        farBusy.push(...m.farBusy);
        far.push(...m.far);
        farRead.push(...m.farRead);
        jumps.push(...m.jumps);
      }
      const f = (xs) => `${med(xs).toFixed(1)} ms median, ${Math.max(...xs).toFixed(1)} ms max over ${xs.length}`;
      console.log(`ui long: first render ${med(firsts).toFixed(0)} ms median of ${firsts.length} (each: ${firsts.map((x) => x.toFixed(0)).join(', ')})`);
      console.log(`ui long: step move by 1 (to the next frame) ${f(near)}`);
      console.log(`ui long: step move by 1, main-thread work (input handler + the next frame's callbacks and rendering) ${f(nearBusy)}`);
      console.log(`ui long: step move, far jump (to the next frame) ${f(far)}`);
      console.log(`ui long: step move, far jump, main-thread work ${f(farBusy)}`);
      console.log(`ui long: step move, far jump until its rows are read and drawn ${f(farRead)}`);
      console.log(`ui long: overview jump (click to the next frame) ${f(jumps)}`);
      await page.close();
    }
  } finally {
    await browser.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
