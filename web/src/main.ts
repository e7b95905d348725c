// Wiring: controls, the live generation, stored runs, URL state, exports.
import { mountPromptFile } from './promptfile';
import './style.css';
import { api, ApiError, streamRun, type GenerateRequest, type ModelInfo, type RunDoc, type RunSummary } from './api';
import { checkDocuments, isMeasure, MEASURE_NAME, refusesMeasure, type Measure } from './attribution';
import { createDocumentsForm } from './documents';
import { branchLine, checkField, loadDraft, type FieldCheck, runPromptText, runTree, SAMPLING_FIELDS, SAMPLING_RULES, saveDraft, type Draft, type RunNode, type SamplingField } from './formstate';
import { matrixCsv, npyBytes, toCsv, type ExportData, type Exportable } from './datafile';
import { buildSvg, download, svgToPng, type ExportToken } from './export';
import { GraphView, graphDataOf, graphReply } from './graph';
import { LongRunTools } from './overview';
import { mountHelp } from './help';
import { mountUploadButton } from './upload';
import {
  ablateRequest,
  knockoutKey,
  knockoutRequest,
  queryPos,
  rolloutRows,
  rolloutStepsNeeded,
  type InterventionRequest,
} from './interventions';
import {
  clampStep,
  decodeHash,
  DEFAULT_THRESHOLD,
  defaultUrlState,
  displayLabel,
  encodeHash,
  checkMaxTokens,
  checkPrompt,
  GraphData,
  isViewName,
  QUANTITY,
  rawGraphData,
  LiveRun,
  VIEW_NAMES,
  type EdgeWeights,
  type Mode,
  type Side,
  type Step,
  type Token,
  type UrlState,
  type ViewName,
  type ViewState,
  type GraphReply,
} from './model';
import { getJson, runPath } from './views/common';
import { createCompareView } from './views/compare';
import { createEffectsView } from './views/effects';
import { createExpertsView } from './views/experts';
import { createHeatmapView } from './views/heatmap';
import { createLensView } from './views/lens';
import { createModelView } from './views/modelgrid';
import { createSamplingView, type BranchRequest } from './views/sampling';
import { createSourcesView } from './views/sources';
import { createStatsView, type StatsReply } from './views/stats';
import { createTextView, loadDenseMatrix, matrixExport } from './views/text';
import { createTokensView } from './views/tokens';
import type { View, ViewContext } from './views/types';
import { createVerifyPanel, VERIFY_K, type VerifyTarget } from './views/verify';

type Status = 'idle' | 'generating' | 'done' | 'error';

const $ = <T extends HTMLElement = HTMLElement>(sel: string): T => {
  const el = document.querySelector(sel);
  if (!el) throw new Error(`missing ${sel}`);
  return el as T;
};

const el = {
  form: $<HTMLFormElement>('#gen-form'),
  prompt: $<HTMLTextAreaElement>('#prompt'),
  maxTokens: $<HTMLInputElement>('#max-tokens'),
  maxTokensNum: $<HTMLInputElement>('#max-tokens-num'),
  chat: $<HTMLInputElement>('#chat'),
  chatNote: $('#chat-note'),
  temperature: $<HTMLInputElement>('#temperature'),
  topK: $<HTMLInputElement>('#top-k'),
  topP: $<HTMLInputElement>('#top-p'),
  minP: $<HTMLInputElement>('#min-p'),
  seed: $<HTMLInputElement>('#seed'),
  generate: $<HTMLButtonElement>('#generate'),
  stop: $<HTMLButtonElement>('#stop'),
  threshold: $<HTMLInputElement>('#threshold'),
  thresholdValue: $<HTMLOutputElement>('#threshold-value'),
  modelInfo: $('#model-info'),
  step: $<HTMLInputElement>('#step'),
  stepLabel: $('#step-label'),
  showAll: $<HTMLButtonElement>('#show-all'),
  reset: $<HTMLButtonElement>('#reset-selection'),
  selLayer: $<HTMLSelectElement>('#sel-layer'),
  selHead: $<HTMLSelectElement>('#sel-head'),
  exportPng: $<HTMLButtonElement>('#export-png'),
  exportSvg: $<HTMLButtonElement>('#export-svg'),
  graph: $('#graph'),
  status: $('#status'),
  text: $('#text'),
  runs: $('#runs'),
  deleteRun: $<HTMLButtonElement>('#delete-run'),
  tooltip: $('#tooltip'),
  graphPanel: $('.graph-panel'),
  tabs: $('#view-tabs'),
  exportCsv: $<HTMLButtonElement>('#export-csv'),
  exportJson: $<HTMLButtonElement>('#export-json'),
  exportNpy: $<HTMLButtonElement>('#export-npy'),
  ablateHead: $<HTMLButtonElement>('#ablate-head'),
  ablateMeanHead: $<HTMLButtonElement>('#ablate-mean-head'),
  knockoutToken: $<HTMLButtonElement>('#knockout-token'),
  edgeWeights: $<HTMLSelectElement>('#edge-weights'),
  lwLegend: $('#lw-legend'),
  measure: $<HTMLSelectElement>('#measure'),
  measureNote: $('#measure-note'),
  verify: $<HTMLButtonElement>('#verify-sources'),
  verifyPanel: $('#verify-panel'),
  documents: $<HTMLDetailsElement>('#documents'),
  maxTokensMsg: $('#max-tokens-msg'),
  promptMsg: $('#prompt-msg'),
};

// ------------------------------------------------------------------ state

const st = {
  model: null as ModelInfo | null,
  modelReady: null as Promise<ModelInfo | null> | null,
  status: 'idle' as Status,
  runId: null as string | null, // the stored run on screen (null while streaming)
  runDoc: null as RunDoc | null,
  inputs: [] as Token[],
  outputs: [] as Step[],
  data: null as GraphData | null,
  nOutRows: 0,
  view: { step: 0, mode: 'current', selected: null, threshold: DEFAULT_THRESHOLD } as ViewState,
  layer: null as number | null,
  head: null as number | null,
  abort: null as AbortController | null,
  gen: 0, // generation counter: late replies of an older generation are dropped
  load: 0, // run / graph load counter
  textStep: -2, // the step the #text panel shows as current
  tab: 'graph' as ViewName, // the tab on screen
  cmp: null as string | null, // the Compare tab's second run
  weights: 'split' as EdgeWeights, // what the graph's line width means
  raw: null as { of: GraphData; data: GraphData } | null, // st.data's raw attention rows (cached)
  rollout: null as RolloutState | null, // the open run's rollout rows, read per step
  measure: 'attention' as Measure, // what the graph's weights measure (the choice; a run without value norms falls back)
  dataMeasure: 'attention' as Measure, // what st.data measures (live rows: attention)
};

/** The attention rollout of the open run's steps as graph rows, read from /rollout as the view needs them. */
interface RolloutState {
  runId: string;
  data: GraphData;
  have: Set<number>;
  pending: Set<number>;
  queue: number[];
  active: number;
  ctl: AbortController;
}

const graph = new GraphView(el.graph, el.tooltip, {
  tokenClick: (side, index) => toggleSelect(side, index),
});
new LongRunTools($('#longrun'), graph); // overview strip, zoom, search, jump to source

function setStatus(s: Status, message: string): void {
  const was = st.status;
  st.status = s;
  el.graph.dataset.status = s;
  if (el.status.textContent !== message) el.status.textContent = message;
  el.status.classList.toggle('error', s === 'error');
  const busy = s === 'generating';
  el.generate.disabled = busy;
  el.stop.disabled = !busy;
  el.deleteRun.disabled = busy || !st.runId;
  syncRunActions();
  syncSelects(false);
  if (was !== s && (was === 'generating' || busy)) {
    syncLegend();
    if (st.weights === 'rollout') {
      pushModel(); // the rollout is drawn for a stored run only
      ensureRollout();
    }
    refreshView();
  }
}

// ------------------------------------------------------------------ rendering

function nOutput(): number {
  return st.outputs.length;
}

/** Whether the graph draws the rollout now (a stored run, not while generating). */
function rolloutOn(): boolean {
  return st.weights === 'rollout' && !!st.runId && !!st.runDoc && st.status !== 'generating';
}

/** Pushes the model (tokens, data) to the graph. */
function pushModel(): void {
  const data = rolloutOn() ? rolloutFor()?.data ?? null : st.weights === 'raw' ? rawData() : st.data;
  const weights: EdgeWeights = rolloutOn() ? 'rollout' : st.weights === 'raw' ? 'raw' : 'split';
  graph.setModel({ inputs: st.inputs, outputs: st.outputs, data, split: st.data, weights, measure: st.dataMeasure, nOutRows: st.nOutRows });
}

/** The raw attention rows of st.data (split x mass), computed once per data. */
function rawData(): GraphData | null {
  const d = st.data;
  if (!d) return null;
  if (st.status === 'generating') return rawGraphData(d); // the live data grows step by step
  if (!st.raw || st.raw.of !== d) st.raw = { of: d, data: rawGraphData(d) };
  return st.raw.data;
}

/** The open run's rollout state (a fresh one for another run). */
function rolloutFor(): RolloutState | null {
  const id = st.runId;
  const doc = st.runDoc;
  if (!id || !doc) return null;
  if (!st.rollout || st.rollout.runId !== id) {
    st.rollout?.ctl.abort();
    const d = new GraphData(doc.n_prompt);
    if (doc.n_output > 0) d.setStep(doc.n_output - 1, null, null);
    st.rollout = { runId: id, data: d, have: new Set(), pending: new Set(), queue: [], active: 0, ctl: new AbortController() };
  }
  return st.rollout;
}

let rolloutRedraw = 0;

