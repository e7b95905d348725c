// The attention heatmap: the selection's n_pos x n_pos matrix (queries as
// rows, keys as columns) on a canvas, zoomable (wheel, pinch, +/- buttons,
// keys) and pannable (drag, arrows). Tiles of GET /api/runs/{id}/heatmap are
// requested for the visible window at the zoom's pooling level (exact from
// EXACT_PX px per position on), cached, debounced while zooming, and stale
// ones aborted. The root's data attributes tell its state to the tests:
// data-status (idle | loading | ready | error | empty), data-window
// ("q0,q1,k0,k1"), data-exact, data-level, data-pool, data-tiles
// ("loaded/needed"), data-cells-loaded, data-selection, data-transform
// ("left,top,x0,y0,s": the plot's offset in the canvas and the view).
import { outsideWindow, selectionWindow, windowNote } from '../experts';
import { displayLabel } from '../model';
import { rawFetch } from '../api';
import { frameTask } from './common';
import type { View, ViewContext } from './types';
import {
  allMasked,
  blockText,
  buildLut,
  cellAt,
  clampView,
  fitScale,
  fitView,
  firstTick,
  formatWeight4,
  heatmapUrl,
  labelDensity,
  legendTicks,
  levelFor,
  Lru,
  nPositions,
  panBy,
  parseHeatmap,
  positionAt,
  pow2ceil,
  queryStep,
  stepQuery,
  tileKey,
  tileOf,
  tilePixels,
  tilesFor,
  visibleWindow,
  zoomAbout,
  zoomAnchor,
  FetchQueue,
  type Cell,
  type HeatmapParams,
  type HeatTile,
  type Pool,
  type ScaleKind,
  type Selection,
  type TileReq,
  type ViewXf,
  type Win,
} from './tiles';

// ------------------------------------------------------------------ shared: tiles, images, styles

/** A fetched tile and its colour-mapped image (one pixel per cell), made on first draw. */
export interface CachedTile {
  tile: HeatTile;
  img: HTMLCanvasElement | null;
  imgKind: ScaleKind | null;
}

/** Every view's tiles (heatmap, thumbnails, the dialog's heatmap), 48 MB at most. */
export const tileCache = new Lru<CachedTile>(48 << 20);

const LUT = buildLut();

/** GET a heatmap tile (binary or JSON); rejects with the server's message. */
export async function fetchTile(url: string, signal?: AbortSignal): Promise<HeatTile> {
  const r = await rawFetch(url, { signal, headers: { Accept: 'application/octet-stream, application/json' } });
  const buf = await r.arrayBuffer();
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try {
      const e = JSON.parse(new TextDecoder().decode(buf))?.error;
      if (e?.message) msg = e.param ? `${e.message} (${e.param})` : e.message;
    } catch {
      /* not JSON */
    }
    throw new Error(msg);
  }
  return parseHeatmap(buf);
}

/** The tile's image for a colour scale (cols x rows pixels; masked cells transparent). */
export function tileImage(e: CachedTile, kind: ScaleKind): HTMLCanvasElement {
  if (e.img && e.imgKind === kind) return e.img;
  const t = e.tile;
  const c = e.img ?? document.createElement('canvas');
  c.width = Math.max(1, t.cols);
  c.height = Math.max(1, t.rows);
  const g = c.getContext('2d')!;
  const img = g.createImageData(c.width, c.height);
  img.data.set(tilePixels(t, kind, LUT));
  g.putImageData(img, 0, 0);
  e.img = c;
  e.imgKind = kind;
  return c;
}

export function tileCost(t: HeatTile): number {
  return t.rows * t.cols * 8 + 256; // float32 data + its RGBA image
}

const STYLE = `
.hm-root{display:flex;flex-direction:column;gap:6px;height:100%;min-height:340px;min-width:0}
.hm-bar{display:flex;flex-wrap:wrap;align-items:center;gap:6px;font-size:13px}
.hm-bar .hm-seg{display:inline-flex;align-items:center;gap:0}
.hm-bar .hm-seg>span{margin-right:4px;color:#5b6470}
.hm-bar .hm-seg button{border-radius:0;margin-left:-1px}
.hm-bar .hm-seg button:first-of-type{border-radius:4px 0 0 4px}
.hm-bar .hm-seg button:last-of-type{border-radius:0 4px 4px 0}
.hm-bar .hm-zoom{min-width:30px;font-weight:600}
.hm-info{color:#5b6470;font-variant-numeric:tabular-nums}
.hm-stage{position:relative;flex:1 1 auto;min-height:280px;border:1px solid #d9dee5;border-radius:4px;background:#fff;overflow:hidden}
.hm-canvas{position:absolute;inset:0;width:100%;height:100%;touch-action:none;cursor:grab;display:block}
.hm-canvas.hm-dragging{cursor:grabbing}
.hm-canvas:focus-visible{outline:2px solid #1a56db;outline-offset:-3px}
.hm-msg{position:absolute;left:0;right:0;top:45%;text-align:center;color:#5b6470;pointer-events:none;margin:0}
.hm-foot{display:flex;flex-wrap:wrap;align-items:center;gap:4px 16px;font-size:12px;color:#5b6470}
.hm-legend{display:inline-flex;align-items:center;gap:8px}
.hm-legend-bar{position:relative;display:inline-block;width:220px;height:28px}
.hm-legend-bar canvas{display:block;width:220px;height:12px;border:1px solid #9aa8ba;box-sizing:border-box}
.hm-legend-bar .hm-tick{position:absolute;top:13px;transform:translateX(-50%);font-size:10px;line-height:14px;font-variant-numeric:tabular-nums}
.hm-legend-bar .hm-tick::before{content:'';position:absolute;left:50%;top:-3px;height:3px;border-left:1px solid #5b6470}
.hm-swatch{display:inline-block;width:12px;height:12px;vertical-align:-2px;border:1px solid #9aa8ba;margin-right:4px}
.hm-status.hm-error{color:#b42318}
.hm-swatch-window{background:repeating-linear-gradient(135deg,rgba(91,100,112,.55) 0 1px,rgba(238,240,244,.9) 1px 4px),#440154;border-color:#ff7f0e}
.hm-window-key[hidden]{display:none}
.hm-tip{position:fixed;z-index:60;max-width:360px;padding:6px 9px;border-radius:5px;background:#1b1f24;color:#fff;font-size:12px;line-height:1.45;pointer-events:none;box-shadow:0 2px 8px rgb(0 0 0/.2);overflow-wrap:anywhere}
.hm-tip[hidden]{display:none}
.hm-tip .hm-k{color:#b7c0cc}
.hm-tip .hm-tip-weight{font-weight:700;font-variant-numeric:tabular-nums}
`;

