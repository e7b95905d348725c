// The web UI at scale, in headless Chromium (Performance API): a run of 500
// input and 500 output tokens (synthetic attention, served through
// Playwright's request routing so no model is needed) is opened by URL; the
// first render (navigation start to the graph drawn) and step-slider moves
// (input event to the next frame) are timed. Figures, not pass/fail; the
// targets are < 1000 ms and < 50 ms.
//
//   node bench/ui_bench.mjs [n_input] [n_output]      (after make; needs chromium)
import { startServer, launchBrowser } from '../tests/browser/lib.mjs';

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
          const t0 = performance.now();
          s.value = String(Math.floor((i * 7919) % n));
          s.dispatchEvent(new Event('input', { bubbles: true }));
          await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
          times.push(performance.now() - t0);
        }
        return times;
      }, nOut);
      moves.push(...t.map((x) => ({ mode, x })));
    }
  }
  const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const p95 = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length * 0.95)];
  console.log(`ui: ${nIn} input + ${nOut} output tokens; at the last step, threshold 0.05, "show all" draws ${edgesAll} edges`);
  console.log(`ui: first render ${med(firsts).toFixed(0)} ms median of ${firsts.length} (target < 1000 ms; each: ${firsts.map((x) => x.toFixed(0)).join(', ')})`);
  for (const mode of ['current', 'all']) {
    const xs = moves.filter((m) => m.mode === mode).map((m) => m.x);
    console.log(`ui: step move (${mode} mode) ${med(xs).toFixed(1)} ms median, ${p95(xs).toFixed(1)} ms p95, ${Math.max(...xs).toFixed(1)} ms max over ${xs.length} (target < 50 ms)`);
  }
} finally {
  await browser.close();
  await server.stop();
}