/** Reads the rollout of the steps the view draws (4 requests at a time); redraws as they arrive. */
function ensureRollout(): void {
  const g = el.graph.dataset;
  g.weights = rolloutOn() ? 'rollout' : st.weights === 'raw' ? 'raw' : 'split';
  if (!rolloutOn()) {
    delete g.rollout;
    delete g.rolloutPos;
    return;
  }
  const r = rolloutFor()!;
  const doc = st.runDoc!;
  const t = clampStep(st.view.step, nOutput());
  const steps = rolloutStepsNeeded(t, st.view.mode, st.view.selected);
  g.rolloutPos = String(queryPos(doc.n_prompt, Math.max(0, t)));
  g.rollout = steps.every((s) => r.have.has(s)) ? 'ready' : 'loading';
  for (const s of steps)
    if (!r.have.has(s) && !r.pending.has(s)) {
      r.pending.add(s);
      r.queue.push(s);
    }
  const pump = () => {
    while (r.active < 4 && r.queue.length) {
      const s = r.queue.shift()!;
      r.active++;
      api
        .rollout(r.runId, queryPos(doc.n_prompt, s), r.ctl.signal)
        .then((rep) => {
          const rows = rolloutRows(rep.rollout, doc.n_prompt, s);
          r.data.setStep(s, rows.prompt, rows.output);
          r.have.add(s);
          if (st.rollout === r && !rolloutRedraw)
            rolloutRedraw = requestAnimationFrame(() => {
              rolloutRedraw = 0;
              if (st.rollout !== r || !rolloutOn()) return;
              pushModel();
              applyView(false);
            });
        })
        .catch((err) => {
          if (st.rollout === r && !(err instanceof DOMException && err.name === 'AbortError'))
            el.status.textContent = `The rollout of step ${s + 1} could not be read: ${err instanceof Error ? err.message : err}`;
        })
        .finally(() => {
          r.pending.delete(s);
          r.active--;
          pump();
        });
    }
  };
  pump();
}

/** Switches what the graph's line width means (raw attention / attention rollout). */
function setWeights(w: EdgeWeights, hash = true): void {
  weightsState(w);
  pushModel();
  applyView(hash);
}

/** st.weights, the selector, the legend and the layer / head selectors (no redraw). */
function weightsState(w: EdgeWeights): void {
  st.weights = w === 'rollout' || w === 'raw' ? w : 'split';
  el.edgeWeights.value = st.weights;
  syncLegend();
  el.graph.dataset.weights = rolloutOn() ? 'rollout' : st.weights === 'raw' ? 'raw' : 'split';
  syncSelects(false);
}

/** The legend line: what the lines show, the measure included (live rows are attention whatever the choice). */
function syncLegend(): void {
  const value = st.dataMeasure === 'value';
  const live = st.status === 'generating' && st.measure === 'value' ? ' (live: attention; value-weighted once the run is stored)' : '';
  el.lwLegend.textContent =
    st.weights === 'rollout'
      ? 'lines show: attention rollout of the step’s query (every layer, mean of the heads; shares of the whole row)'
      : st.weights === 'raw'
        ? value
          ? 'lines show: raw value-weighted attention (a·|W_O v|: not shares, rows do not sum to 1; widths stop growing at 1; BOS has no line)'
          : `lines show: raw attention (as in the Heatmap and Text tabs; BOS has no line)${live}`
        : value
          ? 'lines show: normalized value-weighted attention (a·|W_O v|; BOS removed; input and output parts each sum to 1)'
          : `lines show: normalized attention (BOS removed; input and output parts each sum to 1)${live}`;
  el.graph.dataset.measure = st.dataMeasure;
  el.measure.value = st.measure;
  const rollout = st.weights === 'rollout';
  el.measure.disabled = rollout;
  el.measure.title = rollout
    ? 'The attention rollout is always of attention: choose normalized or raw line widths to weigh by value-weighted attention'
    : 'What the weights measure: attention (the post-softmax weight of each source) or value-weighted attention, a_ij × |W_O^h v_j| (what each source adds to the head’s output; docs/ANALYSIS.md). While a run is generating the graph draws attention; the choice applies once the run is stored.';
}

/** The note beside the legend (a run that cannot show the chosen measure); null hides it. */
function measureNote(text: string | null): void {
  el.measureNote.hidden = text === null;
  el.measureNote.textContent = text ?? '';
}

/**
 * Reads /graph in the chosen measure. A run without value norms refuses
 * measure=value (400, "param": "measure"): then the choice falls back to
 * attention, the graph is read as attention, and a note says why.
 */
async function loadGraph(id: string, layer: number | null, head: number | null): Promise<{ g: GraphReply; measure: Measure; refused: string | null }> {
  const m = st.measure;
  try {
    return { g: await graphReply(id, layer, head, m), measure: m, refused: null };
  } catch (err) {
    // the offline file (heed export -o run.html) holds attention rows only
    const offline = err instanceof ApiError && err.code === 'exported_file';
    if (m !== 'value' || !(refusesMeasure(err) || offline)) throw err;
    const g = await graphReply(id, layer, head, 'attention');
    return {
      g,
      measure: 'attention',
      refused: offline
        ? 'The exported file holds attention rows only: the graph shows attention, not value-weighted.'
        : 'This run has no value norms (it was recorded before heed kept them, or imported): the graph shows attention, not value-weighted.',
    };
  }
}

/** Takes the measure a /graph read ended with (before its data is pushed). */
function tookMeasure(r: { measure: Measure; refused: string | null }): void {
  st.dataMeasure = r.measure;
  if (r.refused !== null) {
    st.measure = 'attention';
    measureNote(r.refused);
  } else measureNote(null);
  syncLegend();
}

/** Switches what the graph's weights measure; re-reads the open run's graph. */
function setMeasure(m: Measure): void {
  st.measure = isMeasure(m) ? m : 'attention';
  measureNote(null);
  syncLegend();
  writeHash();
  if (st.runId && st.status !== 'generating') void reloadGraph();
}

el.measure.addEventListener('change', () => setMeasure(el.measure.value as Measure));

el.edgeWeights.addEventListener('change', () => setWeights(el.edgeWeights.value as EdgeWeights));

// ------------------------------------------------------------------ verify sources

const verifyPanel = createVerifyPanel(el.verifyPanel, {
  selectSource: (side, index) => {
    if (st.tab !== 'graph') setTab('graph');
    const s = st.view.selected;
    if (!(s && s.side === side && s.index === index)) toggleSelect(side, index);
    graph.focusToken(side, index);
  },
  closed: () => {
    el.verify.setAttribute('aria-expanded', 'false');
    el.verify.focus();
  },
});

/** The current step of the open stored run, as the check's target (null: none). */
function verifyTarget(): VerifyTarget | null {
  const doc = st.runDoc;
  const n = nOutput();
  if (!st.runId || !doc || st.status === 'generating' || n === 0) return null;
  const t = Math.max(0, clampStep(st.view.step, n));
  return {
    runId: st.runId,
    nPrompt: doc.n_prompt,
    step: t,
    label: st.outputs[t]?.label ?? '',
    measure: st.dataMeasure,
    k: VERIFY_K,
    layer: st.layer,
    head: st.layer === null ? null : st.head,
  };
}

function syncVerify(): void {
  const t = verifyTarget();
  el.verify.disabled = !t;
  el.verify.title = t
    ? `Check step ${t.step + 1}'s top ${t.k} sources (by ${MEASURE_NAME[t.measure]}, ${selectionText()}) by ablation: the chosen token's log-probability when the step's query may not attend to each one (every layer and head). One forward pass per source: a few seconds on a large model; needs the model that made the run.`
    : 'Open or generate a run first: then check the current step’s top sources by ablation';
  verifyPanel.sync(t);
}

el.verify.setAttribute('aria-expanded', 'false');
el.verify.addEventListener('click', () => {
  const t = verifyTarget();
  if (!t) return;
  el.verify.setAttribute('aria-expanded', 'true');
  verifyPanel.run(t);
});

// ------------------------------------------------------------------ interventions

/** A branch of the open run with interventions: generated like any branch, then opened on its Effects tab. */
function intervene(req: InterventionRequest, label: string): void {
  if (st.status === 'generating') return;
  void generate({ req, atStep: req.branch.step, label, tab: 'effects' });
}

function ablateHead(layer: number, head: number, mean: boolean): void {
  const doc = st.runDoc;
  if (!doc || !st.runId || nOutput() === 0) return;
  const req = ablateRequest({ ...doc, id: st.runId }, st.view.step, layer, head, mean);
  intervene(req, `${mean ? 'Mean-ablating' : 'Ablating'} layer ${layer} head ${head} from step ${req.branch.step + 1}`);
}

/** The graph's selected token as a knockout key (null: none, or not a token the branch keeps). */
function selectedKey(): number | null {
  const sel = st.view.selected;
  const doc = st.runDoc;
  if (!sel || !doc) return null;
  return knockoutKey(doc.n_prompt, clampStep(st.view.step, nOutput()), sel.side, sel.index);
}

function knockoutSelected(): void {
  const doc = st.runDoc;
  const key = selectedKey();
  if (!doc || !st.runId || key === null) return;
  const req = knockoutRequest({ ...doc, id: st.runId }, st.view.step, key);
  const tok = doc.tokens[key];
  intervene(req, `Knocking out attention to “${displayLabel(tok?.label)}” (position ${key}) from step ${req.branch.step + 1}`);
}

function syncInterveneButtons(): void {
  const can = !!st.runId && !!st.runDoc && st.status !== 'generating' && nOutput() > 0;
  const t = clampStep(st.view.step, nOutput()) + 1;
  const head = st.layer !== null && st.head !== null;
  el.ablateHead.disabled = el.ablateMeanHead.disabled = !(can && head);
  if (head) {
    el.ablateHead.title = `A new run: outputs before step ${t} reused, then generated again with layer ${st.layer} head ${st.head}'s attention output zeroed; opens on its Effects`;
    el.ablateMeanHead.title = `A new run from step ${t} with layer ${st.layer} head ${st.head}'s attention output replaced by its mean over the prompt; opens on its Effects`;
  } else {
    el.ablateHead.title = 'Choose a layer and a head first: a new run from the current step with that head’s attention output zeroed';
    el.ablateMeanHead.title = 'Choose a layer and a head first: a new run from the current step with that head’s output replaced by its mean over the prompt';
  }
  const key = can ? selectedKey() : null;
  el.knockoutToken.disabled = key === null;
  el.knockoutToken.title =
    key === null
      ? 'Select an input token, or an output before the current step, first: a new run from the current step in which no query (all layers, all heads) attends to it'
      : `A new run: outputs before step ${t} reused, then generated again with no query (all layers, all heads) attending to position ${key}; opens on its Effects`;
}

el.ablateHead.addEventListener('click', () => {
  if (st.layer !== null && st.head !== null) ablateHead(st.layer, st.head, false);
});
el.ablateMeanHead.addEventListener('click', () => {
  if (st.layer !== null && st.head !== null) ablateHead(st.layer, st.head, true);
});
el.knockoutToken.addEventListener('click', knockoutSelected);