/** Injects the views' CSS once (class names hm-* / mg-*). */
export function ensureStyle(id: string, css: string): void {
  if (document.getElementById(id)) return;
  const s = document.createElement('style');
  s.id = id;
  s.textContent = css;
  document.head.appendChild(s);
}

/** A colour bar with ticks for a scale; `set` redraws it for another scale. */
export function createLegend(): { el: HTMLElement; set(kind: ScaleKind): void } {
  ensureStyle('hm-style', STYLE);
  const el = document.createElement('span');
  el.className = 'hm-legend';
  const title = document.createElement('span');
  title.textContent = 'raw attention';
  const bar = document.createElement('span');
  bar.className = 'hm-legend-bar';
  const c = document.createElement('canvas');
  c.width = 256;
  c.height = 1;
  c.setAttribute('aria-hidden', 'true');
  bar.appendChild(c);
  const img = c.getContext('2d')!.createImageData(256, 1);
  for (let i = 0; i < 256; i++) {
    img.data.set([LUT[i * 3], LUT[i * 3 + 1], LUT[i * 3 + 2], 255], i * 4);
  }
  c.getContext('2d')!.putImageData(img, 0, 0);
  const masked = document.createElement('span');
  const sw = document.createElement('span');
  sw.className = 'hm-swatch';
  sw.style.background = MASKED;
  masked.append(sw, 'masked (key after query)');
  el.append(title, bar, masked);
  let kind: ScaleKind | null = null;
  return {
    el,
    set(k: ScaleKind) {
      if (k === kind) return;
      kind = k;
      bar.querySelectorAll('.hm-tick').forEach((x) => x.remove());
      for (const t of legendTicks(k)) {
        const s = document.createElement('span');
        s.className = 'hm-tick';
        s.style.left = `${(t.at * 100).toFixed(2)}%`;
        s.textContent = t.text;
        bar.appendChild(s);
      }
      el.setAttribute('aria-label', `Colour scale: viridis, ${k === 'sqrt' ? 'square root' : 'linear'} from 0 (dark purple) to 1 (yellow)`);
    },
  };
}

export const MASKED = '#e4e7ec';
/** Cells outside a sliding window (exactly 0): a light veil and hatching over them. */
export const OUTSIDE_WINDOW_FILL = 'rgba(238, 240, 244, 0.62)';
export const WINDOW_EDGE = '#ff7f0e';

let hatch: CanvasPattern | null = null;
function hatchPattern(g: CanvasRenderingContext2D): CanvasPattern | null {
  if (hatch) return hatch;
  const c = document.createElement('canvas');
  c.width = c.height = 8;
  const x = c.getContext('2d')!;
  x.strokeStyle = 'rgba(91, 100, 112, 0.55)';
  x.lineWidth = 1;
  x.beginPath();
  x.moveTo(0, 8);
  x.lineTo(8, 0);
  x.moveTo(-2, 2);
  x.lineTo(2, -2);
  x.moveTo(6, 10);
  x.lineTo(10, 6);
  x.stroke();
  hatch = g.createPattern(c, 'repeat');
  return hatch;
}

/** The sliding-window swatch of the legend (hidden without a window). */
function windowSwatch(): HTMLElement {
  const el = document.createElement('span');
  el.className = 'hm-window-key';
  const sw = document.createElement('span');
  sw.className = 'hm-swatch hm-swatch-window';
  el.append(sw, document.createElement('span'));
  el.hidden = true;
  return el;
}

function button(text: string, label: string, cls = ''): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.title = label;
  b.setAttribute('aria-label', label);
  if (cls) b.className = cls;
  return b;
}

function segmented<T extends string>(label: string, values: T[], onPick: (v: T) => void): { el: HTMLElement; set(v: T): void } {
  const el = document.createElement('span');
  el.className = 'hm-seg';
  el.setAttribute('role', 'group');
  el.setAttribute('aria-label', label);
  const cap = document.createElement('span');
  cap.textContent = label + ':';
  el.appendChild(cap);
  const bs = values.map((v) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = v;
    b.dataset.value = v;
    b.addEventListener('click', () => onPick(v));
    el.appendChild(b);
    return b;
  });
  return {
    el,
    set(v: T) {
      for (const b of bs) b.setAttribute('aria-pressed', String(b.dataset.value === v));
    },
  };
}

export function selectionText(sel: Selection): string {
  if (sel.layer === null && sel.head === null) return 'mean of all layers and heads';
  if (sel.head === null) return `layer ${sel.layer}, mean of its heads`;
  if (sel.layer === null) return `head ${sel.head} of every layer (mean)`;
  return `layer ${sel.layer}, head ${sel.head}`;
}

function tokenText(ctx: ViewContext | null, p: number): string {
  return `${p} “${displayLabel(ctx?.tokens[p]?.label)}”`;
}

// ------------------------------------------------------------------ the view

const LEFT = 112; // the query labels' margin
const TOP = 96; // the key labels' margin
const PAD = 8; // right and bottom
const DEBOUNCE_MS = 120;
const CONCURRENCY = 4;
const ZOOM_STEP = 1.5;
const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';

interface HeatmapOptions {
  /** an aria label prefix (the dialog's copy says which head) */
  label?: string;
}

class Heatmap implements View {
  private root: HTMLElement;
  private canvas: HTMLCanvasElement;
  private stage: HTMLElement;
  private msg: HTMLElement;
  private info: HTMLElement;
  private status: HTMLElement;
  private tip: HTMLElement;
  private poolSeg: { el: HTMLElement; set(v: Pool): void };
  private scaleSeg: { el: HTMLElement; set(v: ScaleKind): void };
  private legend: { el: HTMLElement; set(kind: ScaleKind): void };
  private windowKey: HTMLElement;

