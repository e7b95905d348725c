// Experts (a mixture-of-experts run only): a layer x token strip, layers as
// rows (layer 0 on top) and positions as columns, each cell the experts that
// layer's router chose for that position's token (ids, best first), coloured
// by the top expert; and the load of one layer: a bar per expert, the
// positions that chose it or the sum of its weights. Columns are
// virtualized like the logit lens, and the routing is read in pages of PAGE
// positions, the current step's page first (GET /api/runs/{id}/experts).
import {
  expertCell,
  expertColor,
  inkOn,
  loadBalance,
  loadBars,
  pageOrder,
  type ExpertChoice,
  type ExpertsLoad,
  type ExpertsReply,
  type LoadMetric,
} from '../experts';
import { csvField, type ExportData, type Exportable } from '../datafile';
import { displayLabel } from '../model';
import { errText, frameTask, getJson, h, hideTip, Lru, runPath, showTip, showTipAt } from './common';
import { queryStep, stepQuery } from './tiles';
import type { View, ViewContext } from './types';

const CW = 52; // column width
const RH = 26; // row height
const HEAD_H = 42; // column header height
const LABEL_W = 66; // row label width
const OVERSCAN = 4;
export const EXPERTS_PAGE = 64; // positions per request

/** A run's routing as far as it is loaded. */
interface ExpertsData {
  nExpert: number;
  nUsed: number;
  nLayer: number;
  nPos: number;
  /** positions[p][layer] */
  positions: (ExpertChoice[] | undefined)[];
  load: ExpertsLoad[];
  done: boolean;
  error: string | null;
}

const cache = new Lru<string, ExpertsData>(8);

function expertsPage(base: string, runId: string, page: number): Promise<ExpertsReply> {
  return getJson<ExpertsReply>(base, runPath(runId, `/experts?from=${page * EXPERTS_PAGE}&to=${(page + 1) * EXPERTS_PAGE}`));
}

