// The fingerprint manifold (a section of the Statistics tab): the 20-number
// attention fingerprints of every position of one or more stored runs
// (docs/ANALYSIS.md), projected to 2-D with UMAP (umap-js, seeded so the
// picture is the same every time) and clustered with HDBSCAN (hdbscan-ts) on
// that projection; points coloured by zone or by cluster, hover names run,
// token, step, zone and cluster, a click opens that run at that token's step.
// The projection runs in a Web Worker (manifold.worker.ts); where no worker
// can start (the offline file from file://) it runs here in slices with a
// progress line. Data: GET /api/runs (the picker), GET /api/runs/{id} (the
// tokens) and GET /api/runs/{id}/stats (the fingerprints) of each run.
import { HDBSCAN } from 'hdbscan-ts';
import { UMAP } from 'umap-js';
import { asZone, ZONE_INFO, ZONES, type Zone } from '../analysis';
import { expertColor } from '../experts';
import { displayLabel } from '../model';
import { errText, getJson, h, hideTip, Lru, runPath, selKey, selQuery, selText, showTip, sizeCanvas } from './common';
import type { ViewContext } from './types';

// ---------------------------------------------------------------- pure parts

/** What the manifold needs of one run: its shape, token labels and per-position stats. */
export interface ManifoldRun {
  id: string;
  nPrompt: number;
  nOutput: number;
  labels: string[]; // the run's token labels by position
  tokens: { pos: number; zone: string; fingerprint: number[] }[]; // GET /stats tokens
}

/** One point: a position of a run. */
export interface ManifoldPoint {
  run: number; // index into the runs given to assemble
  runId: string;
  pos: number;
  step: number; // the 0-based step whose token this position's query chose; -1: a prompt position before the last
  zone: Zone;
  label: string;
}

export interface ManifoldData {
  points: ManifoldPoint[];
  X: number[][]; // the fingerprints, one per point (FINGERPRINT_DIM numbers)
  skipped: number; // positions left out (no fingerprint of the right length)
}

/** HEED_FINGERPRINT_DIM (include/heed.h). */
export const FINGERPRINT_DIM = 20;

/**
 * The step a position's query chose (docs/ANALYSIS.md: step t was chosen by
 * query position n_prompt - 1 + t), -1 for prompt positions before the last
 * and for the last output (never fed back, so no step chose anything from it).
 */
export function stepOfPos(pos: number, nPrompt: number, nOutput: number): number {
  const t = pos - (nPrompt - 1);
  return t >= 0 && t < nOutput ? t : -1;
}

/** The points and fingerprints of several runs, runs in the order given, positions ascending. */
export function assembleManifold(runs: readonly ManifoldRun[]): ManifoldData {
  const points: ManifoldPoint[] = [];
  const X: number[][] = [];
  let skipped = 0;
  runs.forEach((r, ri) => {
    const toks = [...r.tokens].sort((a, b) => a.pos - b.pos);
    for (const t of toks) {
      const fp = t.fingerprint;
      if (!Array.isArray(fp) || fp.length !== FINGERPRINT_DIM || !fp.every((v) => Number.isFinite(v))) {
        skipped++;
        continue;
      }
      points.push({
        run: ri,
        runId: r.id,
        pos: t.pos,
        step: stepOfPos(t.pos, r.nPrompt, r.nOutput),
        zone: asZone(t.zone),
        label: displayLabel(r.labels[t.pos]),
      });
      X.push(fp.slice());
    }
  });
  return { points, X, skipped };
}

/** mulberry32: a small seeded generator of floats in [0, 1) (UMAP's `random`). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface ProjectOptions {
  seed?: number; // UMAP's random seed (default 42)
  nNeighbors?: number; // default min(15, n - 1)
  minClusterSize?: number; // HDBSCAN's (default from n)
  maxCluster?: number; // at most this many points go into HDBSCAN (default 500; the rest take their nearest one's cluster)
}

export interface Projection {
  xy: [number, number][]; // one per point
  labels: number[]; // HDBSCAN cluster per point, -1 = noise
  nClusters: number;
  clustered: number; // how many points HDBSCAN itself saw (the rest were assigned)
  minClusterSize: number;
  nNeighbors: number;
}

export const DEFAULT_SEED = 42;
export const MAX_CLUSTER = 500;

/** HDBSCAN's minimum cluster size for n points: about n / 40, within 4..50. */
export function defaultMinCluster(n: number): number {
  return Math.max(4, Math.min(50, Math.round(n / 40)));
}