  private ctx: ViewContext | null = null;
  private active = false;
  private n = 0;
  private runKey = '';
  private view: ViewXf = { x0: 0, y0: 0, s: 1 };
  private fitted = true; // at the fit view (kept fitted on resize) until the user zooms or pans
  private pool: Pool = 'max';
  private kind: ScaleKind = 'sqrt';
  private cw = 0;
  private ch = 0;
  private dpr = 1;

  private queue = new FetchQueue(CONCURRENCY);
  private inflight = new Map<string, AbortController>();
  private timer = 0;
  private frame = frameTask(() => this.draw());
  private error: string | null = null;
  private failed = new Set<string>();

  private hover: { px: number; py: number; cx: number; cy: number } | null = null;
  /** the keyboard's cell (Shift+arrows), shown like a hover */
  private cursor: { q: number; k: number } | null = null;
  private live: HTMLElement;
  private pointers = new Map<number, { x: number; y: number }>();
  private moved = 0;
  private pinch: { d: number; mx: number; my: number } | null = null;
  private fitCache = new Map<string, string>();

  constructor(root: HTMLElement, opts: HeatmapOptions = {}) {
    ensureStyle('hm-style', STYLE);
    this.root = root;
    root.classList.add('hm-root');
    root.dataset.status = 'idle';
    root.textContent = '';

    const bar = document.createElement('div');
    bar.className = 'hm-bar';
    const zin = button('+', 'Zoom in (+)', 'hm-zoom hm-zoom-in');
    const zout = button('−', 'Zoom out (-)', 'hm-zoom hm-zoom-out');
    const reset = button('Fit', 'Show the whole matrix (0)', 'hm-reset');
    zin.addEventListener('click', () => this.zoomCenter(ZOOM_STEP));
    zout.addEventListener('click', () => this.zoomCenter(1 / ZOOM_STEP));
    reset.addEventListener('click', () => this.resetView());
    this.poolSeg = segmented<Pool>('pool', ['max', 'mean'], (v) => this.setPool(v));
    this.poolSeg.el.classList.add('hm-pool');
    this.scaleSeg = segmented<ScaleKind>('colour', ['sqrt', 'linear'], (v) => this.setKind(v));
    this.scaleSeg.el.classList.add('hm-scale');
    this.info = document.createElement('span');
    this.info.className = 'hm-info';
    bar.append(zout, zin, reset, this.poolSeg.el, this.scaleSeg.el, this.info);

    this.stage = document.createElement('div');
    this.stage.className = 'hm-stage';
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'hm-canvas';
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute(
      'aria-label',
      `${opts.label ?? 'Attention heatmap'}: queries as rows, keys as columns. Keys: + and - zoom, arrows pan, 0 shows everything, Shift+arrows move a cell cursor that tells the weight, Enter on an output row goes to its step; drag to pan, wheel to zoom, click an output row to go to its step.`,
    );
    this.msg = document.createElement('p');
    this.msg.className = 'hm-msg';
    this.stage.append(this.canvas, this.msg);

    const foot = document.createElement('div');
    foot.className = 'hm-foot';
    this.legend = createLegend();
    this.windowKey = windowSwatch();
    this.status = document.createElement('span');
    this.status.className = 'hm-status';
    this.status.setAttribute('role', 'status');
    this.status.setAttribute('aria-live', 'polite');
    foot.append(this.legend.el, this.windowKey, this.status);

    this.tip = document.createElement('div');
    this.tip.className = 'hm-tip';
    this.tip.setAttribute('role', 'tooltip');
    this.tip.hidden = true;
    this.live = document.createElement('span');
    this.live.className = 'visually-hidden hm-live';
    this.live.setAttribute('aria-live', 'polite');
    this.live.style.cssText = 'position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap';

    root.append(bar, this.stage, foot, this.tip, this.live);
    this.poolSeg.set(this.pool);
    this.scaleSeg.set(this.kind);
    this.legend.set(this.kind);

    new ResizeObserver(() => this.measure()).observe(this.stage);
    this.canvas.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
    this.canvas.addEventListener('pointerdown', (e) => this.onPointerDown(e));
    this.canvas.addEventListener('pointermove', (e) => this.onPointerMove(e));
    this.canvas.addEventListener('pointerup', (e) => this.onPointerUp(e));
    this.canvas.addEventListener('pointercancel', (e) => this.onPointerUp(e, true));
    this.canvas.addEventListener('pointerleave', () => {
      if (this.pointers.size === 0 && !this.cursor) this.setHover(null);
    });
    this.canvas.addEventListener('keydown', (e) => this.onKey(e));
    this.canvas.addEventListener('blur', () => {
      this.cursor = null;
      this.setHover(null);
    });
  }

  // ------------------------------------------------------------ View

  show(ctx: ViewContext): void {
    this.ctx = ctx;
    this.active = true;
    this.n = nPositions(ctx.nPrompt, ctx.nOutput);
    const rk = `${ctx.base}|${ctx.runId}|${this.n}`;
    if (rk !== this.runKey) {
      this.runKey = rk;
      this.fitted = true;
      this.error = null;
      this.setHover(null);
    }
    this.failed.clear();
    this.error = null;
    const sel = this.sel();
    this.root.dataset.selection = `${sel.layer ?? 'all'},${sel.head ?? 'all'}`;
    this.info.textContent = selectionText(sel);
    this.showWindow();
    this.measure();
    this.schedule(0);
  }

  hide(): void {
    this.active = false;
    clearTimeout(this.timer);
    this.timer = 0;
    this.frame.cancel();
    this.queue.clear();
    for (const ac of this.inflight.values()) ac.abort();
    this.inflight.clear();
    this.pointers.clear();
    this.setHover(null);
  }

  // ------------------------------------------------------------ state

  /** The selection's sliding window: 0 without one, or when the selected layers' windows differ. */
  private win(): number {
    return this.ctx ? selectionWindow(this.ctx.layerWindow, this.sel().layer) : 0;
  }

  private showWindow(): void {
    const w = this.win();
    const note = this.ctx ? windowNote(this.ctx.layerWindow, this.sel().layer) : '';
    this.root.dataset.slidingWindow = String(w);
    this.windowKey.hidden = !note;
    this.windowKey.querySelector('.hm-swatch')!.toggleAttribute('hidden', w <= 0);
    this.windowKey.lastElementChild!.textContent = w > 0 ? `outside the window, exactly 0 (${note})` : note;
  }

