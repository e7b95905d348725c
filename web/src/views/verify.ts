// "Verify sources": the ablation check of the current step's top sources
// (GET /api/runs/{id}/verify?step&k&measure). For each of the k heaviest
// sources of the step's query (by the graph's measure), the server reruns the
// step with that query unable to attend to the source in every layer and head
// and reports the chosen token's log-probability then, and whether the token
// would still be chosen. It takes a forward pass per source, so the request
// shows a spinner and can be cancelled; replies are kept per run, step, k and
// measure. The panel (#verify-panel) sits under the toolbar on every tab.
import { api, ApiError } from '../api';
import { formatNats, MEASURE_NAME, verifyRows, verifySummary, type Measure, type VerifyReply } from '../attribution';
import { displayLabel, formatWeight, type Side } from '../model';
import { errText, h, isAbort, Lru, selText } from './common';

/** What the check is of: the open run's step, by the graph's measure. */
export interface VerifyTarget {
  runId: string;
  nPrompt: number;
  /** 0-based step */
  step: number;
  /** the step's chosen token, for the heading */
  label: string;
  measure: Measure;
  k: number;
  /** the row the sources are ranked in: a layer (null: all) and head (null: all of the layer's) */
  layer: number | null;
  head: number | null;
}

export interface VerifyDeps {
  /** selects a source token on the graph */
  selectSource(side: Side, index: number): void;
  /** the panel closed (the focus goes back to the button) */
  closed(): void;
}

export interface VerifyPanel {
  /** Checks the target (a kept reply shows at once); the panel opens. */
  run(t: VerifyTarget): void;
  /** The run, step or measure changed: the panel shows that step's kept reply, or says to press the button. */
  sync(t: VerifyTarget | null): void;
  cancel(): void;
  close(): void;
  isOpen(): boolean;
}

export const VERIFY_K = 5;

const replies = new Lru<string, VerifyReply>(64);

function keyOf(t: VerifyTarget): string {
  return `${t.runId}|${t.step}|${t.k}|${t.measure}|${t.layer ?? '*'}|${t.layer === null ? '*' : (t.head ?? '*')}`;
}

/** The message for a failed check: the model it needs, a route the server lacks, or the server's words. */
export function verifyError(err: unknown): string {
  if (err instanceof ApiError) {
    if (err.status === 409 || err.code === 'model_needed')
      return `Verifying needs the model that made the run (the server re-runs the step): ${err.message}`;
    if (err.status === 404 && err.code === 'not_found') return 'This server cannot verify sources (it has no /verify route): update heed.';
    return `The sources could not be verified: ${err.message}`;
  }
  return `The sources could not be verified: ${errText(err)}`;
}

