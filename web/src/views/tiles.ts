// Pure helpers of the heatmap and heads views (no DOM): the view transform
// (zoom, pan, visible window), the tile pyramid over GET /api/runs/{id}/heatmap
// (levels, tile windows, request parameters, cache keys), pooled-cell lookup,
// the colour scale, axis label density, the /heatmap reply parser (its
// float32 / float16 values decoded by ../datafile), an LRU cache, a small
// fetch queue and the grid's visible cells.

import { binHeader, binValues, dtypeBytes, type Dtype } from '../datafile';

// ------------------------------------------------------------------ constants

/** Cells per tile side at every pooling level. */
export const TILE = 128;
/** From this many CSS px per position on, tiles are exact (one cell = one position). */
export const EXACT_PX = 4;
/** Below EXACT_PX, pooled cells are at least this many CSS px wide. */
export const CELL_PX = 2;
/** From this many CSS px per position on, token labels are drawn on the axes. */
export const LABEL_PX = 11;
/** Most CSS px per position (the deepest zoom). */
export const MAX_PX = 64;
/** Axis ticks (position numbers) are at least this many CSS px apart. */
export const TICK_PX = 48;
/** The server's largest `size`. */
export const MAX_SIZE = 1024;

export type Pool = 'max' | 'mean';
export type ScaleKind = 'sqrt' | 'linear';
export type { Dtype };

export interface Selection {
  layer: number | null;
  head: number | null;
}

/** A window of the attention matrix: queries [q0, q1), keys [k0, k1). */
export interface Win {
  q0: number;
  q1: number;
  k0: number;
  k1: number;
}

/** A heatmap reply: `rows x cols` cells of `bq x bk` positions, row-major. */
export interface HeatTile extends Win {
  bq: number;
  bk: number;
  rows: number;
  cols: number;
  pool: Pool;
  exact: boolean;
  data: Float32Array;
}

// ------------------------------------------------------------------ positions and steps

/** Positions that have attention rows: n_prompt + n_output - 1 (0 when there are none). */
export function nPositions(nPrompt: number, nOutput: number): number {
  return Math.max(0, nPrompt + nOutput - 1);
}

/** The query position that chose output `step`. */
export function stepQuery(nPrompt: number, step: number): number {
  return nPrompt - 1 + step;
}

/** The step chosen by query position q, or null for a prompt row that chose no output. */
export function queryStep(q: number, nPrompt: number, nOutput: number): number | null {
  const t = q - (nPrompt - 1);
  return Number.isInteger(t) && t >= 0 && t < nOutput ? t : null;
}

// ------------------------------------------------------------------ view transform

/** The view: x0 = key position at the plot's left edge, y0 = query position at its top, s = CSS px per position. */
export interface ViewXf {
  x0: number;
  y0: number;
  s: number;
}

/** The scale at which the whole n x n matrix fits pw x ph. */
export function fitScale(n: number, pw: number, ph: number): number {
  if (n <= 0 || pw <= 0 || ph <= 0) return 1;
  return Math.min(pw, ph) / n;
}

export function scaleLimits(n: number, pw: number, ph: number): { min: number; max: number } {
  const min = fitScale(n, pw, ph);
  return { min, max: Math.max(min, MAX_PX) };
}

const clamp = (x: number, lo: number, hi: number) => (x < lo ? lo : x > hi ? hi : x);

/** Keeps the scale within its limits and the view on the matrix (a side that fits starts at 0). */
export function clampView(v: ViewXf, n: number, pw: number, ph: number): ViewXf {
  const { min, max } = scaleLimits(n, pw, ph);
  const s = clamp(Number.isFinite(v.s) ? v.s : min, min, max);
  const spanX = pw / s;
  const spanY = ph / s;
  const x0 = spanX >= n ? 0 : clamp(Number.isFinite(v.x0) ? v.x0 : 0, 0, n - spanX);
  const y0 = spanY >= n ? 0 : clamp(Number.isFinite(v.y0) ? v.y0 : 0, 0, n - spanY);
  return { x0, y0, s };
}

export function fitView(n: number, pw: number, ph: number): ViewXf {
  return clampView({ x0: 0, y0: 0, s: fitScale(n, pw, ph) }, n, pw, ph);
}