/** Applies st.view: graph, step slider, text, buttons, hash. */
function applyView(updateHash: boolean | 'later' = true): void {
  const n = nOutput();
  const t = clampStep(st.view.step, n);
  st.view.step = Math.max(0, t);
  graph.render(st.view);
  el.step.max = String(Math.max(0, n - 1));
  el.step.disabled = n === 0;
  if (el.step.value !== String(Math.max(0, t))) el.step.value = String(Math.max(0, t));
  if (n === 0) el.stepLabel.textContent = 'Step –';
  else {
    const tok = st.outputs[t];
    el.stepLabel.textContent = `Step ${t + 1} of ${n}: “${displayLabel(tok?.label)}”`;
  }
  el.showAll.setAttribute('aria-pressed', String(st.view.mode === 'all' && !st.view.selected));
  el.showAll.textContent = st.view.mode === 'all' ? 'Showing all connections' : 'Show all connections';
  el.reset.disabled = false;
  const canExport = st.inputs.length > 0 || n > 0;
  el.exportPng.disabled = !canExport;
  el.exportSvg.disabled = !canExport;
  updateTextCurrent(t);
  ensureRollout();
  syncInterveneButtons();
  syncVerify();
  refreshView();
  if (updateHash === 'later') writeHashSoon();
  else if (updateHash) writeHash();
}

function urlState(): UrlState {
  return {
    run: st.runId,
    step: st.runId && nOutput() > 0 ? st.view.step : null,
    layer: st.layer,
    head: st.head,
    threshold: st.view.threshold,
    mode: st.view.mode,
    view: st.tab,
    cmp: st.cmp,
    weights: st.weights,
    measure: st.measure,
  };
}

let hashTimer = 0;

/** The hash while a slider is dragged: at most every 200 ms (history.replaceState costs a few ms). */
function writeHashSoon(): void {
  if (!hashTimer) hashTimer = window.setTimeout(writeHash, 200);
}