export function createVerifyPanel(root: HTMLElement, deps: VerifyDeps): VerifyPanel {
  const q = <T extends HTMLElement>(sel: string) => root.querySelector(sel) as T;
  const title = q<HTMLElement>('.vf-title');
  const statusText = q<HTMLElement>('.vf-status-text');
  const cancelBtn = q<HTMLButtonElement>('#verify-cancel');
  const closeBtn = q<HTMLButtonElement>('#verify-close');
  const about = q<HTMLElement>('.vf-about');
  const table = q<HTMLTableElement>('#verify-table');
  const weightH = q<HTMLElement>('.vf-weight-h');
  const tbody = table.tBodies[0];
  const summary = q<HTMLElement>('.vf-summary');

  let ctl: AbortController | null = null;
  let pendingKey = '';
  let shown: VerifyTarget | null = null;

  function setStatus(s: 'idle' | 'loading' | 'ready' | 'error' | 'cancelled', text: string): void {
    root.dataset.status = s;
    statusText.textContent = text;
    cancelBtn.hidden = s !== 'loading';
    root.setAttribute('aria-busy', String(s === 'loading'));
  }

  function heading(t: VerifyTarget): void {
    title.textContent = `Verify sources: step ${t.step + 1} “${displayLabel(t.label)}”`;
    root.dataset.step = String(t.step);
    root.dataset.measure = t.measure;
    root.dataset.k = String(t.k);
    weightH.textContent = MEASURE_NAME[t.measure];
    weightH.title =
      t.measure === 'value'
        ? 'The source’s value-weighted attention (a·|W_O v|) in the step’s row: how the top sources were ranked'
        : 'The source’s attention weight in the step’s row: how the top sources were ranked';
  }

  function clearTable(): void {
    tbody.textContent = '';
    table.hidden = true;
    summary.textContent = '';
    about.textContent = '';
  }

  function render(t: VerifyTarget, r: VerifyReply): void {
    const rows = verifyRows(r, t.nPrompt);
    about.textContent =
      `“${displayLabel(r.token.label)}” (id ${r.token.id}), chosen by position ${r.pos}: log p ${formatNats(r.logprob)} as recorded, ${formatNats(r.base_logprob)} recomputed. ` +
      `Each row: one of the ${r.k} heaviest sources by ${MEASURE_NAME[r.measure]} (${selText(t.layer, t.layer === null ? null : t.head)}), and the chosen token when this step’s query may not attend to it in every layer and head.`;
    tbody.textContent = '';
    const frag = document.createDocumentFragment();
    for (const row of rows) {
      const src = h(
        'button',
        { type: 'button', class: 'link vf-src', title: `Select it on the graph (position ${row.pos})`, 'data-side': row.side, 'data-index': row.index },
        `“${displayLabel(row.label)}”`,
      );
      const still = row.stillChosen
        ? h('span', { class: 'vf-yes', text: 'yes' })
        : h('span', { class: 'vf-no' }, 'no → ', h('strong', { text: `“${displayLabel(row.topLabel)}”` }));
      frag.append(
        h(
          'tr',
          {
            class: `vf-row${row.stillChosen ? '' : ' changes'}`,
            'data-pos': row.pos,
            'data-weight': row.weight,
            'data-logprob': row.logprob,
            'data-drop': row.drop,
            'data-still': String(row.stillChosen),
          },
          h('td', { class: 'vf-rank', text: String(row.rank) }),
          h('td', { class: 'vf-source' }, src, h('span', { class: 'vf-where', text: ` ${row.where}, position ${row.pos}` })),
          h('td', { class: 'vf-weight', text: `${MEASURE_NAME[r.measure]} ${formatWeight(row.weight)}` }),
          h('td', { class: 'vf-logp' }, formatNats(row.logprob), h('span', { class: 'vf-prob', text: ` (${row.probText})` })),
          h(
            'td',
            { class: 'vf-drop' },
            h('span', { class: 'vf-bar', 'aria-hidden': 'true' }, h('span', { class: 'vf-bar-fill', style: `width:${(row.dropFrac * 100).toFixed(1)}%` })),
            h('span', { class: 'vf-drop-num', text: formatNats(row.drop) }),
          ),
          h('td', { class: 'vf-still' }, still),
        ),
      );
    }
    tbody.append(frag);
    table.hidden = rows.length === 0;
    summary.textContent = verifySummary(r);
  }

  /** Shows what the panel has for a target: the kept reply, the request under way, or the prompt to press. */
  function showFor(t: VerifyTarget): boolean {
    shown = t;
    heading(t);
    const kept = replies.get(keyOf(t));
    if (kept) {
      render(t, kept);
      setStatus('ready', `Checked ${kept.sources.length} source${kept.sources.length === 1 ? '' : 's'}.`);
      return true;
    }
    if (ctl && pendingKey === keyOf(t)) return true;
    clearTable();
    setStatus('idle', `Step ${t.step + 1} is not checked yet: press Verify sources.`);
    return false;
  }

  function abort(): void {
    if (ctl) {
      ctl.abort();
      ctl = null;
      pendingKey = '';
    }
  }

  function run(t: VerifyTarget): void {
    root.hidden = false;
    if (showFor(t)) return;
    abort();
    const c = new AbortController();
    ctl = c;
    const key = keyOf(t);
    pendingKey = key;
    clearTable();
    setStatus('loading', `Verifying step ${t.step + 1}: one forward pass per source (${t.k}), a few seconds on a large model…`);
    api.verify(t.runId, t.step, t.k, t.measure, c.signal, t.layer, t.layer === null ? null : t.head).then(
      (r) => {
        if (ctl !== c) return;
        ctl = null;
        pendingKey = '';
        replies.set(key, r);
        if (shown && keyOf(shown) === key) showFor(shown);
      },
      (err) => {
        if (ctl !== c) return;
        ctl = null;
        pendingKey = '';
        if (isAbort(err)) setStatus('cancelled', 'Cancelled.');
        else {
          clearTable();
          setStatus('error', verifyError(err));
        }
      },
    );
  }

  function close(): void {
    abort();
    root.hidden = true;
    shown = null;
    setStatus('idle', '');
    deps.closed();
  }

  cancelBtn.addEventListener('click', () => {
    if (!ctl) return;
    abort();
    setStatus('cancelled', 'Cancelled: press Verify sources to try again.');
  });
  closeBtn.addEventListener('click', close);
  root.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      close();
    }
  });
  tbody.addEventListener('click', (e) => {
    const b = (e.target as HTMLElement).closest('button.vf-src') as HTMLElement | null;
    if (b) deps.selectSource(b.dataset.side as Side, Number(b.dataset.index));
  });

  return {
    run,
    sync(t: VerifyTarget | null): void {
      if (root.hidden) return;
      if (!t) {
        abort();
        clearTable();
        setStatus('idle', 'Open a stored run to verify its sources.');
        return;
      }
      if (shown && keyOf(shown) === keyOf(t)) return;
      if (ctl && pendingKey !== keyOf(t)) abort(); // a check of another step is dropped
      showFor(t);
    },
    cancel(): void {
      abort();
    },
    close,
    isOpen: () => !root.hidden,
  };
}