/** Zooms by `factor` keeping the matrix point under (px, py) (plot coordinates) in place. */
export function zoomAbout(v: ViewXf, factor: number, px: number, py: number, n: number, pw: number, ph: number): ViewXf {
  const { min, max } = scaleLimits(n, pw, ph);
  const s = clamp(v.s * factor, min, max);
  const kx = v.x0 + px / v.s;
  const qy = v.y0 + py / v.s;
  return clampView({ x0: kx - px / s, y0: qy - py / s, s }, n, pw, ph);
}

/** Moves the view by (dx, dy) CSS px (drag direction: content follows the pointer). */
export function panBy(v: ViewXf, dx: number, dy: number, n: number, pw: number, ph: number): ViewXf {
  return clampView({ x0: v.x0 - dx / v.s, y0: v.y0 - dy / v.s, s: v.s }, n, pw, ph);
}

/**
 * Where the +/- buttons and keys zoom about (plot coordinates): the centre of
 * the visible part of the matrix, moved left onto the diagonal when it is
 * above it (masked), so that zooming in never leaves only masked cells.
 */
export function zoomAnchor(v: ViewXf, n: number, pw: number, ph: number): { px: number; py: number } {
  const w = Math.min(pw, (n - v.x0) * v.s);
  const h = Math.min(ph, (n - v.y0) * v.s);
  const py = Math.max(0, h / 2);
  const q = v.y0 + py / v.s;
  const k = Math.min(v.x0 + w / 2 / v.s, q);
  return { px: Math.max(0, (k - v.x0) * v.s), py };
}

/** The integer window of positions (partly) visible in a pw x ph plot. */
export function visibleWindow(v: ViewXf, n: number, pw: number, ph: number): Win {
  if (n <= 0) return { q0: 0, q1: 0, k0: 0, k1: 0 };
  const eps = 1e-9;
  const q0 = clamp(Math.floor(v.y0 + eps), 0, n - 1);
  const k0 = clamp(Math.floor(v.x0 + eps), 0, n - 1);
  const q1 = clamp(Math.ceil(v.y0 + ph / v.s - eps), q0 + 1, n);
  const k1 = clamp(Math.ceil(v.x0 + pw / v.s - eps), k0 + 1, n);
  return { q0, q1, k0, k1 };
}

/** The matrix position under plot point (px, py), or null outside the matrix. */
export function positionAt(v: ViewXf, px: number, py: number, n: number): { q: number; k: number } | null {
  const k = Math.floor(v.x0 + px / v.s);
  const q = Math.floor(v.y0 + py / v.s);
  if (px < 0 || py < 0 || q < 0 || k < 0 || q >= n || k >= n) return null;
  return { q, k };
}

// ------------------------------------------------------------------ tile pyramid

export function pow2ceil(x: number): number {
  let p = 1;
  while (p < x && p < 2 ** 30) p *= 2;
  return p;
}

/**
 * Positions per cell side at scale s for an n-position matrix: 1 (exact)
 * from EXACT_PX px per position on, else a power of two >= 2 that makes cells
 * at least CELL_PX px (never more than the whole matrix).
 */
export function levelFor(s: number, n: number): number {
  if (!(s > 0)) return 1;
  if (s >= EXACT_PX) return 1;
  const b = Math.max(2, pow2ceil(CELL_PX / s));
  return Math.max(1, Math.min(b, pow2ceil(n)));
}

/** A tile of the pyramid: index (ti, tj) at level b, its window and the `size` that makes its cells b x b. */
export interface TileReq extends Win {
  b: number;
  ti: number;
  tj: number;
  size: number;
}

export function tileRequest(ti: number, tj: number, b: number, n: number, tile = TILE): TileReq {
  const span = tile * b;
  const q0 = ti * span;
  const k0 = tj * span;
  const q1 = Math.min(n, q0 + span);
  const k1 = Math.min(n, k0 + span);
  const size = clamp(Math.ceil(Math.max(q1 - q0, k1 - k0) / b), 1, MAX_SIZE);
  return { b, ti, tj, q0, q1, k0, k1, size };
}

