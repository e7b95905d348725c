// The heads view: every layer x head as a small heatmap (rows = layers,
// columns = heads), each a /heatmap thumbnail (max-pooled to THUMB cells per
// side, float16) fetched only when its cell is in or near the viewport, at
// most CONCURRENCY at a time; cells not loaded show a placeholder. Hover
// tells the layer/head and, inside a loaded cell, the query, key and weight.
// A click (or Enter) opens the cell large: a dialog with the heatmap view of
// that layer and head (Esc closes; the focus goes back to the cell). Cells are
// one tab stop (roving tabindex, arrow keys). The root's data attributes:
// data-status (idle | loading | ready | error), data-cells, data-cells-loaded,
// data-cells-visible (cells in or near the viewport now: what is fetched),
// data-cells-onscreen, data-cells-seen (ever in or near it).
import { displayLabel } from '../model';
import { createHeatmapView, createLegend, ensureStyle, fetchTile, MASKED, tileCache, tileCost, tileImage } from './heatmap';
import { frameTask } from './common';
import type { View, ViewContext } from './types';
import {
  blockText,
  cellAt,
  FetchQueue,
  formatWeight4,
  gridCellSize,
  gridMove,
  heatmapUrl,
  nPositions,
  tileKey,
  visibleCells,
  type GridGeom,
  type HeatmapParams,
  type Selection,
} from './tiles';

export const THUMB = 32;
const CONCURRENCY = 4;
const GAP = 4;
const LABEL_W = 40;
const HEAD_H = 20;

const STYLE = `
.mg-root{display:flex;flex-direction:column;gap:6px;height:100%;min-height:300px;min-width:0}
.mg-bar{display:flex;flex-wrap:wrap;align-items:center;gap:4px 16px;font-size:12px;color:#5b6470}
.mg-scroll{position:relative;flex:1 1 auto;min-height:200px;overflow:auto;border:1px solid #d9dee5;border-radius:4px;background:#fff}
.mg-grid{display:grid;gap:${GAP}px;padding:${GAP}px;width:max-content;grid-template-columns:${LABEL_W}px repeat(var(--mg-cols),var(--mg-cell));grid-auto-rows:auto}
.mg-row{display:contents}
.mg-colhead,.mg-rowhead,.mg-corner{font-size:11px;color:#5b6470;font-variant-numeric:tabular-nums;display:flex;align-items:center;justify-content:center;height:${HEAD_H}px}
.mg-rowhead{height:var(--mg-cell);justify-content:flex-end;padding-right:4px}
.mg-colhead,.mg-corner{position:sticky;top:0;z-index:2;background:#fff}
.mg-rowhead,.mg-corner{position:sticky;left:0;z-index:2;background:#fff}
.mg-corner{z-index:3}
.mg-cell{position:relative;width:var(--mg-cell);height:var(--mg-cell);border:1px solid #c9d0da;background:repeating-linear-gradient(45deg,#f1f3f6 0 5px,#e6e9ee 5px 10px);cursor:zoom-in;box-sizing:border-box;outline-offset:1px}
.mg-cell[data-state=loaded]{background:${MASKED}}
.mg-cell[data-state=error]{background:#fde8e7}
.mg-cell canvas{position:absolute;inset:0;width:100%;height:100%;display:block;image-rendering:pixelated}
.mg-cell:focus{outline:none}
.mg-cell:focus-visible{outline:3px solid #1a56db;z-index:1}
.mg-cell:hover{border-color:#1b1f24}
.mg-cell[aria-current=true]{border:2px dashed #111}
.mg-cell.mg-current{box-shadow:0 0 0 2px #111,0 0 0 4px #fff}
.mg-tip{position:fixed;z-index:60;max-width:360px;padding:6px 9px;border-radius:5px;background:#1b1f24;color:#fff;font-size:12px;line-height:1.45;pointer-events:none;box-shadow:0 2px 8px rgb(0 0 0/.2);overflow-wrap:anywhere}
.mg-tip[hidden]{display:none}
.mg-tip .mg-k{color:#b7c0cc}
.mg-tip .mg-tip-title{font-weight:600}
.mg-tip .mg-tip-weight{font-weight:700;font-variant-numeric:tabular-nums}
.mg-dialog{width:min(1100px,94vw);height:min(860px,92vh);padding:0;border:1px solid #9aa8ba;border-radius:8px;box-shadow:0 8px 30px rgb(0 0 0/.3)}
.mg-dialog[open]{display:flex;flex-direction:column}
.mg-dialog::backdrop{background:rgb(20 24 30/.45)}
.mg-dialog-head{display:flex;align-items:center;justify-content:space-between;gap:12px;padding:8px 12px;border-bottom:1px solid #d9dee5}
.mg-dialog-head h3{margin:0;font-size:15px}
.mg-acts{display:flex;gap:6px;margin-left:auto}
.mg-dialog-body{flex:1 1 auto;min-height:0;padding:8px 12px 10px;display:flex;flex-direction:column}
.mg-dialog-body>.hm-root{flex:1 1 auto}
`;

