// Pure data transforms of the token graph (no DOM): per-step edge lists from
// the split rows of /api/runs/{id}/graph (or of the live stream), the edges a
// view draws (step, mode, selection, threshold), line widths, the vertical
// layout and its visible range (virtualization), and the URL hash state.
import { scaleLinear } from 'd3-scale';
import type { Measure } from './attribution';

// ---------------------------------------------------------------- types

/** One token as the API labels it. */
export interface Token {
  id: number;
  label: string;
}

/** A candidate of a step's top list. */
export interface Candidate {
  id: number;
  label: string;
  prob: number;
}

/** One generated token (a stored run's `steps[t]`, a streamed `token` event). */
export interface Step {
  index: number;
  id: number;
  label: string;
  text?: string;
  prob?: number;
  logprob?: number;
  top?: Candidate[];
}

/** The reply of GET /api/runs/{id}/graph (split rows per step). */
export interface GraphReply {
  n_prompt: number;
  n_output: number;
  prompt: ArrayLike<number>[];
  output: ArrayLike<number>[];
  prompt_mass?: number[];
  output_mass?: number[];
}

export type Mode = 'current' | 'all';
export type Side = 'input' | 'output';

export interface Selection {
  side: Side;
  index: number;
}

export interface ViewState {
  /** current step t (0-based output index) */
  step: number;
  mode: Mode;
  selected: Selection | null;
  threshold: number;
}

// ---------------------------------------------------------------- per-step edges

/**
 * The edges into one output step, heaviest first (ties: lower source first),
 * weights as float32 (the API's own type, so the >= threshold test matches its
 * `edges` exactly). Only positive weights are kept, and never prompt position
 * 0 (BOS, weight 0 in the split view).
 */
export interface StepEdges {
  ioSrc: Int32Array;
  ioW: Float32Array;
  ooSrc: Int32Array;
  ooW: Float32Array;
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);
const IDX = 1 << 21; // source positions below 2M

function sortedEdges(row: ArrayLike<number>, skipFirst: boolean): { src: Int32Array; w: Float32Array } {
  // Sort keys without a comparator: a positive float32's bits order as the
  // float does; key = bits * 2^21 + (2^21 - 1 - k) is exact in a double, and
  // ascending keys read backwards give heaviest first, ties by lower k.
  const n = row.length;
  const keys = new Float64Array(n);
  let m = 0;
  for (let k = skipFirst ? 1 : 0; k < n; k++) {
    F32[0] = Number(row[k]);
    const w = F32[0];
    if (w > 0) keys[m++] = U32[0] * IDX + (IDX - 1 - k);
  }
  const sorted = keys.subarray(0, m).sort();
  const src = new Int32Array(m);
  const w = new Float32Array(m);
  for (let i = 0; i < m; i++) {
    const key = sorted[m - 1 - i];
    const bits = Math.floor(key / IDX);
    src[i] = IDX - 1 - (key - bits * IDX);
    U32[0] = bits;
    w[i] = F32[0];
  }
  return { src, w };
}

/** Sorted edge lists of one step from its split rows (prompt part, output part). */
export function buildStepEdges(promptRow: ArrayLike<number>, outputRow: ArrayLike<number>): StepEdges {
  const io = sortedEdges(promptRow, true);
  const oo = sortedEdges(outputRow, false);
  return { ioSrc: io.src, ioW: io.w, ooSrc: oo.src, ooW: oo.w };
}

/** How many weights of a list sorted heaviest first are >= threshold (float32 compare, as the API). */
export function countAtLeast(sorted: Float32Array, threshold: number): number {
  const thr = Math.fround(threshold);
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] >= thr) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The graph data of a run: split rows per step (float32) and their sorted
 * edge lists, computed once when the data arrives (or per streamed step).
 */
export class GraphData {
  nPrompt: number;
  prompt: Float32Array[] = [];
  output: Float32Array[] = [];
  steps: StepEdges[] = [];
  /** per step, the raw attention mass of the prompt part (BOS left out) and of the output part (NaN: unknown) */
  promptMass: number[] = [];
  outputMass: number[] = [];

  constructor(nPrompt: number) {
    this.nPrompt = nPrompt;
  }

  get nOutput(): number {
    return this.steps.length;
  }