/** True when every key of the window comes after every query (all masked: zeros, never requested). */
export function allMasked(w: Win): boolean {
  return w.k0 > w.q1 - 1;
}

/**
 * The tiles of level b covering window w, without the ones wholly above the
 * diagonal, nearest to the window's centre first.
 */
export function tilesFor(w: Win, n: number, b: number, tile = TILE): TileReq[] {
  if (n <= 0 || w.q1 <= w.q0 || w.k1 <= w.k0) return [];
  const span = tile * b;
  const out: TileReq[] = [];
  for (let ti = Math.floor(w.q0 / span); ti <= Math.floor((w.q1 - 1) / span); ti++)
    for (let tj = Math.floor(w.k0 / span); tj <= Math.floor((w.k1 - 1) / span); tj++) {
      const t = tileRequest(ti, tj, b, n, tile);
      if (t.q0 < t.q1 && t.k0 < t.k1 && !allMasked(t)) out.push(t);
    }
  const cq = (w.q0 + w.q1) / 2;
  const ck = (w.k0 + w.k1) / 2;
  const d = (t: TileReq) => Math.abs((t.q0 + t.q1) / 2 - cq) + Math.abs((t.k0 + t.k1) / 2 - ck);
  return out.sort((a, c) => d(a) - d(c));
}

/** The tile of level b that contains position (q, k). */
export function tileOf(q: number, k: number, b: number, n: number, tile = TILE): TileReq {
  const span = tile * b;
  return tileRequest(Math.floor(q / span), Math.floor(k / span), b, n, tile);
}

// ------------------------------------------------------------------ requests and cache keys

export interface HeatmapParams extends Win {
  size: number;
  pool: Pool;
  format?: 'json' | 'bin';
  dtype?: Dtype;
}

/** The query string of a /heatmap request (selection first; head only with a layer, as the UI selects). */
export function heatmapQuery(sel: Selection, p: HeatmapParams): string {
  const q = new URLSearchParams();
  if (sel.layer !== null) q.set('layer', String(sel.layer));
  if (sel.head !== null) q.set('head', String(sel.head));
  q.set('q0', String(p.q0));
  q.set('q1', String(p.q1));
  q.set('k0', String(p.k0));
  q.set('k1', String(p.k1));
  q.set('size', String(p.size));
  q.set('pool', p.pool);
  if (p.format) q.set('format', p.format);
  if (p.format === 'bin' && p.dtype) q.set('dtype', p.dtype);
  return q.toString();
}

/** '' (same origin) gives a path relative to the page, like src/api.ts; else base + /api/... */
export function apiUrl(base: string, path: string): string {
  return base ? base.replace(/\/+$/, '') + '/' + path : path;
}

export function heatmapUrl(base: string, runId: string, sel: Selection, p: HeatmapParams): string {
  return apiUrl(base, `api/runs/${encodeURIComponent(runId)}/heatmap?${heatmapQuery(sel, p)}`);
}

/** A tile's cache key: run, selection, window, size, pooling and element type. */
export function tileKey(runId: string, sel: Selection, p: HeatmapParams): string {
  const l = sel.layer === null ? '*' : sel.layer;
  const h = sel.head === null ? '*' : sel.head;
  return `${runId}|${l}.${h}|${p.q0},${p.q1},${p.k0},${p.k1}|${p.size}|${p.pool}|${p.dtype ?? 'float32'}`;
}

// ------------------------------------------------------------------ cells

export interface Cell {
  r: number;
  c: number;
  value: number;
  /** the cell's positions: queries [q0, q1), keys [k0, k1) */
  q0: number;
  q1: number;
  k0: number;
  k1: number;
  /** every key of the cell comes after every query: masked, no value */
  masked: boolean;
  exact: boolean;
}

/** The cell of a tile that holds position (q, k), or null outside the tile. */
export function cellAt(t: HeatTile, q: number, k: number): Cell | null {
  if (q < t.q0 || q >= t.q1 || k < t.k0 || k >= t.k1) return null;
  const r = Math.floor((q - t.q0) / t.bq);
  const c = Math.floor((k - t.k0) / t.bk);
  if (r >= t.rows || c >= t.cols) return null;
  const q0 = t.q0 + r * t.bq;
  const k0 = t.k0 + c * t.bk;
  const q1 = Math.min(t.q1, q0 + t.bq);
  const k1 = Math.min(t.k1, k0 + t.bk);
  const masked = k0 > q1 - 1;
  return { r, c, value: t.data[r * t.cols + c], q0, q1, k0, k1, masked, exact: t.bq === 1 && t.bk === 1 };
}

