// Finding one's way in a long run (docs/UI.md, "Long runs"): the overview
// strip (every token of the run as a thin mark coloured by what the current
// step puts on it, the part the graph shows boxed; click, drag or the arrow
// keys jump there), the graph's zoom, "current token", the current step's
// strongest sources (click: scrolled to and marked), the edge filter's top-k
// and a search over the tokens' text. It drives a GraphView through its
// long-run hooks and knows nothing of the rest of the page.
import { GraphView, topSources, ZOOM_ROWS, type GraphModel } from './graph';
import { displayLabel, type Side } from './model';

const SOURCES_K = 8; // sources listed for "jump to source"
const STRIP_H = 34; // css px: marks, then the search lane
const MARK_H = 24;

/** The quantity the overview colours by, as its title names it (the graph's line width). */
function quantityName(m: GraphModel): string {
  const value = m.measure === 'value';
  if (m.weights === 'rollout') return 'attention rollout';
  if (m.weights === 'raw') return value ? 'raw value-weighted attention' : 'raw attention';
  return value ? 'normalized value-weighted attention' : 'normalized attention (BOS removed; input and output parts each sum to 1)';
}

/**
 * The mass step t puts on every token of the run, in position order (inputs,
 * then outputs; outputs at or after t are 0), from the graph's own rows.
 */
export function stepMasses(m: GraphModel, t: number, out?: Float32Array): Float32Array {
  const nIn = m.inputs.length;
  const n = nIn + Math.max(m.nOutRows, m.outputs.length);
  const v = out && out.length === n ? out : new Float32Array(n);
  v.fill(0);
  const d = m.data;
  if (!d || t < 0 || t >= d.nOutput) return v;
  const p = d.prompt[t];
  const o = d.output[t];
  v.set(p.length <= nIn ? p : p.subarray(0, nIn), 0);
  v.set(o.length <= n - nIn ? o : o.subarray(0, n - nIn), nIn);
  return v;
}

/**
 * Pools values into `bins` pixel columns by their maximum (a strong token
 * never disappears into its neighbours); -1 marks a column with no token.
 */
export function binMax(values: Float32Array, bins: number): Float32Array {
  const n = values.length;
  const out = new Float32Array(Math.max(0, bins)).fill(-1);
  if (n === 0 || bins <= 0) return out;
  for (let x = 0; x < bins; x++) {
    const a = Math.floor((x * n) / bins);
    const b = Math.max(a, Math.ceil(((x + 1) * n) / bins) - 1);
    let m = 0;
    for (let i = a; i <= b && i < n; i++) if (values[i] > m) m = values[i];
    out[x] = m;
  }
  return out;
}

/** The token matches of a search: label (as shown, or raw) containing the text, case-insensitive. */
export function searchTokens(labels: readonly (string | undefined)[], text: string): number[] {
  const q = text.trim().toLowerCase();
  if (!q) return [];
  const hits: number[] = [];
  for (let i = 0; i < labels.length; i++) {
    const raw = labels[i] ?? '';
    if (raw.toLowerCase().includes(q) || displayLabel(raw).toLowerCase().includes(q)) hits.push(i);
  }
  return hits;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> & { cls?: string } = {}, ...kids: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  const { cls, ...rest } = props;
  if (cls) e.className = cls;
  Object.assign(e, rest);
  e.append(...kids);
  return e;
}

export class LongRunTools {
  private host: HTMLElement;
  private graph: GraphView;
  private canvas: HTMLCanvasElement;
  private caption: HTMLElement;
  private sources: HTMLElement;
  private search: HTMLInputElement;
  private count: HTMLOutputElement;
  private zoomLabel: HTMLElement;
  private zoomIn: HTMLButtonElement;
  private zoomOut: HTMLButtonElement;
  private topk: HTMLSelectElement;
  private filter: HTMLElement;

  private masses: Float32Array<ArrayBufferLike> = new Float32Array(0);
  private cursor = 0;
  private hits: number[] = [];
  private hitAt = -1;
  private query = '';
  private labelsOf: GraphModel | null = null;
  private labels: (string | undefined)[] = [];
  private drawPending = false;
  private width = 0;
  private dragging = false;
  private lastSources = '';
  private cssWidth = -1; // the canvas's clientWidth (-1: not observed yet)
  private version = 0; // bumped by update(): the marks' image is redrawn only after one
  private marks: { key: string; img: ImageData } | null = null;

