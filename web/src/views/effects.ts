// Effects of an intervention: for a run made as a branch of another (its
// document's `branch`, usually with `interventions`), GET
// /api/runs/{id}/effects?base=<branch.run> per step: both runs' tokens, the
// first step they part, a bar of the KL lower bound, and the base token's
// probability before → after. Clicking a row moves the step.
import type { RunDoc } from '../api';
import { toCsv, type ExportData, type Exportable } from '../datafile';
import { describeIntervention, effectsRows, formatKl, type EffectsReply, type EffectsRow } from '../interventions';
import { displayLabel } from '../model';
import { errText, getJson, h, hideTip, isAbort, Lru, note, runPath, showTip, showTipAt } from './common';
import type { View, ViewContext } from './types';

export interface EffectsDeps {
  /** opens another stored run (the base) */
  openRun(id: string): void;
}

const KL_TIP =
  'A lower bound of KL(base ‖ this run) in nats: the two next-token distributions compared on the tokens both runs stored among their 20 candidates plus “everything else”; merging outcomes never increases a divergence, so the true KL is at least this (docs/ANALYSIS.md, “Effects”).';

interface Loaded {
  reply: EffectsReply;
  base: RunDoc;
  rows: EffectsRow[];
}

const cache = new Lru<string, Promise<Loaded>>(16);