/** "max of a 4×4 block" for a pooled cell, '' for an exact one. */
export function blockText(cell: Cell, pool: Pool): string {
  if (cell.q1 - cell.q0 === 1 && cell.k1 - cell.k0 === 1) return '';
  return `${pool} of a ${cell.q1 - cell.q0}×${cell.k1 - cell.k0} block`;
}

export function formatWeight4(w: number): string {
  return Number.isFinite(w) ? w.toFixed(4) : '–';
}

// ------------------------------------------------------------------ colour scale

/** Viridis (matplotlib), 11 stops: perceptually uniform, colour-blind safe, readable in grey. */
export const VIRIDIS = [
  '#440154', '#482475', '#414487', '#355f8d', '#2a788e', '#21918c',
  '#22a884', '#44bf70', '#7ad151', '#bddf26', '#fde725',
] as const;

const STOPS = VIRIDIS.map((h) => [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)]);

/** Viridis at t in [0, 1] (linear between the stops). */
export function viridis(t: number): [number, number, number] {
  const x = clamp(Number.isFinite(t) ? t : 0, 0, 1) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const a = STOPS[i];
  const b = STOPS[i + 1];
  return [0, 1, 2].map((j) => Math.round(a[j] + (b[j] - a[j]) * f)) as [number, number, number];
}