function writeHash(): void {
  if (hashTimer) {
    clearTimeout(hashTimer);
    hashTimer = 0;
  }
  if (!st.runId && st.tab === 'graph') return;
  const h = encodeHash(urlState());
  if (location.hash.replace(/^#/, '') !== h) history.replaceState(null, '', h ? '#' + h : location.pathname + location.search);
}

// ------------------------------------------------------------------ text panel

function renderText(): void {
  const box = el.text;
  box.textContent = '';
  st.textStep = -2;
  if (st.outputs.length === 0) {
    const p = document.createElement('p');
    p.className = 'note';
    p.textContent = st.status === 'generating' ? 'Waiting for the first token…' : 'Nothing generated yet.';
    box.appendChild(p);
    return;
  }
  const frag = document.createDocumentFragment();
  st.outputs.forEach((s, i) => frag.appendChild(textSpan(s, i)));
  box.appendChild(frag);
}

function textSpan(s: Step, i: number): HTMLSpanElement {
  const sp = document.createElement('span');
  sp.className = 'out-tok';
  sp.dataset.index = String(i);
  sp.setAttribute('role', 'button');
  sp.tabIndex = -1;
  const txt = s.text !== undefined ? s.text : s.label;
  sp.textContent = txt;
  if (!txt) sp.classList.add('blank');
  sp.title = `step ${i}: ${displayLabel(s.label)} (id ${s.id})`;
  return sp;
}

function appendText(s: Step, i: number): void {
  if (i === 0 || el.text.querySelector('.note')) {
    renderText();
    return;
  }
  el.text.appendChild(textSpan(s, i));
}

function updateTextCurrent(t: number): void {
  const spans = el.text.children;
  const prev = st.textStep;
  st.textStep = t;
  const focusWasIn = document.activeElement instanceof HTMLElement && document.activeElement.classList.contains('out-tok');
  const lo = prev < -1 ? 0 : Math.min(prev, t);
  const hi = prev < -1 ? spans.length - 1 : Math.max(prev, t);
  for (let i = Math.max(0, lo); i <= Math.min(hi, spans.length - 1); i++) {
    const sp = spans[i] as HTMLElement;
    if (!sp.classList.contains('out-tok')) continue;
    sp.classList.toggle('current', i === t);
    sp.classList.toggle('future', i > t);
    sp.tabIndex = i === t ? 0 : -1;
    if (i === t) sp.setAttribute('aria-current', 'step');
    else sp.removeAttribute('aria-current');
  }
  if (t >= 0 && t < spans.length) {
    const cur = spans[t] as HTMLElement;
    if (focusWasIn && document.activeElement !== cur) cur.focus();
  }
}

el.text.addEventListener('click', (e) => {
  const sp = (e.target as HTMLElement).closest('.out-tok') as HTMLElement | null;
  if (sp) setStep(Number(sp.dataset.index));
});
el.text.addEventListener('keydown', (e) => {
  const sp = (e.target as HTMLElement).closest('.out-tok') as HTMLElement | null;
  if (sp && (e.key === 'Enter' || e.key === ' ')) {
    e.preventDefault();
    setStep(Number(sp.dataset.index));
  }
});

// ------------------------------------------------------------------ view changes

function setStep(t: number, hash: boolean | 'later' = true): void {
  const n = nOutput();
  if (n === 0) return;
  st.view = { ...st.view, step: Math.max(0, Math.min(n - 1, t)) };
  applyView(hash);
  graph.ensureVisible('output', st.view.step);
}

function setMode(mode: Mode): void {
  st.view = { ...st.view, mode, selected: null };
  applyView();
}

function toggleSelect(side: Side, index: number): void {
  const s = st.view.selected;
  const same = s && s.side === side && s.index === index;
  st.view = { ...st.view, selected: same ? null : { side, index } };
  applyView();
}

function resetSelection(): void {
  st.view = { ...st.view, selected: null, mode: 'current' };
  applyView();
}

function setThreshold(x: number, fromSlider = false): void {
  const v = Number.isFinite(x) ? Math.max(0, Math.min(1, x)) : DEFAULT_THRESHOLD;
  st.view = { ...st.view, threshold: v };
  if (!fromSlider) el.threshold.value = String(v);
  el.thresholdValue.textContent = v.toFixed(3);
  applyView(fromSlider ? 'later' : true);
}

el.step.addEventListener('input', () => setStep(Number(el.step.value), 'later'));
el.step.addEventListener('change', () => writeHash());
el.showAll.addEventListener('click', () => setMode(st.view.mode === 'all' && !st.view.selected ? 'current' : 'all'));
el.reset.addEventListener('click', resetSelection);
el.threshold.addEventListener('input', () => setThreshold(Number(el.threshold.value), true));
el.threshold.addEventListener('change', () => writeHash());

// keyboard: arrows move the step when the focus is not in a field that uses them
document.addEventListener('keydown', (e) => {
  if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
  const tgt = e.target as HTMLElement;
  const tag = tgt.tagName;
  const typing =
    tag === 'TEXTAREA' ||
    tag === 'SELECT' ||
    tgt.isContentEditable ||
    (tag === 'INPUT' && (tgt as HTMLInputElement).type !== 'checkbox' && (tgt as HTMLInputElement).type !== 'button');
  if (typing) return; // text fields, number fields, and range sliders (which move themselves)
  if (e.key === 'Escape') {
    if (st.view.selected || st.view.mode !== 'current') resetSelection();
    graph.hideTip();
    return;
  }
  const n = nOutput();
  if (n === 0) return;
  const t = st.view.step;
  let to = -1;
  if (e.key === 'ArrowLeft') to = t - 1;
  else if (e.key === 'ArrowRight') to = t + 1;
  else if (e.key === 'Home') to = 0;
  else if (e.key === 'End') to = n - 1;
  else return;
  e.preventDefault();
  setStep(Math.max(0, Math.min(n - 1, to)));
});

// ------------------------------------------------------------------ max tokens, chat, model

function maxTokenLimit(): number {
  const l = st.model?.limits?.max_tokens; // 0 in an exported file (no server): no limit known
  return typeof l === 'number' && l >= 1 ? Math.trunc(l) : 512;
}

/** Checks the max-tokens box: a refused value is said beside it (and marked), never silently changed. */
function validateMaxTokens(): number | null {
  const c = checkMaxTokens(el.maxTokensNum.value, maxTokenLimit());
  el.maxTokensMsg.hidden = c.ok;
  el.maxTokensMsg.textContent = c.ok ? '' : c.message;
  el.maxTokensNum.setAttribute('aria-invalid', String(!c.ok));
  if (c.ok) el.maxTokens.value = String(c.value);
  return c.ok ? c.value : null;
}

el.maxTokens.addEventListener('input', () => {
  el.maxTokensNum.value = el.maxTokens.value;
  validateMaxTokens();
});
el.maxTokensNum.addEventListener('input', () => void validateMaxTokens());
el.maxTokensNum.addEventListener('change', () => void validateMaxTokens());
mountPromptFile($<HTMLButtonElement>('#prompt-file-btn'), $<HTMLInputElement>('#prompt-file'), el.prompt, (m) => {
  el.promptMsg.hidden = m === null;
  el.promptMsg.textContent = m ?? '';
});
el.prompt.addEventListener('input', () => {
  if (!el.promptMsg.hidden && checkPrompt(el.prompt.value) === null) {
    el.promptMsg.hidden = true;
    el.prompt.removeAttribute('aria-invalid');
  }
});

// ------------------------------------------------------------------ documents (chat models)

const documentsForm = createDocumentsForm({
  details: el.documents,
  list: $('#doc-list'),
  add: $<HTMLButtonElement>('#doc-add'),
  upload: $<HTMLButtonElement>('#doc-upload'),
  file: $<HTMLInputElement>('#doc-file'),
  msg: $('#documents-msg'),
  count: $('#documents-count'),
});

/**
 * The Generate form's documents, checked (null: refused, and said beside
 * them). The server puts them into the system message in chat mode, else
 * before the prompt.
 */
function checkFormDocuments(): { name: string; text: string }[] | null {
  documentsForm.clearError();
  const docs = documentsForm.values();
  if (docs.length === 0) return [];
  const c = checkDocuments(docs);
  if (!c.ok) {
    documentsForm.refuse(c.message, c.index, c.field);
    return null;
  }
  return c.docs;
}

function showModel(m: ModelInfo): void {
  const box = el.modelInfo;
  box.querySelectorAll('dl, p').forEach((x) => x.remove());
  const dl = document.createElement('dl');
  const rows: [string, string][] = [
    ['Name', m.id],
    ['Architecture', m.arch],
    ['Layers', String(m.n_layer)],
    ['Heads', m.n_head_kv && m.n_head_kv !== m.n_head ? `${m.n_head} (${m.n_head_kv} KV)` : String(m.n_head)],
    ['Context', `${m.n_ctx} tokens`],
    ['Vocabulary', `${m.n_vocab} tokens`],
    ['Chat template', m.chat_template ?? 'none'],
  ];
  for (const [k, v] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dl.append(dt, dd);
  }
  box.appendChild(dl);

  if (m.chat_template) {
    el.chat.disabled = false;
    el.chatNote.textContent = `Uses the model's ${m.chat_template} chat template.`;
  } else {
    el.chat.checked = false;
    el.chat.disabled = true;
    el.chatNote.textContent = 'Not available: this model has no chat template heed knows.';
  }
  const lim = maxTokenLimit();
  el.maxTokensNum.max = String(lim);
  el.maxTokens.max = String(lim); // the slider reaches the server's limit too
  syncMaxTokensLimit();
  validateMaxTokens();

  syncExpertsTab();
  fillSelect(el.selLayer, 'all layers', m.n_layer, 'layer');
  fillSelect(el.selHead, 'all heads', m.n_head, 'head');
  syncSelects();
}

function fillSelect(s: HTMLSelectElement, all: string, n: number, word: string): void {
  s.textContent = '';
  s.add(new Option(all, ''));
  for (let i = 0; i < n; i++) s.add(new Option(`${word} ${i}`, String(i)));
}

/** The selectors' values and states: off while generating, and on the graph while it draws the rollout (always every layer). */
function syncSelects(values = true): void {
  if (values) {
    el.selLayer.value = st.layer === null ? '' : String(st.layer);
    el.selHead.value = st.head === null ? '' : String(st.head);
  }
  const busy = st.status === 'generating';
  const rollout = st.tab === 'graph' && st.weights === 'rollout';
  el.selHead.disabled = st.layer === null || busy || rollout;
  el.selLayer.disabled = busy || !st.model || rollout;
  const why = rollout ? 'The graph draws the attention rollout, which always takes every layer (the mean of each layer’s heads)' : '';
  el.selLayer.dataset.title ??= el.selLayer.title; // index.html's explanation, shown when there is no reason to give
  el.selHead.dataset.title ??= el.selHead.title;
  el.selLayer.title = why || el.selLayer.dataset.title;
  el.selHead.title = why || el.selHead.dataset.title;
  syncInterveneButtons();
}

function onSelection(): void {
  const l = el.selLayer.value === '' ? null : Number(el.selLayer.value);
  const h = el.selHead.value === '' ? null : Number(el.selHead.value);
  setSelection(l, h);
}

/** Selects all layers (null), one layer (head null) or one head; re-reads the graph, refreshes the tab. */
function setSelection(l: number | null, h: number | null): void {
  if (l === null) h = null;
  if (st.status === 'generating' || (l === st.layer && h === st.head)) return;
  st.layer = l;
  st.head = h;
  // other attention, a fresh look: the current step's edges, no selection
  st.view = { ...st.view, mode: 'current', selected: null };
  syncSelects();
  writeHash();
  refreshView();
  if (st.runId) void reloadGraph();
}
el.selLayer.addEventListener('change', onSelection);
el.selHead.addEventListener('change', onSelection);

function selectionText(): string {
  if (st.tab === 'graph' && rolloutOn()) return 'attention rollout (every layer, mean of the heads)';
  if (st.layer === null) return 'mean of all layers and heads';
  if (st.head === null) return `layer ${st.layer}, mean of its heads`;
  return `layer ${st.layer}, head ${st.head}`;
}

// ------------------------------------------------------------------ stored runs

/** Opens a stored run (GET run + graph) at the hash's step / selection. */
async function openRun(id: string, u: UrlState): Promise<void> {
  stopGeneration();
  const my = ++st.load;
  setStatus('idle', `Opening ${id}…`);
  await st.modelReady;
  if (my !== st.load) return;
  setTab(u.view ?? 'graph', false);
  st.cmp = u.cmp ?? null;
  if (u.weights) weightsState(u.weights);
  st.measure = u.measure ?? 'attention';
  st.layer = u.layer !== null && (!st.model || u.layer < st.model.n_layer) ? u.layer : null;
  st.head = st.layer !== null && u.head !== null && (!st.model || u.head < st.model.n_head) ? u.head : null;
  syncSelects();
  try {
    const [doc, r] = await Promise.all([api.run(id), loadGraph(id, st.layer, st.head)]);
    if (my !== st.load) return;
    st.runId = id;
    st.runDoc = doc;
    tookMeasure(r);
    showRunData(doc, graphDataOf(r.g));
    st.view = {
      step: u.step ?? doc.n_output - 1,
      mode: u.mode,
      selected: null,
      threshold: u.threshold,
    };
    el.threshold.value = String(u.threshold);
    el.thresholdValue.textContent = u.threshold.toFixed(3);
    applyView();
    graph.ensureVisible('output', st.view.step);
    showRunPrompt(doc, id);
    showRunsMsg(null);
    el.status.dataset.nOutput = String(doc.n_output);
    setStatus('done', `Opened ${id}: ${doc.n_prompt} prompt tokens, ${doc.n_output} generated (${selectionText()}${st.dataMeasure === 'value' ? ', value-weighted' : ''}).`);
    markCurrentRun();
  } catch (err) {
    if (my !== st.load) return;
    fail(err, `Could not open ${id}`);
  }
}

/** Puts a stored run's tokens and graph data on screen. */
function showRunData(doc: RunDoc, data: GraphData): void {
  st.inputs = doc.tokens.slice(0, doc.n_prompt);
  st.outputs = doc.steps.length ? doc.steps : doc.tokens.slice(doc.n_prompt).map((t, i) => ({ index: i, ...t }));
  st.data = data;
  st.nOutRows = st.outputs.length;
  pushModel();
  renderText();
}

/** Re-reads /graph for the layer/head selection. */
async function reloadGraph(): Promise<void> {
  const id = st.runId;
  if (!id) return;
  const my = ++st.load;
  el.status.textContent = `Loading ${selectionText()}…`;
  try {
    const r = await loadGraph(id, st.layer, st.head);
    if (my !== st.load || id !== st.runId) return;
    tookMeasure(r);
    st.data = graphDataOf(r.g);
    pushModel();
    applyView();
    setStatus('done', `Showing ${selectionText()}${st.dataMeasure === 'value' ? ', value-weighted' : ''}.`);
  } catch (err) {
    if (my !== st.load) return;
    fail(err, 'Could not load that layer/head');
  }
}

function fail(err: unknown, what: string): void {
  const msg = err instanceof Error ? err.message : String(err);
  setStatus('error', `${what}: ${msg}`);
}

function markCurrentRun(): void {
  el.runs.querySelectorAll<HTMLAnchorElement>('.run-item').forEach((a) => {
    if (a.dataset.runId === st.runId) a.setAttribute('aria-current', 'true');
    else a.removeAttribute('aria-current');
  });
}

el.runs.addEventListener('click', (e) => {
  const a = (e.target as HTMLElement).closest('a.run-item') as HTMLAnchorElement | null;
  if (!a || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return;
  e.preventDefault();
  const id = a.dataset.runId!;
  if (location.hash !== '#run=' + encodeURIComponent(id)) history.pushState(null, '', '#run=' + encodeURIComponent(id));
  void openRun(id, { ...decodeHash(''), run: id, threshold: st.view.threshold, view: st.tab, cmp: st.cmp, measure: st.measure });
});

el.deleteRun.addEventListener('click', async () => {
  const id = st.runId;
  if (!id || !confirm(`Delete ${id} from the store?`)) return;
  showRunsMsg(null);
  try {
    await api.deleteRun(id);
  } catch (err) {
    showRunsMsg(`Could not delete ${id}: ${err instanceof Error ? err.message : err}`); // the run stays open
    return;
  }
  clearRun();
  history.replaceState(null, '', location.pathname + location.search);
  setStatus('idle', `Deleted ${id}.`);
  runsChanged();
});

// "Open a run file…": stores a .heedrun on the server, then opens it like a saved run.
mountUploadButton(el.deleteRun.parentElement ?? el.runs, {
  started: (name) => setStatus('idle', `Uploading ${name}…`),
  stored: (r, name) => {
    history.pushState(null, '', '#run=' + encodeURIComponent(r.id));
    runsChanged();
    void openRun(r.id, { ...decodeHash(''), run: r.id, threshold: st.view.threshold, view: st.tab, measure: st.measure }).then(() => {
      if (st.runId === r.id && st.status === 'done' && !r.own_model)
        el.status.textContent += ` ${name} was made with another model (${r.model}): no logit lens.`;
    });
  },
  failed: (err, name) => fail(err, `Could not open ${name}`),
});

function clearRun(): void {
  st.runId = null;
  st.runDoc = null;
  st.inputs = [];
  st.outputs = [];
  st.data = null;
  st.nOutRows = 0;
  st.view = { ...st.view, step: 0, selected: null };
  pushModel();
  renderText();
  applyView(false);
}

window.addEventListener('hashchange', () => {
  const u = decodeHash(location.hash);
  if (u.run && u.run !== st.runId) void openRun(u.run, u);
  else if (!u.run) {
    st.cmp = u.cmp ?? null;
    setTab(u.view ?? 'graph', false);
  } else if (u.run && u.run === st.runId) {
    st.cmp = u.cmp ?? null;
    setTab(u.view ?? 'graph', false);
    weightsState(u.weights ?? 'split');
    const meas = (u.measure ?? 'attention') !== st.measure;
    if (meas) {
      st.measure = u.measure ?? 'attention';
      measureNote(null);
      syncLegend();
    }
    const sel = meas || u.layer !== st.layer || u.head !== st.head;
    st.layer = u.layer;
    st.head = u.layer === null ? null : u.head;
    syncSelects();
    st.view = { ...st.view, step: u.step ?? nOutput() - 1, mode: u.mode, threshold: u.threshold };
    el.threshold.value = String(u.threshold);
    el.thresholdValue.textContent = u.threshold.toFixed(3);
    if (sel) void reloadGraph();
    else {
      pushModel();
      applyView();
    }
  }
});

// ------------------------------------------------------------------ nothing lost: drafts, the run list, downloads, offline

/** The exported offline file (`heed export -o run.html`, "Download offline HTML"): its data sits in #heed-data and no server answers. */
const offline = !!document.getElementById('heed-data');
const draftStore: Storage | null = (() => {
  try {
    return offline ? null : window.localStorage;
  } catch {
    return null; // storage off (private mode, a sandbox)
  }
})();
const samplingInputs: Record<SamplingField, HTMLInputElement> = {
  temperature: el.temperature,
  topK: el.topK,
  topP: el.topP,
  minP: el.minP,
  seed: el.seed,
};
const samplingMsgs = {} as Record<SamplingField, HTMLElement>;
const RUNS_POLL_MS = 4000; // the run list is read again this often while the page is visible (other tabs, other clients)
const TREE_KEY = 'heed.runsTree';

const nl = {
  promptSource: $('#prompt-source'),
  promptSourceText: $('#prompt-source-text'),
  promptRestore: $<HTMLButtonElement>('#prompt-restore'),
  promptMessages: $('#prompt-messages'),
  generateMsg: $('#generate-msg'),
  downloadRun: $<HTMLButtonElement>('#download-run'),
  downloadHtml: $<HTMLButtonElement>('#download-html'),
  runsTree: $<HTMLInputElement>('#runs-tree'),
  runsMsg: $('#runs-msg'),
  maxTokensLimit: document.createElement('span'),
  /** the user's own prompt text (kept while the box shows an opened run's prompt) */
  draftPrompt: el.prompt.value,
  draftChat: false,
  /** the run whose prompt the box shows (null: the user's text) */
  promptFromRun: null as string | null,
  runsSig: '',
  runsSeq: 0,
  channel: null as BroadcastChannel | null,
};

/** The sampling fields' limit lines and message slots (beside each field). */
function mountSamplingChecks(): void {
  for (const f of SAMPLING_FIELDS) {
    const input = samplingInputs[f];
    const r = SAMPLING_RULES[f];
    const lim = document.createElement('span');
    lim.id = `${input.id}-limit`;
    lim.className = 'field-limit';
    lim.textContent = r.limit;
    document.querySelector(`label[for="${input.id}"]`)?.append(' ', lim);
    const msg = document.createElement('p');
    msg.id = `${input.id}-msg`;
    msg.className = 'field-msg';
    msg.setAttribute('role', 'alert');
    msg.hidden = true;
    input.insertAdjacentElement('afterend', msg);
    input.setAttribute('aria-describedby', `${lim.id} ${msg.id}`);
    input.min = String(r.min);
    input.max = String(r.max);
    samplingMsgs[f] = msg;
    input.addEventListener('input', () => void checkSamplingField(f));
    input.addEventListener('change', () => void checkSamplingField(f));
  }
  nl.maxTokensLimit.id = 'max-tokens-limit';
  nl.maxTokensLimit.className = 'field-limit';
  document.querySelector('label[for="max-tokens"]')?.append(' ', nl.maxTokensLimit);
  syncMaxTokensLimit();
}

function syncMaxTokensLimit(): void {
  nl.maxTokensLimit.textContent = `1 to ${maxTokenLimit()}`;
}

/** Checks one sampling field: a refused value stays as typed, marked, with the reason beside it. */
function checkSamplingField(f: SamplingField): number | null {
  const input = samplingInputs[f];
  const r = SAMPLING_RULES[f];
  // what the browser could not read as a number (1e400, "1-"): its value reads empty
  const c: FieldCheck = input.validity?.badInput ? { ok: false, message: `${r.name}: what is typed is not a number the browser can read (${r.limit}).` } : checkField(input.value, r);
  const msg = samplingMsgs[f];
  msg.hidden = c.ok;
  msg.textContent = c.ok ? '' : c.message;
  input.setAttribute('aria-invalid', String(!c.ok));
  return c.ok ? c.value : null;
}

/** Every sampling field checked (null: one is refused; the Sampling section opens to show why). */
function validateSampling(): Record<SamplingField, number> | null {
  const out = {} as Record<SamplingField, number>;
  let ok = true;
  for (const f of SAMPLING_FIELDS) {
    const v = checkSamplingField(f);
    if (v === null) ok = false;
    else out[f] = v;
  }
  if (!ok) ($('#advanced') as HTMLDetailsElement).open = true;
  return ok ? out : null;
}

/** Hides the messages an earlier refused request left beside the controls. */
function clearRequestErrors(): void {
  nl.generateMsg.hidden = true;
  nl.generateMsg.textContent = '';
}

/**
 * A request the server refused (or could not be sent): said beside the
 * control it concerns (the field its `param` names, else beside Generate),
 * and on the status line; the open run is not touched.
 */
function requestError(err: unknown, what: string, keepStatus = true): void {
  const msg = err instanceof Error ? err.message : String(err);
  const param = err instanceof ApiError ? err.param : undefined;
  const fields: Record<string, [HTMLElement, HTMLElement]> = {
    prompt: [el.promptMsg, el.prompt],
    messages: [el.promptMsg, el.prompt],
    max_tokens: [el.maxTokensMsg, el.maxTokensNum],
  };
  for (const f of SAMPLING_FIELDS) {
    const api = f === 'topK' ? 'top_k' : f === 'topP' ? 'top_p' : f === 'minP' ? 'min_p' : f;
    fields[api] = [samplingMsgs[f], samplingInputs[f]];
  }
  const at = param ? fields[param] : undefined;
  const text = `${what}: ${msg}${st.runId ? ` The open run (${st.runId}) is unchanged.` : ''}`;
  if (at) {
    at[0].hidden = false;
    at[0].textContent = text;
    at[1].setAttribute('aria-invalid', 'true');
  } else {
    nl.generateMsg.hidden = false;
    nl.generateMsg.textContent = text;
  }
  if (keepStatus) setStatus('error', text); // the status says the request failed; the run on screen is untouched
}

// ---- typed text kept across reloads

function currentDraft(): Draft {
  const sampling: Draft['sampling'] = {};
  for (const f of SAMPLING_FIELDS) sampling[f] = samplingInputs[f].value;
  return { prompt: nl.draftPrompt, chat: nl.promptFromRun ? nl.draftChat : el.chat.checked, maxTokens: el.maxTokensNum.value, sampling };
}

function keepDraft(): void {
  if (!offline) saveDraft(draftStore, currentDraft());
}

/** Puts the stored draft back into the form; the prompt too unless a run's prompt will take the box. */
function restoreDraft(withPrompt: boolean): void {
  const d = loadDraft(draftStore);
  if (!d) return;
  if (withPrompt) {
    el.prompt.value = d.prompt;
    el.chat.checked = d.chat;
  }
  nl.draftPrompt = d.prompt;
  nl.draftChat = d.chat;
  if (d.maxTokens !== '') {
    el.maxTokensNum.value = d.maxTokens;
    const c = checkMaxTokens(d.maxTokens, maxTokenLimit());
    if (c.ok) el.maxTokens.value = String(c.value);
  }
  for (const f of SAMPLING_FIELDS) if (d.sampling[f] !== undefined) samplingInputs[f].value = d.sampling[f]!;
}

/** The prompt box shows the opened run's prompt (its last user message and the other messages, for a chat run). */
function showRunPrompt(doc: RunDoc, id: string): void {
  const p = runPromptText(doc);
  if (!p) return;
  el.prompt.value = p.text; // nl.draftPrompt keeps the user's own text
  if (!el.chat.disabled || !p.chat) el.chat.checked = p.chat;
  el.promptMsg.hidden = true;
  el.prompt.removeAttribute('aria-invalid');
  nl.promptFromRun = id;
  nl.promptMessages.textContent = '';
  const msgs = doc.messages ?? [];
  for (const m of msgs) {
    const li = document.createElement('li');
    const role = document.createElement('strong');
    role.textContent = m.role + ': ';
    li.append(role, m.content);
    nl.promptMessages.appendChild(li);
  }
  nl.promptMessages.hidden = msgs.length < 2;
  syncPromptSource();
}

function syncPromptSource(): void {
  const id = nl.promptFromRun;
  nl.promptSource.hidden = !id;
  el.prompt.classList.toggle('from-run', !!id);
  if (!id) {
    nl.promptMessages.hidden = true;
    return;
  }
  nl.promptSourceText.textContent = offline
    ? `The prompt of this exported run (read-only).`
    : `The prompt of the open run ${id}${el.chat.checked ? ' (its last user message)' : ''}: edit it to generate from it.`;
  nl.promptRestore.hidden = offline || nl.draftPrompt === '' || nl.draftPrompt === el.prompt.value;
  nl.promptRestore.title = `Back to the text you typed: “${nl.draftPrompt.slice(0, 60)}${nl.draftPrompt.length > 60 ? '…' : ''}”`;
}

el.prompt.addEventListener('input', () => {
  nl.promptFromRun = null; // the box is the user's text again
  nl.draftPrompt = el.prompt.value;
  syncPromptSource();
});
el.chat.addEventListener('change', () => {
  if (!nl.promptFromRun) nl.draftChat = el.chat.checked;
});
el.form.addEventListener('input', keepDraft);
el.form.addEventListener('change', keepDraft);
nl.promptRestore.addEventListener('click', () => {
  el.prompt.value = nl.draftPrompt;
  if (!el.chat.disabled) el.chat.checked = nl.draftChat;
  nl.promptFromRun = null;
  syncPromptSource();
  keepDraft();
  el.prompt.focus();
});

// ---- the run list: refreshed on every change, branches with their parent, a tree

/** The run list changed here: other tabs are told, this one reads it again. */
function runsChanged(): void {
  nl.channel?.postMessage('runs');
  void refreshRuns(true);
}

function showRunsMsg(text: string | null): void {
  nl.runsMsg.hidden = text === null;
  nl.runsMsg.textContent = text ?? '';
}

/** One run of the list: its preview, the branch line (parent and step), its counts. */
function runItem(r: RunSummary, byId: Map<string, RunSummary>): HTMLAnchorElement {
  const a = document.createElement('a');
  a.className = 'run-item';
  a.dataset.runId = r.id;
  a.href = '#run=' + encodeURIComponent(r.id);
  a.title = r.id;
  const title = document.createElement('span');
  title.className = 'run-preview';
  title.textContent = r.preview ? r.preview : r.kind === 'chat' ? '(chat)' : '(no prompt text)';
  a.appendChild(title);
  const line = branchLine(r, byId);
  if (line) {
    a.dataset.parent = r.parent!;
    if (typeof r.step === 'number') a.dataset.step = String(r.step);
    const b = document.createElement('span');
    b.className = 'run-branch';
    b.textContent = line;
    a.appendChild(b);
  }
  const meta = document.createElement('span');
  meta.className = 'run-meta';
  const when = r.created ? new Date(r.created * 1000).toLocaleString() : '';
  meta.textContent = `${r.n_prompt} → ${r.n_output} tokens${r.stop && r.stop !== 'length' ? ` (${r.stop})` : ''}${when ? ' · ' + when : ''}`;
  a.appendChild(meta);
  return a;
}

function runsList(nodes: RunNode[], byId: Map<string, RunSummary>, tree: boolean): HTMLUListElement {
  const ul = document.createElement('ul');
  for (const n of nodes) {
    const li = document.createElement('li');
    li.appendChild(runItem(n.run, byId));
    if (tree && n.children.length) li.appendChild(runsList(n.children, byId, true));
    ul.appendChild(li);
  }
  return ul;
}

/** Reads the run list and shows it (unless nothing changed and not `force`). */
async function refreshRuns(force = false): Promise<void> {
  const seq = ++nl.runsSeq;
  let list: RunSummary[];
  let total = 0;
  try {
    const rep = await api.runs(100);
    list = rep.runs;
    total = rep.total;
  } catch (err) {
    if (seq !== nl.runsSeq) return;
    nl.runsSig = '';
    el.runs.textContent = '';
    const p = document.createElement('p');
    p.className = 'note';
    p.textContent = `The run list could not be read: ${err instanceof Error ? err.message : err}`;
    el.runs.appendChild(p);
    return;
  }
  if (seq !== nl.runsSeq) return; // a newer read is on its way
  const tree = nl.runsTree.checked;
  const sig = JSON.stringify([tree, list]);
  if (!force && sig === nl.runsSig) return;
  nl.runsSig = sig;
  el.runs.textContent = '';
  el.runs.dataset.total = String(total);
  el.runs.dataset.view = tree ? 'tree' : 'list';
  if (list.length === 0) {
    const p = document.createElement('p');
    p.className = 'note';
    p.textContent = 'No saved runs yet.';
    el.runs.appendChild(p);
  } else {
    const byId = new Map(list.map((r) => [r.id, r]));
    const nodes = tree ? runTree(list) : list.map((run): RunNode => ({ run, children: [], depth: 0 }));
    el.runs.appendChild(runsList(nodes, byId, tree));
  }
  // the open run deleted elsewhere (another tab, another client): said, what is on screen stays
  if (st.runId && !offline && total <= list.length && !list.some((r) => r.id === st.runId))
    showRunsMsg(`The open run ${st.runId} is no longer stored (deleted in another tab or by another client); what is on screen stays until you open another.`);
  markCurrentRun();
}

function syncRunActions(): void {
  const can = !!st.runId && st.status !== 'generating';
  nl.downloadRun.disabled = nl.downloadHtml.disabled = !can;
  const what = st.runId ?? 'the open run';
  nl.downloadRun.title = can ? `Download ${what} as a run file (.heedrun: heed, Python and another heed read it)` : 'Open or generate a run first: then download it as a run file';
  nl.downloadHtml.title = can ? `Download ${what} as one HTML file that works offline (no server: Generate and the other server controls are hidden there)` : 'Open or generate a run first: then download it as an offline HTML file';
}

async function downloadOpenRun(format: 'run' | 'html'): Promise<void> {
  const id = st.runId;
  if (!id) return;
  const b = format === 'run' ? nl.downloadRun : nl.downloadHtml;
  const what = format === 'run' ? 'a run file' : 'offline HTML';
  showRunsMsg(null);
  b.disabled = true;
  b.setAttribute('aria-busy', 'true');
  try {
    const blob = await api.download(id, format);
    download(blob, `${id.replace(/[^\w.-]/g, '_')}.${format === 'run' ? 'heedrun' : 'html'}`);
  } catch (err) {
    showRunsMsg(`Could not download ${id} as ${what}: ${err instanceof Error ? err.message : err}`);
  } finally {
    b.removeAttribute('aria-busy');
    syncRunActions();
  }
}

nl.downloadRun.addEventListener('click', () => void downloadOpenRun('run'));
nl.downloadHtml.addEventListener('click', () => void downloadOpenRun('html'));
nl.runsTree.addEventListener('change', () => {
  try {
    draftStore?.setItem(TREE_KEY, nl.runsTree.checked ? '1' : '0');
  } catch {
    /* storage off: the choice lasts for this page */
  }
  void refreshRuns(true);
});

/** Stop: the server stores the run as cancelled once it notices; its stored run is then shown, so every count is the store's. */
async function showStopped(my: number, load0: number, runId: string | null, received: number): Promise<void> {
  const still = () => my === st.gen && st.load === load0 && !st.abort;
  if (!runId) {
    setStatus(received > 0 ? 'done' : 'idle', received > 0 ? `Stopped after ${received} tokens (saved as a cancelled run).` : 'Stopped.');
    runsChanged();
    return;
  }
  setStatus('idle', `Stopped after ${received} tokens; waiting for the server to store ${runId}…`);
  const until = Date.now() + (received > 0 ? 30000 : 3000); // a run still queued is never stored
  for (let wait = 50; ; wait = Math.min(500, wait * 2)) {
    if (!still()) return;
    try {
      const [doc, r] = await Promise.all([api.run(runId), loadGraph(runId, null, null)]);
      if (!still()) return;
      st.runId = runId;
      st.runDoc = doc;
      tookMeasure(r);
      showRunData(doc, graphDataOf(r.g));
      st.view = { ...st.view, step: doc.n_output - 1 };
      applyView();
      graph.ensureVisible('output', st.view.step);
      el.status.dataset.nOutput = String(doc.n_output);
      setStatus('done', `Stopped: ${runId} is stored with ${doc.n_prompt} prompt tokens, ${doc.n_output} generated (${doc.stop === 'cancelled' ? 'cancelled' : doc.stop}).`);
      runsChanged();
      return;
    } catch (err) {
      if (!still()) return;
      if (!(err instanceof ApiError && err.status === 404) || Date.now() > until) {
        setStatus(
          received > 0 ? 'done' : 'idle',
          received > 0 ? `Stopped after ${received} tokens; the stored run ${runId} could not be read: ${err instanceof Error ? err.message : err}` : 'Stopped before the first token: nothing was stored.',
        );
        runsChanged();
        return;
      }
    }
    await new Promise((res) => setTimeout(res, wait));
  }
}

/** The exported file: the controls that need a server are hidden, the prompt box is read-only. */
function applyOffline(): void {
  if (!offline) return;
  document.body.classList.add('offline');
  el.prompt.readOnly = true;
  const keep = new Set<Element>([el.prompt, el.promptMsg, nl.promptSource, nl.promptMessages, document.querySelector('label[for="prompt"]')!]);
  for (const c of Array.from(el.form.children)) if (!keep.has(c)) c.classList.add('server-only');
  for (const s of ['#delete-run', '#open-run-file', '.run-actions', '#runs-msg', '.intervene', '#verify-sources'])
    document.querySelectorAll(s).forEach((x) => x.classList.add('server-only'));
}

/** Start: the limits beside the fields, the draft back, the run list kept fresh (other tabs say when they change it). */
function startNothingLost(runInUrl: boolean): void {
  mountSamplingChecks();
  applyOffline();
  if (!offline) restoreDraft(!runInUrl);
  try {
    nl.runsTree.checked = draftStore?.getItem(TREE_KEY) === '1';
  } catch {
    /* storage off */
  }
  if (offline) return;
  if (typeof BroadcastChannel === 'function') {
    nl.channel = new BroadcastChannel('heed-runs');
    nl.channel.addEventListener('message', () => void refreshRuns());
  }
  window.setInterval(() => {
    if (document.visibilityState === 'visible') void refreshRuns();
  }, RUNS_POLL_MS);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') void refreshRuns();
  });
  window.addEventListener('focus', () => void refreshRuns());
}

// ------------------------------------------------------------------ generation

function stopGeneration(): void {
  if (st.abort) {
    st.abort.abort();
    st.abort = null;
  }
}

/** A generation that is not the prompt box's: a branch of a stored run (the Sampling tab). */
interface GenOverride {
  req: GenerateRequest;
  /** the step to show once the run is stored */
  atStep: number;
  /** what the status line calls it */
  label: string;
  /** the tab to open once the run is stored (an intervention: its Effects) */
  tab?: ViewName;
}

async function generate(over?: GenOverride): Promise<void> {
  if (st.status === 'generating') return;
  const prompt = over ? '' : el.prompt.value;
  const chat = !over && el.chat.checked && !el.chat.disabled;
  let maxTokens: number;
  let documents: { name: string; text: string }[] = [];
  let sampling: Record<SamplingField, number> | null = null;
  clearRequestErrors();
  if (over) maxTokens = over.req.max_tokens;
  else {
    const mt = validateMaxTokens();
    const pm = checkPrompt(prompt);
    el.promptMsg.hidden = pm === null;
    el.promptMsg.textContent = pm ?? '';
    if (pm) el.prompt.setAttribute('aria-invalid', 'true');
    else el.prompt.removeAttribute('aria-invalid');
    const docsOk = checkFormDocuments();
    sampling = validateSampling();
    if (mt === null || pm !== null || docsOk === null || sampling === null) {
      setStatus(st.status, 'Not generated: fix the value marked in red.');
      return;
    }
    maxTokens = mt;
    documents = docsOk;
  }
  const req: GenerateRequest = over
    ? over.req
    : {
        max_tokens: maxTokens,
        temperature: sampling!.temperature,
        top_k: sampling!.topK,
        top_p: sampling!.topP,
        min_p: sampling!.minP,
        seed: sampling!.seed,
        attention_split: true,
      };
  if (over) {
    /* the branch names the run and step */
  } else {
    if (chat) req.messages = [{ role: 'user', content: prompt }];
    else req.prompt = prompt;
    if (documents.length) req.documents = documents;
  }

  stopGeneration();
  const my = ++st.gen;
  const ctl = new AbortController();
  st.abort = ctl;
  // the open run stays on screen until the server takes the request: a refused one leaves it as it was
  const before = { status: st.status, text: el.status.textContent ?? '' };
  let accepted = false;
  let load0 = st.load;
  let runId: string | null = null; // the id the server stores the run under (its first event says)
  let serverCount = 0; // tokens the server's events numbered
  const fromRun = nl.promptFromRun; // the box showed an opened run's prompt: it will show the new run's
  el.generate.disabled = true;
  el.status.classList.remove('error');
  el.status.textContent = over ? `${over.label}: sending the request…` : 'Sending the prompt…';

  const live = new LiveRun(0);
  /** The server took the request: the open run gives way to the live one. */
  const accept = () => {
    if (my !== st.gen || accepted) return;
    accepted = true;
    load0 = ++st.load; // drop pending run loads
    st.runId = null;
    st.runDoc = null;
    st.layer = null;
    st.head = null;
    st.inputs = [];
    st.outputs = [];
    st.data = null;
    st.dataMeasure = 'attention'; // the live rows
    measureNote(null);
    st.nOutRows = maxTokens;
    st.view = { ...st.view, step: 0, mode: 'current', selected: null };
    const keep = encodeHash({ ...defaultUrlState(), view: st.tab, cmp: st.cmp, measure: st.measure });
    history.replaceState(null, '', keep ? '#' + keep : location.pathname + location.search);
    setStatus('generating', over ? `${over.label}: waiting for the server…` : 'Waiting for the server…');
    syncSelects();
    markCurrentRun();
    pushModel();
    renderText();
    applyView(false);
    // the prompt's tokens, to show the input column before the first token
    if (!chat && !over && documents.length === 0)
      // documents go before the prompt: its tokens are not the first
      api
        .tokenize(prompt, ctl.signal)
        .then((r) => {
          // labels for the input column; the stream's split length stays authoritative
          if (my !== st.gen || (live.hasSplit && r.tokens.length !== live.nPrompt)) return;
          st.inputs = r.tokens.map((t) => ({ id: t.id, label: t.label }));
          if (!live.hasSplit) live.nPrompt = st.inputs.length;
          pushModel();
          applyView(false);
        })
        .catch(() => {});
  };

  let dirty = false;
  const flush = () => {
    dirty = false;
    if (my !== st.gen) return;
    const t = live.nOutput - 1;
    st.outputs = live.steps;
    st.data = live.data;
    if (live.hasSplit && st.inputs.length !== live.nPrompt) {
      // the authoritative prompt length; unknown labels (chat template) as placeholders
      const ins: Token[] = [];
      for (let k = 0; k < live.nPrompt; k++) ins.push(st.inputs[k] ?? { id: -1, label: k === 0 ? '[BOS]' : '…' });
      st.inputs = ins;
    }
    st.nOutRows = Math.max(maxTokens, live.nOutput);
    st.view = { ...st.view, step: t };
    pushModel();
    applyView(false);
    graph.ensureVisible('output', t);
    // the count is the server's: its events number the tokens
    if (st.status === 'generating' && st.abort === ctl)
      el.status.textContent = `Generating: ${serverCount} of ${maxTokens} tokens${runId ? ` (${runId})` : ''}.`;
    el.status.dataset.nOutput = String(serverCount);
  };

  try {
    const done = await streamRun(
      req,
      {
        accepted: accept,
        queued: (pos, id) => {
          if (my !== st.gen) return;
          if (id) runId = id;
          if (serverCount === 0) // once tokens stream the run is not queued, whatever an older event said
            el.status.textContent = pos > 0 ? `Queued: ${pos} generation${pos > 1 ? 's' : ''} ahead.` : 'Generating…';
        },
        token: (ev) => {
          if (my !== st.gen) return;
          const t = live.add(ev);
          serverCount = Math.max(serverCount, (typeof ev.index === 'number' ? ev.index : t) + 1);
          appendText(live.steps[t], t);
          if (!dirty) {
            dirty = true;
            requestAnimationFrame(flush);
          }
        },
        done: () => {},
      },
      ctl.signal,
    );
    if (my !== st.gen) return;
    flush();
    st.abort = null;
    el.status.textContent = `Generated ${done.n_output} tokens; loading the stored run…`;
    // replace the live data with the stored run (labels of every prompt token, the graph)
    const my2 = ++st.load;
    const [doc, r] = await Promise.all([api.run(done.run_id), loadGraph(done.run_id, null, null)]);
    if (my !== st.gen || my2 !== st.load) return;
    st.runId = done.run_id;
    st.runDoc = doc;
    if (over?.tab) setTab(over.tab, false);
    tookMeasure(r);
    showRunData(doc, graphDataOf(r.g));
    if (over || fromRun) showRunPrompt(doc, done.run_id); // else the box holds the user's text, which was sent
    st.view = { ...st.view, step: over ? Math.max(0, Math.min(over.atStep, doc.n_output - 1)) : doc.n_output - 1 };
    applyView();
    graph.ensureVisible('output', st.view.step);
    const why = done.stop === 'eog' ? 'the model ended the text' : done.stop === 'length' ? 'token limit' : done.stop;
    el.status.dataset.nOutput = String(doc.n_output);
    setStatus(
      'done',
      `${over ? `${over.label}: new run ${done.run_id}` : 'Done'}: ${doc.n_prompt} prompt tokens, ${doc.n_output} generated (${why})${done.cached ? ', replayed from the cache' : ''}.` +
        (documents.length ? ` The Sources tab shows where each sentence came from in the ${documents.length} document${documents.length === 1 ? '' : 's'}.` : ''),
    );
    runsChanged();
  } catch (err) {
    if (my !== st.gen) return;
    if (st.abort === ctl) st.abort = null;
    if (!accepted) {
      // refused (or unreachable) before anything changed: the open run stays, the error goes beside the control
      if (err instanceof DOMException && err.name === 'AbortError') {
        setStatus(before.status, before.text);
        return;
      }
      requestError(err, over ? over.label : 'Not generated');
      return;
    }
    if (err instanceof DOMException && err.name === 'AbortError') {
      flush();
      if (st.load !== load0) return; // another run was opened meanwhile
      await showStopped(my, load0, runId, serverCount);
      return;
    }
    if (live.nOutput > 0) flush();
    fail(err, err instanceof ApiError && err.status >= 400 && err.status < 500 ? 'Not generated' : 'Generation failed');
    requestError(err, over ? over.label : 'Generation failed', false);
    runsChanged();
  }
}

el.form.addEventListener('submit', (e) => {
  e.preventDefault();
  void generate();
});
el.stop.addEventListener('click', () => {
  if (st.status === 'generating') stopGeneration();
});
el.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    void generate();
  }
});

