// The token graph: input tokens in a column at x = 0.1 w, outputs at 0.9 w,
// edges on a canvas the size of the viewport (sticky, redrawn on scroll),
// tokens as focusable buttons, only those near the visible range in the DOM.
// Long runs: the rows of /graph read a range of steps at a time (LazyGraph;
// float32, decoded and their edge lists sorted in a worker: RangeReader),
// the columns zoom (row spacing), each step's k strongest sources are drawn
// besides those at the threshold, and a token can be revealed (scrolled to,
// highlighted); web/src/overview.ts drives these.
import {
  bucketWidth,
  clampStep,
  countAtLeast,
  type GraphReply,
  type StepEdges,
  contentY,
  curveControlX,
  scrollFor,
  viewY,
  displayLabel,
  EdgeList,
  EdgeWeights,
  formatWeight,
  GraphData,
  type GraphRange,
  parseGraphBin,
  rangeOfReply,
  rangeRows,
  IO,
  OO,
  layoutGraph,
  Layout,
  rowY,
  selectEdges,
  Side,
  Step,
  Token,
  ViewState,
  visibleRange,
  widthBucket,
  WIDTH_BUCKETS,
} from './model';
import { api, ApiError } from './api';
import { measureQuery } from './attribution';
import { MEASURE_NAME, type Measure } from './attribution';
import { COLORS, EDGE_ALPHA } from './theme';

export interface GraphModel {
  inputs: Token[];
  outputs: Step[];
  data: GraphData | null;
  /** the split rows with their masses (the hover shows raw and normalized from them) */
  split?: GraphData | null;
  /** what `data` holds (the line widths) */
  weights?: EdgeWeights;
  /** what the split rows measure (absent: attention); the hover names it */
  measure?: Measure;
  /** rows of the output column (every output the run has or will have) */
  nOutRows: number;
}

export interface GraphCallbacks {
  tokenClick: (side: Side, index: number) => void;
}

const OVERSCAN = 240; // px of tokens kept in the DOM above and below the viewport

/** Row spacing (px) of the zoom levels: 0 is the default, each next level shows twice the rows. */
export const ZOOM_ROWS = [20, 10, 5, 2.5];

/** Runs of more tokens than this draw each step's top-k sources by default ("auto"). */
export const TOPK_AUTO_TOKENS = 1000;
export const TOPK_AUTO = 8;

/** What GraphView tells its listeners: a new render (model, step, view) or a scroll / zoom. */
export type GraphEvent = 'render' | 'scroll';

interface Hit {
  i: number; // edge index in the current list
  x: number;
  y: number;
}

export class GraphView {
  readonly root: HTMLElement;
  private scroller: HTMLElement;
  private canvas: HTMLCanvasElement;
  private layer: HTMLElement;
  private colIn: HTMLElement;
  private colOut: HTMLElement;
  private tooltip: HTMLElement;
  private cb: GraphCallbacks;

  private model: GraphModel = { inputs: [], outputs: [], data: null, nOutRows: 0 };
  private view: ViewState = { step: 0, mode: 'current', selected: null, threshold: 0.05 };
  private t = -1;
  private edges = new EdgeList();
  private lay: Layout | null = null;
  private layKey = '';
  private inBtns = new Map<number, HTMLButtonElement>();
  private outBtns = new Map<number, HTMLButtonElement>();
  private activeIn = 0;
  private activeOut = 0;
  private drawPending = false;
  private hover: Hit | null = null;
  private tipOwner: HTMLElement | null = null;
  // the scroller's size and scroll offset, cached so that a step move never forces a layout
  private vw = 0;
  private vh = 0;
  private top = 0;
  private pendingScroll: number | null = null;
  // long runs
  private zoom = 0;
  private topk: number | 'auto' = 'auto';
  private matches: Uint8Array | null = null; // by position (inputs, then outputs)
  private hl: { side: Side; index: number } | null = null; // the revealed token
  private listeners: ((e: GraphEvent) => void)[] = [];
  private lazySeen = new WeakSet<LazyGraph>();
  private wantQueued = false;

  constructor(root: HTMLElement, tooltip: HTMLElement, cb: GraphCallbacks) {
    this.root = root;
    this.tooltip = tooltip;
    this.cb = cb;
    this.scroller = root.querySelector('.graph-scroll') as HTMLElement;
    this.canvas = root.querySelector('canvas') as HTMLCanvasElement;
    this.layer = root.querySelector('.graph-layer') as HTMLElement;
    this.colIn = root.querySelector('.col-in') as HTMLElement;
    this.colOut = root.querySelector('.col-out') as HTMLElement;

    this.scroller.addEventListener(
      'scroll',
      () => {
        if (this.pendingScroll !== null) return;
        const y = this.scroller.scrollTop;
        // the echo of a scroll draw() made (a jump, a reveal): drawn already, nothing moved
        if (y === this.top) return;
        this.top = y;
        this.refresh();
      },
      { passive: true },
    );
    const remeasure = () => {
      this.measure();
      this.refresh(true);
    };
    new ResizeObserver(remeasure).observe(this.scroller);
    window.addEventListener('resize', remeasure); // devicePixelRatio changes (zoom)

    this.layer.addEventListener('click', (e) => {
      const b = (e.target as HTMLElement).closest('button.token') as HTMLButtonElement | null;
      if (!b) return;
      const side = b.dataset.side as Side;
      const index = Number(b.dataset.index);
      if (side === 'input') this.activeIn = index;
      else this.activeOut = index;
      this.cb.tokenClick(side, index);
    });
    this.layer.addEventListener('keydown', (e) => this.tokenKey(e));
    this.layer.addEventListener('mouseover', (e) => {
      const b = (e.target as HTMLElement).closest('button.token') as HTMLButtonElement | null;
      if (b) this.showTokenTip(b);
    });
    this.layer.addEventListener('mouseout', (e) => {
      const b = (e.target as HTMLElement).closest('button.token');
      const to = e.relatedTarget as HTMLElement | null;
      if (b && !(to && b.contains(to)) && this.tipOwner === b && document.activeElement !== b) this.hideTip();
    });
    this.layer.addEventListener('focusin', (e) => {
      const b = (e.target as HTMLElement).closest('button.token') as HTMLButtonElement | null;
      if (b) this.showTokenTip(b);
    });
    this.layer.addEventListener('focusout', (e) => {
      if (this.tipOwner === e.target) this.hideTip();
    });
    this.scroller.addEventListener('mousemove', (e) => this.mouseMove(e));
    this.scroller.addEventListener('mouseleave', () => {
      if (this.hover) {
        this.hover = null;
        this.hideTip();
        this.requestDraw();
      }
    });
  }

