// Sources: where each generated sentence came from in the documents a chat
// run was given (POST /api/runs "documents"; GET /api/runs/{id}/provenance).
// The generated text is listed sentence by sentence; selecting one shades the
// document spans it drew on by their score (the share of the sentence's
// value-weighted attention into document text that went to the span), lists
// them, and, after "Verify top sources" (?verify=1, an ablation per
// sentence), says how far the sentence's log-probability falls without its
// top source.
import { api, ApiError } from '../api';
import { toCsv, type ExportData, type Exportable } from '../datafile';
import {
  documentTokens,
  firstSentence,
  formatNats,
  formatShare,
  provenanceRows,
  sourceShades,
  type DocTokens,
  type ProvenanceReply,
  type ProvSentence,
} from '../attribution';
import { errText, h, isAbort, Lru, note } from './common';
import type { View, ViewContext } from './types';

interface Loaded {
  reply: ProvenanceReply;
  docs: DocTokens[];
  verified: boolean;
}

/** Replies per run: the plain one, replaced by the verified one once asked. */
const cache = new Lru<string, Loaded>(16);

/** The message for a failed read: a route the server lacks, the model a check needs, or the server's words. */
export function provenanceError(err: unknown, verify: boolean): string {
  const what = verify ? 'The top sources could not be verified' : 'The sources could not be read';
  if (err instanceof ApiError) {
    if (err.status === 409 || err.code === 'model_needed') return `Verifying needs the model that made the run: ${err.message}`;
    if (err.status === 404 && err.code === 'not_found') return `${what}: this server has no /provenance route (update heed).`;
    return `${what}: ${err.message}`;
  }
  return `${what}: ${errText(err)}`;
}

