// Logit lens: layers (rows, the last layer on top) x generation steps
// (columns); each cell the layer's top-1 token; cells whose top-1 is the
// token the step chose are highlighted (colour, border and a ✓). Columns are
// virtualized: only those in view are in the DOM.
//
// The server computes a run's lens when it is first asked for (one
// unembedding per layer and step: on a 1B model about 5 ms a step and layer),
// so it is fetched in parts: first the steps the grid shows (centred on the
// current step), then pages of PAGE steps outward from it; columns not loaded
// yet show "…". The exported viewer holds the pages only: when it refuses
// the first screen's range, the current step's page comes instead.
import { lensCell, lensLabel, type LensReply, type LensStep } from '../analysis';
import { csvField, type ExportData, type Exportable } from '../datafile';
import { displayLabel } from '../model';
import { errText, frameTask, getJson, h, hideTip, Lru, runPath, showTip, showTipAt } from './common';
import type { View, ViewContext } from './types';

const CW = 86; // column width
const RH = 26; // row height
const HEAD_H = 42; // column header height
const LABEL_W = 66; // row label width
const OVERSCAN = 3;
const PAGE = 16; // steps per request (the exported viewer holds the same pages)

/** A run's lens as far as it is loaded. */
interface LensData {
  n_layer: number;
  n_output: number;
  steps: (LensStep | undefined)[];
  done: boolean;
  error: string | null;
}

const cache = new Lru<string, LensData>(8);

function lensRange(base: string, runId: string, from: number, to: number): Promise<LensReply> {
  return getJson<LensReply>(base, runPath(runId, `/logit-lens?from=${from}&to=${to}`));
}

function lensPage(base: string, runId: string, page: number): Promise<LensReply> {
  return lensRange(base, runId, page * PAGE, (page + 1) * PAGE);
}

/** Whether any step of page p is still to load. */
function pageMissing(ld: LensData, p: number): boolean {
  for (let s = p * PAGE; s < Math.min(ld.n_output, (p + 1) * PAGE); s++) if (!ld.steps[s]) return true;
  return false;
}