  constructor(host: HTMLElement, graph: GraphView) {
    this.host = host;
    this.graph = graph;
    this.zoomOut = el('button', { type: 'button', id: 'zoom-out', title: 'Zoom out: more tokens in view, smaller text (key −)', textContent: '−' });
    this.zoomIn = el('button', { type: 'button', id: 'zoom-in', title: 'Zoom in: fewer tokens, larger text (key +)', textContent: '+' });
    this.zoomLabel = el('span', { id: 'zoom-level', cls: 'lr-zoom-level' });
    const current = el('button', { type: 'button', id: 'goto-current', title: 'Scroll the graph back to the current step’s token', textContent: 'Current token' });
    this.search = el('input', { type: 'search', id: 'graph-search', placeholder: 'Search tokens…', autocomplete: 'off', title: 'Token text or a part of it; Enter: next match, Shift+Enter: previous' });
    const prev = el('button', { type: 'button', id: 'search-prev', title: 'Previous match (Shift+Enter)', textContent: '↑' });
    const next = el('button', { type: 'button', id: 'search-next', title: 'Next match (Enter)', textContent: '↓' });
    prev.setAttribute('aria-label', 'Previous match');
    next.setAttribute('aria-label', 'Next match');
    this.count = el('output', { id: 'search-count', cls: 'lr-count' });
    this.count.setAttribute('aria-live', 'polite');
    this.topk = el('select', { id: 'edge-topk', title: 'Each step’s k strongest sources are drawn besides the edges at the threshold (auto: 8 on runs of more than 1,000 tokens, else none)' });
    for (const [v, t] of [['auto', 'auto'], ['0', 'off'], ['4', '4'], ['8', '8'], ['16', '16'], ['32', '32']]) this.topk.append(el('option', { value: v, textContent: t }));
    this.filter = el('span', { id: 'edge-filter', cls: 'lr-filter' });
    const zoom = el('span', { cls: 'lr-zoom' }, this.zoomOut, this.zoomLabel, this.zoomIn);
    zoom.setAttribute('role', 'group');
    zoom.setAttribute('aria-label', 'Zoom the columns');
    const searchLbl = el('label', { htmlFor: 'graph-search', cls: 'visually-hidden', textContent: 'Search the tokens' });
    const topkLbl = el('label', { htmlFor: 'edge-topk', textContent: 'top-k' });
    const bar = el('div', { cls: 'lr-bar' }, zoom, current, el('span', { cls: 'lr-search' }, searchLbl, this.search, prev, next, this.count), el('span', { cls: 'lr-topk' }, topkLbl, this.topk), this.filter);
    this.caption = el('div', { id: 'overview-title', cls: 'lr-caption' });
    this.canvas = el('canvas', { id: 'overview', cls: 'overview', tabIndex: 0 });
    this.canvas.setAttribute('role', 'slider');
    this.canvas.setAttribute('aria-valuemin', '0');
    this.sources = el('div', { id: 'jump-sources', cls: 'lr-sources' });
    this.sources.setAttribute('role', 'group');
    this.sources.setAttribute('aria-label', 'The current step’s strongest sources: click to scroll there');
    host.append(bar, this.caption, this.canvas, this.sources);

    this.zoomOut.addEventListener('click', () => this.setZoom(graph.zoomLevel() + 1));
    this.zoomIn.addEventListener('click', () => this.setZoom(graph.zoomLevel() - 1));
    current.addEventListener('click', () => {
      const { t } = graph.current();
      if (t >= 0) graph.reveal('output', t, true);
    });
    this.search.addEventListener('input', () => this.runSearch());
    this.search.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter') return;
      e.preventDefault();
      this.step(e.shiftKey ? -1 : 1);
    });
    prev.addEventListener('click', () => this.step(-1));
    next.addEventListener('click', () => this.step(1));
    this.topk.addEventListener('change', () => graph.setTopK(this.topk.value === 'auto' ? 'auto' : Number(this.topk.value)));
    this.sources.addEventListener('click', (e) => {
      const b = (e.target as HTMLElement).closest('button') as HTMLButtonElement | null;
      if (b) graph.reveal(b.dataset.side as Side, Number(b.dataset.index), true);
    });

    this.canvas.addEventListener('pointerdown', (e) => {
      this.dragging = true;
      try {
        this.canvas.setPointerCapture(e.pointerId);
      } catch {
        /* a synthetic event's pointer cannot be captured */
      }
      this.jumpAtX(e.offsetX);
    });
    this.canvas.addEventListener('pointermove', (e) => {
      if (this.dragging) this.jumpAtX(e.offsetX);
    });
    const end = () => (this.dragging = false);
    this.canvas.addEventListener('pointerup', end);
    this.canvas.addEventListener('pointercancel', end);
    this.canvas.addEventListener('keydown', (e) => this.stripKey(e));

    document.addEventListener('keydown', (e) => {
      if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey || this.host.offsetParent === null) return;
      const tgt = e.target as HTMLElement;
      if (tgt.closest('input, textarea, select, [contenteditable="true"]')) return;
      if (e.key === '+' || e.key === '=') this.setZoom(graph.zoomLevel() - 1);
      else if (e.key === '-' || e.key === '_') this.setZoom(graph.zoomLevel() + 1);
      else return;
      e.preventDefault();
    });
    // the strip's width, read here (layout is fresh) so that draw() never forces a layout
    const ro = new ResizeObserver(() => {
      this.cssWidth = this.canvas.clientWidth;
      this.requestDraw();
    });
    ro.observe(host);
    ro.observe(this.canvas);
    graph.listen((why) => {
      if (why === 'render') this.update();
      this.requestDraw();
    });
    this.syncZoom();
  }

  private total(): number {
    const m = this.graph.current().model;
    return m.inputs.length + Math.max(m.nOutRows, m.outputs.length);
  }

  private setZoom(z: number): void {
    this.graph.setZoom(z);
    this.syncZoom();
  }

  private syncZoom(): void {
    const z = this.graph.zoomLevel();
    this.zoomLabel.textContent = `${ZOOM_ROWS[z]} px rows`;
    this.zoomIn.disabled = z === 0;
    this.zoomOut.disabled = z === ZOOM_ROWS.length - 1;
  }

  /** After every graph render: the step's masses, the sources list, the legend, the search's labels. */
  private update(): void {
    const { model: m, view, t } = this.graph.current();
    this.masses = stepMasses(m, t, this.masses);
    this.version++;
    let best = -1;
    let bw = 0;
    const ms = this.masses;
    for (let i = 0; i < ms.length; i++) if (ms[i] > bw) ((bw = ms[i]), (best = i));
    const n = ms.length;
    const c = this.canvas;
    c.dataset.n = String(n);
    c.dataset.nInput = String(m.inputs.length);
    c.dataset.step = String(t);
    c.dataset.maxPos = String(best);
    c.setAttribute('aria-valuemax', String(Math.max(0, n - 1)));
    this.cursor = Math.min(this.cursor, Math.max(0, n - 1));
    this.syncCursor();
    const q = quantityName(m);
    const loaded = this.graph.root.dataset.stepLoaded !== 'false';
    const title =
      t < 0
        ? 'Overview of the run: open or generate a run'
        : `Overview of all ${n} tokens: the ${q} of step ${t + 1} on each (the strongest per pixel)${loaded ? '' : ' (reading the step’s rows…)'}; boxes: the part the graph shows`;
    this.caption.textContent = title;
    c.title = title + '. Click or drag to jump; ←/→ and PageUp/PageDown move, Enter focuses the token.';
    c.setAttribute('aria-label', title);

    const k = this.graph.effectiveTopK();
    this.filter.textContent = `edges: weight ≥ ${view.threshold.toFixed(3)}${k > 0 ? `, plus each step’s ${k} strongest` : ''}`;
    this.host.dataset.topk = String(k);

    if (this.labelsOf === null || this.labelsOf.inputs !== m.inputs || this.labelsOf.outputs !== m.outputs || this.labels.length !== m.inputs.length + m.outputs.length) {
      this.labelsOf = m;
      this.labels = [...m.inputs.map((x) => x?.label), ...m.outputs.map((x) => x?.label)];
      if (this.query) this.runSearch();
    }
    this.updateSources(m, t, loaded);
  }

  private updateSources(m: GraphModel, t: number, loaded: boolean): void {
    const src = topSources(m.data, t, SOURCES_K);
    const key = `${t}|${src.map((s) => `${s.side}${s.index}:${s.w}`).join(',')}|${loaded}|${m.inputs.length}`;
    if (key === this.lastSources) return;
    this.lastSources = key;
    const np = m.inputs.length;
    const kids: Node[] = [el('span', { cls: 'lr-k', textContent: t < 0 ? '' : `Step ${t + 1}’s strongest sources:` })];
    if (t >= 0 && !src.length) kids.push(el('span', { cls: 'note', textContent: loaded ? 'none' : 'reading the step’s rows…' }));
    src.forEach((s, r) => {
      const tok = s.side === 'input' ? m.inputs[s.index] : m.outputs[s.index];
      const pos = s.side === 'input' ? s.index : np + s.index;
      const b = el('button', { type: 'button', cls: `lr-src ${s.side}`, textContent: `“${displayLabel(tok?.label)}” ${pos} · ${s.w.toFixed(3)}` });
      b.dataset.side = s.side;
      b.dataset.index = String(s.index);
      b.dataset.pos = String(pos);
      b.title = `${r + 1}. ${s.side === 'input' ? `input token ${s.index}` : `output of step ${s.index + 1}`} (position ${pos}), weight ${s.w.toFixed(4)}: scroll the graph there`;
      kids.push(b);
    });
    this.sources.replaceChildren(...kids);
  }

  // ------------------------------------------------------------ search

  private runSearch(): void {
    this.query = this.search.value;
    this.hits = searchTokens(this.labels, this.query);
    this.hitAt = -1;
    const n = this.labels.length;
    if (!this.query.trim()) {
      this.graph.setMatches(null);
      this.count.textContent = '';
    } else {
      const m = new Uint8Array(n);
      for (const i of this.hits) m[i] = 1;
      this.graph.setMatches(m);
      this.count.textContent = `${this.hits.length} match${this.hits.length === 1 ? '' : 'es'}`;
    }
    this.count.dataset.count = String(this.hits.length);
    this.requestDraw();
  }

  /** Moves to the next (+1) or previous (-1) match after the one shown (or the overview's cursor). */
  private step(dir: 1 | -1): void {
    if (this.query !== this.search.value) this.runSearch();
    const h = this.hits;
    if (!h.length) return;
    let i: number;
    if (this.hitAt >= 0) i = (this.hitAt + dir + h.length) % h.length;
    else {
      i = dir > 0 ? h.findIndex((p) => p >= this.cursor) : h.length - 1 - [...h].reverse().findIndex((p) => p <= this.cursor);
      if (i < 0 || i >= h.length) i = dir > 0 ? 0 : h.length - 1;
    }
    this.hitAt = i;
    const pos = h[i];
    this.count.textContent = `${i + 1} of ${h.length}`;
    this.count.dataset.at = String(pos);
    this.cursor = pos;
    const [side, index] = this.sideOf(pos);
    this.graph.reveal(side, index);
    this.syncCursor();
    this.requestDraw();
  }

  // ------------------------------------------------------------ the strip

  private sideOf(pos: number): [Side, number] {
    const nIn = this.graph.current().model.inputs.length;
    return pos < nIn ? ['input', pos] : ['output', pos - nIn];
  }

  /** A click or drag at x (css px): the strongest token within 2 px there (the mark one sees), else the one under x. */
  private jumpAtX(x: number): void {
    const n = this.total();
    if (n === 0 || this.width <= 0) return;
    const at = (px: number) => Math.max(0, Math.min(n - 1, Math.floor((px / this.width) * n)));
    let pos = at(x);
    const ms = this.masses;
    let best = ms[pos] ?? 0;
    for (let i = at(x - 2); i <= at(x + 2); i++) if ((ms[i] ?? 0) > best) ((best = ms[i]), (pos = i));
    this.jumpTo(pos);
  }

  private jumpTo(pos: number): void {
    this.cursor = pos;
    const [side, index] = this.sideOf(pos);
    this.graph.scrollToToken(side, index);
    this.canvas.dataset.jumped = String(pos);
    this.syncCursor();
  }

  private syncCursor(): void {
    const pos = this.cursor;
    const m = this.graph.current().model;
    const [side, index] = this.sideOf(pos);
    const tok = side === 'input' ? m.inputs[index] : m.outputs[index];
    this.canvas.setAttribute('aria-valuenow', String(pos));
    this.canvas.setAttribute('aria-valuetext', `position ${pos}, ${side === 'input' ? `input token ${index}` : `output of step ${index + 1}`}: ${displayLabel(tok?.label)}`);
  }

  private stripKey(e: KeyboardEvent): void {
    const n = this.total();
    if (n === 0) return;
    const small = Math.max(1, Math.round(n / 100));
    const big = Math.max(1, Math.round(n / 10));
    let to = this.cursor;
    if (e.key === 'ArrowLeft' || e.key === 'ArrowDown') to -= small;
    else if (e.key === 'ArrowRight' || e.key === 'ArrowUp') to += small;
    else if (e.key === 'PageUp') to -= big;
    else if (e.key === 'PageDown') to += big;
    else if (e.key === 'Home') to = 0;
    else if (e.key === 'End') to = n - 1;
    else if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      const [side, index] = this.sideOf(this.cursor);
      const { t } = this.graph.current();
      if (side === 'output' && index > t) return;
      this.graph.reveal(side, index, true);
      return;
    } else return;
    e.preventDefault();
    this.jumpTo(Math.max(0, Math.min(n - 1, to)));
  }

  /** The marks' pixels (pw x mh): futureFrom is the first position not generated yet at the step. */
  private drawMarks(pw: number, mh: number, futureFrom: number): ImageData {
    const n = this.masses.length;
    const bins = binMax(this.masses, pw);
    const top = bw(this.masses);
    const img = new ImageData(pw, mh);
    const px = img.data;
    for (let x = 0; x < pw; x++) {
      const v = bins[x];
      let r = 243;
      let g = 245;
      let b = 248;
      const firstPos = Math.floor((x * n) / pw);
      if (firstPos >= futureFrom) {
        r = 226;
        g = 229;
        b = 234;
      } else if (v > 0 && top > 0) {
        const u = Math.sqrt(v / top); // the weak far sources stay visible
        r = Math.round(243 + (8 - 243) * u);
        g = Math.round(245 + (48 - 245) * u);
        b = Math.round(248 + (107 - 248) * u);
      }
      for (let y = 0; y < mh; y++) {
        const o = (y * pw + x) * 4;
        px[o] = r;
        px[o + 1] = g;
        px[o + 2] = b;
        px[o + 3] = 255;
      }
    }
    return img;
  }

  private requestDraw(): void {
    if (this.drawPending) return;
    this.drawPending = true;
    requestAnimationFrame(() => {
      this.drawPending = false;
      this.draw();
    });
  }

  private draw(): void {
    const c = this.canvas;
    const w = this.cssWidth >= 0 ? this.cssWidth : c.clientWidth;
    if (w <= 0) return;
    this.width = w;
    const dpr = window.devicePixelRatio || 1;
    const pw = Math.round(w * dpr);
    const ph = Math.round(STRIP_H * dpr);
    if (c.width !== pw || c.height !== ph) {
      c.width = pw;
      c.height = ph;
    }
    const ctx = c.getContext('2d');
    if (!ctx) return;
    const { model: m, t } = this.graph.current();
    const n = this.masses.length;
    const nIn = m.inputs.length;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, pw, ph);
    if (n === 0) return;

    // the marks: one pixel column per bin, its strongest token's mass against the step's strongest
    // (kept between draws: a scroll moves only the boxes)
    const mh = Math.round(MARK_H * dpr);
    const key = `${this.version}|${pw}|${mh}|${t}|${nIn}`;
    if (!this.marks || this.marks.key !== key) this.marks = { key, img: this.drawMarks(pw, mh, nIn + t + 1) };
    ctx.putImageData(this.marks.img, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const xOf = (p: number) => (p / n) * w;

    // the prompt / output boundary
    ctx.fillStyle = '#6b7280';
    ctx.fillRect(Math.round(xOf(nIn)) - 0.5, 0, 1, MARK_H);
    // search matches: ticks under the marks
    if (this.hits.length) {
      ctx.fillStyle = '#e8590c';
      let last = -1;
      for (const p of this.hits) {
        const x = Math.floor(xOf(p));
        if (x === last) continue;
        last = x;
        ctx.fillRect(x, MARK_H + 2, Math.max(1, w / n), STRIP_H - MARK_H - 2);
      }
    }
    // the current token: a red tick above
    if (t >= 0) {
      ctx.fillStyle = '#d62728';
      const x = xOf(nIn + t);
      ctx.beginPath();
      ctx.moveTo(x - 4, 0);
      ctx.lineTo(x + 4, 0);
      ctx.lineTo(x, 6);
      ctx.fill();
    }
    // the part the graph shows: a box per column
    const vis = this.graph.visibleRows();
    ctx.strokeStyle = '#111';
    ctx.lineWidth = 1.5;
    ctx.fillStyle = 'rgba(17, 17, 17, 0.08)';
    const box = (a: number, b: number) => {
      if (b < a) return;
      const x0 = xOf(a);
      const x1 = Math.max(x0 + 3, xOf(b + 1));
      ctx.fillRect(x0, 0.75, x1 - x0, MARK_H - 1.5);
      ctx.strokeRect(x0, 0.75, x1 - x0, MARK_H - 1.5);
    };
    box(vis.input[0], vis.input[1]);
    box(nIn + vis.output[0], nIn + vis.output[1]);
    c.dataset.inView = `${vis.input[0]}-${vis.input[1]}`;
  }
}

function bw(v: Float32Array): number {
  let m = 0;
  for (let i = 0; i < v.length; i++) if (v[i] > m) m = v[i];
  return m;
}