  /** New tokens / data (a run opened, a token streamed, another layer/head). */
  setModel(m: GraphModel): void {
    this.model = m;
    this.hover = null;
    for (const d of [m.data, m.split])
      if (d instanceof LazyGraph && !this.lazySeen.has(d)) {
        this.lazySeen.add(d);
        d.onLoad((from, to) => {
          // a range of rows arrived: redraw if it holds a step this view draws
          const cur = this.model;
          if (cur.data !== d && cur.split !== d) return;
          const sel = this.view.selected;
          const t = this.t;
          const hit = (s: number) => s >= from && s < to;
          if (hit(t) || (sel && sel.side === 'output' && hit(sel.index)) || this.view.mode === 'all' || (sel && sel.side === 'input'))
            this.render(this.view);
        });
      }
    if (this.activeIn >= m.inputs.length) this.activeIn = 0;
    this.render(this.view);
  }

  /** Applies a view state: computes the edges and the attributes now, draws on the next frame. */
  render(v: ViewState): void {
    this.view = v;
    const m = this.model;
    const nOut = m.outputs.length;
    this.t = clampStep(v.step, nOut);
    const k = this.effectiveTopK();
    if (this.t >= 0 && (m.data instanceof LazyGraph || m.split instanceof LazyGraph)) this.wantRows();
    this.edges = k > 0 ? selectEdgesTopK(m.data, v, k) : selectEdges(m.data, v);
    this.hover = null;
    const r = this.root;
    r.dataset.step = String(Math.max(0, this.t));
    r.dataset.nInput = String(m.inputs.length);
    r.dataset.nOutput = String(this.t + 1);
    r.dataset.mode = v.mode;
    r.dataset.selected = v.selected ? `${v.selected.side}:${v.selected.index}` : '';
    r.dataset.edgeCount = String(this.edges.n);
    r.dataset.edgeCountIo = String(this.edges.nIO);
    r.dataset.edgeCountOo = String(this.edges.nOO);
    r.dataset.topk = String(k);
    const ld = m.data instanceof LazyGraph ? m.data : null;
    r.dataset.stepLoaded = ld && this.t >= 0 && !ld.has(this.t) ? 'false' : 'true';
    r.classList.toggle('empty', m.inputs.length === 0 && nOut === 0);
    this.refresh();
    if (this.tipOwner && this.tipOwner.isConnected && this.tipOwner.matches('button.token'))
      this.showTokenTip(this.tipOwner as HTMLButtonElement);
    this.emit('render');
  }

  /**
   * Asks the long run's rows of the step drawn (or the selected output) at
   * the end of this task: of several renders in one go (a run opened, then
   * its last step shown; a slider dragged past many steps in one event) only
   * the last one's range is read, not a queue of ranges before it.
   */
  private wantRows(): void {
    if (this.wantQueued) return;
    this.wantQueued = true;
    queueMicrotask(() => {
      this.wantQueued = false;
      const m = this.model;
      const v = this.view;
      if (this.t < 0) return;
      for (const d of [m.data, m.split]) if (d instanceof LazyGraph) d.want(v.selected?.side === 'output' ? v.selected.index : this.t);
    });
  }

  // ------------------------------------------------------------ long runs (the overview's hooks)

  /** Calls fn after every render ('render') and every scroll or zoom ('scroll'). */
  listen(fn: (e: GraphEvent) => void): void {
    this.listeners.push(fn);
  }

  private emit(e: GraphEvent): void {
    for (const f of this.listeners) f(e);
  }

  /** The model, view and step drawn now. */
  current(): { model: GraphModel; view: ViewState; t: number } {
    return { model: this.model, view: this.view, t: this.t };
  }

  /** Each step's k strongest sources drawn besides those at the threshold ('auto': 8 on runs of more than 1,000 tokens, else none). */
  setTopK(k: number | 'auto'): void {
    this.topk = k;
    this.render(this.view);
  }

  topK(): number | 'auto' {
    return this.topk;
  }

  effectiveTopK(): number {
    if (this.topk !== 'auto') return this.topk;
    return this.model.inputs.length + Math.max(this.model.nOutRows, this.model.outputs.length) > TOPK_AUTO_TOKENS ? TOPK_AUTO : 0;
  }

  /** The zoom level (0: the default row spacing; ZOOM_ROWS.length - 1: the densest). */
  zoomLevel(): number {
    return this.zoom;
  }

  /** Zooms the columns, keeping the input row at the middle of the viewport there. */
  setZoom(z: number): void {
    const level = Math.max(0, Math.min(ZOOM_ROWS.length - 1, Math.round(z)));
    if (level === this.zoom) return;
    const before = this.layout();
    const mid = before ? visibleRange(before.input, this.top + this.vh / 2, 0)[0] : 0;
    this.zoom = level;
    this.root.dataset.zoom = String(level);
    this.layKey = '';
    const lay = this.layout();
    if (lay && before && this.model.inputs.length > 0) {
      const to = scrollFor(lay, lay.input, mid);
      if (to >= 0) {
        this.top = to;
        this.pendingScroll = to;
      }
    }
    this.refresh();
  }

  /** Rows of each column in view now: inclusive [first, last] (last < first: none). */
  visibleRows(): { input: [number, number]; output: [number, number]; rowsInView: number } {
    const lay = this.layout();
    if (!lay) return { input: [0, -1], output: [0, -1], rowsInView: 0 };
    const nOut = this.t + 1;
    const o = visibleRange(lay.output, this.top, this.vh, 0);
    return {
      input: visibleRange(lay.input, this.top, this.vh, 0),
      output: [o[0], Math.min(o[1], nOut - 1)],
      rowsInView: Math.floor(this.vh / Math.max(1e-6, lay.input.spacing)),
    };
  }

