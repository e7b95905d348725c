// The token graph: input tokens in a column at x = 0.1 w, outputs at 0.9 w,
// edges on a canvas the size of the viewport (sticky, redrawn on scroll),
// tokens as focusable buttons, only those near the visible range in the DOM.
import {
  bucketWidth,
  clampStep,
  contentY,
  curveControlX,
  scrollFor,
  viewY,
  displayLabel,
  EdgeList,
  EdgeWeights,
  formatWeight,
  GraphData,
  IO,
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
        this.top = this.scroller.scrollTop;
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
    if (this.activeIn >= m.inputs.length) this.activeIn = 0;
    this.render(this.view);
  }

  /** Applies a view state: computes the edges and the attributes now, draws on the next frame. */
  render(v: ViewState): void {
    this.view = v;
    const m = this.model;
    const nOut = m.outputs.length;
    this.t = clampStep(v.step, nOut);
    this.edges = selectEdges(m.data, v);
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
    r.classList.toggle('empty', m.inputs.length === 0 && nOut === 0);
    this.refresh();
    if (this.tipOwner && this.tipOwner.isConnected && this.tipOwner.matches('button.token'))
      this.showTokenTip(this.tipOwner as HTMLButtonElement);
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
    const key = `${w}x${h}:${this.model.inputs.length}:${this.model.nOutRows}`;
    if (key !== this.layKey || !this.lay) {
      this.layKey = key;
      this.lay = layoutGraph(w, h, this.model.inputs.length, Math.max(this.model.nOutRows, this.model.outputs.length));
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
    const key = `${i}|${state}|${selected}|${active}|${label}|${tok?.id}`;
    if (b.dataset.key === key) return;
    b.dataset.key = key;
    b.className = `token ${state}${selected ? ' selected' : ''}`;
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
