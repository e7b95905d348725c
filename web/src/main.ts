// Wiring: the store (src/store.ts) and what draws from it: the graph tab
// (graphctl.ts, graph.ts), the deep views (views/registry.ts), the form
// (genform.ts), the run list (runlist.ts); the live generation, stored runs
// opened and their URL state, verify and interventions, exports.
import './style.css';
import { api, ApiError, streamRun, type GenerateRequest, type RunDoc } from './api';
import { isMeasure, MEASURE_NAME, refusesMeasure, type Measure } from './attribution';
import { createGenForm } from './genform';
import { exportData, exportPng, exportSvg, type ExportDeps } from './exports';
import { GraphView, graphDataOf, graphReply } from './graph';
import { GraphController } from './graphctl';
import { LongRunTools } from './overview';
import { mountHelp } from './help';
import { mountUploadButton } from './upload';
import { ablateRequest, knockoutKey, knockoutRequest, type InterventionRequest } from './interventions';
import { clampStep, decodeHash, defaultUrlState, displayLabel, encodeHash, isViewName, LiveRun, type EdgeWeights, type GraphReply, type Mode, type Side, type UrlState, type ViewName } from './model';
import { createRunList } from './runlist';
import { Store, type Status } from './store';
import { createTextPanel } from './textpanel';
import { ViewDriver, type ViewApp } from './views/registry';
import { createVerifyPanel, VERIFY_K, type VerifyTarget } from './views/verify';
import type { SamplingField } from './formstate';

const $ = <T extends HTMLElement = HTMLElement>(sel: string): T => {
  const el = document.querySelector(sel);
  if (!el) throw new Error(`missing ${sel}`);
  return el as T;
};

const el = {
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
};

// ------------------------------------------------------------------ state

const store = new Store();
/** The state now (read-only: change it with store.dispatch). */
const S = () => store.state;

/** What is not UI state: request counters and the live generation's abort. */
const ctl = {
  modelReady: null as Promise<unknown> | null,
  abort: null as AbortController | null,
  gen: 0, // generation counter: late replies of an older generation are dropped
  load: 0, // run / graph load counter
};

/** The exported offline file (`heed export -o run.html`, "Download offline HTML"): its data sits in #heed-data and no server answers. */
const offline = !!document.getElementById('heed-data');
const draftStore: Storage | null = (() => {
  try {
    return offline ? null : window.localStorage;
  } catch {
    return null; // storage off (private mode, a sandbox)
  }
})();

const graph = new GraphView(el.graph, el.tooltip, {
  tokenClick: (side, index) => toggleSelect(side, index),
});
new LongRunTools($('#longrun'), graph); // overview strip, zoom, search, jump to source
const graphCtl = new GraphController(store, graph, el, () => applyView(false));
const form = createGenForm({ offline, storage: draftStore, model: () => S().model, runId: () => S().runId });
const textPanel = createTextPanel(el.text, (t) => setStep(t));
const runList = createRunList(
  { runs: el.runs, tree: $<HTMLInputElement>('#runs-tree'), msg: $('#runs-msg'), downloadRun: $<HTMLButtonElement>('#download-run'), downloadHtml: $<HTMLButtonElement>('#download-html') },
  S,
  offline,
  draftStore,
);

function setStatus(s: Status, message: string): void {
  const was = S().status;
  store.dispatch({ type: 'status', status: s });
  el.graph.dataset.status = s;
  if (el.status.textContent !== message) el.status.textContent = message;
  el.status.classList.toggle('error', s === 'error');
  const busy = s === 'generating';
  el.generate.disabled = busy;
  el.stop.disabled = !busy;
  el.deleteRun.disabled = busy || !S().runId;
  runList.syncActions();
  syncSelects(false);
  if (was !== s && (was === 'generating' || busy)) {
    graphCtl.syncLegend();
    if (S().weights === 'rollout') {
      graphCtl.push(); // the rollout is drawn for a stored run only
      graphCtl.ensureRollout();
    }
    refreshView();
  }
}

// ------------------------------------------------------------------ weights and measure

/** Switches what the graph's line width means (raw attention / attention rollout). */
function setWeights(w: EdgeWeights, hash = true): void {
  weightsState(w);
  graphCtl.push();
  applyView(hash);
}