  private sel(): Selection {
    const c = this.ctx;
    return { layer: c ? c.layer : null, head: c ? c.head : null };
  }

  private plot(): { pw: number; ph: number } {
    return { pw: Math.max(1, this.cw - LEFT - PAD), ph: Math.max(1, this.ch - TOP - PAD) };
  }

  private measure(): void {
    const r = this.stage.getBoundingClientRect();
    const w = Math.floor(r.width);
    const h = Math.floor(r.height);
    const dpr = window.devicePixelRatio || 1;
    if (w === this.cw && h === this.ch && dpr === this.dpr && !this.fitted) return this.requestDraw();
    this.cw = w;
    this.ch = h;
    this.dpr = dpr;
    if (w <= 0 || h <= 0) return;
    const { pw, ph } = this.plot();
    this.view = this.fitted ? fitView(this.n, pw, ph) : clampView(this.view, this.n, pw, ph);
    this.requestDraw();
    this.schedule();
  }

  private setView(v: ViewXf, debounce = true): void {
    const { pw, ph } = this.plot();
    const nv = clampView(v, this.n, pw, ph);
    if (nv.x0 === this.view.x0 && nv.y0 === this.view.y0 && nv.s === this.view.s) return;
    this.view = nv;
    this.fitted = Math.abs(nv.s - fitScale(this.n, pw, ph)) < 1e-9 && nv.x0 === 0 && nv.y0 === 0;
    this.requestDraw();
    this.updateState(); // level, window and status follow the view at once, not after the debounce
    this.schedule(debounce ? DEBOUNCE_MS : 0);
  }

  private zoomCenter(f: number): void {
    const { pw, ph } = this.plot();
    const a = zoomAnchor(this.view, this.n, pw, ph);
    this.setView(zoomAbout(this.view, f, a.px, a.py, this.n, pw, ph));
  }

  private resetView(): void {
    const { pw, ph } = this.plot();
    this.fitted = true;
    this.view = fitView(this.n, pw, ph);
    this.requestDraw();
    this.updateState();
    this.schedule(DEBOUNCE_MS);
  }

  private setPool(p: Pool): void {
    if (p === this.pool) return;
    this.pool = p;
    this.poolSeg.set(p);
    this.requestDraw();
    this.updateState();
    this.schedule(0);
  }

  private setKind(k: ScaleKind): void {
    if (k === this.kind) return;
    this.kind = k;
    this.scaleSeg.set(k);
    this.legend.set(k);
    this.requestDraw();
  }

  // ------------------------------------------------------------ tiles

  private params(t: TileReq): HeatmapParams {
    return { q0: t.q0, q1: t.q1, k0: t.k0, k1: t.k1, size: t.size, pool: this.pool, format: 'bin', dtype: 'float32' };
  }

  private key(t: TileReq): string {
    return tileKey(this.ctx!.runId, this.sel(), this.params(t));
  }

  /** The level and the tiles the current view needs. */
  private plan(): { b: number; win: Win; tiles: TileReq[] } {
    const { pw, ph } = this.plot();
    const win = visibleWindow(this.view, this.n, pw, ph);
    const b = levelFor(this.view.s, this.n);
    return { b, win, tiles: tilesFor(win, this.n, b) };
  }

  private schedule(delay = DEBOUNCE_MS): void {
    if (!this.active) return;
    clearTimeout(this.timer);
    this.timer = window.setTimeout(() => {
      this.timer = 0;
      this.fetchVisible();
    }, delay);
  }

  private fetchVisible(): void {
    if (!this.active || !this.ctx || this.n <= 0 || this.cw <= 0) return;
    const { tiles } = this.plan();
    const want = new Map(tiles.map((t) => [this.key(t), t]));
    for (const [k, ac] of this.inflight) if (!want.has(k)) ac.abort(); // stale: another zoom, window or selection
    this.queue.want(
      [...want].filter(([k]) => !tileCache.has(k) && !this.inflight.has(k) && !this.failed.has(k)).map(([k, t]) => ({ key: k, run: () => this.load(t, k) })),
    );
    this.updateState();
  }

  private async load(t: TileReq, key: string): Promise<void> {
    const ctx = this.ctx;
    if (!ctx || !this.active) return;
    const ac = new AbortController();
    this.inflight.set(key, ac);
    this.updateState();
    try {
      const tile = await fetchTile(heatmapUrl(ctx.base, ctx.runId, this.sel(), this.params(t)), ac.signal);
      tileCache.set(key, { tile, img: null, imgKind: null }, tileCost(tile));
      if (this.ctx === ctx) this.error = null;
    } catch (e) {
      if (!(e instanceof DOMException && e.name === 'AbortError')) {
        this.failed.add(key); // not asked again until the context changes
        if (this.ctx === ctx) this.error = e instanceof Error ? e.message : String(e);
      }
    } finally {
      if (this.inflight.get(key) === ac) this.inflight.delete(key);
      this.requestDraw();
      // a tile aborted and wanted again meanwhile was skipped as running: ask again (unless a debounce is pending)
      if (this.active && !this.timer && !tileCache.has(key) && !this.failed.has(key)) this.schedule(0);
    }
  }

  /** A cached tile of a coarser level covering (q, k), coarsest last. */
  private fallback(q: number, k: number, b: number): { key: string; e: CachedTile } | null {
    const top = pow2ceil(this.n);
    for (let lb = b * 2; lb <= Math.max(top, 2); lb *= 2) {
      const t = tileOf(q, k, lb, this.n);
      const key = this.key(t);
      const e = tileCache.peek(key);
      if (e) return { key, e };
    }
    return null;
  }

  /** The cell under (q, k): from the current level's tile, else a coarser cached one. */
  private cellFor(q: number, k: number): { cell: Cell; tile: HeatTile } | null {
    const b = levelFor(this.view.s, this.n);
    const e = tileCache.peek(this.key(tileOf(q, k, b, this.n))) ?? this.fallback(q, k, b)?.e;
    if (!e) return null;
    const cell = cellAt(e.tile, q, k);
    return cell ? { cell, tile: e.tile } : null;
  }

