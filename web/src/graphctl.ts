// What the graph tab draws from the store: the model pushed to GraphView
// (split rows, their raw attention, or the attention rollout read per step
// from /rollout), the legend of what the lines show, the measure's note.
// Derived data lives here (computed, not responses): the raw rows of the
// current data, and the open run's rollout rows as they arrive.
import { api } from './api';
import type { Measure } from './attribution';
import type { GraphView } from './graph';
import { rolloutRows, rolloutStepsNeeded, queryPos } from './interventions';
import { clampStep, GraphData, rawGraphData, type EdgeWeights } from './model';
import type { Store } from './store';

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

export interface GraphEls {
  graph: HTMLElement;
  status: HTMLElement;
  lwLegend: HTMLElement;
  measure: HTMLSelectElement;
  measureNote: HTMLElement;
  edgeWeights: HTMLSelectElement;
}

export class GraphController {
  private raw: { of: GraphData; data: GraphData } | null = null; // the raw attention rows of state.data (cached)
  private rollout: RolloutState | null = null;
  private rolloutRedraw = 0;

  /** `redraw`: the view applied again (without the hash) once rollout rows arrive. */
  constructor(
    private store: Store,
    private graph: GraphView,
    private el: GraphEls,
    private redraw: () => void,
  ) {}

  /** Whether the graph draws the rollout now (a stored run, not while generating). */
  rolloutOn(): boolean {
    const s = this.store.state;
    return s.weights === 'rollout' && !!s.runId && !!s.runDoc && s.status !== 'generating';
  }

  /** What the lines show now: the rollout, raw or split rows. */
  shownWeights(): EdgeWeights {
    return this.rolloutOn() ? 'rollout' : this.store.state.weights === 'raw' ? 'raw' : 'split';
  }

  /** Pushes the model (tokens, data) to the graph. */
  push(): void {
    const s = this.store.state;
    const w = this.shownWeights();
    const data = w === 'rollout' ? (this.rolloutFor()?.data ?? null) : w === 'raw' ? this.rawData() : s.data;
    this.graph.setModel({ inputs: s.inputs, outputs: s.outputs, data, split: s.data, weights: w, measure: s.dataMeasure, nOutRows: s.nOutRows });
  }

  /** The raw attention rows of the state's data (split x mass), computed once per data. */
  rawData(): GraphData | null {
    const s = this.store.state;
    const d = s.data;
    if (!d) return null;
    if (s.status === 'generating') return rawGraphData(d); // the live data grows step by step
    if (!this.raw || this.raw.of !== d) this.raw = { of: d, data: rawGraphData(d) };
    return this.raw.data;
  }

  /** The open run's rollout state (a fresh one for another run). */
  private rolloutFor(): RolloutState | null {
    const { runId: id, runDoc: doc } = this.store.state;
    if (!id || !doc) return null;
    if (!this.rollout || this.rollout.runId !== id) {
      this.rollout?.ctl.abort();
      const d = new GraphData(doc.n_prompt);
      if (doc.n_output > 0) d.setStep(doc.n_output - 1, null, null);
      this.rollout = { runId: id, data: d, have: new Set(), pending: new Set(), queue: [], active: 0, ctl: new AbortController() };
    }
    return this.rollout;
  }

  /** Reads the rollout of the steps the view draws (4 requests at a time); redraws as they arrive. */
  ensureRollout(): void {
    const g = this.el.graph.dataset;
    g.weights = this.shownWeights();
    if (!this.rolloutOn()) {
      delete g.rollout;
      delete g.rolloutPos;
      return;
    }
    const s = this.store.state;
    const r = this.rolloutFor()!;
    const doc = s.runDoc!;
    const t = clampStep(s.view.step, s.outputs.length);
    const steps = rolloutStepsNeeded(t, s.view.mode, s.view.selected);
    g.rolloutPos = String(queryPos(doc.n_prompt, Math.max(0, t)));
    g.rollout = steps.every((x) => r.have.has(x)) ? 'ready' : 'loading';
    for (const x of steps)
      if (!r.have.has(x) && !r.pending.has(x)) {
        r.pending.add(x);
        r.queue.push(x);
      }
    const pump = () => {
      while (r.active < 4 && r.queue.length) {
        const step = r.queue.shift()!;
        r.active++;
        api
          .rollout(r.runId, queryPos(doc.n_prompt, step), r.ctl.signal)
          .then((rep) => {
            const rows = rolloutRows(rep.rollout, doc.n_prompt, step);
            r.data.setStep(step, rows.prompt, rows.output);
            r.have.add(step);
            if (this.rollout === r && !this.rolloutRedraw)
              this.rolloutRedraw = requestAnimationFrame(() => {
                this.rolloutRedraw = 0;
                if (this.rollout !== r || !this.rolloutOn()) return;
                this.push();
                this.redraw();
              });
          })
          .catch((err) => {
            if (this.rollout === r && !(err instanceof DOMException && err.name === 'AbortError'))
              this.el.status.textContent = `The rollout of step ${step + 1} could not be read: ${err instanceof Error ? err.message : err}`;
          })
          .finally(() => {
            r.pending.delete(step);
            r.active--;
            pump();
          });
      }
    };
    pump();
  }

  /** The weights selector and the graph's data-weights after a weights change. */
  syncWeights(): void {
    this.el.edgeWeights.value = this.store.state.weights;
    this.syncLegend();
    this.el.graph.dataset.weights = this.shownWeights();
  }

  /** The legend line: what the lines show, the measure included (live rows are attention whatever the choice). */
  syncLegend(): void {
    const s = this.store.state;
    const el = this.el;
    const value = s.dataMeasure === 'value';
    const live = s.status === 'generating' && s.measure === 'value' ? ' (live: attention; value-weighted once the run is stored)' : '';
    el.lwLegend.textContent =
      s.weights === 'rollout'
        ? 'lines show: attention rollout of the step’s query (every layer, mean of the heads; shares of the whole row)'
        : s.weights === 'raw'
          ? value
            ? 'lines show: raw value-weighted attention (a·|W_O v|: not shares, rows do not sum to 1; widths stop growing at 1; BOS has no line)'
            : `lines show: raw attention (as in the Heatmap and Text tabs; BOS has no line)${live}`
          : value
            ? 'lines show: normalized value-weighted attention (a·|W_O v|; BOS removed; input and output parts each sum to 1)'
            : `lines show: normalized attention (BOS removed; input and output parts each sum to 1)${live}`;
    el.graph.dataset.measure = s.dataMeasure;
    el.measure.value = s.measure;
    const rollout = s.weights === 'rollout';
    el.measure.disabled = rollout;
    el.measure.title = rollout
      ? 'The attention rollout is always of attention: choose normalized or raw line widths to weigh by value-weighted attention'
      : 'What the weights measure: attention (the post-softmax weight of each source) or value-weighted attention, a_ij × |W_O^h v_j| (what each source adds to the head’s output; docs/ANALYSIS.md). While a run is generating the graph draws attention; the choice applies once the run is stored.';
  }

  /** The note beside the legend (a run that cannot show the chosen measure); null hides it. */
  measureNote(text: string | null): void {
    this.el.measureNote.hidden = text === null;
    this.el.measureNote.textContent = text ?? '';
  }

  /** What the lines are, for the SVG export's subtitle. */
  linesText(): string {
    const s = this.store.state;
    const m: Measure = s.dataMeasure;
    return this.rolloutOn() ? 'attention rollout' : `${s.weights === 'raw' ? 'raw' : 'normalized'} ${m === 'value' ? 'value-weighted attention' : 'attention'}`;
  }
}