  /** Scrolls so that a token is in the middle of the viewport (no focus move). */
  scrollToToken(side: Side, index: number): void {
    const lay = this.layout();
    if (!lay) return;
    const col = side === 'input' ? lay.input : lay.output;
    const to = scrollFor(lay, col, index);
    if (to < 0) return;
    this.top = to;
    this.pendingScroll = to;
    this.refresh();
  }

  /** Scrolls to a token and marks it (a highlight ring); focus: moves the keyboard focus there too. */
  reveal(side: Side, index: number, focus = false): void {
    this.hl = { side, index };
    this.scrollToToken(side, index);
    if (focus) this.focusToken(side, index);
    else this.updateTokens();
    this.root.dataset.revealed = `${side}:${index}`;
  }

  /** Marks the tokens a search matched, by position (inputs first); null: none. */
  setMatches(m: Uint8Array | null): void {
    this.matches = m;
    this.updateTokens();
  }

  /** The edges drawn now (for the export). */
  currentEdges(): EdgeList {
    return this.edges;
  }

  /** Scrolls so that a token row is in view (the newest token while streaming). */
  ensureVisible(side: Side, index: number): void {
    const lay = this.layout();
    if (!lay) return;
    const col = side === 'input' ? lay.input : lay.output;
    const y = viewY(col, index, this.top);
    if (y >= 24 && y <= this.vh - 24) return;
    const to = scrollFor(lay, col, index);
    if (to < 0) return;
    // scrolled on the next frame (no forced layout now); tokens follow the new offset at once
    this.top = to;
    this.pendingScroll = to;
    this.refresh();
  }

  private measure(): void {
    this.vw = this.scroller.clientWidth;
    this.vh = this.scroller.clientHeight;
    if (this.pendingScroll === null) this.top = this.scroller.scrollTop;
  }

  // ------------------------------------------------------------ layout and tokens

  private layout(): Layout | null {
    if (this.vw <= 0 || this.vh <= 0) this.measure();
    const w = this.vw;
    const h = this.vh;
    if (w <= 0 || h <= 0) return null;
    const key = `${w}x${h}:${this.model.inputs.length}:${this.model.nOutRows}:${this.zoom}`;
    if (key !== this.layKey || !this.lay) {
      this.layKey = key;
      const minRow = ZOOM_ROWS[this.zoom];
      this.lay = layoutGraph(w, h, this.model.inputs.length, Math.max(this.model.nOutRows, this.model.outputs.length), {
        minRow,
        maxRow: Math.max(minRow, 56 / 2 ** this.zoom),
      });
      this.layer.style.height = `${this.lay.height}px`;
      for (const [c, col] of [
        [this.colIn, this.lay.input],
        [this.colOut, this.lay.output],
      ] as const) {
        // a column slower than the scroll lives in a sticky viewport-sized box
        c.classList.toggle('pinned', col.ratio < 1);
        c.style.height = col.ratio < 1 ? `${h}px` : '';
      }
      this.root.style.setProperty('--pill-max', `${Math.max(36, Math.floor(0.18 * w))}px`);
      for (const [i, b] of this.inBtns) this.place(b, 'input', i);
      for (const [i, b] of this.outBtns) this.place(b, 'output', i);
    }
    return this.lay;
  }

  private refresh(resized = false): void {
    if (resized) this.layKey = '';
    this.updateTokens();
    this.requestDraw();
    this.emit('scroll');
  }

  private place(b: HTMLButtonElement, side: Side, i: number): void {
    const lay = this.lay!;
    const x = side === 'input' ? lay.xIn : lay.xOut;
    const col = side === 'input' ? lay.input : lay.output;
    const y = col.ratio < 1 ? viewY(col, i, this.top) : rowY(col, i);
    b.style.transform = `translate(${x.toFixed(1)}px, ${y.toFixed(1)}px) translate(-50%, -50%)`;
  }

  private updateTokens(): void {
    const lay = this.layout();
    if (!lay) return;
    const top = this.top;
    const h = this.vh;
    const m = this.model;
    const t = this.t;
    const sel = this.view.selected;
    if (this.activeOut > t) this.activeOut = Math.max(0, t);
    const focused = document.activeElement;

    const want = (side: Side): Set<number> => {
      const col = side === 'input' ? lay.input : lay.output;
      const limit = side === 'input' ? m.inputs.length - 1 : t;
      const s = new Set<number>();
      const [a, b] = visibleRange(col, top, h, OVERSCAN);
      for (let i = a; i <= Math.min(b, limit); i++) s.add(i);
      const active = side === 'input' ? this.activeIn : this.activeOut;
      if (active <= limit && active >= 0) s.add(active);
      if (sel && sel.side === side && sel.index <= limit && sel.index >= 0) s.add(sel.index);
      const hl = this.hl;
      if (hl && hl.side === side && hl.index <= limit && hl.index >= 0 && hl.index >= a - 64 && hl.index <= b + 64) s.add(hl.index);
      return s;
    };

    let lostFocus = false;
    for (const side of ['input', 'output'] as Side[]) {
      const map = side === 'input' ? this.inBtns : this.outBtns;
      const col = side === 'input' ? this.colIn : this.colOut;
      const keep = want(side);
      const c = side === 'input' ? lay.input : lay.output;
      const parallax = c.ratio > 0 && c.ratio < 1; // moves with the scroll, slower
      // buttons no longer needed are recycled for the new rows (no DOM churn on scroll / step moves)
      const free: HTMLButtonElement[] = [];
      for (const [i, b] of map) {
        if (keep.has(i)) continue;
        if (b === focused) {
          // a focused token scrolled out of range stays; a hidden output goes
          if (side === 'input' || i <= t) continue;
          lostFocus = true;
        }
        map.delete(i);
        free.push(b);
      }
      let frag: DocumentFragment | null = null;
      for (const i of keep) {
        let b = map.get(i);
        if (!b) {
          b = free.pop();
          if (!b) {
            b = document.createElement('button');
            b.type = 'button';
            b.className = 'token';
            b.dataset.side = side;
            b.setAttribute('aria-describedby', 'tooltip');
            const mk = document.createElement('span');
            mk.className = 'mark';
            mk.setAttribute('aria-hidden', 'true');
            const lbl = document.createElement('span');
            lbl.className = 'lbl';
            b.append(mk, lbl);
            (frag ??= document.createDocumentFragment()).appendChild(b);
          }
          b.dataset.index = String(i);
          map.set(i, b);
          this.place(b, side, i);
        }
        else if (parallax) this.place(b, side, i);
        this.paintToken(b, side, i);
      }
      for (const b of free) b.remove();
      if (frag) col.appendChild(frag);
    }
    if (lostFocus) this.outBtns.get(this.activeOut)?.focus();
  }