  private updateState(): void {
    const r = this.root;
    if (!this.ctx) {
      r.dataset.status = 'idle';
      return;
    }
    if (this.n <= 0) {
      r.dataset.status = 'empty';
      this.msg.textContent = 'This run has no attention rows yet.';
      this.status.textContent = '';
      return;
    }
    this.msg.textContent = '';
    const { b, win, tiles } = this.plan();
    let loaded = 0;
    let exact = b === 1;
    for (const t of tiles) {
      const e = tileCache.peek(this.key(t));
      if (e) {
        loaded++;
        if (!e.tile.exact) exact = false;
      }
    }
    const done = loaded === tiles.length;
    const status = done ? 'ready' : this.error && this.inflight.size === 0 && this.queue.pending === 0 ? 'error' : 'loading';
    r.dataset.status = status;
    r.dataset.step = String(this.ctx.step);
    r.dataset.window = `${win.q0},${win.q1},${win.k0},${win.k1}`;
    r.dataset.exact = String(done && exact);
    r.dataset.level = String(b);
    r.dataset.pool = this.pool;
    r.dataset.scale = this.kind;
    r.dataset.tiles = `${loaded}/${tiles.length}`;
    r.dataset.cellsLoaded = String(loaded);
    const v = this.view;
    r.dataset.transform = [LEFT, TOP, v.x0, v.y0, v.s].map((x) => +x.toFixed(4)).join(',');
    const what = b === 1 ? 'exact values' : `${this.pool} of ${b}×${b} blocks`;
    const txt =
      status === 'error'
        ? `Could not load the heatmap: ${this.error}`
        : `queries ${win.q0}–${win.q1 - 1}, keys ${win.k0}–${win.k1 - 1} of ${this.n} · ${what} · ${v.s >= 1 ? v.s.toFixed(1) + ' px' : '1/' + (1 / v.s).toFixed(1) + ' px'} per position${done ? '' : ' · loading…'}`;
    if (this.status.textContent !== txt) this.status.textContent = txt;
    this.status.classList.toggle('hm-error', status === 'error');
  }

  // ------------------------------------------------------------ drawing

  private requestDraw(): void {
    if (this.active) this.frame.request();
  }

  private draw(): void {
    const c = this.canvas;
    const dpr = this.dpr;
    const W = this.cw;
    const H = this.ch;
    if (W <= 0 || H <= 0 || !this.ctx) return;
    if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
      c.width = Math.round(W * dpr);
      c.height = Math.round(H * dpr);
    }
    const g = c.getContext('2d')!;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    g.fillStyle = '#ffffff';
    g.fillRect(0, 0, W, H);
    this.updateState();
    if (this.n <= 0) return;

    const { pw, ph } = this.plot();
    const v = this.view;
    const s = v.s;
    const n = this.n;
    const snap = (x: number) => Math.round(x * dpr) / dpr;
    // the matrix's visible part on screen
    const mx0 = Math.max(LEFT, snap(LEFT - v.x0 * s));
    const my0 = Math.max(TOP, snap(TOP - v.y0 * s));
    const mx1 = Math.min(LEFT + pw, snap(LEFT + (n - v.x0) * s));
    const my1 = Math.min(TOP + ph, snap(TOP + (n - v.y0) * s));

    g.save();
    g.beginPath();
    g.rect(mx0, my0, mx1 - mx0, my1 - my0);
    g.clip();
    g.fillStyle = MASKED;
    g.fillRect(mx0, my0, mx1 - mx0, my1 - my0);
    g.imageSmoothingEnabled = false;

    const { b, tiles } = this.plan();
    const drawTile = (e: CachedTile) => {
      const t = e.tile;
      const x = snap(LEFT + (t.k0 - v.x0) * s);
      const y = snap(TOP + (t.q0 - v.y0) * s);
      const x1 = snap(LEFT + (t.k0 + t.cols * t.bk - v.x0) * s);
      const y1 = snap(TOP + (t.q0 + t.rows * t.bq - v.y0) * s);
      g.drawImage(tileImage(e, this.kind), x, y, x1 - x, y1 - y);
    };
    const current: CachedTile[] = [];
    const coarse = new Map<string, CachedTile>();
    for (const t of tiles) {
      const e = tileCache.get(this.key(t));
      if (e) current.push(e);
      else {
        // a coarser tile while this one loads (zooming in) — every corner, a tile may straddle two coarse ones
        for (const [q, k] of [
          [t.q0, t.k0],
          [t.q1 - 1, t.k0],
          [t.q0, t.k1 - 1],
          [t.q1 - 1, t.k1 - 1],
        ]) {
          const f = this.fallback(q, k, b);
          if (f) coarse.set(f.key, f.e);
        }
      }
    }
    [...coarse.values()].sort((a, c2) => c2.tile.bq - a.tile.bq).forEach(drawTile);
    current.forEach(drawTile);

    // the keys outside each query's sliding window (q >= k + w): a staircase under the diagonal band
    const w = this.win();
    if (w > 0 && w < n) {
      const { win } = this.plan();
      const kA = Math.max(0, Math.floor(win.k0) - 1);
      const kB = Math.min(n - w, Math.ceil(win.k1) + 1);
      if (kB > kA) {
        const X = (k: number) => LEFT + (k - v.x0) * s;
        const Y = (q: number) => TOP + (q - v.y0) * s;
        g.beginPath();
        g.moveTo(X(kA), Y(kA + w));
        for (let k = kA; k < kB; k++) {
          g.lineTo(X(k + 1), Y(k + w));
          g.lineTo(X(k + 1), Y(k + 1 + w));
        }
        g.lineTo(X(kB), Y(n));
        g.lineTo(X(kA), Y(n));
        g.closePath();
        g.fillStyle = OUTSIDE_WINDOW_FILL;
        g.fill();
        const pat = hatchPattern(g);
        if (pat) {
          g.fillStyle = pat;
          g.fill();
        }
        // the window's edge: the staircase alone
        g.beginPath();
        g.moveTo(X(kA), Y(kA + w));
        for (let k = kA; k < kB; k++) {
          g.lineTo(X(k + 1), Y(k + w));
          g.lineTo(X(k + 1), Y(k + 1 + w));
        }
        g.setLineDash([4, 3]);
        g.lineWidth = 1.5;
        g.strokeStyle = WINDOW_EDGE;
        g.stroke();
        g.setLineDash([]);
      }
    }