// ------------------------------------------------------------------ export

function exportView() {
  const t = clampStep(st.view.step, nOutput());
  const sel = st.view.selected;
  const inputs: ExportToken[] = st.inputs.map((tk, i) => ({
    id: tk.id,
    label: tk.label,
    state: sel && sel.side === 'input' && sel.index === i ? 'selected' : 'input',
  }));
  const outputs: ExportToken[] = st.outputs.slice(0, t + 1).map((tk, i) => ({
    id: tk.id,
    label: tk.label,
    state: sel && sel.side === 'output' && sel.index === i ? 'selected' : i === t ? 'current' : 'previous',
  }));
  const what = sel
    ? `edges of ${sel.side} token ${sel.index}`
    : st.view.mode === 'all'
      ? 'all connections up to this step'
      : "the current step's edges";
  return buildSvg({
    title: `heed · ${st.model?.id ?? 'model'} · ${st.runId ?? 'live run'}`,
    subtitle: `step ${Math.max(0, t) + 1} of ${nOutput()} · ${what} · lines: ${rolloutOn() ? 'attention rollout' : `${st.weights === 'raw' ? 'raw' : 'normalized'} ${st.dataMeasure === 'value' ? 'value-weighted attention' : 'attention'}`} ≥ ${st.view.threshold.toFixed(3)} · ${selectionText()}`,
    inputs,
    outputs,
    nOutRows: outputs.length, // the outputs shown at this step, laid out over the whole height
    edges: graph.currentEdges(),
    width: Math.max(760, Math.min(1400, el.graph.clientWidth)),
  });
}

