// Sampling explorer: the stored next-token candidates of the current step
// (the model's own distribution), and which of them survive the sampler's
// filters for the slider settings, with their renormalized probabilities.
// "Resample here" and "Choose this token" branch a new run from this step.
import { formatProb, sampleFilter, type SampleCandidate, type SamplingParams, type SamplingResult } from '../analysis';
import type { BranchFrom, SamplingRequest } from '../api';
import { csvField, fmtNum, type ExportData, type Exportable } from '../datafile';
import { displayLabel } from '../model';
import { errText, getJson, h, Lru, runPath } from './common';
import type { View, ViewContext } from './types';

export interface CandidatesReply {
  step: number;
  chosen: number;
  prob?: number;
  entropy?: number;
  candidates: SampleCandidate[];
}

/** A branch from the current step: the sampler settings of the sliders. */
export interface BranchRequest extends SamplingRequest {
  branch: BranchFrom;
}

export interface SamplingDeps {
  /** the open run's sampling parameters (its document's params) */
  runParams(): Record<string, number> | null | undefined;
  nVocab(): number;
  /** starts the branch run (the app's generation path); resolves when it ends */
  branch(req: BranchRequest, label: string): void;
  busy(): boolean;
}

const cache = new Lru<string, Promise<CandidatesReply>>(64);

function slider(id: string, label: string, min: number, max: number, step: number, value: number): [HTMLElement, HTMLInputElement, HTMLOutputElement] {
  const input = h('input', { type: 'range', id, min, max, step, value });
  const out = h('output', { for: id });
  const row = h('div', { class: 'samp-ctl' }, h('label', { for: id, text: label }), input, out);
  return [row, input, out];
}

