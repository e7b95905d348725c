// Compare: the open run (A) and a second run (B) side by side, aligned by
// token (a longest common subsequence of ids; unmatched tokens are gaps),
// with the split attention rows of the current step in both runs on the
// aligned positions and their difference B − A as a diverging bar. Rows are
// virtualized.
import { alignTokens, diffAligned, matchedCount, partnersOfA, signed, splitRow, type AlignPair, type DiffRow } from '../analysis';
import { csvField, fmtNum, type ExportData, type Exportable } from '../datafile';
import { displayLabel, formatWeight, type GraphReply } from '../model';
import { errText, frameTask, getJson, h, hideTip, Lru, runPath, selKey, selQuery, selText, showTip } from './common';
import type { View, ViewContext } from './types';

interface RunDocLite {
  id: string;
  n_prompt: number;
  n_output: number;
  prompt?: string | null;
  tokens: { id: number; label: string }[];
}
interface RunItem {
  id: string;
  n_prompt: number;
  n_output: number;
  preview?: string | null;
  created?: number;
}

export interface CompareDeps {
  /** the second run (from the URL), null: none */
  cmp(): string | null;
  setCmp(id: string | null): void;
}

const ROW_H = 24;
const OVERSCAN = 8;
const docs = new Lru<string, Promise<RunDocLite>>(8);
const graphs = new Lru<string, Promise<GraphReply>>(8);

function loadDoc(base: string, id: string): Promise<RunDocLite> {
  let p = docs.get(base + '|' + id);
  if (!p) {
    p = getJson<RunDocLite>(base, runPath(id));
    docs.set(base + '|' + id, p);
    p.catch(() => docs.delete(base + '|' + id));
  }
  return p;
}
function loadGraph(base: string, id: string, layer: number | null, head: number | null): Promise<GraphReply> {
  const key = `${base}|${selKey({ runId: id, layer, head })}`;
  let p = graphs.get(key);
  if (!p) {
    const q = selQuery(layer, head);
    p = getJson<GraphReply>(base, runPath(id, '/graph' + (q ? '?' + q.slice(1) : '')));
    graphs.set(key, p);
    p.catch(() => graphs.delete(key));
  }
  return p;
}