  static fromReply(g: GraphReply): GraphData {
    const d = new GraphData(g.n_prompt);
    const n = Math.min(g.prompt.length, g.output.length);
    for (let t = 0; t < n; t++) d.setStep(t, g.prompt[t], g.output[t], g.prompt_mass?.[t], g.output_mass?.[t]);
    return d;
  }

  /** Raw attention of step t's query to input k (split weight x the prompt part's mass; NaN: mass unknown). */
  rawPrompt(t: number, k: number): number {
    return rawOf(this.prompt[t]?.[k] ?? 0, this.promptMass[t]);
  }

  /** Raw attention of step t's query to earlier output j. */
  rawOutput(t: number, j: number): number {
    return rawOf(this.output[t]?.[j] ?? 0, this.outputMass[t]);
  }

  /** Sets (or appends) step t's split rows; missing rows read as zeros. */
  setStep(
    t: number,
    promptRow: ArrayLike<number> | null,
    outputRow: ArrayLike<number> | null,
    promptMass?: number | null,
    outputMass?: number | null,
  ): void {
    const p = new Float32Array(this.nPrompt);
    if (promptRow) for (let k = 0; k < Math.min(p.length, promptRow.length); k++) p[k] = Number(promptRow[k]);
    const o = new Float32Array(t);
    if (outputRow) for (let j = 0; j < Math.min(t, outputRow.length); j++) o[j] = Number(outputRow[j]);
    while (this.steps.length < t) this.setStep(this.steps.length, null, null);
    this.prompt[t] = p;
    this.output[t] = o;
    this.promptMass[t] = typeof promptMass === 'number' && Number.isFinite(promptMass) ? promptMass : NaN;
    this.outputMass[t] = typeof outputMass === 'number' && Number.isFinite(outputMass) ? outputMass : NaN;
    this.steps[t] = buildStepEdges(p, o);
  }

  /**
   * Sets step t's split rows as given, without copying them (views into a
   * range read: GraphRange), with their sorted edge lists when already built
   * (in the worker), else built here. The rows are float32 of n_prompt and t
   * entries.
   */
  setStepRows(t: number, p: Float32Array, o: Float32Array, promptMass?: number | null, outputMass?: number | null, edges?: StepEdges): void {
    while (this.steps.length < t) this.setStep(this.steps.length, null, null);
    this.prompt[t] = p;
    this.output[t] = o;
    this.promptMass[t] = typeof promptMass === 'number' && Number.isFinite(promptMass) ? promptMass : NaN;
    this.outputMass[t] = typeof outputMass === 'number' && Number.isFinite(outputMass) ? outputMass : NaN;
    this.steps[t] = edges ?? buildStepEdges(p, o);
  }
}

// ---------------------------------------------------------------- a range of rows (binary /graph)

/**
 * The rows of steps [from, to) of a run's graph as one float32 block (the
 * binary reply of /graph?format=bin, docs/API.md): row i is step from + i's
 * prompt part (nPrompt), then its from + i outputs, zero-padded to cols.
 * `steps` (absent until built): each step's sorted edge lists.
 */
export interface GraphRange {
  nPrompt: number;
  nOutput: number;
  from: number;
  to: number;
  cols: number;
  rows: Float32Array;
  promptMass: (number | null)[];
  outputMass: (number | null)[];
  steps?: StepEdges[];
}

/** Step from + i's prompt and output rows of a range (views, no copy). */
export function rangeRows(r: GraphRange, i: number): [Float32Array, Float32Array] {
  const o = i * r.cols;
  return [r.rows.subarray(o, o + r.nPrompt), r.rows.subarray(o + r.nPrompt, o + r.nPrompt + r.from + i)];
}