/** The weights, the selector, the legend and the layer / head selectors (no redraw). */
function weightsState(w: EdgeWeights): void {
  store.dispatch({ type: 'weights', weights: w });
  graphCtl.syncWeights();
  syncSelects(false);
}

/**
 * Reads /graph in the chosen measure. A run without value norms refuses
 * measure=value (400, "param": "measure"): then the choice falls back to
 * attention, the graph is read as attention, and a note says why.
 */
async function loadGraph(id: string, layer: number | null, head: number | null): Promise<{ g: GraphReply; measure: Measure; refused: string | null }> {
  const m = S().measure;
  try {
    return { g: await graphReply(id, layer, head, m), measure: m, refused: null };
  } catch (err) {
    // the offline file (heed export -o run.html) holds attention rows only
    const offlineFile = err instanceof ApiError && err.code === 'exported_file';
    if (m !== 'value' || !(refusesMeasure(err) || offlineFile)) throw err;
    const g = await graphReply(id, layer, head, 'attention');
    return {
      g,
      measure: 'attention',
      refused: offlineFile
        ? 'The exported file holds attention rows only: the graph shows attention, not value-weighted.'
        : 'This run has no value norms (it was recorded before heed kept them, or imported): the graph shows attention, not value-weighted.',
    };
  }
}

/** Takes the measure a /graph read ended with (before its data is pushed). */
function tookMeasure(r: { measure: Measure; refused: string | null }): void {
  store.dispatch({ type: 'measureTaken', measure: r.measure, refused: r.refused !== null });
  graphCtl.measureNote(r.refused);
  graphCtl.syncLegend();
}

/** Switches what the graph's weights measure; re-reads the open run's graph. */
function setMeasure(m: Measure): void {
  store.dispatch({ type: 'measure', measure: isMeasure(m) ? m : 'attention' });
  graphCtl.measureNote(null);
  graphCtl.syncLegend();
  writeHash();
  if (S().runId && S().status !== 'generating') void reloadGraph();
}

el.measure.addEventListener('change', () => setMeasure(el.measure.value as Measure));
el.edgeWeights.addEventListener('change', () => setWeights(el.edgeWeights.value as EdgeWeights));

// ------------------------------------------------------------------ verify sources