export function createSamplingView(root: HTMLElement, deps: SamplingDeps): View & Exportable {
  root.classList.add('sampling-view');
  const [tRow, temp, tOut] = slider('samp-temp', 'Temperature', 0, 2, 0.05, 1);
  const [kRow, topK, kOut] = slider('samp-topk', 'Top-k', 0, 100, 1, 40);
  const [pRow, topP, pOut] = slider('samp-topp', 'Top-p', 0.01, 1, 0.01, 0.95);
  const [mRow, minP, mOut] = slider('samp-minp', 'Min-p', 0, 1, 0.01, 0.05);
  const seed = h('input', { type: 'number', id: 'samp-seed', min: 0, step: 1, value: 0 });
  const reset = h('button', { type: 'button', id: 'samp-reset', title: 'Back to the settings the run was generated with' }, 'Run’s settings');
  const controls = h(
    'div',
    { class: 'samp-controls' },
    tRow,
    kRow,
    pRow,
    mRow,
    h('div', { class: 'samp-ctl' }, h('label', { for: 'samp-seed', text: 'Seed' }), seed, reset),
  );
  const head = h('p', { class: 'samp-head', role: 'status' });
  const summary = h('p', { class: 'note samp-summary' });
  const chart = h('div', { class: 'samp-chart', role: 'group', 'aria-label': 'Candidates: press one to select it for “Choose this token”' });
  const resample = h('button', { type: 'button', id: 'resample', class: 'primary', title: 'A new run: the same prompt and outputs before this step, this step sampled with these settings' }, 'Resample here');
  const choose = h('button', { type: 'button', id: 'choose-token', disabled: true, title: 'A new run with the selected candidate forced at this step' }, 'Choose this token');
  const note = h(
    'p',
    { class: 'note' },
    'Filters in the server’s order (src/samp.c): top-k, top-p, min-p, then temperature; the repetition penalty is not applied here. Only the 20 stored candidates are known: tokens beyond them are left out, so with top-k off or above 20 the shares are those of these 20 only.',
  );
  root.append(head, controls, summary, chart, h('div', { class: 'buttons' }, resample, choose), note);

  let ctx: ViewContext | null = null;
  let runKey = '';
  let step = -1;
  let data: CandidatesReply | null = null;
  let result: SamplingResult | null = null;
  let selected: number | null = null; // candidate id
  let load = 0;

  function params(): SamplingParams {
    return { temperature: Number(temp.value), topK: Number(topK.value), topP: Number(topP.value), minP: Number(minP.value) };
  }

  function setFromRun(): void {
    const p = deps.runParams() ?? {};
    temp.value = String(p.temperature ?? 1);
    topK.value = String(Math.min(100, p.top_k ?? 40));
    topP.value = String(p.top_p ?? 0.95);
    minP.value = String(p.min_p ?? 0.05);
    seed.value = String(p.seed ?? 0);
    outputs();
  }

  function outputs(): void {
    const t = Number(temp.value);
    tOut.textContent = t > 0 ? t.toFixed(2) : '0 (greedy)';
    kOut.textContent = Number(topK.value) > 0 ? topK.value : 'off';
    pOut.textContent = Number(topP.value) >= 1 ? '1 (off)' : Number(topP.value).toFixed(2);
    mOut.textContent = Number(minP.value) > 0 ? Number(minP.value).toFixed(2) : 'off';
  }

  for (const s of [temp, topK, topP, minP])
    s.addEventListener('input', () => {
      outputs();
      recompute();
    });
  reset.addEventListener('click', () => {
    setFromRun();
    recompute();
  });

  function ensure(c: ViewContext): void {
    if (c.runId !== runKey) {
      runKey = c.runId;
      step = -1;
      setFromRun();
    }
    if (c.step === step) return;
    step = c.step;
    selected = null;
    data = null;
    result = null;
    chart.textContent = '';
    if (c.nOutput <= 0) {
      head.textContent = 'This run has no generated tokens.';
      return;
    }
    const my = ++load;
    root.dataset.status = 'loading';
    root.dataset.step = String(step);
    head.textContent = `Step ${step + 1}: loading the candidates…`;
    const key = `${c.base}|${c.runId}|${step}`;
    let p = cache.get(key);
    if (!p) {
      p = getJson<CandidatesReply>(c.base, runPath(c.runId, `/candidates?step=${step}`));
      cache.set(key, p);
      p.catch(() => cache.delete(key));
    }
    p.then((d) => {
      if (my !== load) return;
      data = d;
      root.dataset.status = 'ready';
      recompute();
    }).catch((err) => {
      if (my !== load) return;
      root.dataset.status = 'error';
      head.textContent = `Step ${step + 1}: the candidates could not be read: ${errText(err)}`;
    });
  }

  function recompute(): void {
    const c = ctx;
    const d = data;
    if (!c || !d) return;
    result = sampleFilter(d.candidates, params(), deps.nVocab() || Infinity);
    const chosen = d.candidates.find((x) => x.id === d.chosen);
    const lab = displayLabel(chosen?.label ?? c.tokens[c.nPrompt + d.step]?.label);
    head.textContent = `Step ${d.step + 1} of ${c.nOutput}: the run chose “${lab}”${d.prob !== undefined ? ` (p = ${formatProb(d.prob)})` : ''}${d.entropy !== undefined ? ` · entropy ${d.entropy.toFixed(3)} nats` : ''}.`;
    render();
  }

  function render(): void {
    const d = data!;
    const r = result!;
    const maxP = Math.max(1e-12, ...r.candidates.map((x) => Math.max(x.prob, x.p)));
    const frag = document.createDocumentFragment();
    r.candidates.forEach((x, i) => {
      const b = h(
        'button',
        {
          type: 'button',
          class: 'cand' + (x.kept ? ' kept' : ' cut') + (x.id === d.chosen ? ' chosen' : ''),
          'data-id': x.id,
          'data-kept': String(x.kept),
          'aria-pressed': String(selected === x.id),
          title: `id ${x.id} · logit ${x.logit.toFixed(3)} · model p ${formatProb(x.prob)}${x.kept ? ` · sampled p ${formatProb(x.p)}` : ` · cut by ${x.cut}`}`,
        },
        h('span', { class: 'cand-rank', text: String(i + 1) }),
        h('span', { class: 'cand-label', text: displayLabel(x.label) + (x.id === d.chosen ? ' ✓' : '') }),
        h(
          'span',
          { class: 'cand-bars' },
          h('span', { class: 'bar-model', style: `width:${((100 * x.prob) / maxP).toFixed(2)}%` }),
          h('span', { class: 'bar-samp', style: `width:${((100 * x.p) / maxP).toFixed(2)}%` }),
        ),
        h('span', { class: 'cand-num', text: x.kept ? `${formatProb(x.prob)} → ${formatProb(x.p)}` : `${formatProb(x.prob)} · ${x.cut}` }),
      );
      frag.append(b);
    });
    chart.replaceChildren(frag);
    root.dataset.survivors = String(r.survivors);
    summary.textContent = `${r.survivors} of ${r.candidates.length} stored candidates survive${r.approximate ? ' (of the stored candidates; the vocabulary beyond them is not stored)' : ''}. Grey bar: the model’s probability; blue bar: the chance to be drawn with these settings. ✓ = the token the run chose.`;
    choose.disabled = selected === null || deps.busy();
    resample.disabled = deps.busy();
  }

  chart.addEventListener('click', (e) => {
    const b = (e.target as HTMLElement).closest('button.cand') as HTMLButtonElement | null;
    if (!b) return;
    const id = Number(b.dataset.id);
    selected = selected === id ? null : id;
    chart.querySelectorAll('button.cand').forEach((x) => x.setAttribute('aria-pressed', String(Number((x as HTMLElement).dataset.id) === selected)));
    choose.disabled = selected === null || deps.busy();
  });

  function request(token?: number): BranchRequest | null {
    const c = ctx;
    if (!c || step < 0) return null;
    const s = Math.trunc(Number(seed.value));
    const req: BranchRequest = {
      branch: { run: c.runId, step },
      max_tokens: Math.max(step + 1, c.nOutput),
      temperature: Number(temp.value),
      top_k: Math.trunc(Number(topK.value)),
      top_p: Number(topP.value),
      min_p: Number(minP.value),
      seed: Number.isFinite(s) && s >= 0 ? s : 0,
      attention_split: true,
    };
    if (token !== undefined) req.branch.token = token;
    return req;
  }

  resample.addEventListener('click', () => {
    const req = request();
    if (req) deps.branch(req, `Resampling step ${step + 1}`);
  });
  choose.addEventListener('click', () => {
    if (selected === null) return;
    const req = request(selected);
    const lab = data?.candidates.find((x) => x.id === selected)?.label;
    if (req) deps.branch(req, `Choosing “${displayLabel(lab)}” at step ${step + 1}`);
  });

  return {
    show(c: ViewContext): void {
      ctx = c;
      ensure(c);
      if (data && result) {
        choose.disabled = selected === null || deps.busy();
        resample.disabled = deps.busy();
      }
    },
    hide(): void {},
    exportData(): ExportData | null {
      const c = ctx;
      const d = data;
      const r = result;
      if (!c || !d || !r) return null;
      const sp = params();
      const rows = ['rank,id,label,logit,model_prob,kept,cut_by,sample_prob,chosen'];
      r.candidates.forEach((x, i) =>
        rows.push([i + 1, x.id, csvField(x.label), fmtNum(x.logit), fmtNum(x.prob), x.kept, x.cut ?? '', fmtNum(x.p), x.id === d.chosen].join(',')),
      );
      const arr = new Float32Array(r.candidates.length * 3);
      r.candidates.forEach((x, i) => {
        arr[3 * i] = x.logit;
        arr[3 * i + 1] = x.prob;
        arr[3 * i + 2] = x.p;
      });
      return {
        name: `candidates-step${d.step}`,
        json: { run: c.runId, step: d.step, chosen: d.chosen, params: sp, survivors: r.survivors, candidates: r.candidates },
        csv: rows.join('\r\n') + '\r\n',
        npy: { shape: [r.candidates.length, 3], data: arr },
      };
    },
  };
}