/** Parses a binary /graph reply; throws a clear Error on a malformed one. */
export function parseGraphBin(buf: ArrayBuffer): GraphRange {
  const bytes = new Uint8Array(buf);
  const nl = bytes.indexOf(10);
  if (nl < 0) throw new Error('graph reply: no header line');
  const h = JSON.parse(new TextDecoder().decode(bytes.subarray(0, nl))) as {
    n_prompt: number;
    n_output: number;
    from: number;
    to: number;
    dtype: string;
    shape: [number, number];
    prompt_mass?: (number | null)[];
    output_mass?: (number | null)[];
  };
  const [rows, cols] = Array.isArray(h.shape) ? h.shape : [-1, -1];
  const ok =
    h.dtype === 'float32' &&
    Number.isInteger(h.from) &&
    Number.isInteger(h.to) &&
    rows === h.to - h.from &&
    cols >= h.n_prompt + Math.max(0, h.to - 1) &&
    buf.byteLength - nl - 1 === rows * cols * 4;
  if (!ok) throw new Error(`graph reply: a header (${h.dtype} ${h.shape}) that does not match its ${buf.byteLength} bytes`);
  // the header's length is arbitrary: copied to an aligned buffer when it is not a multiple of 4
  const off = nl + 1;
  const data = off % 4 === 0 ? new Float32Array(buf, off, rows * cols) : new Float32Array(buf.slice(off));
  return {
    nPrompt: h.n_prompt,
    nOutput: h.n_output,
    from: h.from,
    to: h.to,
    cols,
    rows: data,
    promptMass: h.prompt_mass ?? [],
    outputMass: h.output_mass ?? [],
  };
}

/** A JSON /graph reply of steps [from, to) as a GraphRange (a server without the binary form). */
export function rangeOfReply(g: GraphReply, from: number, to: number): GraphRange {
  const np = g.n_prompt;
  const cols = np + Math.max(0, to - 1);
  const rows = new Float32Array((to - from) * cols);
  for (let i = 0; i < to - from; i++) {
    const p = g.prompt[i] ?? [];
    const o = g.output[i] ?? [];
    const at = i * cols;
    for (let k = 0; k < Math.min(np, p.length); k++) rows[at + k] = Number(p[k]);
    for (let j = 0; j < Math.min(from + i, o.length); j++) rows[at + np + j] = Number(o[j]);
  }
  return { nPrompt: np, nOutput: g.n_output, from, to, cols, rows, promptMass: g.prompt_mass ?? [], outputMass: g.output_mass ?? [] };
}

/** Builds every step's sorted edge lists of a range (done in the worker, web/src/graph.worker.ts). */
export function buildRangeEdges(r: GraphRange): StepEdges[] {
  const out: StepEdges[] = [];
  for (let i = 0; i < r.to - r.from; i++) {
    const [p, o] = rangeRows(r, i);
    out.push(buildStepEdges(p, o));
  }
  return out;
}

/**
 * A split weight back to raw attention: the split view divides each part by
 * its raw mass (docs/API.md, `*_mass`), so raw = split x mass. NaN when the
 * mass is unknown.
 */
export function rawOf(split: number, mass: number | undefined): number {
  if (typeof mass !== 'number' || !Number.isFinite(mass)) return NaN;
  return Math.fround(split * mass);
}

/** Whether every step of a graph has both masses (the raw view can be drawn). */
export function hasMasses(d: GraphData | null): boolean {
  if (!d) return false;
  for (let t = 0; t < d.nOutput; t++) if (!Number.isFinite(d.promptMass[t]) || (t > 0 && !Number.isFinite(d.outputMass[t]))) return false;
  return true;
}

/**
 * The raw attention rows of a graph (what the Heatmap and Text tabs show, BOS
 * still left out): each step's split rows times their masses. Steps without
 * masses read as zeros.
 */
export function rawGraphData(d: GraphData): GraphData {
  const r = new GraphData(d.nPrompt);
  for (let t = 0; t < d.nOutput; t++) {
    const pm = d.promptMass[t];
    const om = d.outputMass[t];
    const p = Array.from(d.prompt[t], (w) => (Number.isFinite(pm) ? rawOf(w, pm) : 0));
    const o = Array.from(d.output[t], (w) => (Number.isFinite(om) ? rawOf(w, om) : 0));
    r.setStep(t, p, o, pm, om);
  }
  return r;
}

// ---------------------------------------------------------------- edges of a view

export const IO = 0;
export const OO = 1;

/** A flat list of edges: kind (IO: input src -> output dst, OO: output src -> output dst), weight. */
export class EdgeList {
  n = 0;
  nIO = 0;
  nOO = 0;
  kind: Uint8Array;
  src: Int32Array;
  dst: Int32Array;
  w: Float32Array;