/**
 * UMAP to 2-D then HDBSCAN on the 2-D points, as steps: yields
 * [epochs done, epochs] between UMAP epochs (so a caller can report
 * progress or yield to the page) and returns the projection. Deterministic
 * for a seed. Fewer than 4 points are laid on a line (UMAP needs
 * neighbours) and are all noise.
 */
export function* projectSteps(X: readonly number[][], opts: ProjectOptions = {}): Generator<[number, number], Projection> {
  const n = X.length;
  const seed = opts.seed ?? DEFAULT_SEED;
  const minClusterSize = Math.max(2, opts.minClusterSize ?? defaultMinCluster(n));
  if (n < 4) {
    return { xy: X.map((_, i) => [i, 0] as [number, number]), labels: X.map(() => -1), nClusters: 0, clustered: 0, minClusterSize, nNeighbors: 0 };
  }
  const nNeighbors = Math.max(2, Math.min(opts.nNeighbors ?? 15, n - 1));
  const umap = new UMAP({ nComponents: 2, nNeighbors, minDist: 0.1, random: seededRandom(seed), nEpochs: n > 1000 ? 200 : 300 });
  const epochs = umap.initializeFit(X.map((r) => r.slice()));
  for (let e = 0; e < epochs; e++) {
    umap.step();
    if (e % 10 === 9 || e === epochs - 1) yield [e + 1, epochs];
  }
  const xy = umap.getEmbedding().map((p) => [p[0], p[1]] as [number, number]);
  const { labels, clustered } = cluster(xy, minClusterSize, opts.maxCluster ?? MAX_CLUSTER);
  const nClusters = labels.reduce((m, l) => Math.max(m, l + 1), 0);
  return { xy, labels, nClusters, clustered, minClusterSize, nNeighbors };
}

/** projectSteps run to the end; `progress(done, total)` between epochs. */
export function project(X: readonly number[][], opts: ProjectOptions = {}, progress?: (done: number, total: number) => void): Projection {
  const it = projectSteps(X, opts);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
    progress?.(r.value[0], r.value[1]);
  }
}

/**
 * HDBSCAN of 2-D points. hdbscan-ts keeps an n x n distance matrix and its
 * time grows faster than n^2, so at most `max` points (every k-th) are
 * clustered; every other point takes the label of the nearest clustered one.
 */
export function cluster(xy: readonly [number, number][], minClusterSize: number, max: number): { labels: number[]; clustered: number } {
  const n = xy.length;
  const stride = Math.max(1, Math.ceil(n / Math.max(8, max)));
  const idx: number[] = [];
  for (let i = 0; i < n; i += stride) idx.push(i);
  // the sample is 1/stride as dense: the minimum cluster size shrinks with it
  const mcs = Math.max(2, Math.min(Math.round(minClusterSize / stride), idx.length));
  let sub: number[];
  try {
    sub = new HDBSCAN({ minClusterSize: mcs, minSamples: Math.min(5, mcs) }).fit(idx.map((i) => [xy[i][0], xy[i][1]]));
  } catch {
    sub = idx.map(() => -1);
  }
  // renumber the clusters by first appearance so colours follow the point order
  const ren = new Map<number, number>();
  const subLab = sub.map((l) => {
    if (!(l >= 0)) return -1;
    if (!ren.has(l)) ren.set(l, ren.size);
    return ren.get(l)!;
  });
  const labels = new Array<number>(n).fill(-1);
  idx.forEach((i, k) => (labels[i] = subLab[k]));
  if (stride > 1)
    for (let i = 0; i < n; i++) {
      if (i % stride === 0) continue;
      let best = -1;
      let bd = Infinity;
      for (let k = 0; k < idx.length; k++) {
        const j = idx[k];
        const d = (xy[j][0] - xy[i][0]) ** 2 + (xy[j][1] - xy[i][1]) ** 2;
        if (d < bd) (bd = d), (best = k);
      }
      labels[i] = best >= 0 ? subLab[best] : -1;
    }
  return { labels, clustered: idx.length };
}

export const NOISE_COLOR = '#b9c0c8';

/** A cluster's colour: a categorical palette (Tableau 10, then light companions, then golden-angle hues); noise grey. */
export function clusterColor(c: number): string {
  return c < 0 ? NOISE_COLOR : expertColor(c);
}