export function createEffectsView(root: HTMLElement, deps: EffectsDeps): View & Exportable {
  root.classList.add('effects-view');
  root.dataset.status = 'idle';
  const head = h('div', { class: 'eff-head' });
  const summary = h('p', { class: 'eff-summary', role: 'status' });
  const table = h('table', { class: 'eff-table' });
  const caption = h('caption', { class: 'visually-hidden', text: 'Per step: both runs’ tokens, the KL lower bound and the base token’s probability' });
  const thead = h(
    'thead',
    {},
    h(
      'tr',
      {},
      h('th', { scope: 'col', text: 'step' }),
      h('th', { scope: 'col', text: 'base' }),
      h('th', { scope: 'col', text: 'this run' }),
      h('th', { scope: 'col', title: KL_TIP, class: 'eff-kl-h' }, 'KL ≥ ', h('span', { class: 'eff-info', text: '(lower bound)' })),
      h('th', { scope: 'col', text: 'p(base token): before → after' }),
    ),
  );
  const tbody = h('tbody');
  table.append(caption, thead, tbody);
  const foot = h(
    'p',
    { class: 'note eff-note' },
    'KL ≥: a lower bound of KL(base ‖ this run), computed from the stored top-20 candidates of both runs (the full distributions are not stored); “< x” means the base token is not among this run’s candidates, so its probability is below the smallest one. Steps before the branch point reuse the base’s outputs (their numbers differ only through the intervention).',
  );
  root.append(head, summary, table, foot);

  let ctx: ViewContext | null = null;
  let key = '';
  let loaded: Loaded | null = null;
  let load = 0;
  let ctl: AbortController | null = null;

  function load_(c: ViewContext): Promise<Loaded> {
    const baseId = c.branch!.run;
    const k = `${c.runId}|${baseId}`;
    let p = cache.get(k);
    if (!p) {
      const runTokens = { n_prompt: c.nPrompt, tokens: c.tokens };
      const branchStep = c.branch!.step;
      p = Promise.all([
        getJson<EffectsReply>(c.base, runPath(c.runId, `/effects?base=${encodeURIComponent(baseId)}`)),
        getJson<RunDoc>(c.base, runPath(baseId)),
      ]).then(([reply, base]) => ({ reply, base, rows: effectsRows(reply, base, runTokens, branchStep) }));
      p.catch(() => cache.delete(k));
      cache.set(k, p);
    }
    return p;
  }

  function renderHead(c: ViewContext): void {
    head.textContent = '';
    const b = c.branch!;
    const ivs = c.interventions ?? [];
    const open = h('button', { type: 'button', class: 'link eff-open-base', 'data-run-id': b.run, title: 'Open the run this one branched from' }, b.run);
    open.addEventListener('click', () => deps.openRun(b.run));
    head.append(
      h('p', {}, `This run branched from `, open, ` at step ${b.step + 1}${b.token !== null && b.token !== undefined ? ` (token #${b.token} forced)` : ''}.`),
      ivs.length
        ? h('ul', { class: 'eff-ivs', 'aria-label': 'Interventions' }, ...ivs.map((iv) => h('li', { 'data-type': iv.type, text: describeIntervention(iv) })))
        : h('p', { class: 'note', text: 'No interventions: a resampled or forced branch.' }),
    );
  }

  function render(c: ViewContext, L: Loaded): void {
    const r = L.reply;
    const fd = r.first_diff;
    summary.textContent =
      (fd === null ? `The chosen tokens agree on all ${r.n_steps} steps compared` : `The runs part at step ${fd + 1} of ${r.n_steps}`) +
      ` · mean KL ≥ ${formatKl(r.mean_kl_lower_bound)} nats`;
    root.dataset.firstDiff = fd === null ? '' : String(fd);
    root.dataset.nSteps = String(r.n_steps);
    tbody.textContent = '';
    const frag = document.createDocumentFragment();
    for (const row of L.rows) {
      const tr = h(
        'tr',
        {
          class: `eff-row${row.differs ? ' differs' : ''}${row.firstDiff ? ' first-diff' : ''}${row.reused ? ' reused' : ''}`,
          'data-step': row.step,
          'data-base-id': row.baseId,
          'data-id': row.id,
          'data-kl': row.kl,
          'data-p-base': row.probBefore,
          'data-p': row.probAfter ?? '',
          'data-p-below': row.probBelow ?? '',
          tabindex: -1,
        },
        h('td', { class: 'eff-step' }, String(row.step + 1), row.firstDiff ? h('span', { class: 'eff-marker', title: 'first difference', text: ' ◆ first difference' }) : null, row.reused ? h('span', { class: 'eff-reused', title: 'output reused from the base run', text: ' (reused)' }) : null),
        h('td', { class: 'eff-tok eff-base-tok', title: `id ${row.baseId}` }, displayLabel(row.baseLabel)),
        h('td', { class: 'eff-tok eff-run-tok', title: `id ${row.id}` }, row.differs ? h('strong', { text: displayLabel(row.label) }) : displayLabel(row.label), row.differs ? ' ≠' : ''),
        h(
          'td',
          { class: 'eff-kl', title: KL_TIP },
          h('span', { class: 'eff-bar', 'aria-hidden': 'true' }, h('span', { class: 'eff-bar-fill', style: `width:${(row.klFrac * 100).toFixed(1)}%` })),
          h('span', { class: 'eff-kl-num', text: formatKl(row.kl) }),
        ),
        h('td', { class: 'eff-prob', text: row.probText }),
      );
      frag.append(tr);
    }
    tbody.append(frag);
    markCurrent(c);
  }

  function markCurrent(c: ViewContext): void {
    tbody.querySelectorAll<HTMLElement>('tr.eff-row').forEach((tr) => {
      const on = Number(tr.dataset.step) === c.step;
      tr.classList.toggle('current', on);
      tr.tabIndex = on ? 0 : -1;
      if (on) tr.setAttribute('aria-current', 'step');
      else tr.removeAttribute('aria-current');
    });
    if (!tbody.querySelector('tr[tabindex="0"]')) (tbody.firstElementChild as HTMLElement | null)?.setAttribute('tabindex', '0');
  }

  tbody.addEventListener('click', (e) => {
    const tr = (e.target as HTMLElement).closest('tr.eff-row') as HTMLElement | null;
    if (tr && ctx) ctx.setStep(Number(tr.dataset.step));
  });
  tbody.addEventListener('keydown', (e) => {
    const tr = (e.target as HTMLElement).closest('tr.eff-row') as HTMLElement | null;
    if (!tr || !ctx) return;
    let to: Element | null = null;
    if (e.key === 'ArrowDown') to = tr.nextElementSibling;
    else if (e.key === 'ArrowUp') to = tr.previousElementSibling;
    else if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      ctx.setStep(Number(tr.dataset.step));
      return;
    } else return;
    e.preventDefault();
    if (to instanceof HTMLElement) {
      tr.tabIndex = -1;
      to.tabIndex = 0;
      to.focus();
    }
  });
  const tipFor = (tr: HTMLElement) => {
    const row = loaded?.rows.find((r) => r.step === Number(tr.dataset.step));
    if (!row) return null;
    return {
      title: `Step ${row.step + 1}${row.firstDiff ? ' (first difference)' : ''}`,
      lines: [
        ['base', `${displayLabel(row.baseLabel)} (id ${row.baseId})`],
        ['this run', `${displayLabel(row.label)} (id ${row.id})`],
        ['KL ≥', `${formatKl(row.kl)} nats (a lower bound)`],
        ['p(base token)', row.probText],
      ] as [string, string][],
    };
  };
  tbody.addEventListener('mousemove', (e) => {
    const tr = (e.target as HTMLElement).closest('tr.eff-row') as HTMLElement | null;
    const t = tr && tipFor(tr);
    if (t) showTip(root, e.clientX, e.clientY, t.title, t.lines);
    else hideTip(root);
  });
  tbody.addEventListener('mouseleave', () => hideTip(root));
  tbody.addEventListener('focusin', (e) => {
    const tr = (e.target as HTMLElement).closest('tr.eff-row') as HTMLElement | null;
    const t = tr && tipFor(tr);
    if (tr && t) showTipAt(root, tr, t.title, t.lines);
  });
  tbody.addEventListener('focusout', () => hideTip(root));

  return {
    show(c: ViewContext): void {
      ctx = c;
      if (!c.branch) {
        key = '';
        loaded = null;
        root.dataset.status = 'idle';
        head.textContent = '';
        head.append(note('This run is not a branch of another run. Ablate a head (Heads tab, or the layer / head selector) or knock out attention to a token (select it on the graph) to make one and see its effects here.'));
        summary.textContent = '';
        tbody.textContent = '';
        return;
      }
      const k = `${c.runId}|${c.branch.run}`;
      if (k === key) {
        if (loaded) markCurrent(c);
        return;
      }
      key = k;
      loaded = null;
      renderHead(c);
      summary.textContent = 'Loading the effects…';
      tbody.textContent = '';
      root.dataset.status = 'loading';
      ctl?.abort();
      ctl = new AbortController();
      const my = ++load;
      load_(c).then(
        (L) => {
          if (my !== load || !ctx) return;
          loaded = L;
          render(ctx, L);
          root.dataset.status = 'ready';
        },
        (err) => {
          if (my !== load || isAbort(err)) return;
          summary.textContent = `The effects could not be read: ${errText(err)}`;
          root.dataset.status = 'error';
        },
      );
    },
    hide(): void {
      hideTip(root);
    },
    exportData(): ExportData | null {
      const L = loaded;
      if (!L || !ctx) return null;
      const rows = L.rows;
      const arr = new Float32Array(rows.length * 3);
      rows.forEach((r, i) => arr.set([r.kl, r.probBefore, r.probAfter ?? NaN], i * 3));
      return {
        name: 'effects',
        json: { run: ctx.runId, ...L.reply },
        csv: toCsv([
          ['step', 'base_id', 'base_label', 'id', 'label', 'differs', 'kl_lower_bound', 'base_token_prob_base', 'base_token_prob', 'base_token_prob_below'],
          ...rows.map((r) => [r.step, r.baseId, r.baseLabel, r.id, r.label, r.differs ? 1 : 0, r.kl, r.probBefore, r.probAfter ?? '', r.probBelow ?? '']),
        ]),
        npy: { shape: [rows.length, 3], data: arr },
      };
    },
  };
}