type CellState = 'placeholder' | 'loading' | 'loaded' | 'error';

let dialogSeq = 0;

/** A div of the grid: its class, ARIA role, and text and title when given. */
function gridDiv(cls: string, role: string, text?: string, title?: string): HTMLDivElement {
  const d = document.createElement('div');
  d.className = cls;
  d.setAttribute('role', role);
  if (text !== undefined) d.textContent = text;
  if (title !== undefined) d.title = title;
  return d;
}

/** What the Heads view can ask of the app. */
export interface ModelGridDeps {
  /** a new run from the current step with this head ablated (mean: replaced by its mean over the prompt) */
  ablate?(layer: number, head: number, mean: boolean): void;
  /** false while a generation runs */
  canAblate?(): boolean;
}

class ModelGrid implements View {
  private root: HTMLElement;
  private deps: ModelGridDeps;
  private ablateBtn: HTMLButtonElement;
  private ablateMeanBtn: HTMLButtonElement;
  private info: HTMLElement;
  private scroller: HTMLElement;
  private grid: HTMLElement;
  private tip: HTMLElement;
  private dialog: HTMLDialogElement;
  private dialogTitle: HTMLElement;
  private dialogBody: HTMLElement;
  private big: View | null = null;
  private bigSel: { layer: number; head: number } | null = null;
  private opener: HTMLElement | null = null;

  private ctx: ViewContext | null = null;
  private active = false;
  private n = 0;
  private nLayer = 0;
  private nHead = 0;
  private shape = '';
  private runKey = '';
  private cells: HTMLElement[] = [];
  private state: CellState[] = [];
  private errors = new Map<number, string>();
  private seen = new Set<number>();
  private activeCell = 0;
  private cellPx = 0;
  private queue = new FetchQueue(CONCURRENCY);
  private inflight = new Map<number, AbortController>();
  private frame = frameTask(() => this.update());
  private tipCell = -1;

