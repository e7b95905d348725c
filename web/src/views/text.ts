// Text view: the whole run as running text. Observer mode: hovering a token
// shades every earlier token by how much the hovered one attended to it (its
// row); observed mode: every later token by how much it attended to the
// hovered one (its column). Double-click freezes; each mode keeps its own
// frozen token. Data: the dense matrix of the selection (float16) up to 2048
// positions, else rows / columns on demand (?pos=P, ?key=K).
import { labelText, shade, shadeColor, type Shading } from '../analysis';
import { outsideWindow, selectionWindow, windowNote, windowStart } from '../experts';
import { fmtNum, matrixCsv, parseBinMatrix, type ExportData, type Exportable, type Matrix } from '../datafile';
import { displayLabel, formatWeight } from '../model';
import { errText, getBinary, getJson, h, hideTip, isAbort, Lru, runPath, selKey, selQuery, selText, showTip, showTipAt } from './common';
import type { View, ViewContext } from './types';

export const DENSE_MAX = 2048;

export type TextMode = 'observer' | 'observed';

const matrices = new Lru<string, Promise<Matrix>>(3);

/** The dense attention matrix of a selection (n_pos x n_pos, float16 on the wire), cached per run + selection. */
export function loadDenseMatrix(ctx: Pick<ViewContext, 'base' | 'runId' | 'layer' | 'head'>): Promise<Matrix> {
  const key = `${ctx.base}|${selKey(ctx)}`;
  let p = matrices.get(key);
  if (!p) {
    p = getBinary(ctx.base, runPath(ctx.runId, `/attention?format=bin&dtype=float16${selQuery(ctx.layer, ctx.head)}`)).then(parseBinMatrix);
    matrices.set(key, p);
    p.catch(() => matrices.delete(key));
  }
  return p;
}

/** A dense matrix as export data (CSV with token headers, JSON, NPY). */
export function matrixExport(ctx: ViewContext, m: Matrix, what: string): ExportData {
  const name = (i: number) => `${i}:${displayLabel(ctx.tokens[i]?.label)}`;
  const rows: number[][] = [];
  for (let i = 0; i < m.rows; i++) rows.push(Array.from(m.data.subarray(i * m.cols, (i + 1) * m.cols), (x) => Number(fmtNum(x))));
  return {
    name: `attention-${what}`,
    json: {
      run: ctx.runId,
      selection: selText(ctx.layer, ctx.head),
      layer: ctx.layer,
      head: ctx.head,
      n_prompt: ctx.nPrompt,
      shape: [m.rows, m.cols],
      rows: 'query position',
      cols: 'key position',
      tokens: ctx.tokens.slice(0, Math.max(m.rows, m.cols)),
      data: rows,
    },
    csv: matrixCsv(m.rows, m.cols, m.data, name, name, 'query\\key'),
    npy: { shape: [m.rows, m.cols], data: m.data },
  };
}

interface Vec {
  /** weights of the shaded range; entry i is position i + offset */
  w: Float32Array;
  offset: number;
}