  private paintToken(b: HTMLButtonElement, side: Side, i: number): void {
    const m = this.model;
    const tok: Token | Step | undefined = side === 'input' ? m.inputs[i] : m.outputs[i];
    const sel = this.view.selected;
    const selected = !!sel && sel.side === side && sel.index === i;
    const state = side === 'input' ? 'input' : i === this.t ? 'current' : 'previous';
    const active = side === 'input' ? this.activeIn === i : this.activeOut === i;
    const label = displayLabel(tok?.label);
    const match = !!this.matches && this.matches[side === 'input' ? i : m.inputs.length + i] === 1;
    const hl = !!this.hl && this.hl.side === side && this.hl.index === i;
    const key = `${i}|${state}|${selected}|${active}|${label}|${tok?.id}|${match}|${hl}`;
    if (b.dataset.key === key) return;
    b.dataset.key = key;
    b.className = `token ${state}${selected ? ' selected' : ''}${match ? ' match' : ''}${hl ? ' revealed' : ''}`;
    b.setAttribute('aria-pressed', selected ? 'true' : 'false');
    b.tabIndex = active ? 0 : -1;
    const mk = b.firstElementChild as HTMLElement;
    const lbl = b.lastElementChild as HTMLElement;
    mk.textContent = state === 'current' ? '▶' : '';
    if (lbl.textContent !== label) lbl.textContent = label;
    const what =
      side === 'input'
        ? `Input token ${i}`
        : `Output token of step ${i + 1}${state === 'current' ? ', current step' : ', generated earlier'}`;
    b.setAttribute('aria-label', `${what}: ${label}, id ${tok?.id ?? '?'}${selected ? ', selected' : ''}`);
  }

  private tokenKey(e: KeyboardEvent): void {
    const b = (e.target as HTMLElement).closest('button.token') as HTMLButtonElement | null;
    if (!b) return;
    const side = b.dataset.side as Side;
    const i = Number(b.dataset.index);
    const limit = side === 'input' ? this.model.inputs.length - 1 : this.t;
    let j = i;
    if (e.key === 'ArrowUp') j = i - 1;
    else if (e.key === 'ArrowDown') j = i + 1;
    else if (e.key === 'PageUp') j = i - 10;
    else if (e.key === 'PageDown') j = i + 10;
    else return;
    e.preventDefault();
    j = Math.max(0, Math.min(limit, j));
    this.focusToken(side, j);
  }

  /** Moves the roving focus of a column to one token (rendering it if needed). */
  focusToken(side: Side, index: number): void {
    if (side === 'input') this.activeIn = index;
    else this.activeOut = index;
    this.ensureVisible(side, index);
    this.updateTokens();
    (side === 'input' ? this.inBtns : this.outBtns).get(index)?.focus();
    for (const [i, b] of side === 'input' ? this.inBtns : this.outBtns) this.paintToken(b, side, i);
  }

  // ------------------------------------------------------------ canvas

  requestDraw(): void {
    if (this.drawPending) return;
    this.drawPending = true;
    requestAnimationFrame(() => {
      this.drawPending = false;
      this.draw();
    });
  }

  private draw(): void {
    const lay = this.layout();
    const cv = this.canvas;
    const w = this.vw;
    const h = this.vh;
    if (!lay || w <= 0 || h <= 0) return;
    if (this.pendingScroll !== null) {
      this.scroller.scrollTop = this.pendingScroll;
      this.pendingScroll = null;
      this.top = this.scroller.scrollTop;
    }
    const dpr = window.devicePixelRatio || 1;
    const pw = Math.round(w * dpr);
    const ph = Math.round(h * dpr);
    if (cv.width !== pw || cv.height !== ph) {
      cv.width = pw;
      cv.height = ph;
      cv.style.width = `${w}px`;
      cv.style.height = `${h}px`;
    }
    const ctx = cv.getContext('2d');
    if (!ctx) return;
    const top = this.top;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, pw, ph);
    ctx.setTransform(dpr, 0, 0, dpr, 0, -top * dpr);

    // future output slots: faint dots, so the column's extent is visible
    const m = this.model;
    const nRows = Math.max(m.nOutRows, m.outputs.length);
    if (nRows > this.t + 1) {
      ctx.fillStyle = '#c9d0d9';
      const [a, b] = visibleRange(lay.output, top, h, 20);
      for (let i = Math.max(a, this.t + 1); i <= b; i++) {
        ctx.beginPath();
        ctx.arc(lay.xOut, contentY(lay.output, i, top), 2, 0, Math.PI * 2);
        ctx.fill();
      }
    }

    const e = this.edges;
    if (e.n === 0) return;
    const y0 = top - 4;
    const y1 = top + h + 4;
    // bucket the visible edges by kind and width (counting sort), one stroke per bucket
    const nb = 2 * WIDTH_BUCKETS;
    const count = new Int32Array(nb + 1);
    const bucketOf = new Int16Array(e.n);
    for (let i = 0; i < e.n; i++) {
      const ys = e.kind[i] === IO ? contentY(lay.input, e.src[i], top) : contentY(lay.output, e.src[i], top);
      const yd = contentY(lay.output, e.dst[i], top);
      if ((ys < y0 && yd < y0) || (ys > y1 && yd > y1)) {
        bucketOf[i] = -1;
        continue;
      }
      const bk = e.kind[i] * WIDTH_BUCKETS + widthBucket(e.w[i]);
      bucketOf[i] = bk;
      count[bk + 1]++;
    }
    for (let b = 0; b < nb; b++) count[b + 1] += count[b];
    const order = new Int32Array(count[nb]);
    const fillAt = count.slice(0, nb);
    for (let i = 0; i < e.n; i++) if (bucketOf[i] >= 0) order[fillAt[bucketOf[i]]++] = i;

