// The UI state store (pure, tested by Vitest): the one typed object the page
// draws from, changed only through the named actions of `reduce`; subscribers
// are told after each change. What is not the UI's state stays with its owner:
// request counters and abort controllers with the generation / run loaders
// (main.ts), derived caches (the raw rows, the rollout) with the graph
// controller, the text panel's current span with the text panel.
import type { ModelInfo, RunDoc } from './api';
import { isMeasure, type Measure } from './attribution';
import { DEFAULT_THRESHOLD, GraphData, isViewName, type EdgeWeights, type Mode, type Side, type Step, type Token, type ViewName, type ViewState } from './model';

export type Status = 'idle' | 'generating' | 'done' | 'error';

export interface UiState {
  /** the served model (GET /api/model); null until read, or when it could not be */
  model: ModelInfo | null;
  status: Status;
  /** the stored run on screen (null while streaming, or none) */
  runId: string | null;
  runDoc: RunDoc | null;
  /** the graph's columns: prompt tokens, generated steps */
  inputs: Token[];
  outputs: Step[];
  /** the graph's split rows (live or read from /graph) */
  data: GraphData | null;
  /** the output rows the graph lays out (max_tokens while streaming) */
  nOutRows: number;
  /** step, mode, selected token, threshold */
  view: ViewState;
  /** the layer / head selection (null: all) */
  layer: number | null;
  head: number | null;
  /** the tab on screen */
  tab: ViewName;
  /** the Compare tab's second run */
  cmp: string | null;
  /** what the graph's line width means */
  weights: EdgeWeights;
  /** what the graph's weights measure (the choice; a run without value norms falls back) */
  measure: Measure;
  /** what `data` measures (live rows: attention) */
  dataMeasure: Measure;
}

export type Action =
  | { type: 'model'; model: ModelInfo }
  | { type: 'status'; status: Status }
  /** the tab (anything not a tab name: the graph) */
  | { type: 'tab'; tab: ViewName }
  | { type: 'cmp'; cmp: string | null }
  /** line widths (anything else: split) */
  | { type: 'weights'; weights: EdgeWeights }
  /** the measure chosen (anything else: attention) */
  | { type: 'measure'; measure: Measure }
  /** a /graph read ended with `measure`; `refused`: the run cannot give the choice, which falls back to attention */
  | { type: 'measureTaken'; measure: Measure; refused: boolean }
  /** the user's layer / head choice: a fresh look (current step's edges, no selected token) */
  | { type: 'select'; layer: number | null; head: number | null }
  /** a layer / head from the URL, kept only where the model has it */
  | { type: 'restoreSelection'; layer: number | null; head: number | null }
  /** a stored run on screen with its graph rows */
  | { type: 'runShown'; runId: string; doc: RunDoc; data: GraphData }
  /** new rows of the open run (another selection or measure) */
  | { type: 'data'; data: GraphData }
  /** no run on screen (deleted) */
  | { type: 'runCleared' }
  /** the server took a generation: the open run gives way to the live one */
  | { type: 'liveStarted'; nOutRows: number }
  /** the live run's prompt tokens */
  | { type: 'liveInputs'; inputs: Token[] }
  /** the live run's steps so far; `nPrompt`: the stream's prompt length (unknown labels as placeholders) */
  | { type: 'liveProgress'; outputs: Step[]; data: GraphData | null; nPrompt: number | null; nOutRows: number }
  /** the step (within the outputs; nothing without any) */
  | { type: 'step'; step: number }
  /** step / mode / threshold as a URL or a loader says them (the step is clamped by `clampStep`) */
  | { type: 'viewRestored'; step?: number; mode?: Mode; threshold?: number; unselect?: boolean }
  /** the step held within the outputs (0 with none) */
  | { type: 'clampStep' }
  | { type: 'mode'; mode: Mode }
  | { type: 'toggleSelect'; side: Side; index: number }
  | { type: 'resetSelection' }
  /** the edge threshold, held to [0, 1] (not a number: the default) */
  | { type: 'threshold'; threshold: number };

export function initialState(): UiState {
  return {
    model: null,
    status: 'idle',
    runId: null,
    runDoc: null,
    inputs: [],
    outputs: [],
    data: null,
    nOutRows: 0,
    view: { step: 0, mode: 'current', selected: null, threshold: DEFAULT_THRESHOLD },
    layer: null,
    head: null,
    tab: 'graph',
    cmp: null,
    weights: 'split',
    measure: 'attention',
    dataMeasure: 'attention',
  };
}

/** A run document's graph columns: the prompt's tokens, and its steps (or its output tokens when it kept none). */
export function runColumns(doc: RunDoc): { inputs: Token[]; outputs: Step[] } {
  return {
    inputs: doc.tokens.slice(0, doc.n_prompt),
    outputs: doc.steps.length ? doc.steps : doc.tokens.slice(doc.n_prompt).map((t, i) => ({ index: i, ...t })),
  };
}

function clampInto(step: number, n: number): number {
  if (n <= 0) return 0;
  if (!Number.isFinite(step)) return n - 1;
  return Math.max(0, Math.min(n - 1, Math.trunc(step)));
}