export function createTextView(root: HTMLElement): View & Exportable {
  root.classList.add('text-view');
  const modeObs = h('button', { type: 'button', class: 'seg', 'data-mode': 'observer', 'aria-pressed': 'true', title: 'Hover a token: what it attended to (earlier tokens)' }, 'Observer');
  const modeObd = h('button', { type: 'button', class: 'seg', 'data-mode': 'observed', 'aria-pressed': 'false', title: 'Hover a token: who attended to it (later tokens)' }, 'Observed');
  const bos = h('input', { type: 'checkbox', id: 'tv-bos' });
  const frozenChip = h('button', { type: 'button', class: 'frozen-chip', id: 'tv-frozen', hidden: true, title: 'Unfreeze (Esc)' });
  const legendMax = h('span', { class: 'tv-legend-max', text: '–' });
  const legend = h(
    'span',
    { class: 'tv-legend', 'aria-label': 'Shade scale' },
    h('span', { class: 'k', text: 'raw attention 0' }),
    h('span', { class: 'tv-ramp', 'aria-hidden': 'true' }),
    legendMax,
    h('span', { class: 'tv-top-key' }, h('span', { class: 'tt-demo rank1', text: 'top 3' }), ' underlined'),
  );
  const bar = h(
    'div',
    { class: 'view-bar' },
    h('span', { class: 'seg-group', role: 'group', 'aria-label': 'Mode' }, modeObs, modeObd),
    h('span', { class: 'check inline' }, bos, h('label', { for: 'tv-bos', text: 'BOS in the scale' })),
    legend,
  );
  const windowKey = h('span', { class: 'tv-window-key', hidden: true }, h('span', { class: 'tt-demo outside-window', 'aria-hidden': 'true', text: 'struck out' }), ' ');
  const windowText = h('span', { class: 'tv-window-text' });
  const windowBox = h('span', { class: 'tv-window note', id: 'tv-window', 'aria-live': 'polite' }, windowKey, windowText);
  bar.append(windowBox);
  const info = h('span', { class: 'note tv-info', id: 'tv-info' });
  const infoRow = h('div', { class: 'tv-status' }, frozenChip, info);
  const text = h('div', {
    class: 'tv-text',
    tabindex: 0,
    role: 'group',
    'aria-label': 'Run text: ←/→ move, Enter freezes, Esc unfreezes',
    'aria-describedby': 'tv-info',
  });
  const status = h('p', { class: 'note view-note' });
  root.append(bar, infoRow, status, text);

  let ctx: ViewContext | null = null;
  let visible = false;
  let tokKey = ''; // run whose tokens are rendered
  let dataKey = ''; // run + selection of the data
  let matrix: Matrix | null = null;
  let sparse = false;
  let nPos = 0;
  let spans: HTMLSpanElement[] = [];
  let mode: TextMode = 'observer';
  const frozen: Record<TextMode, number | null> = { observer: null, observed: null };
  let hover: number | null = null;
  let cursor: number | null = null;
  let byKey = false; // the keyboard moved last: its cursor wins over the mouse
  let shaded: number[] = [];
  let tops: number[] = [];
  let outside: number[] = []; // tokens marked outside the sliding window
  let curStep = -1;
  let lastShade: { focus: number; sh: Shading; vec: Vec } | null = null;
  let load = 0;
  const rows = new Lru<string, Promise<Float32Array>>(256);
  let abort: AbortController | null = null;

  root.dataset.mode = mode;

  const focusPos = (): number | null => frozen[mode] ?? (byKey ? (cursor ?? hover) : (hover ?? cursor));

  function setMode(m: TextMode): void {
    mode = m;
    root.dataset.mode = m;
    modeObs.setAttribute('aria-pressed', String(m === 'observer'));
    modeObd.setAttribute('aria-pressed', String(m === 'observed'));
    update();
  }
  modeObs.addEventListener('click', () => setMode('observer'));
  modeObd.addEventListener('click', () => setMode('observed'));
  bos.addEventListener('change', () => update());
  frozenChip.addEventListener('click', () => unfreeze());

  function freeze(p: number): void {
    frozen[mode] = p;
    update();
  }
  function unfreeze(): void {
    if (frozen[mode] === null) return;
    frozen[mode] = null;
    update();
  }

  // ------------------------------------------------------------ data

  /** The weight vector the focus needs: its row (observer) or column (observed). */
  function vecOf(p: number): Vec | Promise<Vec> | null {
    if (!ctx) return null;
    if (mode === 'observer') {
      if (p >= nPos) return null; // the last token was never fed back: no row
      if (matrix) return { w: matrix.data.subarray(p * nPos, p * nPos + p + 1), offset: 0 };
      return fetchVec('pos', p).then((w) => ({ w, offset: 0 }));
    }
    if (p >= nPos) return { w: new Float32Array(0), offset: p };
    if (matrix) {
      const w = new Float32Array(nPos - p);
      for (let q = p; q < nPos; q++) w[q - p] = matrix.data[q * nPos + p];
      return { w, offset: p };
    }
    return fetchVec('key', p).then((w) => ({ w, offset: p }));
  }

  function fetchVec(kind: 'pos' | 'key', p: number): Promise<Float32Array> {
    const c = ctx!;
    const key = `${dataKey}|${kind}|${p}`;
    let r = rows.get(key);
    if (!r) {
      r = getJson<{ row?: number[]; col?: number[] }>(c.base, runPath(c.runId, `/attention?${kind}=${p}${selQuery(c.layer, c.head)}`)).then(
        (j) => Float32Array.from((kind === 'pos' ? j.row : j.col) ?? []),
      );
      rows.set(key, r);
      r.catch(() => rows.delete(key));
    }
    return r;
  }

  async function loadData(c: ViewContext): Promise<void> {
    const my = ++load;
    abort?.abort();
    abort = null;
    matrix = null;
    lastShade = null;
    nPos = Math.max(0, c.nPrompt + c.nOutput - 1);
    sparse = nPos > DENSE_MAX;
    root.dataset.nPos = String(nPos);
    root.dataset.sparse = String(sparse);
    root.dataset.status = 'loading';
    if (sparse) {
      status.textContent = `${nPos} positions: rows and columns are read on demand (${selText(c.layer, c.head)}).`;
      root.dataset.status = 'ready';
      update();
      return;
    }
    status.textContent = `Loading the attention matrix (${selText(c.layer, c.head)})…`;
    try {
      const m = await loadDenseMatrix(c);
      if (my !== load) return;
      if (m.rows !== nPos || m.cols !== nPos) throw new Error(`matrix ${m.rows}x${m.cols}, expected ${nPos}x${nPos}`);
      matrix = m;
      status.textContent = '';
      root.dataset.status = 'ready';
      update();
    } catch (err) {
      if (my !== load || isAbort(err)) return;
      status.textContent = `The attention matrix could not be read: ${errText(err)}`;
      root.dataset.status = 'error';
    }
  }

  // ------------------------------------------------------------ rendering

  function renderTokens(c: ViewContext): void {
    text.textContent = '';
    spans = [];
    const frag = document.createDocumentFragment();
    c.tokens.forEach((t, i) => {
      const s = document.createElement('span');
      s.className = i < c.nPrompt ? 'tt' : 'tt out';
      if (i === c.nPrompt) s.classList.add('first-out');
      s.dataset.pos = String(i);
      const lab = t.label ?? '';
      if (lab === '' || /^\[.*\]$/.test(lab)) {
        s.textContent = displayLabel(lab);
        s.classList.add('special');
      } else s.textContent = labelText(lab);
      spans.push(s);
      frag.appendChild(s);
    });
    text.appendChild(frag);
    shaded = [];
    tops = [];
    curStep = -1;
  }

  function clearShade(): void {
    for (const p of shaded) {
      const s = spans[p];
      if (!s) continue;
      s.style.backgroundColor = '';
      delete s.dataset.w;
    }
    for (const p of tops) {
      const s = spans[p];
      if (s) {
        s.classList.remove('rank1', 'rank2', 'rank3');
        delete s.dataset.rank;
      }
    }
    shaded = [];
    tops = [];
    for (const p of outside) spans[p]?.classList.remove('outside-window');
    outside = [];
  }

  /** The selection's sliding window (0: none, or the selected layers differ). */
  function win(): number {
    return ctx ? selectionWindow(ctx.layerWindow, ctx.layer) : 0;
  }

  /** The legend's words on the window (and the focus's part outside it). */
  function windowLegend(p: number | null): void {
    const c = ctx;
    const note = c ? windowNote(c.layerWindow, c.layer) : '';
    const w = win();
    root.dataset.slidingWindow = String(w);
    windowKey.hidden = w <= 0;
    let t = note ? note.charAt(0).toUpperCase() + note.slice(1) : '';
    if (w > 0 && p !== null && c) {
      if (mode === 'observer' && p >= w) t += `: “${displayLabel(c.tokens[p]?.label)}” (${p}) sees positions ${windowStart(p, w)}–${p}; the struck-out tokens before them get exactly 0`;
      else if (mode === 'observed' && p + w < nPos) t += `: only positions ${p + 1}–${p + w - 1} see “${displayLabel(c.tokens[p]?.label)}” (${p}); the struck-out later ones give it exactly 0`;
    }
    windowText.textContent = t ? t + '.' : '';
    windowBox.hidden = !t;
  }

  /** Marks the tokens outside the focus's window: keys before it (observer) or queries too far after it (observed). */
  function markOutside(p: number): void {
    const w = win();
    if (w <= 0) return;
    if (mode === 'observer') {
      for (let i = 0; i < p && outsideWindow(p, i, w); i++) outside.push(i);
    } else {
      for (let q = p + w; q < nPos; q++) if (outsideWindow(q, p, w)) outside.push(q);
    }
    for (const i of outside) spans[i]?.classList.add('outside-window');
    root.dataset.outside = String(outside.length);
  }

  function markFocus(p: number | null): void {
    text.querySelectorAll('.tt.focus').forEach((e) => e.classList.remove('focus'));
    if (p !== null && spans[p]) spans[p].classList.add('focus');
    text.querySelectorAll('.tt.cursor').forEach((e) => e.classList.remove('cursor'));
    if (cursor !== null && spans[cursor]) spans[cursor].classList.add('cursor');
  }

  let pending = 0;

  function update(): void {
    if (!ctx) return;
    const p = focusPos();
    const f = frozen[mode];
    root.dataset.focus = p === null ? '' : String(p);
    root.dataset.frozen = f === null ? '' : String(f);
    frozenChip.hidden = f === null;
    if (f !== null) frozenChip.textContent = `❄ Frozen on “${displayLabel(ctx.tokens[f]?.label)}” (${f}) — click to unfreeze`;
    markFocus(p);
    windowLegend(p);
    if (p === null) {
      clearShade();
      root.dataset.outside = '0';
      lastShade = null;
      legendMax.textContent = '–';
      info.textContent =
        mode === 'observer'
          ? 'Observer: hover a token to shade the earlier tokens by how much it attended to them. Double-click freezes.'
          : 'Observed: hover a token to shade the later tokens by how much they attended to it. Double-click freezes.';
      root.dataset.shaded = '0';
      return;
    }
    const v = vecOf(p);
    if (v === null) {
      clearShade();
      lastShade = null;
      legendMax.textContent = '–';
      info.textContent = `“${displayLabel(ctx.tokens[p]?.label)}” (${p}) is the last token: it was never fed back, so it has no attention row.`;
      root.dataset.shaded = '0';
      return;
    }
    if (v instanceof Promise) {
      const my = ++pending;
      info.textContent = 'Loading…';
      v.then((vec) => {
        if (my === pending && focusPos() === p) apply(p, vec);
      }).catch((err) => {
        if (my === pending) info.textContent = `Could not read the attention: ${errText(err)}`;
      });
      return;
    }
    pending++;
    apply(p, v);
  }

  function apply(p: number, vec: Vec): void {
    const c = ctx!;
    const n = spans.length;
    const skipBos = !bos.checked && mode === 'observer';
    const sh =
      mode === 'observer'
        ? shade(n, vec.w, vec.offset, 0, p, (i) => skipBos && i === 0)
        : shade(n, vec.w, vec.offset, p + 1, Math.min(nPos, vec.offset + vec.w.length));
    clearShade();
    const lo = mode === 'observer' ? 0 : p + 1;
    const hi = mode === 'observer' ? p : Math.min(nPos, vec.offset + vec.w.length);
    for (let i = lo; i < hi; i++) {
      const w = Number(vec.w[i - vec.offset]);
      const s = spans[i];
      if (!s) continue;
      s.dataset.w = formatWeight(w);
      const col = shadeColor(sh.alpha[i]);
      if (col) s.style.backgroundColor = col;
      shaded.push(i);
    }
    sh.top.forEach((q, r) => {
      const s = spans[q];
      if (!s) return;
      s.classList.add(`rank${r + 1}`);
      s.dataset.rank = String(r + 1);
    });
    tops = sh.top.slice();
    markOutside(p);
    lastShade = { focus: p, sh, vec };
    root.dataset.shaded = String(shaded.length);
    root.dataset.top = sh.top.join(',');
    legendMax.textContent = sh.max > 0 ? formatWeight(sh.max) : '–';
    const lab = displayLabel(c.tokens[p]?.label);
    const topText = sh.top.map((q) => `“${displayLabel(c.tokens[q]?.label)}” ${formatWeight(Number(vec.w[q - vec.offset]))}`).join(', ');
    info.textContent =
      mode === 'observer'
        ? `Raw attention: “${lab}” (${p}) attended most to ${topText || 'nothing shaded'}${skipBos && p > 0 ? ` · BOS ${formatWeight(Number(vec.w[0]))} (not in the scale)` : ''}.`
        : `Raw attention: attended most to “${lab}” (${p}): ${topText || 'no later token'}.`;
  }

  function setStepMarker(c: ViewContext): void {
    const pos = c.nOutput > 0 ? c.nPrompt + c.step : -1;
    if (curStep === pos) return;
    if (curStep >= 0 && spans[curStep]) spans[curStep].classList.remove('cur');
    curStep = pos;
    if (pos >= 0 && spans[pos]) spans[pos].classList.add('cur');
  }

  // ------------------------------------------------------------ events

  const posOf = (e: Event): number | null => {
    const s = (e.target as HTMLElement).closest?.('.tt') as HTMLElement | null;
    return s && text.contains(s) ? Number(s.dataset.pos) : null;
  };

  text.addEventListener('mouseover', (e) => {
    const p = posOf(e);
    if (p === null) return;
    if (hover !== p || byKey) {
      hover = p;
      byKey = false;
      if (frozen[mode] === null) update();
    }
    tipFor(p, e as MouseEvent);
  });
  text.addEventListener('mousemove', (e) => {
    const p = posOf(e);
    if (p !== null) tipFor(p, e);
  });
  text.addEventListener('mouseleave', () => {
    hover = null;
    hideTip(root);
    if (frozen[mode] === null) update();
  });
  text.addEventListener('mousedown', (e) => {
    if (e.detail > 1) e.preventDefault(); // no word selection on double-click
  });
  text.addEventListener('dblclick', (e) => {
    const p = posOf(e);
    if (p === null) return;
    if (frozen[mode] === p) unfreeze();
    else freeze(p);
  });

  function tipFor(p: number, e: MouseEvent | null): void {
    if (!ctx) return;
    const t = ctx.tokens[p];
    const where = p < ctx.nPrompt ? `prompt ${p}` : `output ${p - ctx.nPrompt}`;
    const lines: [string, string][] = [['pos', `${p} (${where}) · id ${t?.id ?? '?'}`]];
    const ls = lastShade;
    if (ls && ls.focus !== p) {
      const i = p - ls.vec.offset;
      const inRange = mode === 'observer' ? p < ls.focus : p > ls.focus && i < ls.vec.w.length;
      if (inRange && i >= 0) {
        const w = Number(ls.vec.w[i]);
        lines.push([
          mode === 'observer' ? `raw attention from “${displayLabel(ctx.tokens[ls.focus]?.label)}”` : `raw attention to “${displayLabel(ctx.tokens[ls.focus]?.label)}”`,
          formatWeight(w) + (ls.sh.max > 0 ? ` (${Math.round((100 * w) / ls.sh.max)}% of the max)` : ''),
        ]);
      }
    } else if (ls && ls.focus === p) {
      lines.push(['top', ls.sh.top.map((q) => `${displayLabel(ctx!.tokens[q]?.label)} ${formatWeight(Number(ls.vec.w[q - ls.vec.offset]))}`).join(' · ') || '–']);
    }
    if (spans[p]?.classList.contains('outside-window') && ls)
      lines.push(['window', `outside the sliding window of ${win()} tokens (${ctx.layer === null ? 'every layer' : `layer ${ctx.layer}`}): weight exactly 0`]);
    const title = `“${displayLabel(t?.label)}”`;
    if (e) showTip(root, e.clientX, e.clientY, title, lines);
    else if (spans[p]) showTipAt(root, spans[p], title, lines);
  }

  text.addEventListener('focus', () => {
    if (!ctx) return;
    byKey = true;
    if (cursor === null) cursor = ctx.nOutput > 0 ? Math.min(spans.length - 1, ctx.nPrompt + ctx.step) : 0;
    update();
  });
  text.addEventListener('blur', () => {
    cursor = null;
    hideTip(root);
    update();
  });
  text.addEventListener('keydown', (e) => {
    if (!ctx || e.altKey || e.ctrlKey || e.metaKey) return;
    const n = spans.length;
    if (n === 0) return;
    let to = cursor ?? 0;
    if (e.key === 'ArrowLeft') to--;
    else if (e.key === 'ArrowRight') to++;
    else if (e.key === 'Home') to = 0;
    else if (e.key === 'End') to = n - 1;
    else if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      if (frozen[mode] !== null) unfreeze();
      else freeze(to);
      return;
    } else if (e.key === 'Escape') {
      if (frozen[mode] !== null) {
        e.preventDefault();
        unfreeze();
      }
      return;
    } else return;
    e.preventDefault();
    byKey = true;
    cursor = Math.max(0, Math.min(n - 1, to));
    spans[cursor].scrollIntoView({ block: 'nearest' });
    update();
    tipFor(cursor, null);
  });
  document.addEventListener('keydown', (e) => {
    if (visible && e.key === 'Escape' && !e.defaultPrevented && frozen[mode] !== null) unfreeze();
  });

  // ------------------------------------------------------------ View

  return {
    show(c: ViewContext): void {
      visible = true;
      const tk = `${c.runId}|${c.tokens.length}`;
      if (tk !== tokKey) {
        tokKey = tk;
        frozen.observer = frozen.observed = null;
        hover = cursor = null;
        renderTokens(c);
      }
      ctx = c;
      setStepMarker(c);
      const dk = selKey(c);
      if (dk !== dataKey) {
        dataKey = dk;
        void loadData(c);
      }
    },
    hide(): void {
      visible = false;
      hideTip(root);
    },
    exportData(): ExportData | null | Promise<ExportData | null> {
      const c = ctx;
      if (!c) return null;
      if (matrix) return matrixExport(c, matrix, 'text');
      const ls = lastShade;
      if (!ls) return loadDenseMatrix(c).then((m) => matrixExport(c, m, 'text')); // nothing hovered: the whole matrix, read now
      const kind = mode === 'observer' ? 'row' : 'col';
      const pos = Array.from(ls.vec.w, (_, i) => i + ls.vec.offset);
      return {
        name: `attention-${kind}-${ls.focus}`,
        json: { run: c.runId, selection: selText(c.layer, c.head), mode, focus: ls.focus, positions: pos, weights: Array.from(ls.vec.w, (x) => Number(fmtNum(x))) },
        csv:
          'pos,label,weight\r\n' +
          pos.map((p, i) => `${p},"${displayLabel(c.tokens[p]?.label).replace(/"/g, '""')}",${fmtNum(ls.vec.w[i])}`).join('\r\n') +
          '\r\n',
        npy: { shape: [ls.vec.w.length], data: ls.vec.w },
      };
    },
  };
}