    ctx.lineCap = 'round';
    ctx.globalAlpha = EDGE_ALPHA;
    const xIn = lay.xIn;
    const xOut = lay.xOut;
    for (let b = 0; b < nb; b++) {
      if (count[b + 1] === count[b]) continue;
      const oo = b >= WIDTH_BUCKETS;
      ctx.strokeStyle = oo ? COLORS.oo : COLORS.io;
      ctx.lineWidth = bucketWidth(b % WIDTH_BUCKETS);
      ctx.beginPath();
      for (let k = count[b]; k < count[b + 1]; k++) this.path(ctx, lay, order[k], xIn, xOut, top);
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    if (this.hover && this.hover.i < e.n) {
      const i = this.hover.i;
      ctx.strokeStyle = e.kind[i] === IO ? COLORS.ioHover : COLORS.ooHover;
      ctx.lineWidth = bucketWidth(widthBucket(e.w[i])) + 1.5;
      ctx.beginPath();
      this.path(ctx, lay, i, xIn, xOut, top);
      ctx.stroke();
    }
  }

  private path(ctx: CanvasRenderingContext2D, lay: Layout, i: number, xIn: number, xOut: number, top: number): void {
    const e = this.edges;
    const yd = contentY(lay.output, e.dst[i], top);
    if (e.kind[i] === IO) {
      ctx.moveTo(xIn, contentY(lay.input, e.src[i], top));
      ctx.lineTo(xOut, yd);
    } else {
      const ys = contentY(lay.output, e.src[i], top);
      ctx.moveTo(xOut, ys);
      ctx.quadraticCurveTo(curveControlX(xOut, ys, yd, lay.width), (ys + yd) / 2, xOut, yd);
    }
  }

  // ------------------------------------------------------------ hover

  private mouseMove(ev: MouseEvent): void {
    if ((ev.target as HTMLElement).closest('button.token')) return;
    const lay = this.lay;
    if (!lay) return;
    const r = this.scroller.getBoundingClientRect();
    const x = ev.clientX - r.left;
    const y = ev.clientY - r.top + this.top;
    const hit = this.hitEdge(lay, x, y);
    const before = this.hover ? this.hover.i : -1;
    this.hover = hit !== null ? { i: hit, x: ev.clientX, y: ev.clientY } : null;
    if (this.hover) this.showEdgeTip(this.hover);
    else if (this.tipOwner === this.scroller) this.hideTip();
    if ((this.hover ? this.hover.i : -1) !== before) this.requestDraw();
  }

  /** The drawn edge nearest to a point (content coordinates) within a few px; 0-based index or null. */
  private hitEdge(lay: Layout, x: number, y: number): number | null {
    const e = this.edges;
    let best = -1;
    let bestD = 6;
    for (let i = 0; i < e.n; i++) {
      const yd = contentY(lay.output, e.dst[i], this.top);
      let d: number;
      if (e.kind[i] === IO) {
        const ys = contentY(lay.input, e.src[i], this.top);
        if (x < lay.xIn - 2 || x > lay.xOut + 2 || y < Math.min(ys, yd) - 6 || y > Math.max(ys, yd) + 6) continue;
        d = segDist(x, y, lay.xIn, ys, lay.xOut, yd);
      } else {
        const ys = contentY(lay.output, e.src[i], this.top);
        if (x < lay.xOut - 2 || y < Math.min(ys, yd) - 6 || y > Math.max(ys, yd) + 6) continue;
        const cx = curveControlX(lay.xOut, ys, yd, lay.width);
        const cy = (ys + yd) / 2;
        d = Infinity;
        let px = lay.xOut;
        let py = ys;
        for (let s = 1; s <= 16; s++) {
          const u = s / 16;
          const a = (1 - u) * (1 - u);
          const bb = 2 * u * (1 - u);
          const c = u * u;
          const qx = a * lay.xOut + bb * cx + c * lay.xOut;
          const qy = a * ys + bb * cy + c * yd;
          d = Math.min(d, segDist(x, y, px, py, qx, qy));
          px = qx;
          py = qy;
        }
      }
      const tol = Math.max(4, bucketWidth(widthBucket(e.w[i])) / 2 + 3);
      if (d <= tol && (d < bestD || (d === bestD && e.w[i] > e.w[best]))) {
        best = i;
        bestD = d;
      }
    }
    return best >= 0 ? best : null;
  }

  private showEdgeTip(h: Hit): void {
    const e = this.edges;
    const m = this.model;
    const i = h.i;
    const srcTok = e.kind[i] === IO ? m.inputs[e.src[i]] : m.outputs[e.src[i]];
    const dstTok = m.outputs[e.dst[i]];
    const np = m.data ? m.data.nPrompt : m.inputs.length;
    const srcName = e.kind[i] === IO ? `input, position ${e.src[i]}` : `output of step ${e.src[i] + 1}, position ${np + e.src[i]}`;
    const lines: [string, string][] = [
      ['', e.kind[i] === IO ? 'input → output' : 'output → output'],
      ['from', `“${displayLabel(srcTok?.label)}” (${srcName}, id ${srcTok?.id ?? '?'})`],
      ['to', `“${displayLabel(dstTok?.label)}” (output of step ${e.dst[i] + 1}, position ${np + e.dst[i]}, id ${dstTok?.id ?? '?'})`],
      ...this.weightLines(e.kind[i] === IO ? 'input' : 'output', e.src[i], e.dst[i]),
    ];
    if (m.weights === 'rollout') lines.push(['rollout (line width)', formatWeight(e.w[i])]);
    this.setTip(lines, this.scroller, h.x + 14, h.y + 14);
  }