export type ColorBy = 'zone' | 'cluster';

/** The fill of a point: its zone's colour, or its cluster's. */
export function pointColor(p: Pick<ManifoldPoint, 'zone'>, label: number, by: ColorBy): string {
  return by === 'zone' ? ZONE_INFO[p.zone].color : clusterColor(label);
}

/** Counts per zone and per cluster (noise as -1), for the legend. */
export function legendCounts(points: readonly ManifoldPoint[], labels: readonly number[]): { zones: Record<Zone, number>; clusters: Map<number, number> } {
  const zones = { syntax_floor: 0, semantic_bridge: 0, structure_ripple: 0, none: 0 } as Record<Zone, number>;
  const clusters = new Map<number, number>();
  points.forEach((p, i) => {
    zones[p.zone]++;
    const l = labels[i] ?? -1;
    clusters.set(l, (clusters.get(l) ?? 0) + 1);
  });
  return { zones, clusters };
}

// ---------------------------------------------------------------- worker

/** Projects in the worker; resolves with the projection, reports progress. */
function projectOffThread(X: number[][], opts: ProjectOptions, progress: (done: number, total: number) => void, signal: AbortSignal): Promise<Projection> {
  return new Promise((resolve, reject) => {
    let w: Worker;
    try {
      w = new Worker(new URL('./manifold.worker.ts', import.meta.url), { type: 'module' });
    } catch (err) {
      reject(err);
      return;
    }
    const stop = () => {
      w.terminate();
      reject(new DOMException('aborted', 'AbortError'));
    };
    signal.addEventListener('abort', stop, { once: true });
    w.onmessage = (e: MessageEvent) => {
      const m = e.data as { type: string; done?: number; total?: number; result?: Projection; error?: string };
      if (m.type === 'progress') progress(m.done ?? 0, m.total ?? 1);
      else {
        signal.removeEventListener('abort', stop);
        w.terminate();
        if (m.type === 'done' && m.result) resolve(m.result);
        else reject(new Error(m.error ?? 'the projection failed'));
      }
    };
    w.onerror = (e) => {
      signal.removeEventListener('abort', stop);
      w.terminate();
      e.preventDefault();
      reject(new Error('worker: ' + (e.message || 'could not run')));
    };
    w.postMessage({ X, opts });
  });
}

/** Projects on this thread (the fallback when no worker runs), yielding to the page every ~30 ms. */
async function projectHere(X: number[][], opts: ProjectOptions, progress: (done: number, total: number) => void, signal: AbortSignal): Promise<Projection> {
  const it = projectSteps(X, opts);
  let t0 = performance.now();
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
    if (performance.now() - t0 > 30) {
      progress(r.value[0], r.value[1]);
      await new Promise((res) => setTimeout(res, 0));
      if (signal.aborted) throw new DOMException('aborted', 'AbortError');
      t0 = performance.now();
    }
  }
}

// ---------------------------------------------------------------- view

interface RunDocLite {
  id: string;
  n_prompt: number;
  n_output: number;
  tokens: { id: number; label: string }[];
  preview?: string | null;
  prompt?: string | null;
}
interface RunListItem {
  id: string;
  n_prompt: number;
  n_output: number;
  preview?: string | null;
  kind?: string;
}
interface StatsLite {
  tokens: { pos: number; zone: string; fingerprint: number[] }[];
}

export interface ManifoldDeps {
  /** opens a stored run at a step (0-based), keeping the tab */
  openAt?(runId: string, step: number): void;
  /** the stats of a run for the selection (shared with the Statistics tab's cache) */
  loadStats?(c: Pick<ViewContext, 'base' | 'runId' | 'layer' | 'head'>): Promise<StatsLite>;
}

const docs = new Lru<string, Promise<RunDocLite>>(16);
const projections = new Lru<string, Promise<Projection & { thread: 'worker' | 'main'; ms: number }>>(8);

const W_MAX = 720;
const H_PLOT = 420;
const PAD = 16;