  constructor(capacity = 64) {
    const c = Math.max(1, capacity);
    this.kind = new Uint8Array(c);
    this.src = new Int32Array(c);
    this.dst = new Int32Array(c);
    this.w = new Float32Array(c);
  }

  private grow(need: number): void {
    let c = this.kind.length;
    if (need <= c) return;
    while (c < need) c *= 2;
    const k = new Uint8Array(c);
    k.set(this.kind);
    const s = new Int32Array(c);
    s.set(this.src);
    const d = new Int32Array(c);
    d.set(this.dst);
    const w = new Float32Array(c);
    w.set(this.w);
    this.kind = k;
    this.src = s;
    this.dst = d;
    this.w = w;
  }

  push(kind: number, src: number, dst: number, w: number): void {
    this.grow(this.n + 1);
    const i = this.n++;
    this.kind[i] = kind;
    this.src[i] = src;
    this.dst[i] = dst;
    this.w[i] = w;
    if (kind === IO) this.nIO++;
    else this.nOO++;
  }

  /** Every edge of one step at the threshold (a prefix of each sorted list). */
  pushStep(t: number, e: StepEdges, threshold: number): void {
    const nio = countAtLeast(e.ioW, threshold);
    const noo = countAtLeast(e.ooW, threshold);
    this.grow(this.n + nio + noo);
    for (let i = 0; i < nio; i++) this.push(IO, e.ioSrc[i], t, e.ioW[i]);
    for (let i = 0; i < noo; i++) this.push(OO, e.ooSrc[i], t, e.ooW[i]);
  }

  toArray(): { kind: 'io' | 'oo'; src: number; dst: number; w: number }[] {
    const out = [];
    for (let i = 0; i < this.n; i++)
      out.push({ kind: this.kind[i] === IO ? ('io' as const) : ('oo' as const), src: this.src[i], dst: this.dst[i], w: this.w[i] });
    return out;
  }
}

/** The step actually shown: the view's step clamped to the data (-1: nothing generated). */
export function clampStep(step: number, nOutput: number): number {
  if (nOutput <= 0) return -1;
  if (!Number.isFinite(step)) return nOutput - 1;
  return Math.max(0, Math.min(nOutput - 1, Math.trunc(step)));
}

/**
 * The edges a view draws at step t:
 * - selected input k: its edges to outputs 0..t (either mode);
 * - selected output j: its incoming edges (none when j > t);
 * - else mode "current": the edges into output t; mode "all": into every output 0..t.
 * Only weights >= threshold (float32 compare), never BOS, never zero weights.
 */
export function selectEdges(data: GraphData | null, view: ViewState): EdgeList {
  const out = new EdgeList();
  if (!data) return out;
  const t = clampStep(view.step, data.nOutput);
  if (t < 0) return out;
  const sel = view.selected;
  const thr = Math.fround(view.threshold);
  if (sel && sel.side === 'input') {
    const k = sel.index;
    if (k <= 0 || k >= data.nPrompt) return out;
    for (let s = 0; s <= t; s++) {
      const w = data.prompt[s][k];
      if (w > 0 && w >= thr) out.push(IO, k, s, w);
    }
    return out;
  }
  if (sel && sel.side === 'output') {
    if (sel.index >= 0 && sel.index <= t) out.pushStep(sel.index, data.steps[sel.index], view.threshold);
    return out;
  }
  if (view.mode === 'all') for (let s = 0; s <= t; s++) out.pushStep(s, data.steps[s], view.threshold);
  else out.pushStep(t, data.steps[t], view.threshold);
  return out;
}

// ---------------------------------------------------------------- widths

const widthScale = scaleLinear().domain([0, 1]).range([0.5, 3]).clamp(true);

/** Line width in px for a weight in [0, 1]: 0.5 + 2.5 * w (clamped). */
export function edgeWidth(w: number): number {
  if (!Number.isFinite(w)) return 0.5;
  return widthScale(w);
}

/** Canvas strokes are batched per width bucket: quarter-pixel steps 0..10. */
export const WIDTH_BUCKETS = 11;
export function widthBucket(w: number): number {
  return Math.round((edgeWidth(w) - 0.5) * 4);
}
export function bucketWidth(b: number): number {
  return 0.5 + b / 4;
}