const verifyPanel = createVerifyPanel(el.verifyPanel, {
  selectSource: (side, index) => {
    if (S().tab !== 'graph') setTab('graph');
    const s = S().view.selected;
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
  const s = S();
  const doc = s.runDoc;
  const n = s.outputs.length;
  if (!s.runId || !doc || s.status === 'generating' || n === 0) return null;
  const t = Math.max(0, clampStep(s.view.step, n));
  return {
    runId: s.runId,
    nPrompt: doc.n_prompt,
    step: t,
    label: s.outputs[t]?.label ?? '',
    measure: s.dataMeasure,
    k: VERIFY_K,
    layer: s.layer,
    head: s.layer === null ? null : s.head,
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
  if (S().status === 'generating') return;
  void generate({ req, atStep: req.branch.step, label, tab: 'effects' });
}

function ablateHead(layer: number, head: number, mean: boolean): void {
  const s = S();
  const doc = s.runDoc;
  if (!doc || !s.runId || s.outputs.length === 0) return;
  const req = ablateRequest({ ...doc, id: s.runId }, s.view.step, layer, head, mean);
  intervene(req, `${mean ? 'Mean-ablating' : 'Ablating'} layer ${layer} head ${head} from step ${req.branch.step + 1}`);
}

/** The graph's selected token as a knockout key (null: none, or not a token the branch keeps). */
function selectedKey(): number | null {
  const s = S();
  const sel = s.view.selected;
  const doc = s.runDoc;
  if (!sel || !doc) return null;
  return knockoutKey(doc.n_prompt, clampStep(s.view.step, s.outputs.length), sel.side, sel.index);
}

function knockoutSelected(): void {
  const s = S();
  const doc = s.runDoc;
  const key = selectedKey();
  if (!doc || !s.runId || key === null) return;
  const req = knockoutRequest({ ...doc, id: s.runId }, s.view.step, key);
  const tok = doc.tokens[key];
  intervene(req, `Knocking out attention to “${displayLabel(tok?.label)}” (position ${key}) from step ${req.branch.step + 1}`);
}

function syncInterveneButtons(): void {
  const s = S();
  const n = s.outputs.length;
  const can = !!s.runId && !!s.runDoc && s.status !== 'generating' && n > 0;
  const t = clampStep(s.view.step, n) + 1;
  const head = s.layer !== null && s.head !== null;
  el.ablateHead.disabled = el.ablateMeanHead.disabled = !(can && head);
  if (head) {
    el.ablateHead.title = `A new run: outputs before step ${t} reused, then generated again with layer ${s.layer} head ${s.head}'s attention output zeroed; opens on its Effects`;
    el.ablateMeanHead.title = `A new run from step ${t} with layer ${s.layer} head ${s.head}'s attention output replaced by its mean over the prompt; opens on its Effects`;
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
  const s = S();
  if (s.layer !== null && s.head !== null) ablateHead(s.layer, s.head, false);
});
el.ablateMeanHead.addEventListener('click', () => {
  const s = S();
  if (s.layer !== null && s.head !== null) ablateHead(s.layer, s.head, true);
});
el.knockoutToken.addEventListener('click', knockoutSelected);

// ------------------------------------------------------------------ the graph tab's render

/** Draws the state's view: graph, step slider, text, buttons, hash. */
function applyView(updateHash: boolean | 'later' = true): void {
  store.dispatch({ type: 'clampStep' });
  const s = S();
  const n = s.outputs.length;
  const t = clampStep(s.view.step, n);
  graph.render(s.view);
  el.step.max = String(Math.max(0, n - 1));
  el.step.disabled = n === 0;
  if (el.step.value !== String(Math.max(0, t))) el.step.value = String(Math.max(0, t));
  if (n === 0) el.stepLabel.textContent = 'Step –';
  else el.stepLabel.textContent = `Step ${t + 1} of ${n}: “${displayLabel(s.outputs[t]?.label)}”`;
  el.showAll.setAttribute('aria-pressed', String(s.view.mode === 'all' && !s.view.selected));
  el.showAll.textContent = s.view.mode === 'all' ? 'Showing all connections' : 'Show all connections';
  el.reset.disabled = false;
  const canExport = s.inputs.length > 0 || n > 0;
  el.exportPng.disabled = !canExport;
  el.exportSvg.disabled = !canExport;
  textPanel.setCurrent(t);
  graphCtl.ensureRollout();
  syncInterveneButtons();
  syncVerify();
  refreshView();
  if (updateHash === 'later') writeHashSoon();
  else if (updateHash) writeHash();
}

/** The graph's tokens and the text panel for new columns (a run shown, cleared, or the live one started). */
function showColumns(): void {
  graphCtl.push();
  textPanel.render(S().outputs, S().status === 'generating');
}

// ------------------------------------------------------------------ URL state

function urlState(): UrlState {
  const s = S();
  return {
    run: s.runId,
    step: s.runId && s.outputs.length > 0 ? s.view.step : null,
    layer: s.layer,
    head: s.head,
    threshold: s.view.threshold,
    mode: s.view.mode,
    view: s.tab,
    cmp: s.cmp,
    weights: s.weights,
    measure: s.measure,
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
  if (!S().runId && S().tab === 'graph') return;
  const h = encodeHash(urlState());
  if (location.hash.replace(/^#/, '') !== h) history.replaceState(null, '', h ? '#' + h : location.pathname + location.search);
}

/** The threshold slider and its value for the state. */
function syncThreshold(): void {
  const x = S().view.threshold;
  el.threshold.value = String(x);
  el.thresholdValue.textContent = x.toFixed(3);
}

// ------------------------------------------------------------------ view changes

function setStep(t: number, hash: boolean | 'later' = true): void {
  if (S().outputs.length === 0) return;
  store.dispatch({ type: 'step', step: t });
  applyView(hash);
  graph.ensureVisible('output', S().view.step);
}

function setMode(mode: Mode): void {
  store.dispatch({ type: 'mode', mode });
  applyView();
}

function toggleSelect(side: Side, index: number): void {
  store.dispatch({ type: 'toggleSelect', side, index });
  applyView();
}

function resetSelection(): void {
  store.dispatch({ type: 'resetSelection' });
  applyView();
}

function setThreshold(x: number, fromSlider = false): void {
  store.dispatch({ type: 'threshold', threshold: x });
  const v = S().view.threshold;
  if (!fromSlider) el.threshold.value = String(v);
  el.thresholdValue.textContent = v.toFixed(3);
  applyView(fromSlider ? 'later' : true);
}

el.step.addEventListener('input', () => setStep(Number(el.step.value), 'later'));
el.step.addEventListener('change', () => writeHash());
el.showAll.addEventListener('click', () => setMode(S().view.mode === 'all' && !S().view.selected ? 'current' : 'all'));
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
    if (S().view.selected || S().view.mode !== 'current') resetSelection();
    graph.hideTip();
    return;
  }
  const n = S().outputs.length;
  if (n === 0) return;
  const t = S().view.step;
  let to = -1;
  if (e.key === 'ArrowLeft') to = t - 1;
  else if (e.key === 'ArrowRight') to = t + 1;
  else if (e.key === 'Home') to = 0;
  else if (e.key === 'End') to = n - 1;
  else return;
  e.preventDefault();
  setStep(Math.max(0, Math.min(n - 1, to)));
});

// ------------------------------------------------------------------ model, layer / head

function showModel(): void {
  const m = S().model!;
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
  form.showModel(m);
  driver.syncTabs(S());
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
  const s = S();
  if (values) {
    el.selLayer.value = s.layer === null ? '' : String(s.layer);
    el.selHead.value = s.head === null ? '' : String(s.head);
  }
  const busy = s.status === 'generating';
  const rollout = s.tab === 'graph' && s.weights === 'rollout';
  el.selHead.disabled = s.layer === null || busy || rollout;
  el.selLayer.disabled = busy || !s.model || rollout;
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
  const s = S();
  if (s.status === 'generating' || (l === s.layer && h === s.head)) return;
  store.dispatch({ type: 'select', layer: l, head: h });
  syncSelects();
  writeHash();
  refreshView();
  if (S().runId) void reloadGraph();
}
el.selLayer.addEventListener('change', onSelection);
el.selHead.addEventListener('change', onSelection);

function selectionText(): string {
  const s = S();
  if (s.tab === 'graph' && graphCtl.rolloutOn()) return 'attention rollout (every layer, mean of the heads)';
  if (s.layer === null) return 'mean of all layers and heads';
  if (s.head === null) return `layer ${s.layer}, mean of its heads`;
  return `layer ${s.layer}, head ${s.head}`;
}

// ------------------------------------------------------------------ stored runs

/** Opens a stored run (a new history entry) at `u`. */
function openRunEntry(id: string, u: UrlState): void {
  history.pushState(null, '', '#run=' + encodeURIComponent(id));
  void openRun(id, u);
}

/** The run's document and graph, read, shown at `step` (a stored run in place of what was on screen). */
function showRun(id: string, doc: RunDoc, r: { g: GraphReply; measure: Measure; refused: string | null }): void {
  store.dispatch({ type: 'runShown', runId: id, doc, data: graphDataOf(r.g) });
  tookMeasure(r);
  showColumns();
}

/** Opens a stored run (GET run + graph) at the hash's step / selection. */
async function openRun(id: string, u: UrlState): Promise<void> {
  stopGeneration();
  const my = ++ctl.load;
  setStatus('idle', `Opening ${id}…`);
  await ctl.modelReady;
  if (my !== ctl.load) return;
  setTab(u.view ?? 'graph', false);
  store.dispatch({ type: 'cmp', cmp: u.cmp ?? null });
  if (u.weights) weightsState(u.weights);
  store.dispatch({ type: 'measure', measure: u.measure ?? 'attention' });
  store.dispatch({ type: 'restoreSelection', layer: u.layer, head: u.head });
  syncSelects();
  try {
    const [doc, r] = await Promise.all([api.run(id), loadGraph(id, S().layer, S().head)]);
    if (my !== ctl.load) return;
    showRun(id, doc, r);
    store.dispatch({ type: 'viewRestored', step: u.step ?? doc.n_output - 1, mode: u.mode, threshold: u.threshold, unselect: true });
    syncThreshold();
    applyView();
    graph.ensureVisible('output', S().view.step);
    form.showRunPrompt(doc, id);
    runList.showMsg(null);
    el.status.dataset.nOutput = String(doc.n_output);
    setStatus('done', `Opened ${id}: ${doc.n_prompt} prompt tokens, ${doc.n_output} generated (${selectionText()}${S().dataMeasure === 'value' ? ', value-weighted' : ''}).`);
    runList.markCurrent();
  } catch (err) {
    if (my !== ctl.load) return;
    fail(err, `Could not open ${id}`);
  }
}

/** Re-reads /graph for the layer/head selection. */
async function reloadGraph(): Promise<void> {
  const id = S().runId;
  if (!id) return;
  const my = ++ctl.load;
  el.status.textContent = `Loading ${selectionText()}…`;
  try {
    const r = await loadGraph(id, S().layer, S().head);
    if (my !== ctl.load || id !== S().runId) return;
    tookMeasure(r);
    store.dispatch({ type: 'data', data: graphDataOf(r.g) });
    graphCtl.push();
    applyView();
    setStatus('done', `Showing ${selectionText()}${S().dataMeasure === 'value' ? ', value-weighted' : ''}.`);
  } catch (err) {
    if (my !== ctl.load) return;
    fail(err, 'Could not load that layer/head');
  }
}

function fail(err: unknown, what: string): void {
  const msg = err instanceof Error ? err.message : String(err);
  setStatus('error', `${what}: ${msg}`);
}

el.runs.addEventListener('click', (e) => {
  const a = (e.target as HTMLElement).closest('a.run-item') as HTMLAnchorElement | null;
  if (!a || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return;
  e.preventDefault();
  const id = a.dataset.runId!;
  const s = S();
  if (location.hash !== '#run=' + encodeURIComponent(id)) history.pushState(null, '', '#run=' + encodeURIComponent(id));
  void openRun(id, { ...decodeHash(''), run: id, threshold: s.view.threshold, view: s.tab, cmp: s.cmp, measure: s.measure });
});

el.deleteRun.addEventListener('click', async () => {
  const id = S().runId;
  if (!id || !confirm(`Delete ${id} from the store?`)) return;
  runList.showMsg(null);
  try {
    await api.deleteRun(id);
  } catch (err) {
    runList.showMsg(`Could not delete ${id}: ${err instanceof Error ? err.message : err}`); // the run stays open
    return;
  }
  store.dispatch({ type: 'runCleared' });
  showColumns();
  applyView(false);
  history.replaceState(null, '', location.pathname + location.search);
  setStatus('idle', `Deleted ${id}.`);
  runList.changed();
});

// "Open a run file…": stores a .heedrun on the server, then opens it like a saved run.
mountUploadButton(el.deleteRun.parentElement ?? el.runs, {
  started: (name) => setStatus('idle', `Uploading ${name}…`),
  stored: (r, name) => {
    history.pushState(null, '', '#run=' + encodeURIComponent(r.id));
    runList.changed();
    const s = S();
    void openRun(r.id, { ...decodeHash(''), run: r.id, threshold: s.view.threshold, view: s.tab, measure: s.measure }).then(() => {
      if (S().runId === r.id && S().status === 'done' && !r.own_model) el.status.textContent += ` ${name} was made with another model (${r.model}): no logit lens.`;
    });
  },
  failed: (err, name) => fail(err, `Could not open ${name}`),
});

window.addEventListener('hashchange', () => {
  const u = decodeHash(location.hash);
  const s = S();
  if (u.run && u.run !== s.runId) void openRun(u.run, u);
  else if (!u.run) {
    store.dispatch({ type: 'cmp', cmp: u.cmp ?? null });
    setTab(u.view ?? 'graph', false);
  } else if (u.run && u.run === s.runId) {
    store.dispatch({ type: 'cmp', cmp: u.cmp ?? null });
    setTab(u.view ?? 'graph', false);
    weightsState(u.weights ?? 'split');
    const meas = (u.measure ?? 'attention') !== S().measure;
    if (meas) {
      store.dispatch({ type: 'measure', measure: u.measure ?? 'attention' });
      graphCtl.measureNote(null);
      graphCtl.syncLegend();
    }
    const sel = meas || u.layer !== S().layer || u.head !== S().head;
    store.dispatch({ type: 'restoreSelection', layer: u.layer, head: u.head });
    syncSelects();
    store.dispatch({ type: 'viewRestored', step: u.step ?? S().outputs.length - 1, mode: u.mode, threshold: u.threshold });
    syncThreshold();
    if (sel) void reloadGraph();
    else {
      graphCtl.push();
      applyView();
    }
  }
});

// ------------------------------------------------------------------ generation

function stopGeneration(): void {
  if (ctl.abort) {
    ctl.abort.abort();
    ctl.abort = null;
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

/** A refused request: said beside its control, and on the status line unless `keepStatus` is false. */
function requestError(err: unknown, what: string, keepStatus = true): void {
  const text = form.requestError(err, what);
  if (keepStatus) setStatus('error', text); // the status says the request failed; the run on screen is untouched
}

async function generate(over?: GenOverride): Promise<void> {
  if (S().status === 'generating') return;
  form.clearRequestErrors();
  let req: GenerateRequest;
  let prompt = '';
  let chat = false;
  let documents: { name: string; text: string }[] = [];
  if (over) req = over.req;
  else {
    const f = form.read();
    if (!f) {
      setStatus(S().status, 'Not generated: fix the value marked in red.');
      return;
    }
    ({ prompt, chat, documents } = f);
    const sp: Record<SamplingField, number> = f.sampling;
    req = { max_tokens: f.maxTokens, temperature: sp.temperature, top_k: sp.topK, top_p: sp.topP, min_p: sp.minP, seed: sp.seed, attention_split: true };
    if (chat) req.messages = [{ role: 'user', content: prompt }];
    else req.prompt = prompt;
    if (documents.length) req.documents = documents;
  }
  const maxTokens = req.max_tokens;

  stopGeneration();
  const my = ++ctl.gen;
  const abort = new AbortController();
  ctl.abort = abort;
  // the open run stays on screen until the server takes the request: a refused one leaves it as it was
  const before = { status: S().status, text: el.status.textContent ?? '' };
  let accepted = false;
  let load0 = ctl.load;
  let runId: string | null = null; // the id the server stores the run under (its first event says)
  let serverCount = 0; // tokens the server's events numbered
  const fromRun = form.promptFromRun(); // the box showed an opened run's prompt: it will show the new run's
  el.generate.disabled = true;
  el.status.classList.remove('error');
  el.status.textContent = over ? `${over.label}: sending the request…` : 'Sending the prompt…';

  const live = new LiveRun(0);
  /** The server took the request: the open run gives way to the live one. */
  const accept = () => {
    if (my !== ctl.gen || accepted) return;
    accepted = true;
    load0 = ++ctl.load; // drop pending run loads
    store.dispatch({ type: 'liveStarted', nOutRows: maxTokens });
    graphCtl.measureNote(null);
    const s = S();
    const keep = encodeHash({ ...defaultUrlState(), view: s.tab, cmp: s.cmp, measure: s.measure });
    history.replaceState(null, '', keep ? '#' + keep : location.pathname + location.search);
    setStatus('generating', over ? `${over.label}: waiting for the server…` : 'Waiting for the server…');
    syncSelects();
    runList.markCurrent();
    showColumns();
    applyView(false);
    // the prompt's tokens, to show the input column before the first token
    if (!chat && !over && documents.length === 0)
      // documents go before the prompt: its tokens are not the first
      api
        .tokenize(prompt, abort.signal)
        .then((r) => {
          // labels for the input column; the stream's split length stays authoritative
          if (my !== ctl.gen || (live.hasSplit && r.tokens.length !== live.nPrompt)) return;
          store.dispatch({ type: 'liveInputs', inputs: r.tokens.map((t) => ({ id: t.id, label: t.label })) });
          if (!live.hasSplit) live.nPrompt = S().inputs.length;
          graphCtl.push();
          applyView(false);
        })
        .catch(() => {});
  };

  let dirty = false;
  const flush = () => {
    dirty = false;
    if (my !== ctl.gen) return;
    store.dispatch({ type: 'liveProgress', outputs: live.steps, data: live.data, nPrompt: live.hasSplit ? live.nPrompt : null, nOutRows: maxTokens });
    const t = S().view.step;
    graphCtl.push();
    applyView(false);
    graph.ensureVisible('output', t);
    // the count is the server's: its events number the tokens
    if (S().status === 'generating' && ctl.abort === abort) el.status.textContent = `Generating: ${serverCount} of ${maxTokens} tokens${runId ? ` (${runId})` : ''}.`;
    el.status.dataset.nOutput = String(serverCount);
  };

  try {
    const done = await streamRun(
      req,
      {
        accepted: accept,
        queued: (pos, id) => {
          if (my !== ctl.gen) return;
          if (id) runId = id;
          if (serverCount === 0)
            // once tokens stream the run is not queued, whatever an older event said
            el.status.textContent = pos > 0 ? `Queued: ${pos} generation${pos > 1 ? 's' : ''} ahead.` : 'Generating…';
        },
        token: (ev) => {
          if (my !== ctl.gen) return;
          const t = live.add(ev);
          serverCount = Math.max(serverCount, (typeof ev.index === 'number' ? ev.index : t) + 1);
          textPanel.append(live.steps[t], t, S().outputs, S().status === 'generating');
          if (!dirty) {
            dirty = true;
            requestAnimationFrame(flush);
          }
        },
        done: () => {},
      },
      abort.signal,
    );
    if (my !== ctl.gen) return;
    flush();
    ctl.abort = null;
    el.status.textContent = `Generated ${done.n_output} tokens; loading the stored run…`;
    // replace the live data with the stored run (labels of every prompt token, the graph)
    const my2 = ++ctl.load;
    const [doc, r] = await Promise.all([api.run(done.run_id), loadGraph(done.run_id, null, null)]);
    if (my !== ctl.gen || my2 !== ctl.load) return;
    showRun(done.run_id, doc, r);
    if (over?.tab) setTab(over.tab, false);
    if (over || fromRun) form.showRunPrompt(doc, done.run_id); // else the box holds the user's text, which was sent
    store.dispatch({ type: 'viewRestored', step: over ? Math.max(0, Math.min(over.atStep, doc.n_output - 1)) : doc.n_output - 1 });
    applyView();
    graph.ensureVisible('output', S().view.step);
    const why = done.stop === 'eog' ? 'the model ended the text' : done.stop === 'length' ? 'token limit' : done.stop;
    el.status.dataset.nOutput = String(doc.n_output);
    setStatus(
      'done',
      `${over ? `${over.label}: new run ${done.run_id}` : 'Done'}: ${doc.n_prompt} prompt tokens, ${doc.n_output} generated (${why})${done.cached ? ', replayed from the cache' : ''}.` +
        (documents.length ? ` The Sources tab shows where each sentence came from in the ${documents.length} document${documents.length === 1 ? '' : 's'}.` : ''),
    );
    runList.changed();
  } catch (err) {
    if (my !== ctl.gen) return;
    if (ctl.abort === abort) ctl.abort = null;
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
      if (ctl.load !== load0) return; // another run was opened meanwhile
      await showStopped(my, load0, runId, serverCount);
      return;
    }
    if (live.nOutput > 0) flush();
    fail(err, err instanceof ApiError && err.status >= 400 && err.status < 500 ? 'Not generated' : 'Generation failed');
    requestError(err, over ? over.label : 'Generation failed', false);
    runList.changed();
  }
}

/** Stop: the server stores the run as cancelled once it notices; its stored run is then shown, so every count is the store's. */
async function showStopped(my: number, load0: number, runId: string | null, received: number): Promise<void> {
  const still = () => my === ctl.gen && ctl.load === load0 && !ctl.abort;
  if (!runId) {
    setStatus(received > 0 ? 'done' : 'idle', received > 0 ? `Stopped after ${received} tokens (saved as a cancelled run).` : 'Stopped.');
    runList.changed();
    return;
  }
  setStatus('idle', `Stopped after ${received} tokens; waiting for the server to store ${runId}…`);
  const until = Date.now() + (received > 0 ? 30000 : 3000); // a run still queued is never stored
  for (let wait = 50; ; wait = Math.min(500, wait * 2)) {
    if (!still()) return;
    try {
      const [doc, r] = await Promise.all([api.run(runId), loadGraph(runId, null, null)]);
      if (!still()) return;
      showRun(runId, doc, r);
      store.dispatch({ type: 'viewRestored', step: doc.n_output - 1 });
      applyView();
      graph.ensureVisible('output', S().view.step);
      el.status.dataset.nOutput = String(doc.n_output);
      setStatus('done', `Stopped: ${runId} is stored with ${doc.n_prompt} prompt tokens, ${doc.n_output} generated (${doc.stop === 'cancelled' ? 'cancelled' : doc.stop}).`);
      runList.changed();
      return;
    } catch (err) {
      if (!still()) return;
      if (!(err instanceof ApiError && err.status === 404) || Date.now() > until) {
        setStatus(
          received > 0 ? 'done' : 'idle',
          received > 0 ? `Stopped after ${received} tokens; the stored run ${runId} could not be read: ${err instanceof Error ? err.message : err}` : 'Stopped before the first token: nothing was stored.',
        );
        runList.changed();
        return;
      }
    }
    await new Promise((res) => setTimeout(res, wait));
  }
}

form.form.addEventListener('submit', (e) => {
  e.preventDefault();
  void generate();
});
el.stop.addEventListener('click', () => {
  if (S().status === 'generating') stopGeneration();
});
form.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    void generate();
  }
});

// ------------------------------------------------------------------ tabs and deep views

const viewApp: ViewApp = {
  state: S,
  setStep: (t) => setStep(t),
  setSelection: (l, h) => setSelection(l, h),
  openRun: openRunEntry,
  setCmp: (id) => {
    store.dispatch({ type: 'cmp', cmp: id });
    writeHash();
    refreshView();
  },
  ablate: (l, h, mean) => ablateHead(l, h, mean),
  branch: (req, label) => void generate({ req, atStep: req.branch.step, label }),
  prompt: form.prompt,
};
const driver = new ViewDriver(el.tabs, viewApp);

/** The tab's view for the state, and the export buttons. */
function refreshView(): void {
  driver.render(S(), (t) => setStep(t));
  const can = driver.canExport(S());
  el.exportCsv.disabled = el.exportJson.disabled = el.exportNpy.disabled = !can;
}

/** Switches the tab (hash: replaced when `hash`, the view state is in it). */
function setTab(v: ViewName, hash = true, focus = false): void {
  if (!isViewName(v)) v = 'graph';
  const changed = v !== S().tab;
  store.dispatch({ type: 'tab', tab: v });
  driver.selectTab(v, focus);
  el.graphPanel.dataset.view = v;
  if (changed) graph.hideTip();
  syncSelects(false);
  if (changed && S().weights === 'rollout') {
    graphCtl.push(); // the graph's selection text and the selectors depend on the tab
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
  const names = driver.shownTabs();
  const i = names.indexOf(S().tab);
  let to = -1;
  if (e.key === 'ArrowRight') to = (i + 1) % names.length;
  else if (e.key === 'ArrowLeft') to = (i - 1 + names.length) % names.length;
  else if (e.key === 'Home') to = 0;
  else if (e.key === 'End') to = names.length - 1;
  else return;
  e.preventDefault();
  setTab(names[to], true, true);
});

// ------------------------------------------------------------------ exports

const exportDeps: ExportDeps = { store, graph, graphCtl, driver, graphEl: el.graph, status: el.status, selectionText, setStep: (t) => setStep(t) };
el.exportSvg.addEventListener('click', () => exportSvg(exportDeps));
el.exportPng.addEventListener('click', () => void exportPng(exportDeps));
el.exportCsv.addEventListener('click', () => void exportData(exportDeps, 'csv'));
el.exportJson.addEventListener('click', () => void exportData(exportDeps, 'json'));
el.exportNpy.addEventListener('click', () => void exportData(exportDeps, 'npy'));

// ------------------------------------------------------------------ start

function start(): void {
  const u = decodeHash(location.hash);
  store.dispatch({ type: 'cmp', cmp: u.cmp ?? null });
  setTab(u.view ?? 'graph', false);
  store.dispatch({ type: 'measure', measure: u.measure ?? 'attention' });
  weightsState(u.weights ?? 'split');
  store.dispatch({ type: 'viewRestored', threshold: u.threshold, mode: u.mode });
  syncThreshold();
  form.start(!!u.run);
  runList.start();
  ctl.modelReady = api
    .model()
    .then((m) => {
      store.dispatch({ type: 'model', model: m });
      showModel();
      setStatus(S().status, el.status.textContent || '');
      return m;
    })
    .catch((err) => {
      el.modelInfo.querySelector('p')?.replaceChildren(`The model information could not be read: ${err instanceof Error ? err.message : err}`);
      return null;
    });
  void runList.refresh();
  applyView(false);
  if (u.run) void openRun(u.run, u);
}

mountHelp(); // the glossary, each tab's "?" page and the tabs' titles (src/help.ts)
start();