    // the current step's query row
    const ctx = this.ctx;
    const qs = stepQuery(ctx.nPrompt, ctx.step);
    if (ctx.nOutput > 0 && qs >= 0 && qs < n) {
      const y = snap(TOP + (qs - v.y0) * s);
      const h = Math.max(2, s);
      g.lineWidth = 3;
      g.strokeStyle = '#ffffff';
      g.strokeRect(mx0 - 1, y - 1.5, mx1 - mx0 + 2, h + 3);
      g.lineWidth = 1.5;
      g.strokeStyle = '#111111';
      g.strokeRect(mx0 - 1, y - 1.5, mx1 - mx0 + 2, h + 3);
    }

    // the hovered cell (or the keyboard's)
    if (this.cursor) this.cursorHover();
    const hv = this.hover ? this.hoverCell() : null;
    if (hv) {
      const { cell } = hv;
      const x = snap(LEFT + (cell.k0 - v.x0) * s);
      const y = snap(TOP + (cell.q0 - v.y0) * s);
      const w = Math.max(3, (cell.k1 - cell.k0) * s);
      const h = Math.max(3, (cell.q1 - cell.q0) * s);
      g.lineWidth = 2;
      g.strokeStyle = '#ffffff';
      g.strokeRect(x - 1, y - 1, w + 2, h + 2);
      g.lineWidth = 1;
      g.strokeStyle = '#111111';
      g.strokeRect(x - 2, y - 2, w + 4, h + 4);
    }
    g.restore();