function exportName(ext: string): string {
  const base = (st.runId ?? 'live').replace(/[^\w.-]/g, '_');
  return `heed-${base}-step${st.view.step}.${ext}`;
}

el.exportSvg.addEventListener('click', () => {
  const r = exportView();
  download(new Blob([r.svg], { type: 'image/svg+xml' }), exportName('svg'));
});
el.exportPng.addEventListener('click', async () => {
  try {
    const r = exportView();
    download(await svgToPng(r, 2), exportName('png'));
  } catch (err) {
    el.status.textContent = `PNG export failed: ${err instanceof Error ? err.message : err}`;
  }
});

// ------------------------------------------------------------------ tabs and deep views

const panels = {} as Record<ViewName, HTMLElement>;
const tabButtons = {} as Record<ViewName, HTMLButtonElement>;
for (const v of VIEW_NAMES) {
  panels[v] = $(`#panel-${v}`);
  tabButtons[v] = $<HTMLButtonElement>(`#tab-${v}`);
}
const viewRoot = (v: ViewName) => $(`#view-${v}`);

const deep: Record<Exclude<ViewName, 'graph'>, View & Partial<Exportable>> = {
  text: createTextView(viewRoot('text')),
  lens: createLensView(viewRoot('lens')),
  stats: createStatsView(viewRoot('stats'), {
    selectHead: (l, h) => setSelection(l, h),
    // the fingerprint manifold: a point opens its run at its step, on this tab, with this selection
    openAt: (id, step) => {
      if (id === st.runId) return setStep(step);
      history.pushState(null, '', '#run=' + encodeURIComponent(id));
      void openRun(id, { ...decodeHash(''), run: id, step, view: st.tab, layer: st.layer, head: st.head, threshold: st.view.threshold, weights: st.weights, measure: st.measure });
    },
  }),
  tokens: createTokensView(viewRoot('tokens'), { prompt: el.prompt, runPrompt: () => (st.runId && st.runDoc ? (st.runDoc.prompt ?? null) : null) }),
  sampling: createSamplingView(viewRoot('sampling'), {
    runParams: () => st.runDoc?.params,
    nVocab: () => st.model?.n_vocab ?? 0,
    busy: () => st.status === 'generating',
    branch: (req: BranchRequest, label: string) => void generate({ req, atStep: req.branch.step, label }),
  }),
  compare: createCompareView(viewRoot('compare'), {
    cmp: () => st.cmp,
    setCmp: (id) => {
      st.cmp = id;
      writeHash();
      refreshView();
    },
  }),
  heatmap: createHeatmapView(viewRoot('heatmap')),
  heads: createModelView(viewRoot('heads'), {
    ablate: (l, h, mean) => ablateHead(l, h, mean),
    canAblate: () => st.status !== 'generating' && !!st.runId,
  }),
  experts: createExpertsView(viewRoot('experts')),
  sources: createSourcesView(viewRoot('sources')),
  effects: createEffectsView(viewRoot('effects'), {
    openRun: (id) => {
      history.pushState(null, '', '#run=' + encodeURIComponent(id));
      void openRun(id, { ...decodeHash(''), run: id, threshold: st.view.threshold, weights: st.weights, measure: st.measure });
    },
  }),
};

