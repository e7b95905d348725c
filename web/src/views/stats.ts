// Statistics: per-token zones (colour + letter), the zone histogram, per-token
// entropy and sink mass, input-token importance, a 2-D PCA of the token
// fingerprints, the fingerprint manifold across runs (manifold.ts), and the
// head-type table (sortable). Data: GET /stats for the
// selection (head types cover every head whatever the selection).
import { asZone, labelText, pca2, sortHeads, zoneCounts, ZONE_INFO, ZONES, type HeadKey, type HeadType, type Pca, type Zone } from '../analysis';
import { csvField, fmtNum, type ExportData, type Exportable } from '../datafile';
import { displayLabel, formatWeight } from '../model';
import { errText, getJson, h, hideTip, Lru, runPath, selKey, selQuery, selText, showTip, sizeCanvas } from './common';
import { createManifoldView } from './manifold';
import type { View, ViewContext } from './types';

export interface TokenStat {
  pos: number;
  entropy: number;
  sink: number;
  local: number;
  mid: number;
  far: number;
  zone: string;
  fingerprint: number[];
}
export interface StatsReply {
  tokens: TokenStat[];
  head_types: HeadType[];
  input_importance: number[];
}

export interface StatsDeps {
  /** selects a layer and head in the app (the head-type table's rows) */
  selectHead?(layer: number, head: number): void;
  /** opens a stored run at a step (0-based; the fingerprint manifold's points) */
  openAt?(runId: string, step: number): void;
}

const cache = new Lru<string, Promise<StatsReply>>(16); // the manifold reads several runs through it

/** GET /stats of a run for a selection, cached (the manifold reads other runs' through it too). */
export function loadStats(c: Pick<ViewContext, 'base' | 'runId' | 'layer' | 'head'>): Promise<StatsReply> {
  const key = `${c.base}|${selKey(c)}`;
  let p = cache.get(key);
  if (!p) {
    const q = selQuery(c.layer, c.head);
    p = getJson<StatsReply>(c.base, runPath(c.runId, '/stats' + (q ? '?' + q.slice(1) : '')));
    cache.set(key, p);
    p.catch(() => cache.delete(key));
  }
  return p;
}

function section(title: string, id: string, ...body: (Node | string)[]): HTMLElement {
  return h('section', { class: 'stats-section', 'aria-labelledby': id }, h('h3', { id, text: title }), ...body);
}

/** Draws a zone's marker shape at (x, y). */
export function drawMarker(g: CanvasRenderingContext2D, zone: Zone, x: number, y: number, r: number): void {
  const info = ZONE_INFO[zone];
  g.fillStyle = info.color;
  g.strokeStyle = info.color;
  g.beginPath();
  switch (info.shape) {
    case 'circle':
      g.arc(x, y, r, 0, 2 * Math.PI);
      g.fill();
      break;
    case 'square':
      g.rect(x - r * 0.9, y - r * 0.9, 1.8 * r, 1.8 * r);
      g.fill();
      break;
    case 'triangle':
      g.moveTo(x, y - r * 1.15);
      g.lineTo(x + r * 1.05, y + r * 0.8);
      g.lineTo(x - r * 1.05, y + r * 0.8);
      g.closePath();
      g.fill();
      break;
    default:
      g.lineWidth = 2;
      g.moveTo(x - r, y - r);
      g.lineTo(x + r, y + r);
      g.moveTo(x + r, y - r);
      g.lineTo(x - r, y + r);
      g.stroke();
  }
}