export function rgbHex([r, g, b]: [number, number, number]): string {
  return '#' + [r, g, b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

/** Weight (0..1) to colour-scale position (0..1): square root spreads the many small weights. */
export function scaleT(w: number, kind: ScaleKind): number {
  const x = clamp(Number.isFinite(w) ? w : 0, 0, 1);
  return kind === 'sqrt' ? Math.sqrt(x) : x;
}

export const LUT_SIZE = 256;

/** RGB triplets of LUT_SIZE colours along viridis. */
export function buildLut(n = LUT_SIZE): Uint8Array {
  const lut = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) lut.set(viridis(i / (n - 1)), i * 3);
  return lut;
}

export function lutIndex(w: number, kind: ScaleKind, n = LUT_SIZE): number {
  return Math.round(scaleT(w, kind) * (n - 1));
}

/**
 * RGBA pixels of a tile, one per cell (cols x rows), viridis of the weight;
 * cells wholly above the diagonal are transparent.
 */
export function tilePixels(t: HeatTile, kind: ScaleKind, lut: Uint8Array = buildLut()): Uint8ClampedArray {
  const px = new Uint8ClampedArray(t.rows * t.cols * 4);
  const n = lut.length / 3;
  for (let r = 0; r < t.rows; r++) {
    const qLast = Math.min(t.q1, t.q0 + (r + 1) * t.bq) - 1;
    for (let c = 0; c < t.cols; c++) {
      const i = r * t.cols + c;
      if (t.k0 + c * t.bk > qLast) continue; // masked: transparent
      const j = lutIndex(t.data[i], kind, n) * 3;
      px[i * 4] = lut[j];
      px[i * 4 + 1] = lut[j + 1];
      px[i * 4 + 2] = lut[j + 2];
      px[i * 4 + 3] = 255;
    }
  }
  return px;
}

/** Legend ticks: weights and their positions (0..1) along the colour bar. */
export function legendTicks(kind: ScaleKind): { value: number; at: number; text: string }[] {
  const vals = kind === 'sqrt' ? [0, 0.01, 0.05, 0.25, 0.5, 1] : [0, 0.25, 0.5, 0.75, 1];
  return vals.map((v) => ({ value: v, at: scaleT(v, kind), text: v === 0 || v === 1 ? String(v) : String(v).replace(/^0/, '') }));
}

// ------------------------------------------------------------------ axis labels

/** 1, 2, 5, 10, 20, 50, ... : the smallest such step >= x. */
export function niceStep(x: number): number {
  if (!(x > 1)) return 1;
  let p = 1;
  for (;;) {
    for (const m of [1, 2, 5]) if (m * p >= x) return m * p;
    p *= 10;
  }
}

/**
 * What the axes show at s px per position: every token label when rows are
 * tall enough to read (font size grows with the rows), else position numbers
 * every `step` positions.
 */
export function labelDensity(s: number): { labels: boolean; step: number; font: number } {
  if (s >= LABEL_PX) return { labels: true, step: 1, font: Math.min(13, Math.max(10, Math.floor(s * 0.75))) };
  return { labels: false, step: niceStep(TICK_PX / Math.max(s, 1e-9)), font: 10 };
}

/** The first tick >= from that is a multiple of step. */
export function firstTick(from: number, step: number): number {
  return Math.ceil(from / step) * step;
}

// ------------------------------------------------------------------ binary replies

type HeatHeader = Omit<HeatTile, 'data'> & {
  dtype?: Dtype;
  shape?: [number, number];
  data?: number[];
};

function tileFrom(h: HeatHeader, data: Float32Array): HeatTile {
  for (const k of ['q0', 'q1', 'k0', 'k1', 'bq', 'bk', 'rows', 'cols'] as const)
    if (!Number.isInteger(h[k]) || h[k] < 0) throw new Error(`heatmap reply: bad ${k}`);
  if (data.length !== h.rows * h.cols) throw new Error(`heatmap reply: ${data.length} values for ${h.rows}x${h.cols}`);
  return {
    q0: h.q0, q1: h.q1, k0: h.k0, k1: h.k1, bq: h.bq, bk: h.bk, rows: h.rows, cols: h.cols,
    pool: h.pool === 'mean' ? 'mean' : 'max', exact: !!h.exact, data,
  };
}

/**
 * A /heatmap reply body, JSON (`data` member) or binary (one JSON header
 * line, LF, rows*cols little-endian float32 or float16 values).
 */
export function parseHeatmap(buf: ArrayBuffer): HeatTile {
  const { text, off } = binHeader(buf);
  let h: HeatHeader;
  try {
    h = JSON.parse(text);
  } catch {
    // a JSON reply spread over several lines
    h = JSON.parse(new TextDecoder().decode(buf));
  }
  if (Array.isArray(h.data)) return tileFrom(h, Float32Array.from(h.data));
  if (off < 0) throw new Error('heatmap reply: no data');
  const n = h.rows * h.cols;
  if (buf.byteLength - off !== n * dtypeBytes(h.dtype))
    throw new Error(`heatmap reply: ${buf.byteLength - off} bytes for ${n} ${h.dtype ?? 'float32'} values`);
  return tileFrom(h, binValues(buf, off, n, h.dtype));
}

// ------------------------------------------------------------------ cache

/** Least recently used first out, by a total cost (bytes). */
export class Lru<V> {
  private map = new Map<string, { v: V; cost: number }>();
  private total = 0;
  constructor(readonly budget: number) {}
  get size(): number {
    return this.map.size;
  }
  get cost(): number {
    return this.total;
  }
  has(k: string): boolean {
    return this.map.has(k);
  }
  get(k: string): V | undefined {
    const e = this.map.get(k);
    if (!e) return undefined;
    this.map.delete(k);
    this.map.set(k, e);
    return e.v;
  }
  /** Without refreshing its place. */
  peek(k: string): V | undefined {
    return this.map.get(k)?.v;
  }
  set(k: string, v: V, cost = 1): void {
    const old = this.map.get(k);
    if (old) {
      this.total -= old.cost;
      this.map.delete(k);
    }
    this.map.set(k, { v, cost });
    this.total += cost;
    for (const [key, e] of this.map) {
      if (this.total <= this.budget || this.map.size <= 1) break;
      this.map.delete(key);
      this.total -= e.cost;
    }
  }
  clear(): void {
    this.map.clear();
    this.total = 0;
  }
}

// ------------------------------------------------------------------ fetch queue

/**
 * At most `limit` tasks running; the waiting list is replaced by each
 * `want()` (what is no longer wanted is not started; running tasks finish).
 */
export class FetchQueue {
  private waiting: { key: string; run: () => Promise<unknown> }[] = [];
  private running = new Set<string>();
  constructor(readonly limit: number) {}
  get active(): number {
    return this.running.size;
  }
  get pending(): number {
    return this.waiting.length;
  }
  isRunning(key: string): boolean {
    return this.running.has(key);
  }
  /** The tasks wanted now, in order; those already running are skipped. */
  want(tasks: { key: string; run: () => Promise<unknown> }[]): void {
    const seen = new Set<string>();
    this.waiting = tasks.filter((t) => !this.running.has(t.key) && !seen.has(t.key) && (seen.add(t.key), true));
    this.pump();
  }
  clear(): void {
    this.waiting = [];
  }
  private pump(): void {
    while (this.running.size < this.limit && this.waiting.length) {
      const t = this.waiting.shift()!;
      this.running.add(t.key);
      let p: Promise<unknown>;
      try {
        p = Promise.resolve(t.run());
      } catch (e) {
        p = Promise.reject(e);
      }
      p.catch(() => {}).finally(() => {
        this.running.delete(t.key);
        this.pump();
      });
    }
  }
}

// ------------------------------------------------------------------ heads grid

export interface GridGeom {
  rows: number;
  cols: number;
  /** content offset of cell (0, 0) */
  x0: number;
  y0: number;
  /** pitch: cell size plus gap */
  dx: number;
  dy: number;
  /** cell size */
  w: number;
  h: number;
}

/**
 * The grid's cell size for a container width (a label column, cols cells,
 * `gap` between them and as padding): cols cells fit when they can, within [min, max].
 */
export function gridCellSize(width: number, cols: number, labelW: number, gap: number, min = 44, max = 120): number {
  if (cols <= 0) return min;
  const fit = Math.floor((width - labelW - gap * (cols + 2)) / cols);
  return clamp(fit, min, max);
}

/**
 * The cells of a regular grid that intersect a viewport (content coordinates,
 * grown by `margin` px on every side): rows [r0, r1), cols [c0, c1).
 */
export function visibleCells(
  view: { left: number; top: number; width: number; height: number },
  g: GridGeom,
  margin = 0,
): { r0: number; r1: number; c0: number; c1: number } {
  const left = view.left - margin;
  const top = view.top - margin;
  const right = view.left + view.width + margin;
  const bottom = view.top + view.height + margin;
  if (g.rows <= 0 || g.cols <= 0 || view.width <= 0 || view.height <= 0) return { r0: 0, r1: 0, c0: 0, c1: 0 };
  // cell i spans [x0 + i*dx, x0 + i*dx + w)
  const first = (lo: number, o: number, d: number, sz: number, n: number) => clamp(Math.floor((lo - o - sz) / d) + 1, 0, n);
  const last = (hi: number, o: number, d: number, n: number) => clamp(Math.ceil((hi - o) / d), 0, n);
  const c0 = first(left, g.x0, g.dx, g.w, g.cols);
  const c1 = Math.max(c0, last(right, g.x0, g.dx, g.cols));
  const r0 = first(top, g.y0, g.dy, g.h, g.rows);
  const r1 = Math.max(r0, last(bottom, g.y0, g.dy, g.rows));
  return { r0, r1, c0, c1 };
}

/** Roving focus in a rows x cols grid: the cell a key moves to (null: not a grid key). */
export function gridMove(r: number, c: number, key: string, rows: number, cols: number, ctrl = false): [number, number] | null {
  switch (key) {
    case 'ArrowUp':
      return [Math.max(0, r - 1), c];
    case 'ArrowDown':
      return [Math.min(rows - 1, r + 1), c];
    case 'ArrowLeft':
      return [r, Math.max(0, c - 1)];
    case 'ArrowRight':
      return [r, Math.min(cols - 1, c + 1)];
    case 'Home':
      return ctrl ? [0, 0] : [r, 0];
    case 'End':
      return ctrl ? [rows - 1, cols - 1] : [r, cols - 1];
    case 'PageUp':
      return [Math.max(0, r - 4), c];
    case 'PageDown':
      return [Math.min(rows - 1, r + 4), c];
    default:
      return null;
  }
}