/** The state after `a` (the same object when nothing changes). */
export function reduce(s: UiState, a: Action): UiState {
  switch (a.type) {
    case 'model':
      return { ...s, model: a.model };
    case 'status':
      return s.status === a.status ? s : { ...s, status: a.status };
    case 'tab': {
      const tab = isViewName(a.tab) ? a.tab : 'graph';
      return tab === s.tab ? s : { ...s, tab };
    }
    case 'cmp':
      return a.cmp === s.cmp ? s : { ...s, cmp: a.cmp };
    case 'weights': {
      const weights: EdgeWeights = a.weights === 'rollout' || a.weights === 'raw' ? a.weights : 'split';
      return weights === s.weights ? s : { ...s, weights };
    }
    case 'measure': {
      const measure: Measure = isMeasure(a.measure) ? a.measure : 'attention';
      return measure === s.measure ? s : { ...s, measure };
    }
    case 'measureTaken':
      return { ...s, dataMeasure: a.measure, measure: a.refused ? 'attention' : s.measure };
    case 'select': {
      const head = a.layer === null ? null : a.head;
      return { ...s, layer: a.layer, head, view: { ...s.view, mode: 'current', selected: null } };
    }
    case 'restoreSelection': {
      const m = s.model;
      const layer = a.layer !== null && a.layer >= 0 && (!m || a.layer < m.n_layer) ? a.layer : null;
      const head = layer !== null && a.head !== null && a.head >= 0 && (!m || a.head < m.n_head) ? a.head : null;
      return { ...s, layer, head };
    }
    case 'runShown': {
      const c = runColumns(a.doc);
      return { ...s, runId: a.runId, runDoc: a.doc, inputs: c.inputs, outputs: c.outputs, data: a.data, nOutRows: c.outputs.length };
    }
    case 'data':
      return { ...s, data: a.data };
    case 'runCleared':
      return { ...s, runId: null, runDoc: null, inputs: [], outputs: [], data: null, nOutRows: 0, view: { ...s.view, step: 0, selected: null } };
    case 'liveStarted':
      return {
        ...s,
        runId: null,
        runDoc: null,
        layer: null,
        head: null,
        inputs: [],
        outputs: [],
        data: null,
        dataMeasure: 'attention',
        nOutRows: a.nOutRows,
        view: { ...s.view, step: 0, mode: 'current', selected: null },
      };
    case 'liveInputs':
      return { ...s, inputs: a.inputs };
    case 'liveProgress': {
      let inputs = s.inputs;
      if (a.nPrompt !== null && inputs.length !== a.nPrompt) {
        inputs = [];
        for (let k = 0; k < a.nPrompt; k++) inputs.push(s.inputs[k] ?? { id: -1, label: k === 0 ? '[BOS]' : '…' });
      }
      const step = a.outputs.length - 1;
      return { ...s, outputs: a.outputs, data: a.data, inputs, nOutRows: Math.max(a.nOutRows, a.outputs.length), view: { ...s.view, step } };
    }
    case 'step': {
      const n = s.outputs.length;
      if (n === 0) return s;
      const step = Math.max(0, Math.min(n - 1, a.step));
      return step === s.view.step ? s : { ...s, view: { ...s.view, step } };
    }
    case 'viewRestored':
      return {
        ...s,
        view: {
          ...s.view,
          step: a.step ?? s.view.step,
          mode: a.mode ?? s.view.mode,
          threshold: a.threshold ?? s.view.threshold,
          selected: a.unselect ? null : s.view.selected,
        },
      };
    case 'clampStep': {
      const step = clampInto(s.view.step, s.outputs.length);
      return step === s.view.step ? s : { ...s, view: { ...s.view, step } };
    }
    case 'mode':
      return { ...s, view: { ...s.view, mode: a.mode, selected: null } };
    case 'toggleSelect': {
      const sel = s.view.selected;
      const same = !!sel && sel.side === a.side && sel.index === a.index;
      return { ...s, view: { ...s.view, selected: same ? null : { side: a.side, index: a.index } } };
    }
    case 'resetSelection':
      return { ...s, view: { ...s.view, selected: null, mode: 'current' } };
    case 'threshold': {
      const x = a.threshold;
      const threshold = Number.isFinite(x) ? Math.max(0, Math.min(1, x)) : DEFAULT_THRESHOLD;
      return { ...s, view: { ...s.view, threshold } };
    }
  }
}

export type Listener = (s: UiState, prev: UiState, a: Action) => void;

/** The state and its subscribers: `dispatch` is the only way to change it. */
export class Store {
  private s: UiState;
  private listeners = new Set<Listener>();
  constructor(init: UiState = initialState()) {
    this.s = init;
  }
  get state(): Readonly<UiState> {
    return this.s;
  }
  /** Applies `a`; subscribers are told when the state changed. */
  dispatch(a: Action): void {
    const prev = this.s;
    const next = reduce(prev, a);
    if (next === prev) return;
    this.s = next;
    for (const f of this.listeners) f(next, prev, a);
  }
  /** Calls `f` after each change; returns the unsubscribe. */
  subscribe(f: Listener): () => void {
    this.listeners.add(f);
    return () => void this.listeners.delete(f);
  }
}