export function createLensView(root: HTMLElement): View & Exportable {
  root.classList.add('lens-view');
  const info = h('p', { class: 'note' }, 'Each cell: the layer’s most likely next token (residual stream → final norm → output). ', h('span', { class: 'lens-key match', text: '✓ match' }), ' = the token the step chose. Hover or focus a cell for the top 5; click a column to move the step.');
  const status = h('p', { class: 'note view-note' });
  const scroller = h('div', { class: 'lens-scroll', tabindex: 0, role: 'group', 'aria-label': 'Logit lens grid: ←/→ step, ↑/↓ layer', 'aria-describedby': 'lens-live' });
  const inner = h('div', { class: 'lens-inner' });
  const colhead = h('div', { class: 'lens-colhead' });
  const corner = h('div', { class: 'lens-corner', text: 'layer \\ step' });
  const rowhead = h('div', { class: 'lens-rowhead' });
  const cells = h('div', { class: 'lens-cells' });
  const live = h('p', { class: 'visually-hidden', id: 'lens-live', 'aria-live': 'polite' });
  colhead.append(corner);
  inner.append(colhead, rowhead, cells);
  scroller.append(inner);
  root.append(info, status, scroller, live);

  let ctx: ViewContext | null = null;
  let data: LensData | null = null;
  let runKey = '';
  let load = 0;
  let nL = 0;
  let nS = 0;
  let range: [number, number] = [0, -1];
  let cursorLayer: number | null = null;

  function ensure(c: ViewContext): void {
    if (c.runId === runKey) return;
    runKey = c.runId;
    data = null;
    const my = ++load;
    root.dataset.status = 'loading';
    status.textContent = 'Computing the logit lens…';
    cells.textContent = '';
    rowhead.textContent = '';
    const cached = cache.get(c.runId);
    if (cached && !cached.error) {
      data = cached;
      shown(my);
      if (!cached.done) fill(c, cached, my);
      return;
    }
    const step = Math.max(0, Math.min(c.nOutput - 1, c.step));
    const page = Math.floor(step / PAGE);
    const cols = firstCols(step, c.nOutput);
    const onPage = !cols || (cols[0] === page * PAGE && cols[1] + 1 >= Math.min(c.nOutput, (page + 1) * PAGE));
    const first = onPage ? lensPage(c.base, c.runId, page) : lensRange(c.base, c.runId, cols[0], cols[1] + 1).catch(() => lensPage(c.base, c.runId, page));
    first
      .then((d) => {
        if (my !== load) return;
        const ld: LensData = { n_layer: d.n_layer, n_output: d.n_output, steps: new Array(d.n_output), done: false, error: null };
        for (const st of d.steps) ld.steps[st.step] = st;
        cache.set(c.runId, ld);
        data = ld;
        shown(my);
        fill(c, ld, my);
      })
      .catch((err) => {
        if (my !== load) return;
        root.dataset.status = 'error';
        status.textContent = `The logit lens could not be read: ${errText(err)}`;
      });
  }

  function shown(my: number): void {
    if (my !== load || !data) return;
    status.textContent = data.done ? '' : 'Computing the remaining steps…';
    root.dataset.status = data.done ? 'ready' : 'partial';
    layout();
    scrollToStep(true);
  }

  /** Loads the pages still missing, nearest to the current step first. */
  async function fill(c: ViewContext, ld: LensData, my: number): Promise<void> {
    const pages: number[] = [];
    for (let p = 0; p * PAGE < ld.n_output; p++) if (pageMissing(ld, p)) pages.push(p);
    const here = Math.floor(Math.max(0, ctx?.step ?? 0) / PAGE);
    pages.sort((x, y) => Math.abs(x - here) - Math.abs(y - here));
    for (const p of pages) {
      if (!pageMissing(ld, p)) continue;
      try {
        const d = await lensPage(c.base, c.runId, p);
        for (const st of d.steps) ld.steps[st.step] = st;
      } catch (err) {
        ld.error = errText(err);
        if (my === load) status.textContent = `The logit lens could not be read: ${ld.error}`;
        return;
      }
      if (my === load) render();
    }
    ld.done = true;
    if (my === load) {
      status.textContent = '';
      root.dataset.status = 'ready';
      render();
    }
  }

  function layout(): void {
    if (!data) return;
    nL = data.n_layer;
    nS = data.n_output;
    inner.style.width = `${LABEL_W + nS * CW}px`;
    inner.style.height = `${HEAD_H + nL * RH}px`;
    rowhead.style.height = `${nL * RH}px`;
    rowhead.textContent = '';
    for (let r = 0; r < nL; r++) {
      const layer = nL - 1 - r;
      rowhead.append(h('div', { class: 'lens-rowlabel', style: `top:${r * RH}px`, text: `L${layer}` }));
    }
    root.dataset.nLayer = String(nL);
    root.dataset.nStep = String(nS);
    range = [0, -1];
    render();
  }

  /** The steps the grid shows once centred on step s (as scrollToStep
   *  places it, the browser keeping the scroll inside the grid), from the
   *  scroller's width alone: before the first reply lays the grid out. Null
   *  while the view has no width. */
  function firstCols(s: number, n: number): [number, number] | null {
    const w = scroller.clientWidth - LABEL_W;
    if (w <= 0 || n <= 0) return null;
    const maxLeft = Math.max(0, LABEL_W + n * CW - scroller.clientWidth);
    const left = Math.min(maxLeft, Math.max(0, s * CW - w / 2 + CW / 2));
    return [Math.floor(left / CW), Math.min(n - 1, Math.max(0, Math.ceil((left + w) / CW) - 1))];
  }

  function visibleCols(): [number, number] {
    const w = scroller.clientWidth - LABEL_W;
    const first = Math.max(0, Math.floor(scroller.scrollLeft / CW) - OVERSCAN);
    const last = Math.min(nS - 1, Math.ceil((scroller.scrollLeft + Math.max(w, CW)) / CW) + OVERSCAN);
    return [first, last];
  }

  function render(): void {
    if (!data || !ctx) return;
    const [a, b] = visibleCols();
    range = [a, b];
    const step = ctx.step;
    const frag = document.createDocumentFragment();
    const hfrag = document.createDocumentFragment();
    for (let s = a; s <= b; s++) {
      const st = data.steps[s];
      const chosen = ctx.tokens[ctx.nPrompt + s];
      const x = LABEL_W + s * CW;
      if (!st) {
        hfrag.append(h('div', { class: 'lens-collabel', style: `left:${x}px`, 'data-step': s }, h('span', { class: 'lens-stepno', text: String(s + 1) })));
        for (let r = 0; r < nL; r++)
          frag.append(h('div', { class: 'lc pending', style: `left:${x}px;top:${HEAD_H + r * RH}px`, 'data-step': s, text: '…' }));
        continue;
      }
      const head = h(
        'div',
        { class: 'lens-collabel' + (s === step ? ' current' : ''), style: `left:${x}px`, 'data-step': s, title: `step ${s + 1} of ${nS}: chose “${displayLabel(chosen?.label)}” (id ${st.id})` },
        h('span', { class: 'lens-stepno', text: (s === step ? '▶ ' : '') + String(s + 1) }),
        h('span', { class: 'lens-chosen', text: displayLabel(chosen?.label ?? `#${st.id}`) }),
      );
      hfrag.append(head);
      for (let r = 0; r < nL; r++) {
        const layer = nL - 1 - r;
        const cell = lensCell(st.layers[layer], st.id);
        const el = h('div', {
          class: 'lc' + (cell.match ? ' match' : '') + (s === step ? ' current' : '') + (s === step && layer === cursorLayer ? ' cursor' : ''),
          style: `left:${x}px;top:${HEAD_H + r * RH}px;--p:${Math.max(0.04, Math.min(1, cell.prob)).toFixed(3)}`,
          'data-step': s,
          'data-layer': layer,
          'data-match': String(cell.match),
        });
        el.append(h('span', { class: 'lc-text', text: cell.text }));
        if (cell.match) el.append(h('span', { class: 'lc-mark', 'aria-label': 'matches the chosen token', text: '✓' }));
        frag.append(el);
      }
    }
    cells.replaceChildren(frag);
    colhead.replaceChildren(corner, hfrag);
    root.dataset.range = `${a}-${b}`;
  }

  function scrollToStep(center = false): void {
    if (!ctx || !data) return;
    const s = ctx.step;
    const x = s * CW;
    const w = scroller.clientWidth - LABEL_W;
    if (center || x < scroller.scrollLeft || x + CW > scroller.scrollLeft + w) scroller.scrollLeft = Math.max(0, x - w / 2 + CW / 2);
  }

  const onScroll = frameTask(() => {
    const [a, b] = visibleCols();
    if (a !== range[0] || b !== range[1]) render();
  });
  scroller.addEventListener('scroll', () => onScroll.request());
  new ResizeObserver(() => {
    if (data && ctx) render();
  }).observe(scroller);

  function tipLines(s: number, layer: number): [string, string[]] {
    const st = data!.steps[s];
    if (!st) return [`Step ${s + 1}, layer ${layer}`, ['computing…']];
    const cell = lensCell(st.layers[layer], st.id);
    const chosen = ctx!.tokens[ctx!.nPrompt + s];
    return [`Step ${s + 1}, layer ${layer}: top ${cell.lines.length}`, [...cell.lines, `chosen: ${displayLabel(chosen?.label ?? `#${st.id}`)}`]];
  }

  cells.addEventListener('mousemove', (e) => {
    const c = (e.target as HTMLElement).closest('.lc') as HTMLElement | null;
    if (!c || !data) return hideTip(root);
    const [title, lines] = tipLines(Number(c.dataset.step), Number(c.dataset.layer));
    showTip(root, e.clientX, e.clientY, title, lines);
  });
  cells.addEventListener('mouseleave', () => hideTip(root));
  inner.addEventListener('click', (e) => {
    const c = (e.target as HTMLElement).closest('[data-step]') as HTMLElement | null;
    if (c && ctx) ctx.setStep(Number(c.dataset.step));
  });
  scroller.addEventListener('keydown', (e) => {
    if (!ctx || !data || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key !== 'ArrowUp' && e.key !== 'ArrowDown') return;
    e.preventDefault();
    const cur = cursorLayer ?? nL;
    cursorLayer = Math.max(0, Math.min(nL - 1, cur + (e.key === 'ArrowUp' ? 1 : -1)));
    const r = nL - 1 - cursorLayer;
    if (HEAD_H + r * RH < scroller.scrollTop + HEAD_H) scroller.scrollTop = r * RH;
    else if (HEAD_H + (r + 1) * RH > scroller.scrollTop + scroller.clientHeight) scroller.scrollTop = HEAD_H + (r + 1) * RH - scroller.clientHeight;
    render();
    focusTip();
  });
  scroller.addEventListener('blur', () => {
    cursorLayer = null;
    hideTip(root);
    render();
  });

  function focusTip(): void {
    if (!ctx || !data || cursorLayer === null || document.activeElement !== scroller) return;
    const el = cells.querySelector(`.lc[data-step="${ctx.step}"][data-layer="${cursorLayer}"]`);
    const [title, lines] = tipLines(ctx.step, cursorLayer);
    live.textContent = `${title}: ${lines.join('; ')}`;
    if (el) showTipAt(root, el, title, lines);
  }

  return {
    show(c: ViewContext): void {
      const stepMoved = ctx !== null && ctx.step !== c.step;
      ctx = c;
      ensure(c);
      if (data) {
        if (stepMoved) scrollToStep();
        render();
        focusTip();
      }
    },
    hide(): void {
      hideTip(root);
    },
    exportData(): ExportData | null {
      const c = ctx;
      const ld = data;
      if (!c || !ld || !ld.done) return null;
      const d = { n_layer: ld.n_layer, n_output: ld.n_output, steps: ld.steps as LensStep[] };
      const rows = ['step,chosen_id,chosen_label,layer,rank,id,label,prob,match'];
      const top1 = new Float32Array(d.n_layer * d.steps.length);
      d.steps.forEach((st, s) => {
        const lab = c.tokens[c.nPrompt + s]?.label ?? '';
        st.layers.forEach((L) => {
          L.top.forEach((t, r) =>
            rows.push([s, st.id, csvField(lab), L.layer, r + 1, t.id, csvField(lensLabel(t)), t.prob, r === 0 ? L.match : ''].join(',')),
          );
          top1[L.layer * d.steps.length + s] = L.top[0]?.prob ?? 0;
        });
      });
      return {
        name: 'logit-lens',
        json: { run: c.runId, ...d },
        csv: rows.join('\r\n') + '\r\n',
        npy: { shape: [d.n_layer, d.steps.length], data: top1 },
      };
    },
  };
}