  private showTokenTip(b: HTMLButtonElement): void {
    const side = b.dataset.side as Side;
    const i = Number(b.dataset.index);
    const m = this.model;
    const d = m.data;
    const t = this.t;
    const lines: [string, string][] = [];
    if (side === 'input') {
      const tok = m.inputs[i];
      lines.push(['', `input token ${i}${i === 0 && tok?.label === '[BOS]' ? ' (BOS: no edges)' : ''}`]);
      lines.push(['label', `“${displayLabel(tok?.label)}”`]);
      lines.push(['id', String(tok?.id ?? '?')]);
      lines.push(['position', String(i)]);
      if (d && t >= 0 && t < d.nOutput && i < d.nPrompt) {
        lines.push(...this.weightLines('input', i, t, ` → ▶ step ${t + 1}`));
        if (m.weights === 'rollout') lines.push([`rollout → ▶ step ${t + 1}`, formatWeight(d.prompt[t][i])]);
      }
    } else {
      const tok = m.outputs[i];
      const np = d ? d.nPrompt : m.inputs.length;
      lines.push(['', `output token of step ${i + 1}${i === t ? ' (current step)' : ''}`]);
      lines.push(['label', `“${displayLabel(tok?.label)}”`]);
      lines.push(['id', String(tok?.id ?? '?')]);
      lines.push(['position', String(np + i)]);
      if (tok?.prob !== undefined) lines.push(['prob', formatWeight(tok.prob)]);
      if (d && i < t && t < d.nOutput) {
        lines.push(...this.weightLines('output', i, t, ` → ▶ step ${t + 1}`));
        if (m.weights === 'rollout') lines.push([`rollout → ▶ step ${t + 1}`, formatWeight(d.output[t][i])]);
      }
      if (tok?.top && tok.top.length > 1)
        lines.push(['top', tok.top.slice(0, 5).map((c) => `“${displayLabel(c.label)}” ${c.prob.toFixed(3)}`).join(', ')]);
    }
    const r = b.getBoundingClientRect();
    this.setTip(lines, b, side === 'input' ? r.right + 8 : r.left - 8, r.top, side === 'output');
  }

  /**
   * The hover's two labelled numbers for the weight of step t's query on
   * input k / earlier output j: raw (as the Heatmap and Text tabs show
   * attention) and normalized (the split view), the one the lines show
   * marked. Value-weighted rows say so on both ("raw value-weighted",
   * "normalized value-weighted"), so neither reads as attention.
   */
  private weightLines(side: Side, src: number, t: number, suffix = ''): [string, string][] {
    const m = this.model;
    const s = m.split ?? (m.weights === 'split' || m.weights === undefined ? m.data : null);
    if (!s || t < 0 || t >= s.nOutput) return [];
    const norm = side === 'input' ? s.prompt[t]?.[src] ?? 0 : s.output[t]?.[src] ?? 0;
    const raw = side === 'input' ? s.rawPrompt(t, src) : s.rawOutput(t, src);
    const w = m.weights ?? 'split';
    const value = m.measure === 'value';
    const bos = side === 'input' && src === 0 ? ' (BOS removed)' : '';
    const lines: [string, string][] = [];
    lines.push(['measure', value ? `${MEASURE_NAME.value} (a·|W_O v|, not attention)` : `${MEASURE_NAME.attention} (post-softmax weights)`]);
    lines.push(
      [
        `${value ? 'raw value-weighted' : 'raw attention'}${suffix}${w === 'raw' ? ' (line width)' : ''}`,
        bos ? 'not in the graph’s rows (the Heatmap and Text tabs show it)' : Number.isNaN(raw) ? 'unknown (no mass)' : formatWeight(raw),
      ],
      [`${value ? 'normalized value-weighted' : 'normalized'}${suffix}${w === 'split' ? ' (line width)' : ''}`, formatWeight(norm) + bos],
    );
    return lines;
  }

  private setTip(lines: [string, string][], owner: HTMLElement, x: number, y: number, leftOf = false): void {
    const tip = this.tooltip;
    tip.textContent = '';
    for (const [k, v] of lines) {
      const row = document.createElement('div');
      if (k) {
        const kk = document.createElement('span');
        kk.className = 'k';
        kk.textContent = k + ' ';
        row.appendChild(kk);
      } else row.className = 'tip-title';
      row.appendChild(document.createTextNode(v + '\n')); // (a separator for textContent; collapses on screen)
      tip.appendChild(row);
    }
    tip.hidden = false;
    this.tipOwner = owner;
    const tw = tip.offsetWidth;
    const th = tip.offsetHeight;
    let left = leftOf ? x - tw : x;
    if (left + tw > window.innerWidth - 4) left = Math.max(4, x - tw - 28);
    if (left < 4) left = 4;
    let top = y;
    if (top + th > window.innerHeight - 4) top = Math.max(4, window.innerHeight - th - 4);
    tip.style.left = `${left}px`;
    tip.style.top = `${top}px`;
  }

  hideTip(): void {
    this.tooltip.hidden = true;
    this.tipOwner = null;
  }
}

function segDist(px: number, py: number, ax: number, ay: number, bx: number, by: number): number {
  const dx = bx - ax;
  const dy = by - ay;
  const l2 = dx * dx + dy * dy;
  let u = l2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / l2 : 0;
  u = Math.max(0, Math.min(1, u));
  const qx = ax + u * dx - px;
  const qy = ay + u * dy - py;
  return Math.sqrt(qx * qx + qy * qy);
}

// ---------------------------------------------------------------- long runs: edges, rows read by range

/**
 * The edges of a view with each step's k strongest sources drawn besides
 * those at the threshold: per step, the longer of the threshold's prefix and
 * the top-k's prefix of each sorted list (input and output sources ranked
 * together). A selected input keeps selectEdges' rule (its edge per step at
 * the threshold).
 */
export function selectEdgesTopK(data: GraphData | null, view: ViewState, k: number): EdgeList {
  if (!data) return new EdgeList();
  const t = clampStep(view.step, data.nOutput);
  const sel = view.selected;
  if (t < 0 || k <= 0 || (sel && sel.side === 'input')) return selectEdges(data, view);
  const out = new EdgeList();
  const one = (s: number) => pushTopK(out, s, data.steps[s], view.threshold, k);
  if (sel) {
    if (sel.index >= 0 && sel.index <= t) one(sel.index);
  } else if (view.mode === 'all') for (let s = 0; s <= t; s++) one(s);
  else one(t);
  return out;
}