export function createExpertsView(root: HTMLElement): View & Exportable {
  root.classList.add('experts-view');
  const info = h(
    'p',
    { class: 'note' },
    'Each cell: the experts the layer’s router chose for that position’s token, best first, coloured by the top one. Hover or focus a cell for the weights; click a layer (or ↑/↓) for its load below; click a column to move the step.',
  );
  const status = h('p', { class: 'note view-note' });
  const scroller = h('div', {
    class: 'ex-scroll',
    tabindex: 0,
    role: 'group',
    'aria-label': 'Expert routing, layers by positions: ↑/↓ layer, ←/→ step',
    'aria-describedby': 'ex-live',
  });
  const inner = h('div', { class: 'ex-inner' });
  const colhead = h('div', { class: 'ex-colhead' });
  const corner = h('div', { class: 'ex-corner', text: 'layer \\ position' });
  const rowhead = h('div', { class: 'ex-rowhead', role: 'group', 'aria-label': 'Layer for the load chart' });
  const cells = h('div', { class: 'ex-cells' });
  const live = h('p', { class: 'visually-hidden', id: 'ex-live', 'aria-live': 'polite' });
  colhead.append(corner);
  inner.append(colhead, rowhead, cells);
  scroller.append(inner);

  const loadTitle = h('h3', { class: 'ex-load-title', id: 'ex-load-title', text: 'Load' });
  const metricCount = h('button', { type: 'button', class: 'seg', 'data-metric': 'count', 'aria-pressed': 'true', title: 'Positions that chose each expert' }, 'positions');
  const metricWeight = h('button', { type: 'button', class: 'seg', 'data-metric': 'weight', 'aria-pressed': 'false', title: 'Sum of each expert’s weights' }, 'weight');
  const balance = h('span', { class: 'note ex-balance' });
  const bars = h('div', { class: 'ex-bars', role: 'list', 'aria-labelledby': 'ex-load-title' });
  const loadBox = h(
    'section',
    { class: 'ex-load', 'aria-labelledby': 'ex-load-title' },
    h('div', { class: 'view-bar' }, loadTitle, h('span', { class: 'seg-group', role: 'group', 'aria-label': 'Bar length' }, metricCount, metricWeight), balance),
    bars,
  );
  root.append(info, status, scroller, live, loadBox);

  let ctx: ViewContext | null = null;
  let data: ExpertsData | null = null;
  let runKey = '';
  let load = 0;
  let range: [number, number] = [0, -1];
  let loadLayer = 0; // the layer of the load chart (and the keyboard's row)
  let ctxLayer: number | null | undefined; // the app's layer selection last seen
  let metric: LoadMetric = 'count';
  let keyRow = false; // the keyboard moved the row: show its cell's tooltip

  function setMetric(m: LoadMetric): void {
    metric = m;
    metricCount.setAttribute('aria-pressed', String(m === 'count'));
    metricWeight.setAttribute('aria-pressed', String(m === 'weight'));
    renderLoad();
  }
  metricCount.addEventListener('click', () => setMetric('count'));
  metricWeight.addEventListener('click', () => setMetric('weight'));

  function ensure(c: ViewContext): void {
    if (c.runId === runKey) return;
    runKey = c.runId;
    data = null;
    const my = ++load;
    root.dataset.status = 'loading';
    status.textContent = 'Reading the routing…';
    cells.textContent = '';
    rowhead.textContent = '';
    bars.textContent = '';
    if (!c.experts) {
      root.dataset.status = 'empty';
      status.textContent = 'This run’s model is not a mixture of experts: it has no routing to show.';
      return;
    }
    const cached = cache.get(c.runId);
    if (cached && !cached.error) {
      data = cached;
      shown(my);
      if (!cached.done) void fill(c, cached, my);
      return;
    }
    const nPos = Math.max(0, c.nPrompt + c.nOutput - 1);
    const first = pageOrder(nPos, EXPERTS_PAGE, stepQuery(c.nPrompt, c.step))[0] ?? 0;
    expertsPage(c.base, c.runId, first)
      .then((d) => {
        if (my !== load) return;
        const ed: ExpertsData = {
          nExpert: d.n_expert,
          nUsed: d.n_used,
          nLayer: d.n_layer,
          nPos: d.n_pos,
          positions: new Array(d.n_pos),
          load: d.load,
          done: false,
          error: null,
        };
        for (const p of d.positions) ed.positions[p.pos] = p.layers;
        cache.set(c.runId, ed);
        data = ed;
        shown(my);
        void fill(c, ed, my);
      })
      .catch((err) => {
        if (my !== load) return;
        root.dataset.status = 'error';
        status.textContent = `The routing could not be read: ${errText(err)}`;
      });
  }

  function shown(my: number): void {
    if (my !== load || !data) return;
    status.textContent = data.done ? '' : 'Reading the remaining positions…';
    root.dataset.status = data.done ? 'ready' : 'partial';
    layout();
    scrollToStep(true);
  }

  /** Loads the pages still missing, nearest to the current step first. */
  async function fill(c: ViewContext, ed: ExpertsData, my: number): Promise<void> {
    const here = ctx ? stepQuery(ctx.nPrompt, ctx.step) : 0;
    for (const p of pageOrder(ed.nPos, EXPERTS_PAGE, here)) {
      if (ed.positions[p * EXPERTS_PAGE]) continue;
      try {
        const d = await expertsPage(c.base, c.runId, p);
        for (const q of d.positions) ed.positions[q.pos] = q.layers;
      } catch (err) {
        ed.error = errText(err);
        if (my === load) {
          status.textContent = `The routing could not be read: ${ed.error}`;
          root.dataset.status = 'error';
        }
        return;
      }
      if (my === load) render();
    }
    ed.done = true;
    if (my === load) {
      status.textContent = '';
      root.dataset.status = 'ready';
      render();
    }
  }

  function layout(): void {
    if (!data) return;
    const { nLayer, nPos } = data;
    inner.style.width = `${LABEL_W + nPos * CW}px`;
    inner.style.height = `${HEAD_H + nLayer * RH}px`;
    rowhead.style.height = `${nLayer * RH}px`;
    rowhead.textContent = '';
    for (let l = 0; l < nLayer; l++)
      rowhead.append(
        h('button', {
          type: 'button',
          class: 'ex-rowlabel',
          style: `top:${l * RH}px`,
          'data-layer': l,
          'aria-pressed': 'false',
          'aria-label': `Layer ${l}: show its load`,
          tabindex: -1,
          text: `L${l}`,
        }),
      );
    root.dataset.nLayer = String(nLayer);
    root.dataset.nPos = String(nPos);
    root.dataset.nExpert = String(data.nExpert);
    loadLayer = Math.max(0, Math.min(nLayer - 1, loadLayer));
    range = [0, -1];
    render();
  }

  function visibleCols(): [number, number] {
    const n = data?.nPos ?? 0;
    const w = scroller.clientWidth - LABEL_W;
    const first = Math.max(0, Math.floor(scroller.scrollLeft / CW) - OVERSCAN);
    const last = Math.min(n - 1, Math.ceil((scroller.scrollLeft + Math.max(w, CW)) / CW) + OVERSCAN);
    return [first, last];
  }

  function render(): void {
    if (!data || !ctx) return;
    const [a, b] = visibleCols();
    range = [a, b];
    const cur = ctx.nOutput > 0 ? stepQuery(ctx.nPrompt, ctx.step) : -1;
    const frag = document.createDocumentFragment();
    const hfrag = document.createDocumentFragment();
    for (let p = a; p <= b; p++) {
      const x = LABEL_W + p * CW;
      const tok = ctx.tokens[p];
      const t = queryStep(p, ctx.nPrompt, ctx.nOutput);
      hfrag.append(
        h(
          'div',
          {
            class: 'ex-collabel' + (p === cur ? ' current' : '') + (p < ctx.nPrompt ? '' : ' out'),
            style: `left:${x}px`,
            'data-pos': p,
            title: `position ${p}: “${displayLabel(tok?.label)}” (id ${tok?.id ?? '?'})${t !== null ? ` · chose step ${t + 1}: click to go there` : ''}`,
          },
          h('span', { class: 'ex-posno', text: (p === cur ? '▶ ' : '') + String(p) }),
          h('span', { class: 'ex-tok', text: displayLabel(tok?.label) }),
        ),
      );
      const layers = data.positions[p];
      for (let l = 0; l < data.nLayer; l++) {
        const y = HEAD_H + l * RH;
        if (!layers) {
          frag.append(h('div', { class: 'ec pending', style: `left:${x}px;top:${y}px`, 'data-pos': p, 'data-layer': l, text: '…' }));
          continue;
        }
        const cell = expertCell(layers[l]);
        const bg = cell.top >= 0 ? expertColor(cell.top) : '';
        const cls = 'ec' + (p === cur ? ' current' : '') + (l === loadLayer ? ' sel-layer' : '') + (p === cur && l === loadLayer && keyRow ? ' cursor' : '');
        frag.append(
          h('div', {
            class: cls,
            style: `left:${x}px;top:${y}px` + (bg ? `;background:${bg};color:${inkOn(bg)}` : ''),
            'data-pos': p,
            'data-layer': l,
            'data-ids': cell.ids.join(','),
            'data-top': cell.top,
            text: cell.text,
          }),
        );
      }
    }
    cells.replaceChildren(frag);
    colhead.replaceChildren(corner, hfrag);
    for (const b2 of rowhead.querySelectorAll<HTMLElement>('.ex-rowlabel')) b2.setAttribute('aria-pressed', String(Number(b2.dataset.layer) === loadLayer));
    root.dataset.range = `${a}-${b}`;
    root.dataset.loadLayer = String(loadLayer);
    renderLoad();
  }

  let loadShown = '';
  function renderLoad(): void {
    if (!data) return;
    const L = data.load[loadLayer];
    const key = `${runKey}|${loadLayer}|${metric}`;
    loadTitle.textContent = `Load of layer ${loadLayer} (${data.nPos} positions, ${data.nUsed} of ${data.nExpert} experts each)`;
    if (key === loadShown) return;
    loadShown = key;
    const bs = loadBars(L, metric);
    bars.textContent = '';
    bars.dataset.layer = String(loadLayer);
    bars.dataset.metric = metric;
    for (const b of bs) {
      const color = expertColor(b.expert);
      const value = metric === 'count' ? `${b.count}` : b.weight.toFixed(3);
      const other = metric === 'count' ? `weight ${b.weight.toFixed(3)}` : `${b.count} position${b.count === 1 ? '' : 's'}`;
      bars.append(
        h(
          'div',
          {
            class: 'ex-bar-row',
            role: 'listitem',
            'data-expert': b.expert,
            'data-count': b.count,
            'data-weight': b.weight,
            'aria-label': `expert ${b.expert}: ${b.count} position${b.count === 1 ? '' : 's'}, weight ${b.weight.toFixed(3)} (${(100 * b.share).toFixed(1)}% of the ${metric === 'count' ? 'choices' : 'weight'})`,
            title: `expert ${b.expert}: ${b.count} positions chose it · sum of weights ${b.weight.toFixed(4)} · ${(100 * b.share).toFixed(1)}% of the layer’s ${metric === 'count' ? 'choices' : 'weight'}`,
          },
          h('span', { class: 'ex-bar-label', text: `E${b.expert}` }),
          h('span', { class: 'ex-bar-track', 'aria-hidden': 'true' }, h('span', { class: 'ex-bar', style: `width:${(100 * b.frac).toFixed(2)}%;background:${color}` })),
          h('span', { class: 'ex-bar-value', text: value }),
          h('span', { class: 'ex-bar-other', text: other }),
        ),
      );
    }
    balance.textContent = L ? `balance ${loadBalance(L.count).toFixed(2)} (1 = every expert equally chosen)` : '';
  }

  function setLoadLayer(l: number): void {
    if (!data) return;
    loadLayer = Math.max(0, Math.min(data.nLayer - 1, l));
    render();
  }

  function scrollToStep(center = false): void {
    if (!ctx || !data) return;
    const p = Math.max(0, stepQuery(ctx.nPrompt, ctx.step));
    const x = p * CW;
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

  function tipLines(p: number, l: number): [string, string[]] {
    const tok = ctx?.tokens[p];
    const title = `Position ${p} “${displayLabel(tok?.label)}”, layer ${l}`;
    const layers = data?.positions[p];
    if (!layers) return [title, ['loading…']];
    const cell = expertCell(layers[l]);
    const t = ctx ? queryStep(p, ctx.nPrompt, ctx.nOutput) : null;
    return [title, [...cell.lines, ...(t !== null ? [`chose step ${t + 1}`] : [])]];
  }

  cells.addEventListener('mousemove', (e) => {
    const c = (e.target as HTMLElement).closest('.ec') as HTMLElement | null;
    if (!c || !data) return hideTip(root);
    const [title, lines] = tipLines(Number(c.dataset.pos), Number(c.dataset.layer));
    showTip(root, e.clientX, e.clientY, title, lines);
  });
  cells.addEventListener('mouseleave', () => hideTip(root));
  rowhead.addEventListener('click', (e) => {
    const b = (e.target as HTMLElement).closest('.ex-rowlabel') as HTMLElement | null;
    if (b) setLoadLayer(Number(b.dataset.layer));
  });
  inner.addEventListener('click', (e) => {
    const el = (e.target as HTMLElement).closest('[data-pos]') as HTMLElement | null;
    if (!el || !ctx) return;
    if (el.dataset.layer !== undefined) setLoadLayer(Number(el.dataset.layer));
    const t = queryStep(Number(el.dataset.pos), ctx.nPrompt, ctx.nOutput);
    if (t !== null) ctx.setStep(t);
  });
  scroller.addEventListener('keydown', (e) => {
    if (!ctx || !data || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key !== 'ArrowUp' && e.key !== 'ArrowDown') return;
    e.preventDefault();
    keyRow = true;
    const l = Math.max(0, Math.min(data.nLayer - 1, loadLayer + (e.key === 'ArrowDown' ? 1 : -1)));
    const top = HEAD_H + l * RH;
    if (top - HEAD_H < scroller.scrollTop) scroller.scrollTop = l * RH;
    else if (top + RH > scroller.scrollTop + scroller.clientHeight) scroller.scrollTop = top + RH - scroller.clientHeight;
    setLoadLayer(l);
    focusTip();
  });
  // a click focuses the strip too: no keyboard cursor then (and no re-render between its mousedown and click)
  let pointerFocus = false;
  scroller.addEventListener('pointerdown', () => {
    pointerFocus = true;
    setTimeout(() => (pointerFocus = false), 0);
  });
  scroller.addEventListener('focus', () => {
    if (pointerFocus) return;
    keyRow = true;
    render();
    focusTip();
  });
  scroller.addEventListener('blur', () => {
    keyRow = false;
    hideTip(root);
    render();
  });

  function focusTip(): void {
    if (!ctx || !data || !keyRow || document.activeElement !== scroller) return;
    const p = stepQuery(ctx.nPrompt, ctx.step);
    const el = cells.querySelector(`.ec[data-pos="${p}"][data-layer="${loadLayer}"]`);
    const [title, lines] = tipLines(p, loadLayer);
    live.textContent = `${title}: ${lines.join('; ')}`;
    if (el) showTipAt(root, el, title, lines);
  }

  return {
    show(c: ViewContext): void {
      const stepMoved = ctx !== null && ctx.step !== c.step;
      if (c.layer !== ctxLayer) {
        ctxLayer = c.layer;
        if (c.layer !== null) loadLayer = c.layer; // the app's layer selection picks the load chart's layer
      }
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
      const ed = data;
      if (!c || !ed || !ed.done) return null;
      const rows = ['pos,label,layer,rank,expert,weight'];
      const ids = new Float32Array(ed.nPos * ed.nLayer * ed.nUsed).fill(-1);
      const positions: { pos: number; layers: ExpertChoice[] }[] = [];
      for (let p = 0; p < ed.nPos; p++) {
        const layers = ed.positions[p] ?? [];
        positions.push({ pos: p, layers });
        const lab = csvField(c.tokens[p]?.label ?? '');
        layers.forEach((ch, l) =>
          ch.ids.forEach((e, r) => {
            rows.push([p, lab, l, r + 1, e, ch.weights[r]].join(','));
            ids[(p * ed.nLayer + l) * ed.nUsed + r] = e;
          }),
        );
      }
      return {
        name: 'experts',
        json: { run: c.runId, n_expert: ed.nExpert, n_used: ed.nUsed, n_layer: ed.nLayer, n_pos: ed.nPos, positions, load: ed.load },
        csv: rows.join('\r\n') + '\r\n',
        npy: { shape: [ed.nPos, ed.nLayer, ed.nUsed], data: ids },
      };
    },
  };
}