// ---------------------------------------------------------------- layout

export interface Column {
  n: number;
  /** row i sits at offset + (i + 0.5) * spacing in the column's own coordinates */
  offset: number;
  spacing: number;
  /** the column's own extent (>= the viewport) */
  height: number;
  /**
   * How fast the column scrolls relative to the graph (1: the longest column,
   * scrolls with the content; 0: fits in the viewport and stays in place;
   * between: a shorter column that does not fit moves slower, so that both
   * columns reach their ends together).
   */
  ratio: number;
}

export interface Layout {
  width: number;
  height: number; // content height (>= the viewport)
  viewport: number; // viewport height
  xIn: number;
  xOut: number;
  input: Column;
  output: Column;
}

export interface LayoutOptions {
  minRow?: number; // px, rows never closer than this (the graph scrolls instead)
  maxRow?: number; // px, rows never farther apart (short columns are centered)
  pad?: number; // px above the first and below the last row
}

export const MIN_ROW = 20;
export const MAX_ROW = 56;

/**
 * Each column evenly spaced over the graph's height (at most maxRow apart,
 * centered); a column that does not fit at minRow grows past the viewport and
 * the graph scrolls (see Column.ratio). Input x = 0.1 w, output x = 0.9 w.
 */
export function layoutGraph(width: number, viewportH: number, nIn: number, nOut: number, o: LayoutOptions = {}): Layout {
  const minRow = o.minRow ?? MIN_ROW;
  const maxRow = o.maxRow ?? MAX_ROW;
  const pad = o.pad ?? 12;
  const vh = Math.max(1, viewportH);
  const col = (n: number): Column => {
    if (n <= 0) return { n: 0, offset: pad, spacing: minRow, height: vh, ratio: 1 };
    const avail = vh - 2 * pad;
    if (avail / n >= minRow) {
      const spacing = Math.min(maxRow, avail / n);
      return { n, offset: pad + (avail - spacing * n) / 2, spacing, height: vh, ratio: 1 };
    }
    return { n, offset: pad, spacing: minRow, height: n * minRow + 2 * pad, ratio: 1 };
  };
  const input = col(nIn);
  const output = col(nOut);
  const height = Math.max(vh, input.height, output.height);
  if (height > vh) for (const c of [input, output]) c.ratio = (c.height - vh) / (height - vh);
  return { width, height, viewport: vh, xIn: 0.1 * width, xOut: 0.9 * width, input, output };
}

/** y of row i in the column's own coordinates. */
export function rowY(c: Column, i: number): number {
  return c.offset + (i + 0.5) * c.spacing;
}

/** y of row i in the viewport at scroll offset top. */
export function viewY(c: Column, i: number, top: number): number {
  return rowY(c, i) - top * c.ratio;
}

/** y of row i in content coordinates (what the canvas draws in) at scroll offset top. */
export function contentY(c: Column, i: number, top: number): number {
  return rowY(c, i) + top * (1 - c.ratio);
}

/**
 * Rows of a column shown in the viewport [top, top + height] of the graph,
 * widened by overscan px: inclusive [first, last]; last < first when none.
 */
export function visibleRange(c: Column, top: number, height: number, overscan = 0): [number, number] {
  if (c.n <= 0) return [0, -1];
  const local = top * c.ratio; // the column's own offset
  const y0 = local - overscan;
  const y1 = local + height + overscan;
  // row i spans [offset + i*spacing, offset + (i+1)*spacing]
  const first = Math.max(0, Math.floor((y0 - c.offset) / c.spacing));
  const last = Math.min(c.n - 1, Math.ceil((y1 - c.offset) / c.spacing) - 1);
  return last < first ? [0, -1] : [first, last];
}

/** The scroll offset that shows row i of a column in the middle of the viewport. */
export function scrollFor(lay: Layout, c: Column, i: number): number {
  if (c.ratio <= 0) return -1; // always in view
  const t = (rowY(c, i) - lay.viewport / 2) / c.ratio;
  return Math.max(0, Math.min(lay.height - lay.viewport, t));
}