/** The manifold section: run picker, colour toggle, canvas, legend. Shown by the Statistics tab. */
export function createManifoldView(root: HTMLElement, deps: ManifoldDeps = {}): { show(c: ViewContext): void; hide(): void } {
  root.classList.add('manifold-view');
  root.dataset.status = 'idle';
  const runSel = h('select', {
    id: 'mf-runs',
    multiple: true,
    size: 4,
    title: 'Stored runs to project with the open run (Ctrl/⌘-click or Shift-click to pick several). Their fingerprints are read for the same layer / head selection as the open run.',
  });
  const reload = h('button', { type: 'button', id: 'mf-reload', title: 'Reload the list of stored runs', 'aria-label': 'Reload the list of stored runs' }, '↻');
  const byZone = h('input', { type: 'radio', name: 'mf-color', id: 'mf-by-zone', value: 'zone', checked: true, title: 'Colour the points by their zone (the shape always shows the zone)' });
  const byCluster = h('input', { type: 'radio', name: 'mf-color', id: 'mf-by-cluster', value: 'cluster', title: 'Colour the points by their HDBSCAN cluster (grey: noise, in no cluster)' });
  const colorGroup = h(
    'span',
    { class: 'mf-color', role: 'radiogroup', 'aria-label': 'Colour the points by' },
    'Colour by ',
    h('label', { for: 'mf-by-zone', title: byZone.title }, byZone, ' zone'),
    h('label', { for: 'mf-by-cluster', title: byCluster.title }, byCluster, ' cluster'),
  );
  const bar = h(
    'div',
    { class: 'view-bar mf-bar' },
    h('label', { for: 'mf-runs', text: 'Also project', title: runSel.title }),
    runSel,
    reload,
    colorGroup,
  );
  const status = h('p', { class: 'note mf-status', role: 'status', 'aria-live': 'polite' });
  const canvas = h('canvas', {
    class: 'mf-canvas',
    tabindex: 0,
    role: 'img',
    'aria-label': 'UMAP projection of the token fingerprints: ←/→ move between points, Enter opens the point’s run at its step',
    title: 'Hover a point for its run, token, step, zone and cluster; click it to open its run at that step',
  });
  const legend = h('div', { class: 'mf-legend legend', 'aria-label': 'Manifold legend' });
  root.append(bar, status, canvas, legend);

  let ctx: ViewContext | null = null;
  const extra = new Set<string>(); // runs picked besides the open one
  let listLoaded = false;
  let key = '';
  let load = 0;
  let ctl: AbortController | null = null;
  let data: ManifoldData | null = null;
  let proj: Projection | null = null;
  let runIds: string[] = [];
  let colorBy: ColorBy = 'zone';
  let xy: [number, number][] = []; // css px on the canvas
  let cursor = -1; // keyboard point
  let hover = -1;

  function runsWanted(c: ViewContext): string[] {
    return [c.runId, ...[...extra].filter((id) => id !== c.runId).sort()];
  }

  async function loadList(): Promise<void> {
    listLoaded = true;
    try {
      const r = await getJson<{ runs: RunListItem[] }>(ctx?.base ?? '', '/api/runs?limit=100');
      runSel.textContent = '';
      for (const it of r.runs) {
        const o = h('option', { value: it.id, text: `${it.preview ? it.preview.slice(0, 48) : it.kind === 'chat' ? '(chat)' : it.id} · ${it.n_prompt}→${it.n_output}` });
        o.title = it.id;
        runSel.append(o);
      }
      syncOptions();
    } catch (err) {
      runSel.textContent = '';
      runSel.disabled = true;
      runSel.title = `The stored runs could not be listed (${errText(err)}): only the open run is projected.`;
    }
  }

  function syncOptions(): void {
    for (const o of Array.from(runSel.options)) {
      const open = ctx?.runId === o.value;
      o.disabled = open;
      o.selected = open || extra.has(o.value);
    }
  }

  runSel.addEventListener('change', () => {
    extra.clear();
    for (const o of Array.from(runSel.selectedOptions)) if (o.value !== ctx?.runId) extra.add(o.value);
    syncOptions(); // the open run stays shown as picked
    if (ctx) ensure(ctx);
  });
  reload.addEventListener('click', () => void loadList());
  for (const r of [byZone, byCluster])
    r.addEventListener('change', () => {
      colorBy = byCluster.checked ? 'cluster' : 'zone';
      root.dataset.colorBy = colorBy;
      draw();
    });

  function runDoc(base: string, id: string): Promise<RunDocLite> {
    const k = `${base}|${id}`;
    let p = docs.get(k);
    if (!p) {
      p = getJson<RunDocLite>(base, runPath(id));
      docs.set(k, p);
      p.catch(() => docs.delete(k));
    }
    return p;
  }

  function stats(c: ViewContext, id: string): Promise<StatsLite> {
    const sel = { base: c.base, runId: id, layer: c.layer, head: c.head };
    if (deps.loadStats) return deps.loadStats(sel);
    const q = selQuery(c.layer, c.head);
    return getJson<StatsLite>(c.base, runPath(id, '/stats' + (q ? '?' + q.slice(1) : '')));
  }

  function ensure(c: ViewContext): void {
    const ids = runsWanted(c);
    const k = `${c.base}|${ids.join(',')}|${selKey({ runId: '', layer: c.layer, head: c.head })}`;
    if (k === key) return;
    key = k;
    ctl?.abort();
    const my = ++load;
    const ac = new AbortController();
    ctl = ac;
    root.dataset.status = 'loading';
    data = null;
    proj = null;
    status.textContent = `Reading the fingerprints of ${ids.length} run${ids.length === 1 ? '' : 's'} (${selText(c.layer, c.head)})…`;
    const failed: string[] = [];
    void Promise.all(
      ids.map((id) =>
        Promise.all([runDoc(c.base, id), stats(c, id)])
          .then(([d, s]): ManifoldRun => ({ id, nPrompt: d.n_prompt, nOutput: d.n_output, labels: d.tokens.map((t) => t.label), tokens: s.tokens }))
          .catch((err) => {
            failed.push(`${id}: ${errText(err)}`);
            return null;
          }),
      ),
    )
      .then(async (rs) => {
        if (my !== load) return;
        const runs = rs.filter((r): r is ManifoldRun => r !== null);
        runIds = runs.map((r) => r.id);
        const d = assembleManifold(runs);
        if (d.points.length === 0) throw new Error(failed.length ? failed.join('; ') : 'no fingerprints');
        const pk = `${k}|${runIds.join(',')}`;
        let p = projections.get(pk);
        if (!p) {
          const progress = (done: number, total: number) => {
            if (my === load) status.textContent = `Projecting ${d.points.length} points with UMAP… epoch ${done} of ${total}`;
          };
          const t0 = performance.now();
          p = projectOffThread(d.X, { seed: DEFAULT_SEED }, progress, ac.signal)
            .then((r) => ({ ...r, thread: 'worker' as const, ms: performance.now() - t0 }))
            .catch((err) => {
              if (ac.signal.aborted) throw err;
              return projectHere(d.X, { seed: DEFAULT_SEED }, progress, ac.signal).then((r) => ({ ...r, thread: 'main' as const, ms: performance.now() - t0 }));
            });
          projections.set(pk, p);
          p.catch(() => projections.delete(pk));
        }
        const r = await p;
        if (my !== load) return;
        data = d;
        proj = r;
        root.dataset.thread = r.thread; // where the projection ran: a worker, or this page (no worker could start)
        root.dataset.projectMs = r.ms.toFixed(0);
        cursor = -1;
        hover = -1;
        const fails = failed.length ? ` Left out: ${failed.join('; ')}.` : '';
        status.textContent =
          `${d.points.length} positions of ${runs.length} run${runs.length === 1 ? '' : 's'} (${selText(c.layer, c.head)}), UMAP (${r.nNeighbors} neighbours, seed ${DEFAULT_SEED}); ` +
          `HDBSCAN found ${r.nClusters} cluster${r.nClusters === 1 ? '' : 's'} (min size ${r.minClusterSize}${r.clustered < d.points.length ? `, on ${r.clustered} sampled points, the rest by nearest neighbour` : ''}).` +
          (d.skipped ? ` ${d.skipped} positions without a fingerprint left out.` : '') +
          fails;
        draw();
        root.dataset.status = 'ready';
      })
      .catch((err) => {
        if (my !== load || (err instanceof DOMException && err.name === 'AbortError')) return;
        root.dataset.status = 'error';
        status.textContent = `The manifold could not be made: ${errText(err)}`;
      });
  }

  function pointTitle(i: number): { title: string; lines: [string, string][] } {
    const p = data!.points[i];
    const l = proj!.labels[i];
    return {
      title: `“${p.label}” (pos ${p.pos})`,
      lines: [
        ['run', `${p.runId}${p.runId === ctx?.runId ? ' (open)' : ''}`],
        ['step', p.step >= 0 ? `query of step ${p.step + 1}` : 'a prompt position (no step chose from it); opens step 1'],
        ['zone', ZONE_INFO[p.zone].name],
        ['cluster', l >= 0 ? String(l + 1) : 'noise (none)'],
      ],
    };
  }

  function draw(): void {
    const d = data;
    const P = proj;
    if (!d || !P) return;
    const w = Math.max(260, Math.min(W_MAX, (root.clientWidth || W_MAX) - 8));
    const g = sizeCanvas(canvas, w, H_PLOT);
    let x0 = Infinity;
    let x1 = -Infinity;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (const [x, y] of P.xy) {
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
    }
    if (!(x1 > x0)) (x0 -= 1), (x1 += 1);
    if (!(y1 > y0)) (y0 -= 1), (y1 += 1);
    xy = P.xy.map(([x, y]) => [PAD + ((x - x0) / (x1 - x0)) * (w - 2 * PAD), H_PLOT - PAD - ((y - y0) / (y1 - y0)) * (H_PLOT - 2 * PAD)]);
    g.strokeStyle = '#d9dee5';
    g.strokeRect(0.5, 0.5, w - 1, H_PLOT - 1);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#5b6470';
    g.fillText('UMAP 1 →', w - 62, H_PLOT - 5);
    g.globalAlpha = 0.85;
    d.points.forEach((p, i) => marker(g, p.zone, pointColor(p, P.labels[i], colorBy), xy[i][0], xy[i][1], 4));
    g.globalAlpha = 1;
    // the open run's current step, ringed
    const cur = ctx && ctx.nOutput > 0 ? d.points.findIndex((p) => p.runId === ctx!.runId && p.step === ctx!.step) : -1;
    ring(g, cur, '#a3261a', 8);
    ring(g, cursor, '#111', 7);
    ring(g, hover, '#111', 6);
    renderLegend();
    root.dataset.nPoints = String(d.points.length);
    root.dataset.nRuns = String(runIds.length);
    root.dataset.nClusters = String(P.nClusters);
    root.dataset.colorBy = colorBy;
    syncCursorData();
  }

  function ring(g: CanvasRenderingContext2D, i: number, color: string, r: number): void {
    if (i < 0 || i >= xy.length) return;
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    g.arc(xy[i][0], xy[i][1], r, 0, 2 * Math.PI);
    g.stroke();
    g.lineWidth = 1;
  }

  function renderLegend(): void {
    const d = data!;
    const P = proj!;
    const c = legendCounts(d.points, P.labels);
    const items: HTMLElement[] = [];
    for (const z of ZONES) {
      const info = ZONE_INFO[z];
      items.push(
        h(
          'span',
          { class: 'lg mf-lg-zone', 'data-zone': z, 'data-count': c.zones[z], title: `${info.name}: ${c.zones[z]} point${c.zones[z] === 1 ? '' : 's'} (shape${colorBy === 'zone' ? ' and colour' : ''})` },
          legendMarker(z, colorBy === 'zone' ? info.color : '#5b6470'),
          `${info.name} (${c.zones[z]})`,
        ),
      );
    }
    if (colorBy === 'cluster') {
      const ids = [...c.clusters.keys()].sort((a, b) => a - b);
      for (const l of ids)
        items.push(
          h(
            'span',
            { class: 'lg mf-lg-cluster', 'data-cluster': l, 'data-count': c.clusters.get(l) ?? 0 },
            h('span', { class: 'mf-swatch', style: `background:${clusterColor(l)}`, 'aria-hidden': 'true' }),
            `${l < 0 ? 'noise' : `cluster ${l + 1}`} (${c.clusters.get(l)})`,
          ),
        );
    }
    legend.replaceChildren(...items);
  }

  function syncCursorData(): void {
    const i = cursor;
    const ds = canvas.dataset;
    if (i < 0 || !data || i >= xy.length) {
      for (const k of ['cursorX', 'cursorY', 'cursorRun', 'cursorPos', 'cursorStep']) delete ds[k];
      return;
    }
    const p = data.points[i];
    ds.cursorX = xy[i][0].toFixed(1);
    ds.cursorY = xy[i][1].toFixed(1);
    ds.cursorRun = p.runId;
    ds.cursorPos = String(p.pos);
    ds.cursorStep = String(p.step);
  }

  function nearest(e: MouseEvent): number {
    const r = canvas.getBoundingClientRect();
    const x = e.clientX - r.left;
    const y = e.clientY - r.top;
    let best = -1;
    let bd = 64;
    for (let i = 0; i < xy.length; i++) {
      const dd = (xy[i][0] - x) ** 2 + (xy[i][1] - y) ** 2;
      if (dd < bd) (bd = dd), (best = i);
    }
    return best;
  }

  function open(i: number): void {
    if (!data || i < 0 || !deps.openAt || !ctx) return;
    const p = data.points[i];
    // keep the picture: the run open now stays among the projected ones
    if (p.runId !== ctx.runId) extra.add(ctx.runId);
    hideTip(root);
    deps.openAt(p.runId, Math.max(0, p.step));
  }

  canvas.addEventListener('mousemove', (e) => {
    if (!data || !proj) return;
    const i = nearest(e);
    if (i !== hover) {
      hover = i;
      draw();
    }
    if (i < 0) return hideTip(root);
    const t = pointTitle(i);
    showTip(root, e.clientX, e.clientY, t.title, t.lines);
  });
  canvas.addEventListener('mouseleave', () => {
    hideTip(root);
    if (hover >= 0) {
      hover = -1;
      draw();
    }
  });
  canvas.addEventListener('click', (e) => open(nearest(e)));
  canvas.addEventListener('keydown', (e) => {
    if (!data || !xy.length) return;
    const n = xy.length;
    let to = cursor;
    if (e.key === 'ArrowRight' || e.key === 'ArrowDown') to = cursor < 0 ? 0 : (cursor + 1) % n;
    else if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') to = cursor < 0 ? n - 1 : (cursor - 1 + n) % n;
    else if (e.key === 'Home') to = 0;
    else if (e.key === 'End') to = n - 1;
    else if ((e.key === 'Enter' || e.key === ' ') && cursor >= 0) {
      e.preventDefault();
      e.stopPropagation();
      open(cursor);
      return;
    } else if (e.key === 'Escape') {
      cursor = -1;
      hideTip(root);
      draw();
      return;
    } else return;
    e.preventDefault();
    e.stopPropagation(); // the arrows move the point, not the app's step
    cursor = to;
    draw();
    const r = canvas.getBoundingClientRect();
    const t = pointTitle(cursor);
    showTip(root, r.left + xy[cursor][0], r.top + xy[cursor][1], t.title, t.lines);
  });
  canvas.addEventListener('blur', () => hideTip(root));

  new ResizeObserver(() => {
    if (data && root.offsetParent !== null) draw();
  }).observe(root);

  return {
    show(c: ViewContext): void {
      const moved = !ctx || ctx.step !== c.step || ctx.runId !== c.runId;
      ctx = c;
      if (!listLoaded) void loadList();
      else syncOptions();
      ensure(c);
      if (moved) draw();
    },
    hide(): void {
      hideTip(root);
    },
  };
}