    this.drawAxes(g, mx0, my0, mx1, my1);
    this.updateTip(hv);
    if (this.cursor && !this.tip.hidden) {
      const said = [...this.tip.children].map((d) => d.textContent).join('; ');
      if (this.live.textContent !== said) this.live.textContent = said;
    }
  }

  private fit(g: CanvasRenderingContext2D, text: string, max: number): string {
    const key = `${g.font}|${max}|${text}`;
    const hit = this.fitCache.get(key);
    if (hit !== undefined) return hit;
    let t = text;
    if (g.measureText(t).width > max) {
      let lo = 0;
      let hi = t.length;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (g.measureText(text.slice(0, mid) + '…').width <= max) lo = mid;
        else hi = mid - 1;
      }
      t = text.slice(0, lo) + '…';
    }
    if (this.fitCache.size > 4000) this.fitCache.clear();
    this.fitCache.set(key, t);
    return t;
  }

  private drawAxes(g: CanvasRenderingContext2D, mx0: number, my0: number, mx1: number, my1: number): void {
    const v = this.view;
    const s = v.s;
    const { pw, ph } = this.plot();
    const win = visibleWindow(v, this.n, pw, ph);
    const dens = labelDensity(s);
    const ctx = this.ctx!;
    const qs = ctx.nOutput > 0 ? stepQuery(ctx.nPrompt, ctx.step) : -1;
    g.fillStyle = '#5b6470';
    g.font = `11px ${FONT}`;
    g.textBaseline = 'alphabetic';
    g.textAlign = 'left';
    g.fillText('keys →', 6, 14);
    g.fillText('queries ↓', 6, 30);

    // query axis (left)
    g.save();
    g.beginPath();
    g.rect(0, my0 - 8, LEFT, my1 - my0 + 16);
    g.clip();
    g.textBaseline = 'middle';
    g.textAlign = 'right';
    if (dens.labels) {
      for (let q = win.q0; q < win.q1; q++) {
        const y = TOP + (q - v.y0 + 0.5) * s;
        const cur = q === qs;
        g.font = `${cur ? '600 ' : ''}${dens.font}px ${FONT}`;
        g.fillStyle = cur ? '#111111' : queryStep(q, ctx.nPrompt, ctx.nOutput) !== null ? '#1b1f24' : '#5b6470';
        g.fillText(this.fit(g, (cur ? '▶ ' : '') + displayLabel(ctx.tokens[q]?.label), LEFT - 26), LEFT - 6, y);
      }
    } else {
      g.font = `10px ${FONT}`;
      for (let q = firstTick(win.q0, dens.step); q < win.q1; q += dens.step) {
        const y = TOP + (q - v.y0 + 0.5) * s;
        g.fillStyle = '#5b6470';
        g.fillText(String(q), LEFT - 6, y);
        g.fillRect(LEFT - 4, y, 3, 1);
      }
      if (qs >= win.q0 && qs < win.q1) {
        g.fillStyle = '#111111';
        g.font = `600 10px ${FONT}`;
        g.fillText(`▶ step ${ctx.step + 1}`, LEFT - 30, TOP + (qs - v.y0 + 0.5) * s);
      }
    }
    g.restore();

    // key axis (top), labels read upwards
    g.save();
    g.beginPath();
    g.rect(mx0 - 12, 36, mx1 - mx0 + 24, TOP - 36);
    g.clip();
    g.fillStyle = '#1b1f24';
    if (dens.labels) {
      g.font = `${dens.font}px ${FONT}`;
      g.textBaseline = 'middle';
      g.textAlign = 'left';
      for (let k = win.k0; k < win.k1; k++) {
        const x = LEFT + (k - v.x0 + 0.5) * s;
        g.save();
        g.translate(x, TOP - 6);
        g.rotate(-Math.PI / 2);
        g.fillText(this.fit(g, displayLabel(ctx.tokens[k]?.label), TOP - 44), 0, 0);
        g.restore();
      }
    } else {
      g.font = `10px ${FONT}`;
      g.textBaseline = 'bottom';
      g.textAlign = 'center';
      g.fillStyle = '#5b6470';
      for (let k = firstTick(win.k0, dens.step); k < win.k1; k += dens.step) {
        const x = LEFT + (k - v.x0 + 0.5) * s;
        g.fillText(String(k), x, TOP - 6);
        g.fillRect(x, TOP - 4, 1, 3);
      }
    }
    g.restore();
  }

  // ------------------------------------------------------------ hover and tooltip

  private hoverCell(): { q: number; k: number; cell: Cell; tile: HeatTile } | null {
    const h = this.hover;
    if (!h) return null;
    const p = positionAt(this.view, h.px - LEFT, h.py - TOP, this.n);
    const { pw, ph } = this.plot();
    if (!p || h.px - LEFT >= pw || h.py - TOP >= ph) return null;
    const b = levelFor(this.view.s, this.n);
    const t = tileOf(p.q, p.k, b, this.n);
    if (allMasked(t)) {
      // never requested (all zeros): the position itself, masked
      const cell: Cell = { r: 0, c: 0, value: 0, q0: p.q, q1: p.q + 1, k0: p.k, k1: p.k + 1, masked: true, exact: true };
      const tile: HeatTile = { ...t, bq: 1, bk: 1, rows: 0, cols: 0, pool: this.pool, exact: true, data: new Float32Array(0) };
      return { ...p, cell, tile };
    }
    const hit = this.cellFor(p.q, p.k);
    return hit ? { ...p, ...hit } : null;
  }

  private setHover(h: { px: number; py: number; cx: number; cy: number } | null): void {
    const had = !!this.hover;
    this.hover = h;
    if (!h) this.tip.hidden = true;
    if (h || had) this.requestDraw();
  }

  private updateTip(hv: { q: number; k: number; cell: Cell; tile: HeatTile } | null): void {
    const h = this.hover;
    const tip = this.tip;
    if (!h) {
      tip.hidden = true;
      return;
    }
    const pos = positionAt(this.view, h.px - LEFT, h.py - TOP, this.n);
    const { pw, ph } = this.plot();
    if (!pos || h.px - LEFT >= pw || h.py - TOP >= ph) {
      tip.hidden = true;
      return;
    }
    const ctx = this.ctx;
    const line = (cls: string, ...parts: (string | Node)[]) => {
      const d = document.createElement('div');
      if (cls) d.className = cls;
      d.append(...parts);
      return d;
    };
    const k = (t: string) => {
      const s = document.createElement('span');
      s.className = 'hm-k';
      s.textContent = t;
      return s;
    };
    tip.textContent = '';
    tip.dataset.cell = hv ? `${hv.cell.q0},${hv.cell.q1},${hv.cell.k0},${hv.cell.k1}` : '';
    tip.dataset.q = String(pos.q);
    tip.dataset.k = String(pos.k);
    if (!hv) {
      tip.dataset.exact = '';
      tip.dataset.value = '';
      tip.append(line('', k('query '), tokenText(ctx, pos.q)), line('', k('key '), tokenText(ctx, pos.k)), line('', k('loading…')));
    } else {
      const { cell } = hv;
      const one = cell.q1 - cell.q0 === 1 && cell.k1 - cell.k0 === 1;
      tip.dataset.exact = String(one);
      if (one) {
        tip.append(line('', k('query '), tokenText(ctx, cell.q0)), line('', k('key '), tokenText(ctx, cell.k0)));
      } else {
        tip.append(
          line('', k('queries '), `${cell.q0}–${cell.q1 - 1}`, k(' (here '), tokenText(ctx, pos.q), k(')')),
          line('', k('keys '), `${cell.k0}–${cell.k1 - 1}`, k(' (here '), tokenText(ctx, pos.k), k(')')),
        );
      }
      const w = this.win();
      tip.dataset.outside = String(one && outsideWindow(cell.q0, cell.k0, w));
      if (cell.masked) {
        tip.dataset.value = '';
        tip.append(line('', k('masked: the key comes after the query')));
      } else if (one && outsideWindow(cell.q0, cell.k0, w)) {
        tip.dataset.value = String(cell.value);
        tip.append(line('', k('raw attention '), formatWeight4(cell.value), k(` (outside the sliding window of ${w} tokens: keys ${cell.q0 - w + 1}–${cell.q0} only)`)));
      } else {
        tip.dataset.value = String(cell.value);
        const w = document.createElement('span');
        w.className = 'hm-tip-weight';
        w.textContent = formatWeight4(cell.value);
        const note = blockText(cell, hv.tile.pool);
        tip.append(line('', k('raw attention '), w, note ? k(` (${note})`) : ''));
      }
    }
    const t = ctx ? queryStep(pos.q, ctx.nPrompt, ctx.nOutput) : null;
    if (t !== null && (!hv || hv.cell.q1 - hv.cell.q0 === 1)) tip.append(line('', k(`row of step ${t + 1}: click to go there`)));
    tip.hidden = false;
    // next to the pointer, inside the window
    const r = tip.getBoundingClientRect();
    let x = h.cx + 14;
    let y = h.cy + 14;
    if (x + r.width > window.innerWidth - 4) x = h.cx - r.width - 14;
    if (y + r.height > window.innerHeight - 4) y = h.cy - r.height - 14;
    tip.style.left = `${Math.max(4, x)}px`;
    tip.style.top = `${Math.max(4, y)}px`;
  }

  // ------------------------------------------------------------ input

  private local(e: { clientX: number; clientY: number }): { px: number; py: number } {
    const r = this.canvas.getBoundingClientRect();
    return { px: e.clientX - r.left, py: e.clientY - r.top };
  }

  private onWheel(e: WheelEvent): void {
    if (this.n <= 0) return;
    e.preventDefault();
    const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1;
    const dy = e.deltaY * unit;
    const dx = e.deltaX * unit;
    const { px, py } = this.local(e);
    const { pw, ph } = this.plot();
    this.cursor = null;
    if (e.shiftKey && !e.ctrlKey) {
      this.setView(panBy(this.view, -dy, 0, this.n, pw, ph));
      return;
    }
    // ctrl+wheel is a trackpad pinch: finer deltas, same direction
    const f = Math.exp(-dy * (e.ctrlKey ? 0.01 : 0.002));
    let v = zoomAbout(this.view, f, px - LEFT, py - TOP, this.n, pw, ph);
    if (dx) v = panBy(v, -dx, 0, this.n, pw, ph);
    this.setView(v);
    this.setHover({ px, py, cx: e.clientX, cy: e.clientY });
  }

  private onPointerDown(e: PointerEvent): void {
    if (e.button !== 0 && e.pointerType === 'mouse') return;
    this.canvas.setPointerCapture(e.pointerId);
    this.cursor = null;
    this.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (this.pointers.size === 1) this.moved = 0;
    if (this.pointers.size === 2) this.pinch = this.pinchState();
    this.canvas.classList.add('hm-dragging');
  }

  private pinchState(): { d: number; mx: number; my: number } {
    const [a, b] = [...this.pointers.values()];
    return { d: Math.hypot(a.x - b.x, a.y - b.y), mx: (a.x + b.x) / 2, my: (a.y + b.y) / 2 };
  }

  private onPointerMove(e: PointerEvent): void {
    const p = this.pointers.get(e.pointerId);
    const { pw, ph } = this.plot();
    if (!p) {
      if (e.pointerType === 'mouse') {
        const { px, py } = this.local(e);
        this.cursor = null;
        this.setHover({ px, py, cx: e.clientX, cy: e.clientY });
      }
      return;
    }
    const dx = e.clientX - p.x;
    const dy = e.clientY - p.y;
    p.x = e.clientX;
    p.y = e.clientY;
    this.moved += Math.abs(dx) + Math.abs(dy);
    if (this.pointers.size === 1) {
      if (this.moved > 3) this.setView(panBy(this.view, dx, dy, this.n, pw, ph));
    } else if (this.pointers.size === 2 && this.pinch) {
      const now = this.pinchState();
      const r = this.canvas.getBoundingClientRect();
      let v = zoomAbout(this.view, now.d / Math.max(1, this.pinch.d), now.mx - r.left - LEFT, now.my - r.top - TOP, this.n, pw, ph);
      v = panBy(v, now.mx - this.pinch.mx, now.my - this.pinch.my, this.n, pw, ph);
      this.pinch = now;
      this.setView(v);
    }
    if (e.pointerType === 'mouse') {
      const { px, py } = this.local(e);
      this.setHover({ px, py, cx: e.clientX, cy: e.clientY });
    }
  }

  private onPointerUp(e: PointerEvent, cancel = false): void {
    if (!this.pointers.has(e.pointerId)) return;
    const single = this.pointers.size === 1;
    this.pointers.delete(e.pointerId);
    if (this.pointers.size < 2) this.pinch = null;
    if (this.pointers.size === 0) this.canvas.classList.remove('hm-dragging');
    if (cancel || !single || this.moved > 3) return;
    // a click: an output row moves the app's step
    const { px, py } = this.local(e);
    const ctx = this.ctx;
    const { ph } = this.plot();
    if (!ctx || py < TOP || py >= TOP + ph) return;
    const q = Math.floor(this.view.y0 + (py - TOP) / this.view.s);
    if (px >= LEFT + this.n * this.view.s - this.view.x0 * this.view.s) return;
    const t = q >= 0 && q < this.n ? queryStep(q, ctx.nPrompt, ctx.nOutput) : null;
    if (t !== null) ctx.setStep(t);
  }

  private cursorHover(): void {
    const c = this.cursor;
    if (!c) return;
    const v = this.view;
    const r = this.canvas.getBoundingClientRect();
    const px = LEFT + (c.k - v.x0 + 0.5) * v.s;
    const py = TOP + (c.q - v.y0 + 0.5) * v.s;
    this.hover = { px, py, cx: r.left + px, cy: r.top + py };
  }

  /** Moves the keyboard's cell by (dq, dk) cells of the current level (first: the step's row), keeping it in view. */
  private moveCursor(dq: number, dk: number): void {
    const n = this.n;
    const ctx = this.ctx;
    if (!ctx || n <= 0) return;
    const { pw, ph } = this.plot();
    const v = this.view;
    const b = levelFor(v.s, n);
    const lim = (x: number) => Math.max(0, Math.min(n - 1, x));
    let c = this.cursor;
    if (!c) {
      const w = visibleWindow(v, n, pw, ph);
      const qs = stepQuery(ctx.nPrompt, ctx.step);
      const q = qs >= w.q0 && qs < w.q1 ? qs : w.q0;
      c = { q, k: Math.max(w.k0, Math.min(q, w.k1 - 1)) };
    } else c = { q: lim(c.q + dq * b), k: lim(c.k + dk * b) };
    this.cursor = c;
    let { x0, y0 } = v;
    if (c.k < x0) x0 = c.k;
    else if (c.k + 1 > x0 + pw / v.s) x0 = c.k + 1 - pw / v.s;
    if (c.q < y0) y0 = c.q;
    else if (c.q + 1 > y0 + ph / v.s) y0 = c.q + 1 - ph / v.s;
    this.setView({ x0, y0, s: v.s });
    this.cursorHover();
    this.requestDraw();
  }

  private onKey(e: KeyboardEvent): void {
    if (e.altKey || e.ctrlKey || e.metaKey || this.n <= 0) return;
    if (e.shiftKey && e.key.startsWith('Arrow')) {
      const d: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
      const m = d[e.key];
      if (m) {
        e.preventDefault();
        e.stopPropagation();
        this.moveCursor(m[0], m[1]);
      }
      return;
    }
    if (e.key === 'Enter' && this.cursor && this.ctx) {
      const t = queryStep(this.cursor.q, this.ctx.nPrompt, this.ctx.nOutput);
      if (t !== null) {
        e.preventDefault();
        e.stopPropagation();
        this.ctx.setStep(t);
      }
      return;
    }
    const { pw, ph } = this.plot();
    const stepX = Math.max(this.view.s, Math.min(pw, this.n * this.view.s) / 8);
    const stepY = Math.max(this.view.s, Math.min(ph, this.n * this.view.s) / 8);
    switch (e.key) {
      case '+':
      case '=':
        this.zoomCenter(ZOOM_STEP);
        break;
      case '-':
      case '_':
        this.zoomCenter(1 / ZOOM_STEP);
        break;
      case '0':
        this.resetView();
        break;
      case 'ArrowLeft':
        this.setView(panBy(this.view, stepX, 0, this.n, pw, ph));
        break;
      case 'ArrowRight':
        this.setView(panBy(this.view, -stepX, 0, this.n, pw, ph));
        break;
      case 'ArrowUp':
        this.setView(panBy(this.view, 0, stepY, this.n, pw, ph));
        break;
      case 'ArrowDown':
        this.setView(panBy(this.view, 0, -stepY, this.n, pw, ph));
        break;
      default:
        return;
    }
    e.preventDefault(); // the app's own arrow keys (step) stay out of it
    e.stopPropagation();
  }
}

/** The heatmap view (a tab): see the file comment. */
export function createHeatmapView(root: HTMLElement, opts?: HeatmapOptions): View {
  return new Heatmap(root, opts);
}