/** An SVG element with attributes (set in the order given). */
function svgEl<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string>): SVGElementTagNameMap[K] {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function markerSvg(zone: Zone): SVGSVGElement {
  const svg = svgEl('svg', { width: '12', height: '12', 'aria-hidden': 'true' });
  const info = ZONE_INFO[zone];
  let el: SVGElement;
  if (info.shape === 'circle') el = svgEl('circle', { cx: '6', cy: '6', r: '4.5' });
  else if (info.shape === 'square') el = svgEl('rect', { x: '1.5', y: '1.5', width: '9', height: '9' });
  else if (info.shape === 'triangle') el = svgEl('path', { d: 'M6 1 L11 10 L1 10 Z' });
  else el = svgEl('path', { d: 'M2 2 L10 10 M10 2 L2 10', stroke: info.color, 'stroke-width': '2' });
  if (info.shape !== 'cross') el.setAttribute('fill', info.color);
  svg.append(el);
  return svg;
}

export function createStatsView(root: HTMLElement, deps: StatsDeps = {}): View & Exportable {
  root.classList.add('stats-view');
  const status = h('p', { class: 'note view-note' });
  const hist = h('div', { class: 'zone-hist', role: 'list' });
  const zoneText = h('div', { class: 'zone-text' });
  const legend = h('div', { class: 'zone-legend' });
  for (const z of ZONES)
    legend.append(h('span', { class: 'lg' }, markerSvg(z), h('span', { class: `zbadge z-${z}`, text: ZONE_INFO[z].letter }), ZONE_INFO[z].name));
  const esCanvas = h('canvas', { class: 'es-canvas', 'aria-label': 'Entropy and sink mass per position' });
  const esWrap = h('div', { class: 'es-wrap' }, esCanvas);
  const impList = h('div', { class: 'imp-list', role: 'list' });
  const pcaCanvas = h('canvas', { class: 'pca-canvas', 'aria-label': 'PCA of the token fingerprints' });
  const pcaNote = h('p', { class: 'note' });
  const headTable = h('table', { class: 'head-table' });
  const headWrap = h('div', { class: 'head-wrap' }, headTable);
  const selNote = h('p', { class: 'note stats-sel' });
  const manifoldRoot = h('div', { id: 'view-manifold' });
  const manifold = createManifoldView(manifoldRoot, { openAt: deps.openAt, loadStats });

  root.append(
    selNote,
    status,
    section('Zones', 'st-zones', legend, hist, zoneText),
    section('Entropy and sink mass per position', 'st-es', h('p', { class: 'note', text: 'Top: entropy of the row (nats); bottom: mass on position 0 (the sink). ▼ marks the current step’s query. Hover for values.' }), esWrap),
    section('Input-token importance', 'st-imp', h('p', { class: 'note', text: 'Attention each prompt token received, summed over the steps.' }), impList),
    section('Fingerprint PCA', 'st-pca', pcaNote, pcaCanvas),
    section('Fingerprint manifold (UMAP + HDBSCAN, across runs)', 'st-manifold', manifoldRoot),
    section('Head types', 'st-heads', h('p', { class: 'note', text: 'Scores over every head (docs/ANALYSIS.md); sort by a column header; click a row to select that head.' }), headWrap),
  );

  let ctx: ViewContext | null = null;
  let key = '';
  let data: StatsReply | null = null;
  let pca: Pca | null = null;
  let load = 0;
  let sortKey: HeadKey = 'layer';
  let sortDir: 'asc' | 'desc' = 'asc';
  let zoneSpans: HTMLElement[] = [];
  let curPos = -1;

  function ensure(c: ViewContext): void {
    const k = `${c.base}|${selKey(c)}`;
    if (k === key) return;
    key = k;
    data = null;
    const my = ++load;
    root.dataset.status = 'loading';
    status.textContent = `Loading the statistics (${selText(c.layer, c.head)})…`;
    selNote.textContent = `Tokens, entropy, sink, zones and importance: ${selText(c.layer, c.head)}.`;
    loadStats(c)
      .then((d) => {
        if (my !== load) return;
        data = d;
        status.textContent = '';
        pca = pca2(d.tokens.map((t) => t.fingerprint ?? []));
        renderAll();
        root.dataset.status = 'ready';
      })
      .catch((err) => {
        if (my !== load) return;
        root.dataset.status = 'error';
        status.textContent = `The statistics could not be read: ${errText(err)}`;
      });
  }

  function renderAll(): void {
    renderZones();
    renderImportance();
    renderHeads();
    drawCharts();
  }

  function tokLabel(p: number): string {
    return displayLabel(ctx?.tokens[p]?.label);
  }

  function renderZones(): void {
    const d = data!;
    const counts = zoneCounts(d.tokens.map((t) => t.zone));
    const max = Math.max(1, ...ZONES.map((z) => counts[z]));
    hist.textContent = '';
    for (const z of ZONES) {
      const n = counts[z];
      const pct = d.tokens.length ? (100 * n) / d.tokens.length : 0;
      hist.append(
        h(
          'div',
          { class: 'zone-row', role: 'listitem', 'data-zone': z, 'data-count': n },
          h('span', { class: 'zone-name' }, markerSvg(z), ` ${ZONE_INFO[z].name.split(' (')[0]}`),
          h('span', { class: 'zone-track' }, h('span', { class: `zone-bar z-${z}`, style: `width:${((100 * n) / max).toFixed(1)}%` })),
          h('span', { class: 'zone-count', text: `${n} (${pct.toFixed(0)}%)` }),
        ),
      );
    }
    const frag = document.createDocumentFragment();
    zoneSpans = [];
    d.tokens.forEach((t) => {
      const z = asZone(t.zone);
      const s = h('span', {
        class: `zt z-${z}`,
        'data-pos': t.pos,
        'data-z': ZONE_INFO[z].letter,
        title: `${tokLabel(t.pos)} · pos ${t.pos} · ${ZONE_INFO[z].name} · entropy ${t.entropy.toFixed(3)} · sink ${t.sink.toFixed(3)} · local ${t.local.toFixed(3)} · mid ${t.mid.toFixed(3)} · far ${t.far.toFixed(3)}`,
      });
      const lab = ctx?.tokens[t.pos]?.label ?? '';
      s.textContent = lab.trim() ? labelText(lab) : tokLabel(t.pos);
      zoneSpans[t.pos] = s;
      frag.append(s);
    });
    zoneText.replaceChildren(frag);
    curPos = -1;
    markCurrent();
  }

  function markCurrent(): void {
    if (!ctx) return;
    const p = ctx.nOutput > 0 ? ctx.nPrompt - 1 + ctx.step : -1;
    if (p === curPos) return;
    zoneSpans[curPos]?.classList.remove('cur');
    curPos = p;
    zoneSpans[p]?.classList.add('cur');
  }

  function renderImportance(): void {
    const d = data!;
    const imp = d.input_importance ?? [];
    const max = Math.max(1e-12, ...imp);
    const frag = document.createDocumentFragment();
    imp.forEach((v, k) => {
      frag.append(
        h(
          'div',
          { class: 'imp-row', role: 'listitem', 'data-pos': k, 'data-value': fmtNum(v) },
          h('span', { class: 'imp-label', title: `pos ${k} · id ${ctx?.tokens[k]?.id}`, text: tokLabel(k) }),
          h('span', { class: 'imp-track' }, h('span', { class: 'imp-bar', style: `width:${((100 * v) / max).toFixed(1)}%` })),
          h('span', { class: 'imp-value', text: v.toFixed(3) }),
        ),
      );
    });
    impList.replaceChildren(frag);
  }

  const HEAD_COLS: [HeadKey, string][] = [
    ['layer', 'Layer'],
    ['head', 'Head'],
    ['kind', 'Kind'],
    ['prev', 'Prev'],
    ['induction', 'Induction'],
    ['sink', 'Sink'],
    ['local', 'Local'],
  ];

  function renderHeads(): void {
    const d = data!;
    const rows = sortHeads(d.head_types ?? [], sortKey, sortDir);
    const thead = h('thead');
    const tr = h('tr');
    for (const [k, name] of HEAD_COLS) {
      const active = k === sortKey;
      const b = h('button', { type: 'button', class: 'sort', 'data-key': k }, name, h('span', { 'aria-hidden': 'true', text: active ? (sortDir === 'asc' ? ' ▲' : ' ▼') : '' }));
      tr.append(h('th', { scope: 'col', 'aria-sort': active ? (sortDir === 'asc' ? 'ascending' : 'descending') : 'none' }, b));
    }
    thead.append(tr);
    const tbody = h('tbody');
    const frag = document.createDocumentFragment();
    const sel = ctx;
    for (const r of rows) {
      const row = h('tr', {
        'data-layer': r.layer,
        'data-head': r.head,
        'data-kind': r.kind,
        class: sel && sel.layer === r.layer && sel.head === r.head ? 'selected' : '',
        tabindex: deps.selectHead ? (frag.childNodes.length === 0 ? 0 : -1) : null, // one Tab stop; ↑/↓ move
      });
      row.append(h('td', { text: String(r.layer) }), h('td', { text: String(r.head) }), h('td', { class: `kind kind-${r.kind}`, text: r.kind }));
      for (const k of ['prev', 'induction', 'sink', 'local'] as const) {
        const v = r[k];
        row.append(h('td', { class: 'score', style: `--v:${Math.max(0, Math.min(1, v)).toFixed(3)}`, text: v.toFixed(3) }));
      }
      frag.append(row);
    }
    tbody.append(frag);
    headTable.replaceChildren(h('caption', { class: 'visually-hidden', text: 'Head types' }), thead, tbody);
  }

  headTable.addEventListener('click', (e) => {
    const b = (e.target as HTMLElement).closest('button.sort') as HTMLButtonElement | null;
    if (b) {
      const k = b.dataset.key as HeadKey;
      if (k === sortKey) sortDir = sortDir === 'asc' ? 'desc' : 'asc';
      else {
        sortKey = k;
        sortDir = k === 'layer' || k === 'head' || k === 'kind' ? 'asc' : 'desc';
      }
      renderHeads();
      (headTable.querySelector(`button.sort[data-key="${k}"]`) as HTMLButtonElement | null)?.focus();
      return;
    }
    const tr = (e.target as HTMLElement).closest('tbody tr') as HTMLElement | null;
    if (tr && deps.selectHead) deps.selectHead(Number(tr.dataset.layer), Number(tr.dataset.head));
  });
  headTable.addEventListener('keydown', (e) => {
    const tr = (e.target as HTMLElement).closest('tbody tr') as HTMLElement | null;
    if (!tr || !deps.selectHead) return;
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      deps.selectHead(Number(tr.dataset.layer), Number(tr.dataset.head));
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp' || e.key === 'Home' || e.key === 'End') {
      e.preventDefault();
      const to =
        e.key === 'ArrowDown' ? tr.nextElementSibling : e.key === 'ArrowUp' ? tr.previousElementSibling : e.key === 'Home' ? tr.parentElement!.firstElementChild : tr.parentElement!.lastElementChild;
      if (to instanceof HTMLElement) {
        tr.tabIndex = -1;
        to.tabIndex = 0;
        to.focus();
      }
    }
  });

  // ------------------------------------------------------------ charts

  const ES_ROW = 64;
  const ES_PAD = 30;

  function drawCharts(): void {
    drawEs();
    drawPca();
  }

  function drawEs(): void {
    const d = data;
    if (!d || !ctx) return;
    const w = Math.max(200, esWrap.clientWidth || 600);
    const hh = 2 * ES_ROW + 3 * 12 + 14;
    const g = sizeCanvas(esCanvas, w, hh);
    const n = d.tokens.length;
    const plotW = w - ES_PAD - 6;
    const maxH = Math.max(1e-9, ...d.tokens.map((t) => t.entropy));
    const bw = plotW / Math.max(1, n);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#5b6470';
    g.fillText('H', 10, 12 + ES_ROW / 2 + 4);
    g.fillText('sink', 2, 24 + ES_ROW + ES_ROW / 2 + 4);
    const y1 = 12;
    const y2 = 24 + ES_ROW;
    g.strokeStyle = '#d9dee5';
    g.strokeRect(ES_PAD - 0.5, y1 - 0.5, plotW + 1, ES_ROW + 1);
    g.strokeRect(ES_PAD - 0.5, y2 - 0.5, plotW + 1, ES_ROW + 1);
    for (let i = 0; i < n; i++) {
      const t = d.tokens[i];
      const x = ES_PAD + i * bw;
      const bwi = Math.max(1, bw - (bw > 4 ? 1 : 0));
      const he = (ES_ROW * t.entropy) / maxH;
      g.fillStyle = '#4a6fa5';
      g.fillRect(x, y1 + ES_ROW - he, bwi, he);
      const hs = ES_ROW * Math.max(0, Math.min(1, t.sink));
      g.fillStyle = '#8a929c';
      g.fillRect(x, y2 + ES_ROW - hs, bwi, hs);
    }
    g.fillStyle = '#5b6470';
    g.fillText(maxH.toFixed(2), 2, y1 + 9);
    g.fillText('1.0', 8, y2 + 9);
    const p = ctx.nOutput > 0 ? ctx.nPrompt - 1 + ctx.step : -1;
    if (p >= 0 && p < n) {
      const x = ES_PAD + (p + 0.5) * bw;
      g.fillStyle = '#a3261a';
      g.beginPath();
      g.moveTo(x - 5, 1);
      g.lineTo(x + 5, 1);
      g.lineTo(x, 9);
      g.closePath();
      g.fill();
      g.strokeStyle = 'rgba(163, 38, 26, 0.5)';
      g.beginPath();
      g.moveTo(x, y1);
      g.lineTo(x, y2 + ES_ROW);
      g.stroke();
    }
    g.fillStyle = '#5b6470';
    g.fillText('position →', ES_PAD, hh - 2);
    root.dataset.esN = String(n);
  }

  esCanvas.addEventListener('mousemove', (e) => {
    const d = data;
    if (!d) return;
    const r = esCanvas.getBoundingClientRect();
    const plotW = r.width - ES_PAD - 6;
    const i = Math.floor(((e.clientX - r.left - ES_PAD) / plotW) * d.tokens.length);
    const t = d.tokens[i];
    if (!t) return hideTip(root);
    showTip(root, e.clientX, e.clientY, `“${tokLabel(t.pos)}” (pos ${t.pos})`, [
      ['entropy', `${t.entropy.toFixed(4)} nats`],
      ['sink', formatWeight(t.sink)],
      ['zone', ZONE_INFO[asZone(t.zone)].name],
    ]);
  });
  esCanvas.addEventListener('mouseleave', () => hideTip(root));

  const PCA_W = 460;
  const PCA_H = 320;
  let pcaXY: [number, number][] = [];

  function drawPca(): void {
    const d = data;
    const P = pca;
    if (!d || !P || !ctx) return;
    const w = Math.min(PCA_W, Math.max(240, root.clientWidth - 40));
    const g = sizeCanvas(pcaCanvas, w, PCA_H);
    const pts = P.points;
    let x0 = Infinity;
    let x1 = -Infinity;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (const [x, y] of pts) {
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
    }
    if (!(x1 > x0)) (x0 -= 1), (x1 += 1);
    if (!(y1 > y0)) (y0 -= 1), (y1 += 1);
    const pad = 18;
    const sx = (x: number) => pad + ((x - x0) / (x1 - x0)) * (w - 2 * pad);
    const sy = (y: number) => PCA_H - pad - ((y - y0) / (y1 - y0)) * (PCA_H - 2 * pad);
    g.strokeStyle = '#d9dee5';
    g.strokeRect(0.5, 0.5, w - 1, PCA_H - 1);
    g.fillStyle = '#5b6470';
    g.font = '11px system-ui, sans-serif';
    g.fillText('PC1 →', w - 44, PCA_H - 5);
    g.save();
    g.translate(11, 46);
    g.rotate(-Math.PI / 2);
    g.fillText('PC2 →', 0, 0);
    g.restore();
    pcaXY = pts.map(([x, y]) => [sx(x), sy(y)]);
    const cur = ctx.nOutput > 0 ? ctx.nPrompt - 1 + ctx.step : -1;
    g.globalAlpha = 0.85;
    d.tokens.forEach((t, i) => drawMarker(g, asZone(t.zone), pcaXY[i][0], pcaXY[i][1], 4));
    g.globalAlpha = 1;
    if (cur >= 0 && cur < pcaXY.length) {
      g.strokeStyle = '#a3261a';
      g.lineWidth = 2;
      g.beginPath();
      g.arc(pcaXY[cur][0], pcaXY[cur][1], 8, 0, 2 * Math.PI);
      g.stroke();
      g.lineWidth = 1;
    }
    pcaNote.textContent = `${pts.length} positions, 20-number fingerprints; PC1 explains ${(100 * P.explained[0]).toFixed(1)}%, PC2 ${(100 * P.explained[1]).toFixed(1)}% of the variance. Shape and colour = zone; ○ = the current step’s query.`;
    root.dataset.pcaN = String(pts.length);
  }

  pcaCanvas.addEventListener('mousemove', (e) => {
    const d = data;
    if (!d || !pcaXY.length) return;
    const r = pcaCanvas.getBoundingClientRect();
    const x = e.clientX - r.left;
    const y = e.clientY - r.top;
    let best = -1;
    let bd = 64;
    for (let i = 0; i < pcaXY.length; i++) {
      const dd = (pcaXY[i][0] - x) ** 2 + (pcaXY[i][1] - y) ** 2;
      if (dd < bd) (bd = dd), (best = i);
    }
    if (best < 0) return hideTip(root);
    const t = d.tokens[best];
    const [px, py] = pca!.points[best];
    showTip(root, e.clientX, e.clientY, `“${tokLabel(t.pos)}” (pos ${t.pos})`, [
      ['zone', ZONE_INFO[asZone(t.zone)].name],
      ['PC1, PC2', `${px.toFixed(3)}, ${py.toFixed(3)}`],
      ['entropy', t.entropy.toFixed(3)],
      ['sink', t.sink.toFixed(3)],
    ]);
  });
  pcaCanvas.addEventListener('mouseleave', () => hideTip(root));

  new ResizeObserver(() => {
    if (data && ctx && root.offsetParent !== null) drawCharts();
  }).observe(esWrap);

  return {
    show(c: ViewContext): void {
      const stepMoved = !ctx || ctx.step !== c.step || ctx.layer !== c.layer || ctx.head !== c.head;
      ctx = c;
      ensure(c);
      manifold.show(c);
      if (data && stepMoved) {
        markCurrent();
        drawCharts();
        headTable.querySelectorAll('tbody tr').forEach((tr) => {
          const e = tr as HTMLElement;
          e.classList.toggle('selected', Number(e.dataset.layer) === c.layer && Number(e.dataset.head) === c.head);
        });
      }
    },
    hide(): void {
      hideTip(root);
      manifold.hide();
    },
    exportData(): ExportData | null {
      const c = ctx;
      const d = data;
      if (!c || !d) return null;
      const rows = ['pos,label,zone,entropy,sink,local,mid,far,pc1,pc2,' + Array.from({ length: 20 }, (_, i) => `fp${i}`).join(',')];
      d.tokens.forEach((t, i) => {
        const p = pca?.points[i] ?? [0, 0];
        rows.push(
          [t.pos, csvField(c.tokens[t.pos]?.label ?? ''), t.zone, fmtNum(t.entropy), fmtNum(t.sink), fmtNum(t.local), fmtNum(t.mid), fmtNum(t.far), fmtNum(p[0]), fmtNum(p[1]), ...(t.fingerprint ?? []).map(fmtNum)].join(','),
        );
      });
      const fp = new Float32Array(d.tokens.length * 20);
      d.tokens.forEach((t, i) => (t.fingerprint ?? []).slice(0, 20).forEach((v, k) => (fp[i * 20 + k] = v)));
      return {
        name: 'stats',
        json: { run: c.runId, selection: selText(c.layer, c.head), ...d, pca: pca ? { points: pca.points, explained: pca.explained } : null },
        csv: rows.join('\r\n') + '\r\n',
        npy: { shape: [d.tokens.length, 20], data: fp },
      };
    },
  };
}