/** The point of a quadratic output->output curve: control point to the right of the output column. */
export function curveControlX(xOut: number, y1: number, y2: number, width: number): number {
  const room = Math.max(16, 2 * (width - xOut - 6)); // the curve peaks at half the control offset
  return xOut + Math.min(room, 28 + 0.6 * Math.abs(y2 - y1));
}

// ---------------------------------------------------------------- URL hash state

/** The tabs of the main area ('graph' is the default and is left out of the hash). */
export const VIEW_NAMES = ['graph', 'text', 'lens', 'stats', 'tokens', 'sampling', 'compare', 'heatmap', 'heads', 'experts', 'effects', 'sources'] as const;
export type ViewName = (typeof VIEW_NAMES)[number];

export function isViewName(v: unknown): v is ViewName {
  return typeof v === 'string' && (VIEW_NAMES as readonly string[]).includes(v);
}

export interface UrlState {
  run: string | null;
  step: number | null; // null: the last step
  layer: number | null; // null: all layers
  head: number | null; // null: all heads
  threshold: number;
  mode: Mode;
  /** the tab; absent: graph */
  view?: ViewName;
  /** the second run of the Compare tab; absent: none */
  cmp?: string | null;
  /** what the graph's line width means; absent: normalized (split) attention */
  weights?: EdgeWeights;
  /** what the graph's weights measure; absent: attention */
  measure?: Measure;
}

/**
 * The graph's edge weights: the split rows (BOS removed, input and output
 * parts each sum to 1), the raw attention, or the attention rollout of the
 * step's query.
 */
export type EdgeWeights = 'split' | 'raw' | 'rollout';

/** What each edge-weight choice is, as the legend, the hover and the exports name it. */
export const QUANTITY: Record<EdgeWeights, string> = {
  split: 'normalized attention (BOS removed; input and output parts each sum to 1)',
  raw: 'raw attention',
  rollout: 'attention rollout',
};

const RUN_ID = /^[\w.:-]+$/;

export const DEFAULT_THRESHOLD = 0.05;

export function defaultUrlState(): UrlState {
  return { run: null, step: null, layer: null, head: null, threshold: DEFAULT_THRESHOLD, mode: 'current' };
}

function nonNegInt(v: string | null): number | null {
  if (v === null || !/^\d{1,9}$/.test(v.trim())) return null;
  return Number(v.trim());
}