export function createSourcesView(root: HTMLElement): View & Exportable {
  root.classList.add('sources-view');
  root.dataset.status = 'idle';
  const verifyBtn = h('button', {
    type: 'button',
    id: 'prov-verify',
    title: 'For each sentence, re-run its tokens with their attention to the top source taken away (every layer and head) and report how far the sentence’s log-probability falls: one forward pass per sentence, needs the model that made the run',
    text: 'Verify top sources',
  });
  const cancelBtn = h('button', { type: 'button', id: 'prov-cancel', hidden: true, text: 'Cancel' });
  const status = h('span', { class: 'prov-status', role: 'status', 'aria-live': 'polite' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), h('span', { class: 'prov-status-text' }));
  const statusText = status.querySelector('.prov-status-text') as HTMLElement;
  const bar = h('div', { class: 'view-bar prov-toolbar' }, verifyBtn, cancelBtn, status);
  const about = h('p', { class: 'note prov-about' });
  const sentList = h('ol', { class: 'prov-sentences', 'aria-label': 'Generated sentences (Up/Down to move)' });
  const detail = h('div', { class: 'prov-detail', 'aria-live': 'polite' });
  const textCol = h('section', { class: 'prov-text', 'aria-labelledby': 'prov-text-h' }, h('h3', { id: 'prov-text-h', text: 'Generated text' }), sentList, detail);
  const docsBox = h('div', { class: 'prov-doc-list' });
  const docsCol = h('section', { class: 'prov-docs', 'aria-labelledby': 'prov-docs-h' }, h('h3', { id: 'prov-docs-h', text: 'Documents' }), docsBox);
  const cols = h('div', { class: 'prov-cols' }, textCol, docsCol);
  const msg = h('div', { class: 'prov-msg' });
  root.append(bar, about, msg, cols);

  let ctx: ViewContext | null = null;
  let runId = '';
  let loaded: Loaded | null = null;
  let selected = -1;
  let ctl: AbortController | null = null;
  let verifying = false;
  const tokEls = new Map<number, HTMLElement>();

  function setStatus(s: string, text: string, busy = false): void {
    root.dataset.status = s;
    statusText.textContent = text;
    status.classList.toggle('busy', busy);
    cancelBtn.hidden = !busy;
    root.setAttribute('aria-busy', String(busy));
  }

  function syncVerifyBtn(): void {
    const L = loaded;
    verifyBtn.disabled = !L || verifying || L.reply.documents.length === 0 || L.reply.sentences.length === 0;
    root.dataset.verified = verifying ? 'loading' : L?.verified ? 'yes' : '';
  }

  function load(c: ViewContext, verify: boolean): void {
    ctl?.abort();
    const my = new AbortController();
    ctl = my;
    verifying = verify;
    syncVerifyBtn();
    if (verify) setStatus('loading', 'Verifying each sentence’s top source: one forward pass per sentence…', true);
    else {
      setStatus('loading', 'Reading the sources…', true);
      msg.textContent = '';
    }
    const id = c.runId;
    api.provenance(id, verify, my.signal).then(
      (reply) => {
        if (ctl !== my) return;
        ctl = null;
        verifying = false;
        const L: Loaded = { reply, docs: documentTokens(reply.documents, c.tokens), verified: verify };
        cache.set(id, L);
        if (runId !== id) return;
        const keep = selected;
        loaded = L;
        render(L, verify && keep >= 0 ? keep : firstSentence(reply));
        setStatus('ready', verify ? 'Verified: each sentence’s drop without its top source is in its line.' : '');
      },
      (err) => {
        if (ctl !== my) return;
        ctl = null;
        verifying = false;
        syncVerifyBtn();
        if (isAbort(err)) {
          setStatus(loaded ? 'ready' : 'idle', 'Cancelled.');
          return;
        }
        setStatus(loaded ? 'ready' : 'error', provenanceError(err, verify));
        if (!loaded) root.dataset.status = 'error';
      },
    );
  }

  function render(L: Loaded, sel: number): void {
    const r = L.reply;
    root.dataset.nDocs = String(r.documents.length);
    root.dataset.nSentences = String(r.sentences.length);
    msg.textContent = '';
    if (r.documents.length === 0)
      msg.append(
        note(
          'This run has no documents, so there is nothing to trace its sentences to. For a chat model, add documents in the Generate form’s Documents section, then generate.',
          'prov-none',
        ),
      );
    about.hidden = r.documents.length === 0;
    about.textContent =
      r.measure === 'attention'
        ? 'Select a sentence: the document spans it drew on are shaded by their score, the share of the sentence’s attention into document text that went to the span (the darkest is the top source, double-underlined). This run has no value norms, so the scores weigh attention, not value-weighted attention.'
        : 'Select a sentence: the document spans it drew on are shaded by their score, the share of the sentence’s value-weighted attention into document text that went to the span (the darkest is the top source, double-underlined).';
    root.dataset.measure = r.measure ?? 'value';
    // sentences
    sentList.textContent = '';
    const frag = document.createDocumentFragment();
    r.sentences.forEach((s, i) => {
      const v = s.verified;
      const b = h(
        'button',
        { type: 'button', class: 'prov-sent', 'data-index': i, 'data-first': s.first, 'data-n-tok': s.n_tok, 'aria-pressed': 'false', tabindex: -1 },
        h('span', { class: 'prov-sent-text', text: s.text.trim() === '' ? '␣' : s.text }),
        h('span', { class: 'prov-sent-meta', text: s.sources.length ? ` ${s.sources.length} source${s.sources.length === 1 ? '' : 's'}` : ' no source' }),
        v ? h('span', { class: 'prov-sent-verified', title: 'the fall of the sentence’s log-probability without its top source (nats; negative: it rose)', text: ` ✓ drop ${formatNats(v.drop)}` }) : null,
      );
      frag.append(h('li', {}, b));
    });
    sentList.append(frag);
    if (r.sentences.length === 0) sentList.append(h('li', { class: 'note', text: 'The run generated no sentences.' }));
    // documents
    docsBox.textContent = '';
    tokEls.clear();
    for (const d of L.docs) {
      const body = h('div', { class: 'prov-doc-text' });
      for (const t of d.tokens) {
        const sp = h('span', { class: 'prov-tok', 'data-pos': t.pos }, t.label);
        tokEls.set(t.pos, sp);
        body.append(sp);
      }
      docsBox.append(
        h(
          'section',
          { class: 'prov-doc', 'data-name': d.name, 'data-first': d.first, 'data-n-tok': d.n_tok },
          h('h4', {}, d.name, h('span', { class: 'prov-doc-meta', text: ` · ${d.n_tok} tokens, positions ${d.first}–${d.first + d.n_tok - 1}` })),
          body,
        ),
      );
    }
    if (L.docs.length === 0) docsBox.append(note('None.'));
    syncVerifyBtn();
    select(sel, false);
  }

  function select(i: number, focus: boolean): void {
    const L = loaded;
    if (!L) return;
    const n = L.reply.sentences.length;
    selected = n === 0 ? -1 : Math.max(0, Math.min(n - 1, i));
    root.dataset.selected = selected < 0 ? '' : String(selected);
    sentList.querySelectorAll<HTMLElement>('button.prov-sent').forEach((b) => {
      const on = Number(b.dataset.index) === selected;
      b.setAttribute('aria-pressed', String(on));
      b.tabIndex = on ? 0 : -1;
      if (on && focus) b.focus();
    });
    const s = selected >= 0 ? L.reply.sentences[selected] : null;
    shade(s);
    renderDetail(s);
  }

  function shade(s: ProvSentence | null): void {
    for (const el of tokEls.values()) {
      if (!el.classList.contains('src')) continue;
      el.classList.remove('src', 'top');
      el.style.removeProperty('--strength');
      el.removeAttribute('data-score');
      el.removeAttribute('title');
    }
    const m = sourceShades(s);
    let first: HTMLElement | null = null;
    for (const [pos, v] of m) {
      const el = tokEls.get(pos);
      if (!el) continue;
      el.classList.add('src');
      if (v.source === 0) el.classList.add('top');
      el.style.setProperty('--strength', v.strength.toFixed(3));
      el.dataset.score = String(v.score);
      el.title = `source ${v.source + 1} of the sentence: score ${formatShare(v.score)}`;
      if (v.source === 0 && (!first || pos < Number(first.dataset.pos))) first = el;
    }
    first?.scrollIntoView({ block: 'nearest' });
  }

  function renderDetail(s: ProvSentence | null): void {
    detail.textContent = '';
    if (!s) return;
    const v = s.verified;
    if (s.sources.length === 0) {
      detail.append(note(loaded && loaded.reply.documents.length ? 'No document span drew this sentence’s attention.' : ''));
      return;
    }
    const rows = s.sources.map((q, i) => {
      const isV = !!v && v.doc === q.doc && v.first === q.first && v.n_tok === q.n_tok;
      const tr = h(
        'tr',
        { class: `prov-src${i === 0 ? ' top' : ''}`, 'data-doc': q.doc, 'data-first': q.first, 'data-n-tok': q.n_tok, 'data-score': q.score, tabindex: 0, title: 'Show the span in its document' },
        h('td', { class: 'prov-src-doc', text: q.doc }),
        h('td', { class: 'prov-src-text', text: q.text }),
        h(
          'td',
          { class: 'prov-score' },
          h('span', { class: 'prov-bar', 'aria-hidden': 'true' }, h('span', { class: 'prov-bar-fill', style: `width:${(Math.max(0, Math.min(1, q.score)) * 100).toFixed(1)}%` })),
          h('span', { class: 'prov-score-num', text: formatShare(q.score) }),
        ),
        h('td', { class: 'prov-verified', text: isV ? `${formatNats(v!.drop)} nats` : i === 0 && !loaded?.verified ? 'not verified' : '' }),
      );
      return tr;
    });
    detail.append(
      h(
        'table',
        { class: 'prov-src-table' },
        h('caption', { class: 'visually-hidden', text: 'The selected sentence’s sources' }),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            h('th', { scope: 'col', text: 'document' }),
            h('th', { scope: 'col', text: 'span' }),
            h('th', { scope: 'col', title: `The share of the sentence’s ${loaded?.reply.measure === 'attention' ? '' : 'value-weighted '}attention into document text that went to this span`, text: 'score' }),
            h('th', { scope: 'col', title: 'The fall of the sentence’s total log-probability when its tokens may not attend to the span (Verify top sources)', text: 'drop' }),
          ),
        ),
        h('tbody', {}, ...rows),
      ),
    );
    if (v)
      detail.append(
        h(
          'p',
          { class: 'prov-verdict' },
          `Without “${v.doc}” positions ${v.first}–${v.first + v.n_tok - 1} (its top source), the sentence’s log-probability ` +
            (v.drop >= 0
              ? `falls by ${formatNats(v.drop)} nats${v.drop > 0 ? ` (it becomes ${formatFactor(v.drop)} less likely)` : ''}.`
              : `rises by ${formatNats(-v.drop)} nats: the sentence does not depend on that span.`),
        ),
      );
  }

  function showSpan(tr: HTMLElement): void {
    const el = tokEls.get(Number(tr.dataset.first));
    el?.scrollIntoView({ block: 'center' });
  }

  sentList.addEventListener('click', (e) => {
    const b = (e.target as HTMLElement).closest('button.prov-sent') as HTMLElement | null;
    if (b) select(Number(b.dataset.index), false);
  });
  sentList.addEventListener('keydown', (e) => {
    const b = (e.target as HTMLElement).closest('button.prov-sent') as HTMLElement | null;
    if (!b || !loaded) return;
    const i = Number(b.dataset.index);
    let to = -1;
    if (e.key === 'ArrowDown') to = i + 1;
    else if (e.key === 'ArrowUp') to = i - 1;
    else if (e.key === 'Home') to = 0;
    else if (e.key === 'End') to = loaded.reply.sentences.length - 1;
    else return;
    e.preventDefault();
    e.stopPropagation(); // not the app's step keys
    select(to, true);
  });
  detail.addEventListener('click', (e) => {
    const tr = (e.target as HTMLElement).closest('tr.prov-src') as HTMLElement | null;
    if (tr) showSpan(tr);
  });
  detail.addEventListener('keydown', (e) => {
    const tr = (e.target as HTMLElement).closest('tr.prov-src') as HTMLElement | null;
    if (tr && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      showSpan(tr);
    }
  });
  verifyBtn.addEventListener('click', () => {
    if (ctx && loaded) load(ctx, true);
  });
  cancelBtn.addEventListener('click', () => {
    if (!ctl) return;
    ctl.abort();
    ctl = null;
    verifying = false;
    syncVerifyBtn();
    setStatus(loaded ? 'ready' : 'idle', 'Cancelled.');
  });

  return {
    show(c: ViewContext): void {
      ctx = c;
      if (c.runId === runId) return;
      runId = c.runId;
      ctl?.abort();
      ctl = null;
      verifying = false;
      loaded = null;
      selected = -1;
      sentList.textContent = '';
      docsBox.textContent = '';
      detail.textContent = '';
      tokEls.clear();
      const kept = cache.get(c.runId);
      if (kept) {
        loaded = kept;
        render(kept, firstSentence(kept.reply));
        setStatus('ready', '');
      } else load(c, false);
    },
    hide(): void {
      /* a verification under way goes on: its reply is kept for the run */
    },
    exportData(): ExportData | null {
      const L = loaded;
      if (!L || !ctx) return null;
      return { name: 'sources', json: { run: ctx.runId, verified: L.verified, ...L.reply }, csv: toCsv(provenanceRows(L.reply)), npy: null };
    },
  };
}

/** e^x as "22×" (how many times less likely a drop of x nats makes the text). */
function formatFactor(x: number): string {
  const f = Math.exp(x);
  if (!Number.isFinite(f)) return 'vastly';
  if (f >= 1000) return `${f.toExponential(1)} times`;
  return `${f >= 10 ? f.toFixed(0) : f.toFixed(1)} times`;
}