  constructor(root: HTMLElement, deps: ModelGridDeps = {}) {
    ensureStyle('mg-style', STYLE);
    this.root = root;
    this.deps = deps;
    root.classList.add('mg-root');
    root.dataset.status = 'idle';
    root.textContent = '';

    const bar = document.createElement('div');
    bar.className = 'mg-bar';
    this.info = document.createElement('span');
    this.info.className = 'mg-info';
    const legend = createLegend();
    legend.set('sqrt');
    bar.append(this.info, legend.el);

    this.scroller = document.createElement('div');
    this.scroller.className = 'mg-scroll';
    this.grid = document.createElement('div');
    this.grid.className = 'mg-grid';
    this.grid.setAttribute('role', 'grid');
    this.grid.setAttribute('aria-label', 'Attention of every layer and head: arrow keys move, Enter opens one large');
    this.scroller.appendChild(this.grid);

    this.tip = document.createElement('div');
    this.tip.className = 'mg-tip';
    this.tip.setAttribute('role', 'tooltip');
    this.tip.hidden = true;

    const id = `mg-dialog-title-${++dialogSeq}`;
    this.dialog = document.createElement('dialog');
    this.dialog.className = 'mg-dialog';
    this.dialog.setAttribute('aria-labelledby', id);
    const head = document.createElement('div');
    head.className = 'mg-dialog-head';
    this.dialogTitle = document.createElement('h3');
    this.dialogTitle.id = id;
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'mg-close';
    close.textContent = 'Close';
    close.setAttribute('aria-label', 'Close (Esc)');
    close.addEventListener('click', () => this.dialog.close());
    const acts = document.createElement('span');
    acts.className = 'mg-acts';
    acts.setAttribute('role', 'group');
    acts.setAttribute('aria-label', 'Interventions on this head');
    const act = (id: string, mean: boolean) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.id = id;
      b.addEventListener('click', () => {
        const sel = this.bigSel;
        if (!sel || !this.deps.ablate) return;
        this.dialog.close();
        this.deps.ablate(sel.layer, sel.head, mean);
      });
      acts.appendChild(b);
      return b;
    };
    this.ablateBtn = act('mg-ablate', false);
    this.ablateMeanBtn = act('mg-ablate-mean', true);
    acts.hidden = !deps.ablate;
    head.append(this.dialogTitle, acts, close);
    this.dialogBody = document.createElement('div');
    this.dialogBody.className = 'mg-dialog-body';
    this.dialog.append(head, this.dialogBody);
    this.dialog.addEventListener('close', () => this.onDialogClose());
    this.dialog.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') e.stopPropagation(); // closes the dialog only, not the app's selection
    });
    this.dialog.addEventListener('click', (e) => {
      if (e.target === this.dialog) this.dialog.close(); // the backdrop
    });

    root.append(bar, this.scroller, this.tip, this.dialog);

    new ResizeObserver(() => this.layout()).observe(this.scroller);
    window.addEventListener('scroll', () => this.requestUpdate(), { capture: true, passive: true });
    window.addEventListener('resize', () => this.requestUpdate());
    this.grid.addEventListener('click', (e) => {
      const i = this.cellIndex(e.target);
      if (i >= 0) this.open(i);
    });
    this.grid.addEventListener('keydown', (e) => this.onKey(e));
    this.grid.addEventListener('mousemove', (e) => {
      const i = this.cellIndex(e.target);
      if (i >= 0) this.showTip(i, e);
      else this.hideTip();
    });
    this.grid.addEventListener('mouseleave', () => this.hideTip());
    this.grid.addEventListener('focusin', (e) => {
      const i = this.cellIndex(e.target);
      if (i >= 0) {
        this.setActive(i);
        this.showTip(i, null);
      }
    });
    this.grid.addEventListener('focusout', () => this.hideTip());
  }

  // ------------------------------------------------------------ View

  show(ctx: ViewContext): void {
    this.ctx = ctx;
    this.active = true;
    this.n = nPositions(ctx.nPrompt, ctx.nOutput);
    const shape = `${ctx.nLayer}x${ctx.nHead}`;
    if (shape !== this.shape) {
      this.shape = shape;
      this.build(ctx.nLayer, ctx.nHead);
    }
    const rk = `${ctx.base}|${ctx.runId}|${this.n}`;
    if (rk !== this.runKey) {
      this.runKey = rk;
      this.abortAll();
      this.seen.clear();
      this.errors.clear();
      for (let i = 0; i < this.cells.length; i++) this.resetCell(i);
    }
    this.info.textContent = `${ctx.nLayer} layers × ${ctx.nHead} heads · each cell: the head's ${this.n} × ${this.n} attention, max-pooled to at most ${THUMB} × ${THUMB} · click or Enter opens one`;
    this.markCurrent();
    this.layout();
    if (this.dialog.open && this.big && this.bigSel) this.big.show(this.bigCtx(ctx, this.bigSel.layer, this.bigSel.head));
  }

  hide(): void {
    this.active = false;
    this.frame.cancel();
    this.abortAll();
    this.hideTip();
    if (this.dialog.open) this.dialog.close();
  }

  // ------------------------------------------------------------ grid

  private build(nLayer: number, nHead: number): void {
    this.abortAll();
    this.nLayer = nLayer;
    this.nHead = nHead;
    this.grid.textContent = '';
    this.grid.style.setProperty('--mg-cols', String(nHead));
    this.grid.setAttribute('aria-rowcount', String(nLayer + 1));
    this.grid.setAttribute('aria-colcount', String(nHead + 1));
    const frag = document.createDocumentFragment();
    const hr = gridDiv('mg-row', 'row');
    hr.appendChild(gridDiv('mg-corner', 'columnheader', 'L \\ H'));
    for (let h = 0; h < nHead; h++) hr.appendChild(gridDiv('mg-colhead', 'columnheader', `H${h}`, `head ${h}`));
    frag.appendChild(hr);
    this.cells = [];
    this.state = [];
    for (let l = 0; l < nLayer; l++) {
      const row = gridDiv('mg-row', 'row');
      row.appendChild(gridDiv('mg-rowhead', 'rowheader', `L${l}`, `layer ${l}`));
      for (let h = 0; h < nHead; h++) {
        const c = gridDiv('mg-cell', 'gridcell');
        c.dataset.layer = String(l);
        c.dataset.head = String(h);
        c.dataset.index = String(this.cells.length);
        c.dataset.state = 'placeholder';
        c.tabIndex = -1;
        c.setAttribute('aria-label', `layer ${l}, head ${h}`);
        c.setAttribute('aria-haspopup', 'dialog');
        row.appendChild(c);
        this.cells.push(c);
        this.state.push('placeholder');
      }
      frag.appendChild(row);
    }
    this.grid.appendChild(frag);
    this.activeCell = 0;
    if (this.cells[0]) this.cells[0].tabIndex = 0;
    this.seen.clear();
    this.root.dataset.cells = String(this.cells.length);
  }

  private layout(): void {
    if (!this.active) return;
    const w = this.scroller.clientWidth;
    if (w <= 0) return;
    const px = gridCellSize(w, this.nHead, LABEL_W, GAP);
    if (px !== this.cellPx) {
      this.cellPx = px;
      this.grid.style.setProperty('--mg-cell', `${px}px`);
      for (let i = 0; i < this.cells.length; i++) if (this.state[i] === 'loaded') this.paint(i);
    }
    this.requestUpdate();
  }

  private geom(): GridGeom | null {
    const first = this.cells[0];
    if (!first) return null;
    // offsets inside the scroller's content (the scroller is the cells' offsetParent)
    return {
      rows: this.nLayer,
      cols: this.nHead,
      x0: first.offsetLeft,
      y0: first.offsetTop,
      dx: this.cellPx + GAP,
      dy: this.cellPx + GAP,
      w: this.cellPx,
      h: this.cellPx,
    };
  }

  /** The scroller's part inside the window, in the scroller's content coordinates. */
  private viewport(): { left: number; top: number; width: number; height: number } {
    const sc = this.scroller;
    const r = sc.getBoundingClientRect();
    const left = Math.max(r.left + sc.clientLeft, 0);
    const top = Math.max(r.top + sc.clientTop, 0);
    const right = Math.min(r.left + sc.clientLeft + sc.clientWidth, window.innerWidth);
    const bottom = Math.min(r.top + sc.clientTop + sc.clientHeight, window.innerHeight);
    return {
      left: sc.scrollLeft + left - r.left - sc.clientLeft,
      top: sc.scrollTop + top - r.top - sc.clientTop,
      width: Math.max(0, right - left),
      height: Math.max(0, bottom - top),
    };
  }

  private requestUpdate(): void {
    if (this.active) this.frame.request();
  }

  /** Which cells are in or near the viewport: fetch those not loaded, nearest rows first. */
  private update(): void {
    if (!this.active || !this.ctx) return;
    const g = this.geom();
    const vp = this.viewport();
    const list: number[] = [];
    let onscreen = 0;
    if (g && this.n > 0 && this.cellPx > 0) {
      const near = visibleCells(vp, g, g.dy);
      for (let r = near.r0; r < near.r1; r++) for (let c = near.c0; c < near.c1; c++) list.push(r * this.nHead + c);
      const on = visibleCells(vp, g, 0);
      onscreen = (on.r1 - on.r0) * (on.c1 - on.c0);
    }
    for (const i of list) this.seen.add(i);
    const want = new Set(list);
    // cells scrolled far away that were still loading: stop them (they are fetched again when back)
    for (const [i, ac] of this.inflight) if (!want.has(i)) ac.abort();
    this.queue.want(
      list
        .filter((i) => this.state[i] === 'placeholder') // an error is not retried until the run changes
        .map((i) => ({ key: this.key(i), run: () => this.load(i) })),
    );
    const r = this.root;
    r.dataset.cellsVisible = String(list.length);
    r.dataset.cellsOnscreen = String(onscreen);
    r.dataset.cellsSeen = String(this.seen.size);
    this.updateStatus(list);
  }

  private updateStatus(visible?: number[]): void {
    const r = this.root;
    let loaded = 0;
    for (const s of this.state) if (s === 'loaded') loaded++;
    r.dataset.cellsLoaded = String(loaded);
    if (!this.ctx) return;
    if (this.n <= 0) {
      r.dataset.status = 'ready';
      return;
    }
    const vis = visible ?? this.visibleNow();
    const pending = vis.some((i) => this.state[i] === 'placeholder' || this.state[i] === 'loading');
    r.dataset.status = pending ? 'loading' : vis.some((i) => this.state[i] === 'error') ? 'error' : 'ready';
  }

  private visibleNow(): number[] {
    const g = this.geom();
    if (!g) return [];
    const v = visibleCells(this.viewport(), g, g.dy);
    const out: number[] = [];
    for (let r = v.r0; r < v.r1; r++) for (let c = v.c0; c < v.c1; c++) out.push(r * this.nHead + c);
    return out;
  }

  // ------------------------------------------------------------ tiles

  private sel(i: number): Selection {
    return { layer: Math.floor(i / this.nHead), head: i % this.nHead };
  }

  private params(): HeatmapParams {
    const n = Math.max(1, this.n);
    return { q0: 0, q1: n, k0: 0, k1: n, size: THUMB, pool: 'max', format: 'bin', dtype: 'float16' };
  }

  private key(i: number): string {
    return tileKey(this.ctx!.runId, this.sel(i), this.params());
  }

  private async load(i: number): Promise<void> {
    const ctx = this.ctx;
    if (!ctx || !this.active) return;
    const key = this.key(i);
    if (tileCache.has(key)) {
      this.setState(i, 'loaded');
      this.paint(i);
      return;
    }
    const ac = new AbortController();
    this.inflight.set(i, ac);
    this.setState(i, 'loading');
    try {
      const tile = await fetchTile(heatmapUrl(ctx.base, ctx.runId, this.sel(i), this.params()), ac.signal);
      tileCache.set(key, { tile, img: null, imgKind: null }, tileCost(tile));
      if (this.key(i) !== key) return; // another run meanwhile
      this.errors.delete(i);
      this.setState(i, 'loaded');
      this.paint(i);
    } catch (e) {
      if (this.inflight.get(i) !== ac) return;
      if (e instanceof DOMException && e.name === 'AbortError') this.setState(i, 'placeholder');
      else {
        this.errors.set(i, e instanceof Error ? e.message : String(e));
        this.setState(i, 'error');
      }
    } finally {
      if (this.inflight.get(i) === ac) this.inflight.delete(i);
      this.updateStatus();
      this.requestUpdate(); // what is wanted now (a cell aborted while it was wanted again)
    }
  }

  private setState(i: number, s: CellState): void {
    this.state[i] = s;
    const c = this.cells[i];
    if (!c) return;
    c.dataset.state = s;
    const { layer, head } = this.sel(i);
    c.setAttribute('aria-label', `layer ${layer}, head ${head}${s === 'loaded' ? '' : s === 'error' ? ' (could not load)' : ' (loading)'}`);
    if (this.tipCell === i && !this.tip.hidden) this.showTip(i, null, true);
  }

  private resetCell(i: number): void {
    this.state[i] = 'placeholder';
    const c = this.cells[i];
    c.dataset.state = 'placeholder';
    c.querySelector('canvas')?.remove();
    // a run seen before: its thumbnails are still cached
    if (this.ctx && tileCache.has(this.key(i))) {
      this.state[i] = 'loaded';
      c.dataset.state = 'loaded';
      this.paint(i);
    }
  }

  private abortAll(): void {
    this.queue.clear();
    for (const [i, ac] of this.inflight) {
      ac.abort();
      if (this.state[i] === 'loading') this.setState(i, 'placeholder');
    }
    this.inflight.clear();
  }

  /** Draws cell i's thumbnail (nearest-neighbour, masked cells grey). */
  private paint(i: number): void {
    const e = this.ctx ? tileCache.peek(this.key(i)) : undefined;
    const cell = this.cells[i];
    if (!e || !cell || this.cellPx <= 0) return;
    let cv = cell.querySelector('canvas');
    if (!cv) {
      cv = document.createElement('canvas');
      cv.setAttribute('aria-hidden', 'true');
      cell.appendChild(cv);
    }
    const dpr = window.devicePixelRatio || 1;
    const side = Math.max(1, Math.round((this.cellPx - 2) * dpr));
    if (cv.width !== side) {
      cv.width = side;
      cv.height = side;
    }
    const g = cv.getContext('2d')!;
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.fillStyle = MASKED;
    g.fillRect(0, 0, side, side);
    g.imageSmoothingEnabled = false;
    const t = e.tile;
    const n = Math.max(1, this.n);
    g.drawImage(tileImage(e, 'sqrt'), 0, 0, (side * t.cols * t.bk) / n, (side * t.rows * t.bq) / n);
  }

  // ------------------------------------------------------------ current step, tooltip

  private markCurrent(): void {
    const ctx = this.ctx;
    const want = this.dialog.open && this.bigSel ? this.bigSel.layer * this.nHead + this.bigSel.head : -1;
    this.cells.forEach((c, i) => c.classList.toggle('mg-current', i === want));
    if (ctx && ctx.layer !== null && ctx.head !== null) {
      const i = ctx.layer * this.nHead + ctx.head;
      this.cells[i]?.setAttribute('aria-current', 'true');
      this.cells.forEach((c, j) => j !== i && c.removeAttribute('aria-current'));
    } else this.cells.forEach((c) => c.removeAttribute('aria-current'));
  }

  private cellIndex(t: EventTarget | null): number {
    const el = t instanceof Element ? (t.closest('.mg-cell') as HTMLElement | null) : null;
    return el && this.grid.contains(el) ? Number(el.dataset.index) : -1;
  }

  private showTip(i: number, e: MouseEvent | null, keep = false): void {
    const ctx = this.ctx;
    const cell = this.cells[i];
    if (!ctx || !cell) return;
    const tip = this.tip;
    const { layer, head } = this.sel(i);
    tip.textContent = '';
    const div = (cls: string, ...parts: (string | Node)[]) => {
      const d = document.createElement('div');
      if (cls) d.className = cls;
      d.append(...parts);
      tip.appendChild(d);
    };
    const k = (s: string) => {
      const sp = document.createElement('span');
      sp.className = 'mg-k';
      sp.textContent = s;
      return sp;
    };
    div('mg-tip-title', `Layer ${layer}, head ${head}`);
    tip.dataset.layer = String(layer);
    tip.dataset.head = String(head);
    tip.dataset.value = '';
    const r = cell.getBoundingClientRect();
    const entry = tileCache.peek(this.key(i));
    if (this.state[i] !== 'loaded' || !entry) {
      div('', k(this.state[i] === 'error' ? `could not load: ${this.errors.get(i) ?? ''}` : 'not loaded yet'));
    } else if (e && this.n > 0) {
      const q = Math.min(this.n - 1, Math.max(0, Math.floor(((e.clientY - r.top) / r.height) * this.n)));
      const kk = Math.min(this.n - 1, Math.max(0, Math.floor(((e.clientX - r.left) / r.width) * this.n)));
      const c = cellAt(entry.tile, q, kk);
      if (c) {
        const tok = (p: number) => `${p} “${displayLabel(ctx.tokens[p]?.label)}”`;
        const one = c.q1 - c.q0 === 1 && c.k1 - c.k0 === 1;
        div('', k(one ? 'query ' : 'queries '), one ? tok(c.q0) : `${c.q0}–${c.q1 - 1} (here ${tok(q)})`);
        div('', k(one ? 'key ' : 'keys '), one ? tok(c.k0) : `${c.k0}–${c.k1 - 1} (here ${tok(kk)})`);
        if (c.masked) div('', k('masked: the key comes after the query'));
        else {
          const w = document.createElement('span');
          w.className = 'mg-tip-weight';
          w.textContent = formatWeight4(c.value);
          const note = blockText(c, entry.tile.pool);
          div('', k('weight '), w, note ? k(` (${note})`) : '');
          tip.dataset.value = String(c.value);
        }
        tip.dataset.q = String(q);
        tip.dataset.k = String(kk);
      }
    } else div('', k('Enter opens it large'));
    this.tipCell = i;
    tip.hidden = false;
    if (keep && !e) return;
    const tr = tip.getBoundingClientRect();
    let x = e ? e.clientX + 14 : r.right + 6;
    let y = e ? e.clientY + 14 : r.top;
    if (x + tr.width > window.innerWidth - 4) x = (e ? e.clientX : r.left) - tr.width - 10;
    if (y + tr.height > window.innerHeight - 4) y = (e ? e.clientY : r.bottom) - tr.height - 10;
    tip.style.left = `${Math.max(4, x)}px`;
    tip.style.top = `${Math.max(4, y)}px`;
  }

  private hideTip(): void {
    this.tip.hidden = true;
    this.tipCell = -1;
  }

  // ------------------------------------------------------------ keyboard, dialog

  private setActive(i: number): void {
    if (i === this.activeCell || !this.cells[i]) return;
    if (this.cells[this.activeCell]) this.cells[this.activeCell].tabIndex = -1;
    this.activeCell = i;
    this.cells[i].tabIndex = 0;
  }

  private onKey(e: KeyboardEvent): void {
    const i = this.cellIndex(e.target);
    if (i < 0 || e.altKey || e.metaKey) return;
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      e.stopPropagation();
      this.open(i);
      return;
    }
    const to = gridMove(Math.floor(i / this.nHead), i % this.nHead, e.key, this.nLayer, this.nHead, e.ctrlKey);
    if (!to) return;
    e.preventDefault();
    e.stopPropagation(); // not the app's step keys
    const j = to[0] * this.nHead + to[1];
    this.setActive(j);
    this.cells[j].focus();
  }

  private bigCtx(ctx: ViewContext, layer: number, head: number): ViewContext {
    return { ...ctx, layer, head, setStep: (t: number) => ctx.setStep(t) };
  }

  private open(i: number): void {
    const ctx = this.ctx;
    if (!ctx) return;
    const { layer, head } = this.sel(i);
    this.setActive(i);
    this.opener = this.cells[i];
    this.hideTip();
    this.bigSel = { layer: layer!, head: head! };
    this.dialogTitle.textContent = `Layer ${layer}, head ${head}`;
    const t = ctx.step + 1;
    const can = this.deps.canAblate ? this.deps.canAblate() : true;
    this.ablateBtn.textContent = `Ablate and regenerate from step ${t}`;
    this.ablateBtn.title = `A new run: outputs before step ${t} reused, then generated again with layer ${layer} head ${head}'s attention output zeroed; opens on its Effects`;
    this.ablateMeanBtn.textContent = `Mean-ablate and regenerate from step ${t}`;
    this.ablateMeanBtn.title = `The same, with the head's output replaced by its mean over the prompt`;
    this.ablateBtn.disabled = this.ablateMeanBtn.disabled = !can;
    this.dialog.dataset.layer = String(layer);
    this.dialog.dataset.head = String(head);
    if (!this.big) this.big = createHeatmapView(this.dialogBody);
    if (!this.dialog.open) this.dialog.showModal();
    this.big.show(this.bigCtx(ctx, layer!, head!));
    this.dialogBody.querySelector<HTMLElement>('.hm-canvas')?.focus();
    this.markCurrent();
  }

  private onDialogClose(): void {
    this.big?.hide();
    this.bigSel = null;
    this.markCurrent();
    const o = this.opener;
    this.opener = null;
    // the browser gives the focus back as the dialog closes, before this event: keys pressed since
    // then may have moved it to another cell, which stays focused
    if (o && o.isConnected && !this.grid.contains(document.activeElement)) o.focus();
  }
}

/** The heads view (a tab): see the file comment. */
export function createModelView(root: HTMLElement, deps: ModelGridDeps = {}): View {
  return new ModelGrid(root, deps);
}