/** A zone's marker shape filled with `color`. */
function marker(g: CanvasRenderingContext2D, zone: Zone, color: string, x: number, y: number, r: number): void {
  const shape = ZONE_INFO[zone].shape;
  g.fillStyle = color;
  g.strokeStyle = color;
  g.beginPath();
  if (shape === 'circle') {
    g.arc(x, y, r, 0, 2 * Math.PI);
    g.fill();
  } else if (shape === 'square') {
    g.rect(x - r * 0.9, y - r * 0.9, 1.8 * r, 1.8 * r);
    g.fill();
  } else if (shape === 'triangle') {
    g.moveTo(x, y - r * 1.15);
    g.lineTo(x + r * 1.05, y + r * 0.8);
    g.lineTo(x - r * 1.05, y + r * 0.8);
    g.closePath();
    g.fill();
  } else {
    g.lineWidth = 2;
    g.moveTo(x - r, y - r);
    g.lineTo(x + r, y + r);
    g.moveTo(x + r, y - r);
    g.lineTo(x - r, y + r);
    g.stroke();
    g.lineWidth = 1;
  }
}

function legendMarker(zone: Zone, color: string): HTMLCanvasElement {
  const c = h('canvas', { width: 14, height: 14, 'aria-hidden': 'true', class: 'mf-lg-marker' });
  const g = c.getContext('2d');
  if (g) marker(g, zone, color, 7, 7, 4.5);
  return c;
}