/** How many of each sorted list the k strongest sources of a step take (merged heaviest first). */
function topSplit(e: StepEdges, k: number): [number, number] {
  let a = 0;
  let b = 0;
  while (a + b < k && (a < e.ioW.length || b < e.ooW.length)) {
    if (b >= e.ooW.length || (a < e.ioW.length && e.ioW[a] >= e.ooW[b])) a++;
    else b++;
  }
  return [a, b];
}

function pushTopK(out: EdgeList, s: number, e: StepEdges, threshold: number, k: number): void {
  const [a, b] = topSplit(e, k);
  const nio = Math.max(a, countAtLeast(e.ioW, threshold));
  const noo = Math.max(b, countAtLeast(e.ooW, threshold));
  for (let i = 0; i < nio; i++) out.push(IO, e.ioSrc[i], s, e.ioW[i]);
  for (let i = 0; i < noo; i++) out.push(OO, e.ooSrc[i], s, e.ooW[i]);
}

export interface Source {
  side: Side;
  index: number;
  w: number;
}

/** A step's k strongest sources, heaviest first (ties: inputs first, lower position first). */
export function topSources(data: GraphData | null, t: number, k: number): Source[] {
  if (!data || t < 0 || t >= data.nOutput) return [];
  const e = data.steps[t];
  const [a, b] = topSplit(e, k);
  const out: Source[] = [];
  let i = 0;
  let j = 0;
  while (i < a || j < b) {
    if (j >= b || (i < a && e.ioW[i] >= e.ooW[j])) out.push({ side: 'input', index: e.ioSrc[i], w: e.ioW[i++] });
    else out.push({ side: 'output', index: e.ooSrc[j], w: e.ooW[j++] });
  }
  return out;
}

/** Runs whose graph holds more weights than this are read a range of steps at a time. */
export const LAZY_MIN_WEIGHTS = 1 << 19;
const LAZY_CHUNK_WEIGHTS = 1 << 16; // weights per /graph?from=&to=&format=bin read (256 KB)
const LAZY_MAX_WEIGHTS = 1 << 23; // rows kept; the least recently wanted ranges are dropped beyond

const NO_EDGES: StepEdges = { ioSrc: new Int32Array(0), ioW: new Float32Array(0), ooSrc: new Int32Array(0), ooW: new Float32Array(0) };

/**
 * A long run's graph data, read as it is viewed: every step is there from
 * the start with zero rows and no edges (so every reader of GraphData works),
 * and the rows of a range of steps arrive by `/graph?from=&to=` when a step
 * of it is wanted (with the ranges either side, read ahead). At most
 * LAZY_MAX_WEIGHTS weights are kept; `has(t)` says whether step t's rows are.
 */
export class LazyGraph extends GraphData {
  readonly chunk: number;
  private readonly n: number;
  private readonly state: Uint8Array; // per range: 0 not read, 1 reading, 2 read
  private readonly used: Float64Array; // per range: when last wanted
  private clock = 0;
  private readonly maxRanges: number;
  private readonly zeroP: Float32Array;
  private readonly zeroO: Float32Array;
  private readonly fetchRange: (from: number, to: number) => Promise<GraphReply | GraphRange>;
  private readonly fns: ((from: number, to: number) => void)[] = [];

  constructor(nPrompt: number, nOutput: number, fetchRange: (from: number, to: number) => Promise<GraphReply | GraphRange>) {
    super(nPrompt);
    this.n = nOutput;
    this.fetchRange = fetchRange;
    const per = Math.max(1, nPrompt + nOutput);
    this.chunk = Math.max(1, Math.min(64, Math.floor(LAZY_CHUNK_WEIGHTS / per)));
    const nr = Math.ceil(nOutput / this.chunk);
    this.state = new Uint8Array(nr);
    this.used = new Float64Array(nr);
    this.maxRanges = Math.max(3, Math.floor(LAZY_MAX_WEIGHTS / (this.chunk * per)));
    this.zeroP = new Float32Array(nPrompt);
    this.zeroO = new Float32Array(nOutput);
    for (let t = 0; t < nOutput; t++) this.clear(t);
  }

  private clear(t: number): void {
    this.prompt[t] = this.zeroP;
    this.output[t] = this.zeroO.subarray(0, t);
    this.promptMass[t] = NaN;
    this.outputMass[t] = NaN;
    this.steps[t] = NO_EDGES;
  }

  /** Whether step t's rows have been read. */
  has(t: number): boolean {
    return this.state[Math.floor(t / this.chunk)] === 2;
  }

  /** Calls fn(from, to) when the rows of steps [from, to) arrive. */
  onLoad(fn: (from: number, to: number) => void): void {
    this.fns.push(fn);
  }

  /** Step t is wanted now: its range is read (if not already), and the ranges either side. */
  want(t: number): void {
    const c = Math.floor(t / this.chunk);
    // the wanted range first; its neighbours once it is in (they would compete with it)
    const ahead = () => {
      this.read(c + 1);
      this.read(c - 1);
    };
    if (this.state[c] === 2) ahead();
    else this.read(c, ahead);
  }

  private read(r: number, then?: () => void): void {
    if (r < 0 || r >= this.state.length) return;
    this.used[r] = ++this.clock;
    if (this.state[r] !== 0) return;
    this.state[r] = 1;
    const from = r * this.chunk;
    const to = Math.min(this.n, from + this.chunk);
    this.fetchRange(from, to).then(
      (g) => {
        if ('rows' in g && (g.from !== from || g.to !== to || g.nPrompt !== this.nPrompt)) {
          this.state[r] = 0; // not the rows asked for: read again when next wanted
          return;
        }
        if ('rows' in g) {
          // a range read (binary, edge lists built in the worker): its rows are views, nothing is copied or sorted here
          for (let i = 0; i < to - from; i++) {
            const [p, o] = rangeRows(g, i);
            this.setStepRows(from + i, p, o, g.promptMass[i], g.outputMass[i], g.steps?.[i]);
          }
        } else
          for (let i = 0; i < to - from; i++)
            this.setStep(from + i, g.prompt[i] ?? null, g.output[i] ?? null, g.prompt_mass?.[i], g.output_mass?.[i]);
        this.state[r] = 2;
        this.evict(r);
        for (const f of this.fns) f(from, to);
        then?.();
      },
      () => {
        this.state[r] = 0; // read again when next wanted
      },
    );
  }