let shownTab: Exclude<ViewName, 'graph'> | null = null; // the deep view whose show() ran last, not hidden since

/** The context the deep views read: the open run, the selection and the step. */
function viewCtx(): ViewContext | null {
  const doc = st.runDoc;
  if (!st.runId || !doc) return null;
  const n = doc.n_output;
  return {
    base: '',
    runId: st.runId,
    nPrompt: doc.n_prompt,
    nOutput: n,
    tokens: doc.tokens,
    nLayer: st.model?.n_layer ?? 0,
    nHead: st.model?.n_head ?? 0,
    layer: st.layer,
    head: st.layer === null ? null : st.head,
    step: Math.max(0, clampStep(st.view.step, n)),
    setStep: (t: number) => setStep(t),
    layerWindow: st.model?.layer_window,
    experts: doc.experts ?? null,
    branch: doc.branch ?? null,
    interventions: doc.interventions ?? null,
  };
}

/** Shows the tab's view for the current run / selection / step (cheap when nothing changed). */
function refreshView(): void {
  syncExpertsTab();
  const tab = st.tab;
  if (shownTab && shownTab !== tab) {
    deep[shownTab].hide();
    shownTab = null;
  }
  updateExportButtons();
  if (tab === 'graph') return;
  const panel = panels[tab];
  const empty = panel.querySelector('.view-empty') as HTMLElement;
  const root = viewRoot(tab);
  const c = viewCtx();
  if (tab === 'tokens') {
    empty.hidden = true;
    root.hidden = false;
    deep.tokens.show(c as ViewContext);
    shownTab = 'tokens';
    return;
  }
  if (!c) {
    if (shownTab) deep[shownTab].hide();
    shownTab = null;
    empty.hidden = false;
    empty.textContent =
      st.status === 'generating' ? 'Generating… this view opens with the stored run.' : 'Generate text, or open a saved run, to see this view.';
    root.hidden = true;
    return;
  }
  empty.hidden = true;
  root.hidden = false;
  deep[tab].show(c);
  shownTab = tab;
}