export function createCompareView(root: HTMLElement, deps: CompareDeps): View & Exportable {
  root.classList.add('compare-view');
  const select = h('select', { id: 'cmp-run' });
  const refresh = h('button', { type: 'button', id: 'cmp-refresh', title: 'Reload the run list' }, '↻');
  const bar = h('div', { class: 'view-bar' }, h('label', { for: 'cmp-run', text: 'Compare with' }), select, refresh);
  const summary = h('p', { class: 'note cmp-summary', role: 'status' });
  const query = h('p', { class: 'cmp-query' });
  const legend = h(
    'p',
    { class: 'legend cmp-legend' },
    h('span', { class: 'lg' }, h('span', { class: 'swatch pos' }), 'B − A > 0: B attends more (orange, +)'),
    h('span', { class: 'lg' }, h('span', { class: 'swatch neg' }), 'B − A < 0: A attends more (blue, −)'),
    h('span', { class: 'lg' }, h('span', { class: 'gapcell demo', text: '—' }), 'gap: no partner'),
  );
  const header = h(
    'div',
    { class: 'cmp-row cmp-header', 'aria-hidden': 'true' },
    h('span', { class: 'c-pos', text: 'A pos' }),
    h('span', { class: 'c-tok', text: 'run A' }),
    h('span', { class: 'c-w', text: 'A' }),
    h('span', { class: 'c-diff', text: 'B − A' }),
    h('span', { class: 'c-w', text: 'B' }),
    h('span', { class: 'c-tok', text: 'run B' }),
    h('span', { class: 'c-pos', text: 'B pos' }),
  );
  const scroller = h('div', { class: 'cmp-scroll', tabindex: 0, role: 'table', 'aria-label': 'Aligned tokens of run A and run B' });
  const spacer = h('div', { class: 'cmp-spacer' });
  const rowsEl = h('div', { class: 'cmp-rows', role: 'rowgroup' });
  spacer.append(rowsEl);
  scroller.append(spacer);
  root.append(bar, summary, query, legend, header, scroller);

  let ctx: ViewContext | null = null;
  let runs: RunItem[] = [];
  let listFor = '';
  let docB: RunDocLite | null = null;
  let pairs: AlignPair[] = [];
  let alignKey = '';
  let rows: DiffRow[] = [];
  let gA: GraphReply | null = null;
  let gB: GraphReply | null = null;
  let stepB = -1;
  let aligned = false;
  let qA = -1;
  let qB = -1;
  let maxAbs = 0;
  let load = 0;
  let range: [number, number] = [0, -1];

  async function loadList(c: ViewContext): Promise<void> {
    try {
      const r = await getJson<{ runs: RunItem[] }>(c.base, '/api/runs?limit=200');
      runs = r.runs;
    } catch (err) {
      summary.textContent = `The run list could not be read: ${errText(err)}`;
      runs = [];
    }
    fillSelect();
  }

  function fillSelect(): void {
    const c = ctx;
    const want = deps.cmp();
    select.textContent = '';
    select.add(new Option('— pick a run —', ''));
    for (const r of runs) {
      if (c && r.id === c.runId) continue;
      const text = `${(r.preview ?? '(no prompt text)').slice(0, 48)} · ${r.n_prompt}→${r.n_output} · ${r.id}`;
      select.add(new Option(text, r.id));
    }
    if (want && !runs.some((r) => r.id === want) && want !== c?.runId) select.add(new Option(want, want));
    select.value = want ?? '';
  }

  select.addEventListener('change', () => deps.setCmp(select.value || null));
  refresh.addEventListener('click', () => {
    if (ctx) void loadList(ctx);
  });

  async function update(c: ViewContext): Promise<void> {
    const idB = deps.cmp();
    root.dataset.cmp = idB ?? '';
    if (!idB || idB === c.runId) {
      docB = null;
      rows = [];
      pairs = [];
      alignKey = '';
      rowsEl.textContent = '';
      spacer.style.height = '0px';
      query.textContent = '';
      summary.textContent = idB === c.runId ? 'Pick another run than the open one.' : 'Pick a second run to compare with the open one.';
      root.dataset.status = 'idle';
      return;
    }
    const my = ++load;
    root.dataset.status = 'loading';
    try {
      const [a, b, ga, gb] = await Promise.all([
        loadDoc(c.base, c.runId),
        loadDoc(c.base, idB),
        loadGraph(c.base, c.runId, c.layer, c.head),
        loadGraph(c.base, idB, c.layer, c.head),
      ]);
      if (my !== load) return;
      docB = b;
      gA = ga;
      gB = gb;
      const key = `${c.runId}|${idB}`;
      if (key !== alignKey) {
        alignKey = key;
        pairs = alignTokens(
          a.tokens.map((t) => t.id),
          b.tokens.map((t) => t.id),
        );
      }
      compute(c, a, b);
      root.dataset.status = 'ready';
    } catch (err) {
      if (my !== load) return;
      root.dataset.status = 'error';
      summary.textContent = `Run ${idB} could not be compared: ${errText(err)}`;
    }
  }

  function compute(c: ViewContext, a: RunDocLite, b: RunDocLite): void {
    const partner = partnersOfA(pairs, a.tokens.length);
    const t = c.step;
    qA = a.n_prompt + t;
    const pb = qA < partner.length ? partner[qA] : -1;
    aligned = pb >= b.n_prompt && pb - b.n_prompt < b.n_output;
    stepB = aligned ? pb - b.n_prompt : Math.min(t, b.n_output - 1);
    qB = stepB >= 0 ? b.n_prompt + stepB : -1;
    const rowA = gA && t < gA.prompt.length ? splitRow(gA.prompt[t], gA.output[t]) : new Float32Array(0);
    const rowB = gB && stepB >= 0 && stepB < gB.prompt.length ? splitRow(gB.prompt[stepB], gB.output[stepB]) : new Float32Array(0);
    rows = diffAligned(pairs, rowA, rowB);
    maxAbs = 0;
    for (const r of rows) if (r.d !== null) maxAbs = Math.max(maxAbs, Math.abs(r.d));
    const matched = matchedCount(pairs);
    const gapsA = pairs.filter((p) => p.b === null).length;
    const gapsB = pairs.filter((p) => p.a === null).length;
    root.dataset.matched = String(matched);
    root.dataset.gapsA = String(gapsA);
    root.dataset.gapsB = String(gapsB);
    root.dataset.stepB = String(stepB);
    root.dataset.aligned = String(aligned);
    summary.textContent = `A: ${c.runId} (${a.tokens.length} tokens) · B: ${b.id} (${b.tokens.length} tokens) · ${matched} aligned, ${gapsA} only in A, ${gapsB} only in B · ${selText(c.layer, c.head)}.`;
    const la = displayLabel(a.tokens[qA]?.label);
    const lb = qB >= 0 ? displayLabel(b.tokens[qB]?.label) : '–';
    query.textContent =
      stepB < 0
        ? `A step ${t + 1} (“${la}”): run B has no generated tokens.`
        : `Rows of A step ${t + 1} (“${la}”) and B step ${stepB + 1} (“${lb}”)${aligned ? ', aligned tokens' : ' — not aligned: B’s step of the same index'}; split weights (prompt and output parts each sum to 1).`;
    spacer.style.height = `${rows.length * ROW_H}px`;
    range = [0, -1];
    render();
    // keep A's query row in view
    const qi = rows.findIndex((r) => r.a === qA);
    if (qi >= 0) {
      const y = qi * ROW_H;
      if (y < scroller.scrollTop || y + ROW_H > scroller.scrollTop + scroller.clientHeight)
        scroller.scrollTop = Math.max(0, y - scroller.clientHeight / 2);
      render();
    }
  }

  function visibleRows(): [number, number] {
    const a = Math.max(0, Math.floor(scroller.scrollTop / ROW_H) - OVERSCAN);
    const b = Math.min(rows.length - 1, Math.ceil((scroller.scrollTop + Math.max(scroller.clientHeight, 200)) / ROW_H) + OVERSCAN);
    return [a, b];
  }

  function render(): void {
    const c = ctx;
    const b = docB;
    if (!c || !b) return;
    const [lo, hi] = visibleRows();
    range = [lo, hi];
    const frag = document.createDocumentFragment();
    const tokA = c.tokens;
    for (let i = lo; i <= hi; i++) {
      const r = rows[i];
      const isQ = r.a === qA || (r.b !== null && r.b === qB);
      const el = h('div', {
        class: 'cmp-row' + (r.a === null || r.b === null ? ' gap' : '') + (isQ ? ' query' : '') + (r.a !== null && r.a >= c.nPrompt ? ' a-out' : ''),
        role: 'row',
        style: `top:${i * ROW_H}px`,
        'data-row': i,
        'data-a': r.a ?? '',
        'data-b': r.b ?? '',
        'data-d': r.d === null ? '' : fmtNum(r.d),
      });
      const cellTok = (pos: number | null, toks: { id: number; label: string }[], nPrompt: number) =>
        pos === null
          ? h('span', { class: 'c-tok gapcell', role: 'cell', text: '—', 'aria-label': 'gap' })
          : h('span', { class: 'c-tok' + (pos >= nPrompt ? ' out' : ''), role: 'cell', title: `pos ${pos} · id ${toks[pos]?.id}`, text: displayLabel(toks[pos]?.label) });
      const w = (x: number | null) => h('span', { class: 'c-w', role: 'cell', text: x === null ? '' : x.toFixed(3) });
      const diff = h('span', { class: 'c-diff', role: 'cell' });
      if (r.d !== null) {
        const frac = maxAbs > 0 ? Math.min(1, Math.abs(r.d) / maxAbs) : 0;
        diff.append(
          h('span', { class: 'diff-axis', 'aria-hidden': 'true' }),
          h('span', { class: 'diff-bar ' + (r.d >= 0 ? 'pos' : 'neg'), style: `width:${(50 * frac).toFixed(2)}%`, 'aria-hidden': 'true' }),
          h('span', { class: 'diff-text ' + (r.d >= 0 ? 'pos' : 'neg'), text: signed(r.d) }),
        );
      }
      el.append(
        h('span', { class: 'c-pos', role: 'cell', text: r.a === null ? '' : String(r.a) }),
        cellTok(r.a, tokA, c.nPrompt),
        w(r.wa),
        diff,
        w(r.wb),
        cellTok(r.b, b.tokens, b.n_prompt),
        h('span', { class: 'c-pos', role: 'cell', text: r.b === null ? '' : String(r.b) }),
      );
      frag.append(el);
    }
    rowsEl.replaceChildren(frag);
  }

  const onScroll = frameTask(() => {
    const [a, b] = visibleRows();
    if (a !== range[0] || b !== range[1]) render();
  });
  scroller.addEventListener('scroll', () => onScroll.request());
  new ResizeObserver(() => {
    if (docB) render();
  }).observe(scroller);
  rowsEl.addEventListener('click', (e) => {
    const row = (e.target as HTMLElement).closest('.cmp-row') as HTMLElement | null;
    const c = ctx;
    if (!row || !c || row.dataset.a === '') return;
    const a = Number(row.dataset.a);
    if (a >= c.nPrompt) c.setStep(a - c.nPrompt);
  });
  rowsEl.addEventListener('mousemove', (e) => {
    const row = (e.target as HTMLElement).closest('.cmp-row') as HTMLElement | null;
    if (!row) return hideTip(root);
    const r = rows[Number(row.dataset.row)];
    if (!r || !ctx || !docB) return;
    const la = r.a === null ? '—' : `“${displayLabel(ctx.tokens[r.a]?.label)}” (pos ${r.a})`;
    const lb = r.b === null ? '—' : `“${displayLabel(docB.tokens[r.b]?.label)}” (pos ${r.b})`;
    showTip(root, e.clientX, e.clientY, `${la} ↔ ${lb}`, [
      ['A weight', r.wa === null ? '–' : formatWeight(r.wa)],
      ['B weight', r.wb === null ? '–' : formatWeight(r.wb)],
      ['B − A', r.d === null ? '–' : signed(r.d, 4)],
    ]);
  });
  rowsEl.addEventListener('mouseleave', () => hideTip(root));

  return {
    show(c: ViewContext): void {
      ctx = c;
      if (listFor !== c.runId) {
        listFor = c.runId;
        void loadList(c);
      } else if (select.value !== (deps.cmp() ?? '')) fillSelect();
      void update(c);
    },
    hide(): void {
      hideTip(root);
    },
    exportData(): ExportData | null {
      const c = ctx;
      const b = docB;
      if (!c || !b || !rows.length) return null;
      const csv = ['a_pos,a_label,a_weight,b_pos,b_label,b_weight,b_minus_a'];
      const arr = new Float32Array(rows.length * 3);
      rows.forEach((r, i) => {
        csv.push(
          [r.a ?? '', r.a === null ? '' : csvField(c.tokens[r.a]?.label ?? ''), r.wa === null ? '' : fmtNum(r.wa), r.b ?? '', r.b === null ? '' : csvField(b.tokens[r.b]?.label ?? ''), r.wb === null ? '' : fmtNum(r.wb), r.d === null ? '' : fmtNum(r.d)].join(','),
        );
        arr[3 * i] = r.wa ?? NaN;
        arr[3 * i + 1] = r.wb ?? NaN;
        arr[3 * i + 2] = r.d ?? NaN;
      });
      return {
        name: `compare-${b.id}`,
        json: { a: c.runId, b: b.id, step_a: c.step, step_b: stepB, aligned, selection: selText(c.layer, c.head), rows },
        csv: csv.join('\r\n') + '\r\n',
        npy: { shape: [rows.length, 3], data: arr },
      };
    },
  };
}