  private evict(keep: number): void {
    let n = 0;
    for (let r = 0; r < this.state.length; r++) if (this.state[r] === 2) n++;
    while (n > this.maxRanges) {
      let worst = -1;
      for (let r = 0; r < this.state.length; r++)
        if (this.state[r] === 2 && r !== keep && (worst < 0 || this.used[r] < this.used[worst])) worst = r;
      if (worst < 0) return;
      for (let t = worst * this.chunk; t < Math.min(this.n, (worst + 1) * this.chunk); t++) this.clear(t);
      this.state[worst] = 0;
      n--;
    }
  }
}

/**
 * Reads ranges of a long run's graph rows (`/graph?format=bin&from=&to=`)
 * with their sorted edge lists built, in a Web Worker (web/src/graph.worker.ts)
 * so that neither the decoding nor the sorting holds up a step move; on the
 * main thread where a worker cannot start or fails. One worker for the page.
 */
class RangeReader {
  private worker: Worker | null = null;
  private broken = typeof Worker === 'undefined';
  private next = 1;
  private pending = new Map<number, { url: string; ok: (g: GraphRange) => void; fail: (e: unknown) => void }>();

  read(path: string): Promise<GraphRange> {
    const url = new URL(path, document.baseURI).href; // the worker resolves against its own script's URL
    const w = this.start();
    if (!w) return readRangeHere(url);
    return new Promise((ok, fail) => {
      const id = this.next++;
      this.pending.set(id, { url, ok, fail });
      w.postMessage({ id, url });
    });
  }

  private start(): Worker | null {
    if (this.worker || this.broken) return this.worker;
    try {
      const w = new Worker(new URL('./graph.worker.ts', import.meta.url), { type: 'module' });
      w.onmessage = (e: MessageEvent<{ id: number; range?: GraphRange; error?: string }>) => {
        const p = this.pending.get(e.data.id);
        if (!p) return;
        this.pending.delete(e.data.id);
        if (e.data.range) p.ok(e.data.range);
        else p.fail(new Error(e.data.error ?? 'graph range read failed'));
      };
      w.onerror = (e) => {
        // the worker could not load or died: the main thread reads from now on (the reads in flight again)
        e.preventDefault();
        this.broken = true;
        this.worker = null;
        w.terminate();
        const left = [...this.pending.values()];
        this.pending.clear();
        for (const p of left) readRangeHere(p.url).then(p.ok, p.fail);
      };
      this.worker = w;
    } catch {
      this.broken = true;
    }
    return this.worker;
  }
}

/** The worker's work on the main thread: one range read, decoded, its edge lists built (GraphData.setStepRows sorts). */
async function readRangeHere(url: string): Promise<GraphRange> {
  const r = await fetch(url, { headers: { Accept: 'application/octet-stream, application/json' } });
  if (!r.ok) throw new ApiError(`${r.status} ${r.statusText}`, r.status);
  if (!(r.headers.get('Content-Type') ?? '').includes('json')) return parseGraphBin(await r.arrayBuffer());
  const g = (await r.json()) as GraphReply & { from?: number; to?: number };
  const from = g.from ?? 0;
  return rangeOfReply(g, from, g.to ?? from + g.prompt.length);
}

let rangeReader: RangeReader | null = null;

async function readJson<T>(path: string): Promise<T> {
  const r = await fetch(path, { headers: { Accept: 'application/json' } });
  if (!r.ok) throw new ApiError(`${r.status} ${r.statusText}`, r.status);
  return (await r.json()) as T;
}

/**
 * Reads a run's /graph for the UI: a run of up to LAZY_MIN_WEIGHTS weights
 * whole (api.graph), a longer one as a LazyGraph (a first read of no steps
 * gives the sizes; graphDataOf takes it from the reply). A server or file
 * that does not take a range (the offline export) is read whole.
 */
export async function graphReply(id: string, layer: number | null, head: number | null, measure: Measure): Promise<GraphReply> {
  let q = '';
  if (layer !== null) q += `&layer=${layer}`;
  if (layer !== null && head !== null) q += `&head=${head}`;
  q += measureQuery(measure);
  const base = `api/runs/${encodeURIComponent(id)}/graph?`;
  let probe: (GraphReply & { from?: number }) | null = null;
  try {
    probe = await readJson<GraphReply & { from?: number }>(`${base}from=0&to=0${q}`);
  } catch {
    probe = null;
  }
  if (probe && typeof probe.from !== 'number' && Array.isArray(probe.prompt)) return probe; // the range was ignored: the whole graph
  if (probe && probe.n_output * (probe.n_prompt + probe.n_output / 2) > LAZY_MIN_WEIGHTS) {
    const rd = (rangeReader ??= new RangeReader());
    const lazy = new LazyGraph(probe.n_prompt, probe.n_output, (from, to) => rd.read(`${base}from=${from}&to=${to}&format=bin${q}`));
    // a run opens at its last step: its rows are read (and the worker started) while the page builds the rest
    if (probe.n_output > 0) lazy.want(probe.n_output - 1);
    return { n_prompt: probe.n_prompt, n_output: probe.n_output, prompt: [], output: [], lazy } as GraphReply;
  }
  return api.graph(id, layer, head, undefined, measure);
}

/** The graph data of a graphReply: the LazyGraph of a long run, else the rows read whole. */
export function graphDataOf(g: GraphReply): GraphData {
  const lazy = (g as GraphReply & { lazy?: LazyGraph }).lazy;
  return lazy instanceof LazyGraph ? lazy : GraphData.fromReply(g);
}