/** The state in a location hash ("#run=ID&step=T&layer=L&head=H&threshold=X&mode=all"); garbage reads as defaults. */
export function decodeHash(hash: string | null | undefined): UrlState {
  const s = defaultUrlState();
  if (typeof hash !== 'string') return s;
  let p: URLSearchParams;
  try {
    p = new URLSearchParams(hash.replace(/^#/, ''));
  } catch {
    return s;
  }
  const run = p.get('run');
  if (run && run.length <= 200 && RUN_ID.test(run)) s.run = run;
  s.step = nonNegInt(p.get('step'));
  s.layer = nonNegInt(p.get('layer'));
  s.head = s.layer === null ? null : nonNegInt(p.get('head'));
  const thr = p.get('threshold');
  if (thr !== null && thr.trim() !== '') {
    const x = Number(thr);
    if (Number.isFinite(x) && x >= 0 && x <= 1) s.threshold = x;
  }
  if (p.get('mode') === 'all') s.mode = 'all';
  const view = p.get('view');
  if (isViewName(view) && view !== 'graph') s.view = view;
  const cmp = p.get('cmp');
  if (cmp && cmp.length <= 200 && RUN_ID.test(cmp)) s.cmp = cmp;
  const wt = p.get('weights');
  if (wt === 'rollout' || wt === 'raw') s.weights = wt;
  if (p.get('measure') === 'value') s.measure = 'value';
  return s;
}

/** The hash for a state (without "#"); defaults are left out. */
export function encodeHash(s: UrlState): string {
  const parts: string[] = [];
  if (s.run) parts.push('run=' + encodeURIComponent(s.run));
  if (s.step !== null && s.step >= 0) parts.push('step=' + Math.trunc(s.step));
  if (s.layer !== null && s.layer >= 0) {
    parts.push('layer=' + Math.trunc(s.layer));
    if (s.head !== null && s.head >= 0) parts.push('head=' + Math.trunc(s.head));
  }
  if (Number.isFinite(s.threshold) && Math.abs(s.threshold - DEFAULT_THRESHOLD) > 1e-12)
    parts.push('threshold=' + Number(s.threshold.toFixed(4)));
  if (s.mode === 'all') parts.push('mode=all');
  if (s.view && s.view !== 'graph' && isViewName(s.view)) parts.push('view=' + s.view);
  if (s.cmp) parts.push('cmp=' + encodeURIComponent(s.cmp));
  if (s.weights === 'rollout' || s.weights === 'raw') parts.push('weights=' + s.weights);
  if (s.measure === 'value') parts.push('measure=value');
  return parts.join('&');
}

// ---------------------------------------------------------------- live stream accumulation

/** The `attention` member of a streamed token event (split present with "attention_split": true). */
export interface TokenAttention {
  top?: [number, number][];
  split?: { prompt: number[]; output: number[]; prompt_mass?: number; output_mass?: number };
}

export interface TokenEvent extends Step {
  attention?: TokenAttention;
}

/**
 * A generation as it streams: the steps and their split rows. n_prompt is
 * taken from the first split (authoritative), else from the tokenized prompt.
 */
export class LiveRun {
  steps: Step[] = [];
  data: GraphData | null = null;
  nPrompt: number;
  hasSplit = false;

  constructor(nPromptGuess: number) {
    this.nPrompt = nPromptGuess;
  }

  /** Adds one token event; returns the step index it filled. */
  add(ev: TokenEvent): number {
    const t = Number.isInteger(ev.index) && ev.index >= 0 ? ev.index : this.steps.length;
    const split = ev.attention?.split;
    if (split && Array.isArray(split.prompt) && !this.hasSplit) {
      this.hasSplit = true;
      if (split.prompt.length !== this.nPrompt || !this.data) {
        this.nPrompt = split.prompt.length;
        const old = this.data;
        this.data = new GraphData(this.nPrompt);
        if (old)
          for (let s = 0; s < old.nOutput; s++)
            this.data.setStep(s, old.prompt[s], old.output[s], old.promptMass[s], old.outputMass[s]);
      }
    }
    if (!this.data) this.data = new GraphData(this.nPrompt);
    const { index: _i, attention: _a, ...rest } = ev;
    this.steps[t] = { index: t, ...rest };
    this.data.setStep(t, split ? split.prompt : null, split ? split.output : null, split?.prompt_mass, split?.output_mass);
    return t;
  }

  get nOutput(): number {
    return this.steps.length;
  }
}

// ---------------------------------------------------------------- small helpers

/** A token label as shown on a button: visible, one line. */
export function displayLabel(label: string | undefined | null): string {
  if (label === undefined || label === null || label === '') return '∅';
  const s = label.replace(/\n/g, '↵').replace(/\t/g, '⇥').replace(/\r/g, '␍');
  return s.trim() === '' ? s.replace(/ /g, '␣') : s; // a blank token stays visible
}

export function formatWeight(w: number): string {
  return Number.isFinite(w) ? w.toFixed(4) : '-';
}

// ---------------------------------------------------------------- inputs

/** A validated "tokens to generate" value, or the message shown beside the control. */
export type MaxTokensCheck = { ok: true; value: number } | { ok: false; message: string };

/** Checks a max-tokens entry against 1..limit (the server's limits.max_tokens); nothing is silently changed. */
export function checkMaxTokens(text: string, limit: number): MaxTokensCheck {
  const s = text.trim();
  if (s === '') return { ok: false, message: `Enter how many tokens to generate (1 to ${limit}).` };
  if (!/^[+-]?\d+$/.test(s)) return { ok: false, message: `“${s}” is not a whole number: enter 1 to ${limit}.` };
  const v = Number(s);
  if (v < 1) return { ok: false, message: `At least 1 token: ${v} is too few (1 to ${limit}).` };
  if (v > limit) return { ok: false, message: `At most ${limit} tokens (the server's limit): ${v} is too many.` };
  return { ok: true, value: v };
}

/** A prompt that can be generated from, or the message beside the prompt box. */
export function checkPrompt(text: string): string | null {
  return text === '' ? 'Enter a prompt first: an empty prompt is not sent.' : null;
}