/**
 * The Experts tab is there for a mixture-of-experts run (its document's
 * `experts`), and, with no run open, when the served model routes (the next
 * run will have experts); the open tab stays reachable while it is shown.
 */
function syncExpertsTab(): void {
  const doc = st.runDoc;
  const on = doc ? !!doc.experts : (st.model?.n_expert ?? 0) > 0;
  tabButtons.experts.hidden = !on && st.tab !== 'experts';
  tabButtons.effects.hidden = !doc?.branch && st.tab !== 'effects';
  // a chat run may have documents (the Sources tab says when it has none)
  const chatRun = !!doc && ((doc.documents?.length ?? 0) > 0 || (doc.messages?.length ?? 0) > 0 || doc.kind === 'chat');
  tabButtons.sources.hidden = !chatRun && st.tab !== 'sources';
}

/** The tabs the keyboard moves between: those not hidden. */
function shownTabs(): ViewName[] {
  return VIEW_NAMES.filter((v) => !tabButtons[v].hidden);
}

/** Switches the tab (hash: replaced when `hash`, the view state is in it). */
function setTab(v: ViewName, hash = true, focus = false): void {
  if (!isViewName(v)) v = 'graph';
  const changed = v !== st.tab;
  st.tab = v;
  for (const name of VIEW_NAMES) {
    const on = name === v;
    tabButtons[name].setAttribute('aria-selected', String(on));
    tabButtons[name].tabIndex = on ? 0 : -1;
    panels[name].hidden = !on;
  }
  el.graphPanel.dataset.view = v;
  if (focus) tabButtons[v].focus();
  if (changed) graph.hideTip();
  syncSelects(false);
  if (changed && st.weights === 'rollout') {
    pushModel(); // the graph's selection text and the selectors depend on the tab
    applyView(false);
  }
  refreshView();
  if (hash && changed) writeHash();
}

el.tabs.addEventListener('click', (e) => {
  const b = (e.target as HTMLElement).closest('[role="tab"]') as HTMLElement | null;
  if (b && isViewName(b.dataset.view)) setTab(b.dataset.view);
});
el.tabs.addEventListener('keydown', (e) => {
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  const names = shownTabs();
  const i = names.indexOf(st.tab);
  let to = -1;
  if (e.key === 'ArrowRight') to = (i + 1) % names.length;
  else if (e.key === 'ArrowLeft') to = (i - 1 + names.length) % names.length;
  else if (e.key === 'Home') to = 0;
  else if (e.key === 'End') to = names.length - 1;
  else return;
  e.preventDefault();
  setTab(names[to], true, true);
});

// ------------------------------------------------------------------ data export (CSV, JSON, NPY)

function updateExportButtons(): void {
  const can = st.status !== 'generating' && (st.tab === 'tokens' || (st.tab === 'graph' ? !!st.data && st.outputs.length > 0 : !!st.runId));
  el.exportCsv.disabled = el.exportJson.disabled = el.exportNpy.disabled = !can;
}

/**
 * The graph's data: every step's rows (prompt part, then output part) as one
 * n_output x (n_prompt + n_output) matrix: the raw attention when the graph
 * shows it, else the normalized (split) rows; `quantity` says which.
 */
function graphExport(): ExportData | null {
  const raw = st.weights === 'raw';
  const d = raw ? rawData() : st.data;
  if (!d || d.nOutput === 0) return null;
  const quantity = raw ? 'raw' : 'normalized';
  const measure = st.dataMeasure;
  const mName = measure === 'value' ? 'value-weighted attention' : 'attention';
  const nP = d.nPrompt;
  const nO = d.nOutput;
  const cols = nP + nO;
  const arr = new Float32Array(nO * cols);
  for (let t = 0; t < nO; t++) {
    arr.set(d.prompt[t], t * cols);
    for (let j = 0; j < t; j++) arr[t * cols + nP + j] = d.output[t][j];
  }
  const inLab = (k: number) => displayLabel(st.inputs[k]?.label);
  const outLab = (j: number) => displayLabel(st.outputs[j]?.label);
  return {
    name: 'graph',
    json: {
      run: st.runId,
      quantity,
      quantity_note: measure === 'value' ? `${QUANTITY[raw ? 'raw' : 'split']}, of value-weighted attention (a_ij x |W_O^h v_j|)` : QUANTITY[raw ? 'raw' : 'split'],
      measure,
      selection: selectionText(),
      layer: st.layer,
      head: st.head,
      n_prompt: nP,
      n_output: nO,
      step: st.view.step,
      threshold: st.view.threshold,
      inputs: st.inputs,
      outputs: st.outputs.map((o) => ({ id: o.id, label: o.label, prob: o.prob })),
      prompt: d.prompt.map((r) => Array.from(r)),
      output: d.output.map((r) => Array.from(r)),
      prompt_mass: st.data ? st.data.promptMass.map((m) => (Number.isFinite(m) ? m : null)) : null,
      output_mass: st.data ? st.data.outputMass.map((m) => (Number.isFinite(m) ? m : null)) : null,
    },
    csv: matrixCsv(nO, cols, arr, (t) => `step ${t + 1}: ${outLab(t)}`, (k) => (k < nP ? `in ${k}: ${inLab(k)}` : `out ${k - nP}: ${outLab(k - nP)}`), `step\\source (${quantity} ${mName})`),
    npy: { shape: [nO, cols], data: arr },
  };
}

/** The Heads tab's data: every head's type scores (GET /stats head_types). */
async function headsExport(c: ViewContext): Promise<ExportData> {
  const s = await getJson<StatsReply>(c.base, runPath(c.runId, '/stats'));
  const rows = s.head_types;
  const arr = new Float32Array(c.nLayer * c.nHead * 4);
  for (const r of rows) arr.set([r.prev, r.induction, r.sink, r.local], (r.layer * c.nHead + r.head) * 4);
  return {
    name: 'head-types',
    json: { run: c.runId, head_types: rows },
    csv: toCsv([['layer', 'head', 'kind', 'prev', 'induction', 'sink', 'local'], ...rows.map((r) => [r.layer, r.head, r.kind, r.prev, r.induction, r.sink, r.local])]),
    npy: { shape: [c.nLayer, c.nHead, 4], data: arr },
  };
}

async function viewExport(): Promise<ExportData | null> {
  const tab = st.tab;
  if (tab === 'graph') return graphExport();
  const c = viewCtx();
  if (tab === 'heatmap') return c ? matrixExport(c, await loadDenseMatrix(c), 'heatmap') : null;
  if (tab === 'heads') return c ? headsExport(c) : null;
  const v = deep[tab];
  return v.exportData ? v.exportData() : null;
}

async function exportAs(kind: 'csv' | 'json' | 'npy'): Promise<void> {
  try {
    const d = await viewExport();
    if (!d) {
      el.status.textContent = 'Nothing to export in this view yet.';
      return;
    }
    const base = `heed-${(st.runId ?? 'prompt').replace(/[^\w.-]/g, '_')}-${d.name.replace(/[^\w.-]/g, '_')}`;
    if (kind === 'csv') download(new Blob([d.csv], { type: 'text/csv' }), base + '.csv');
    else if (kind === 'json') download(new Blob([JSON.stringify(d.json)], { type: 'application/json' }), base + '.json');
    else {
      if (!d.npy) {
        el.status.textContent = 'This view has no numeric array to export as NPY.';
        return;
      }
      const bytes = npyBytes(d.npy.shape, d.npy.data);
      download(new Blob([bytes.buffer as ArrayBuffer], { type: 'application/octet-stream' }), base + '.npy');
    }
  } catch (err) {
    el.status.textContent = `Export failed: ${err instanceof Error ? err.message : err}`;
  }
}

el.exportCsv.addEventListener('click', () => void exportAs('csv'));
el.exportJson.addEventListener('click', () => void exportAs('json'));
el.exportNpy.addEventListener('click', () => void exportAs('npy'));

// ------------------------------------------------------------------ start

function start(): void {
  const u = decodeHash(location.hash);
  st.cmp = u.cmp ?? null;
  setTab(u.view ?? 'graph', false);
  st.measure = u.measure ?? 'attention';
  weightsState(u.weights ?? 'split');
  st.view.threshold = u.threshold;
  st.view.mode = u.mode;
  el.threshold.value = String(u.threshold);
  el.thresholdValue.textContent = u.threshold.toFixed(3);
  startNothingLost(!!u.run);
  st.modelReady = api
    .model()
    .then((m) => {
      st.model = m;
      showModel(m);
      setStatus(st.status, el.status.textContent || '');
      return m;
    })
    .catch((err) => {
      el.modelInfo.querySelector('p')?.replaceChildren(`The model information could not be read: ${err instanceof Error ? err.message : err}`);
      return null;
    });
  void refreshRuns();
  applyView(false);
  if (u.run) void openRun(u.run, u);
}

mountHelp(); // the glossary, each tab's "?" page and the tabs' titles (src/help.ts)
start();
