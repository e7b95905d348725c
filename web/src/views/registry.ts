// The deep views (every tab but the graph), one line each: its name (the
// URL's `view=` and the ids #tab-NAME / #panel-NAME / #view-NAME), its tab
// label and title, its help page (TAB_HELP of src/help.ts), its factory,
// whether its tab is shown for the open run, and a data export of its own
// when the view has none. main.ts builds the tabs, panels, help and export
// buttons from this list, and `ViewDriver` is the one place a view draws:
// `render(state)` shows the tab's view for the state, hides the one before.
// A new view: one file in views/ implementing `View`, one line below, and
// its name in VIEW_NAMES (src/model.ts, which the URL is checked against).
import type { BranchRequest } from './sampling';
import { toCsv, type ExportData, type Exportable } from '../datafile';
import { api } from '../api';
import { clampStep, decodeHash, VIEW_NAMES, type UrlState, type ViewName } from '../model';
import type { UiState } from '../store';
import { runPath } from './common';
import { createCompareView } from './compare';
import { createEffectsView } from './effects';
import { createExpertsView } from './experts';
import { createHeatmapView } from './heatmap';
import { createLensView } from './lens';
import { createModelView } from './modelgrid';
import { createSamplingView } from './sampling';
import { createSourcesView } from './sources';
import { createStatsView, type StatsReply } from './stats';
import { createTextView, loadDenseMatrix, matrixExport } from './text';
import { createTokensView } from './tokens';
import type { View, ViewContext } from './types';

export type DeepViewName = Exclude<ViewName, 'graph'>;

/** What a view may ask of the page (main.ts gives it). */
export interface ViewApp {
  state(): Readonly<UiState>;
  setStep(t: number): void;
  setSelection(layer: number | null, head: number | null): void;
  /** opens a stored run (a new history entry) at `u` */
  openRun(id: string, u: UrlState): void;
  setCmp(id: string | null): void;
  ablate(layer: number, head: number, mean: boolean): void;
  branch(req: BranchRequest, label: string): void;
  prompt: HTMLTextAreaElement;
}

export type DeepView = View & Partial<Exportable>;

export interface ViewEntry {
  name: DeepViewName;
  /** the tab's label */
  tab: string;
  /** what the view shows (the tab's title when the help has no page for it) */
  title: string;
  /** its "how to read" page: a key of TAB_HELP (src/help.ts) */
  help: string;
  create(root: HTMLElement, app: ViewApp): DeepView;
  /** whether the tab is offered for this state (absent: always); the open tab stays reachable */
  shown?(s: Readonly<UiState>): boolean;
  /** shown without a run (absent: a run is needed) */
  noRun?: boolean;
  /** the CSV / JSON / NPY export when the view itself has none */
  exportData?(c: ViewContext): Promise<ExportData | null>;
}

/** The Heads tab's data: every head's type scores (GET /stats head_types). */
async function headsExport(c: ViewContext): Promise<ExportData> {
  const s = await api.get<StatsReply>(runPath(c.runId, '/stats'));
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

/** A chat run (it may have documents; the Sources tab says when it has none). */
function chatRun(s: Readonly<UiState>): boolean {
  const doc = s.runDoc;
  return !!doc && ((doc.documents?.length ?? 0) > 0 || (doc.messages?.length ?? 0) > 0 || doc.kind === 'chat');
}

export const VIEWS: readonly ViewEntry[] = [
  { name: 'text', tab: 'Text', title: 'Attention over the text', help: 'text', create: (r) => createTextView(r) },
  { name: 'lens', tab: 'Logit lens', title: 'What each layer would predict', help: 'lens', create: (r) => createLensView(r) },
  {
    name: 'stats',
    tab: 'Statistics',
    title: 'Per-token statistics, head types, fingerprints',
    help: 'stats',
    create: (r, app) =>
      createStatsView(r, {
        selectHead: (l, h) => app.setSelection(l, h),
        // the fingerprint manifold: a point opens its run at its step, on this tab, with this selection
        openAt: (id, step) => {
          const s = app.state();
          if (id === s.runId) return app.setStep(step);
          app.openRun(id, { ...decodeHash(''), run: id, step, view: s.tab, layer: s.layer, head: s.head, threshold: s.view.threshold, weights: s.weights, measure: s.measure });
        },
      }),
  },
  {
    name: 'tokens',
    tab: 'Tokens',
    title: 'How text becomes tokens',
    help: 'tokens',
    noRun: true,
    create: (r, app) =>
      createTokensView(r, {
        prompt: app.prompt,
        runPrompt: () => {
          const s = app.state();
          return s.runId && s.runDoc ? (s.runDoc.prompt ?? null) : null;
        },
      }),
  },
  {
    name: 'sampling',
    tab: 'Sampling',
    title: 'The candidates of each step, and branches',
    help: 'sampling',
    create: (r, app) =>
      createSamplingView(r, {
        runParams: () => app.state().runDoc?.params,
        nVocab: () => app.state().model?.n_vocab ?? 0,
        busy: () => app.state().status === 'generating',
        branch: (req, label) => app.branch(req, label),
      }),
  },
  {
    name: 'compare',
    tab: 'Compare',
    title: 'Two runs side by side',
    help: 'compare',
    create: (r, app) => createCompareView(r, { cmp: () => app.state().cmp, setCmp: (id) => app.setCmp(id) }),
  },
  {
    name: 'heatmap',
    tab: 'Heatmap',
    title: 'The attention matrix',
    help: 'heatmap',
    create: (r) => createHeatmapView(r),
    exportData: async (c) => matrixExport(c, await loadDenseMatrix(c), 'heatmap'),
  },
  {
    name: 'heads',
    tab: 'Heads',
    title: 'Every layer and head at a glance',
    help: 'heads',
    create: (r, app) =>
      createModelView(r, {
        ablate: (l, h, mean) => app.ablate(l, h, mean),
        canAblate: () => app.state().status !== 'generating' && !!app.state().runId,
      }),
    exportData: headsExport,
  },
  {
    name: 'experts',
    tab: 'Experts',
    title: 'Mixture-of-experts routing',
    help: 'experts',
    create: (r) => createExpertsView(r),
    // a mixture-of-experts run, or with no run open a served model that routes (the next run will have experts)
    shown: (s) => (s.runDoc ? !!s.runDoc.experts : (s.model?.n_expert ?? 0) > 0),
  },
  {
    name: 'effects',
    tab: 'Effects',
    title: 'What a branch changed',
    help: 'effects',
    create: (r, app) =>
      createEffectsView(r, {
        openRun: (id) => {
          const s = app.state();
          app.openRun(id, { ...decodeHash(''), run: id, threshold: s.view.threshold, weights: s.weights, measure: s.measure });
        },
      }),
    shown: (s) => !!s.runDoc?.branch,
  },
  { name: 'sources', tab: 'Sources', title: 'Where each sentence came from', help: 'sources', create: (r) => createSourcesView(r), shown: chatRun },
];

/** The context the deep views read: the open run, the selection and the step (null: no run). */
export function viewContext(s: Readonly<UiState>, setStep: (t: number) => void): ViewContext | null {
  const doc = s.runDoc;
  if (!s.runId || !doc) return null;
  const n = doc.n_output;
  return {
    base: '',
    runId: s.runId,
    nPrompt: doc.n_prompt,
    nOutput: n,
    tokens: doc.tokens,
    nLayer: s.model?.n_layer ?? 0,
    nHead: s.model?.n_head ?? 0,
    layer: s.layer,
    head: s.layer === null ? null : s.head,
    step: Math.max(0, clampStep(s.view.step, n)),
    setStep,
    layerWindow: s.model?.layer_window,
    experts: doc.experts ?? null,
    branch: doc.branch ?? null,
    interventions: doc.interventions ?? null,
  };
}

function byId<T extends HTMLElement>(id: string): T | null {
  return document.getElementById(id) as T | null;
}

/**
 * The tab strip and the panels, built from VIEWS (the ones index.html does
 * not already hold are made here), and the one render path of the deep views.
 */
export class ViewDriver {
  readonly tabs = {} as Record<ViewName, HTMLButtonElement>;
  readonly panels = {} as Record<ViewName, HTMLElement>;
  private views = {} as Record<DeepViewName, DeepView>;
  private entries = {} as Record<DeepViewName, ViewEntry>;
  private shownView: DeepViewName | null = null; // the view whose show() ran last, not hidden since

  constructor(tabStrip: HTMLElement, app: ViewApp) {
    this.tabs.graph = byId<HTMLButtonElement>('tab-graph')!;
    this.panels.graph = byId('panel-graph')!;
    let last: HTMLElement = this.panels.graph; // a panel index.html lacks goes after the one before it
    for (const e of VIEWS) {
      let tab = byId<HTMLButtonElement>(`tab-${e.name}`);
      if (!tab) {
        tab = document.createElement('button');
        Object.assign(tab, { id: `tab-${e.name}`, type: 'button', className: 'tab', textContent: e.tab, tabIndex: -1 });
        tab.setAttribute('role', 'tab');
        tab.dataset.view = e.name;
        tab.setAttribute('aria-controls', `panel-${e.name}`);
        tab.setAttribute('aria-selected', 'false');
        tabStrip.appendChild(tab);
      }
      let panel = byId(`panel-${e.name}`);
      if (!panel) {
        panel = document.createElement('div');
        Object.assign(panel, { id: `panel-${e.name}`, className: 'view-panel deep', tabIndex: -1, hidden: true });
        panel.setAttribute('role', 'tabpanel');
        panel.setAttribute('aria-labelledby', `tab-${e.name}`);
        const empty = document.createElement('p');
        empty.className = 'view-empty note';
        empty.textContent = 'Generate text, or open a saved run, to see this view.';
        const root = document.createElement('div');
        root.id = `view-${e.name}`;
        root.className = 'view-root';
        panel.append(empty, root);
        last.insertAdjacentElement('afterend', panel);
      }
      last = panel;
      this.tabs[e.name] = tab;
      this.panels[e.name] = panel;
      this.entries[e.name] = e;
      this.views[e.name] = e.create(byId(`view-${e.name}`)!, app);
    }
  }

  /** The tabs offered for the state (the open one always). */
  syncTabs(s: Readonly<UiState>): void {
    for (const e of VIEWS) if (e.shown) this.tabs[e.name].hidden = !e.shown(s) && s.tab !== e.name;
  }

  /** The tabs the keyboard moves between: those not hidden. */
  shownTabs(): ViewName[] {
    return VIEW_NAMES.filter((v) => this.tabs[v] && !this.tabs[v].hidden);
  }

  /** Marks the tab `v` selected, shows its panel. */
  selectTab(v: ViewName, focus: boolean): void {
    for (const name of VIEW_NAMES) {
      const on = name === v;
      if (!this.tabs[name]) continue; // a name with no registry line
      this.tabs[name].setAttribute('aria-selected', String(on));
      this.tabs[name].tabIndex = on ? 0 : -1;
      this.panels[name].hidden = !on;
    }
    if (focus) this.tabs[v].focus();
  }

  /** The one place a deep view draws: the tab's view for the state (cheap when nothing changed). */
  render(s: Readonly<UiState>, setStep: (t: number) => void): void {
    this.syncTabs(s);
    const tab = s.tab;
    if (this.shownView && this.shownView !== tab) {
      this.views[this.shownView].hide();
      this.shownView = null;
    }
    if (tab === 'graph') return;
    const e = this.entries[tab];
    const panel = this.panels[tab];
    const empty = panel.querySelector('.view-empty') as HTMLElement;
    const root = byId(`view-${tab}`)!;
    const c = viewContext(s, setStep);
    if (e.noRun) {
      empty.hidden = true;
      root.hidden = false;
      this.views[tab].show(c as ViewContext);
      this.shownView = tab;
      return;
    }
    if (!c) {
      if (this.shownView) this.views[this.shownView].hide();
      this.shownView = null;
      empty.hidden = false;
      empty.textContent = s.status === 'generating' ? 'Generating… this view opens with the stored run.' : 'Generate text, or open a saved run, to see this view.';
      root.hidden = true;
      return;
    }
    empty.hidden = true;
    root.hidden = false;
    this.views[tab].show(c);
    this.shownView = tab;
  }

  /** Whether the tab has data to export in this state. */
  canExport(s: Readonly<UiState>): boolean {
    if (s.status === 'generating') return false;
    if (s.tab === 'graph') return !!s.data && s.outputs.length > 0;
    return !!this.entries[s.tab].noRun || !!s.runId;
  }

  /** The deep tab's data export (null: nothing to export). */
  async exportData(s: Readonly<UiState>, setStep: (t: number) => void): Promise<ExportData | null> {
    if (s.tab === 'graph') return null;
    const e = this.entries[s.tab];
    const c = viewContext(s, setStep);
    if (e.exportData) return c ? e.exportData(c) : null;
    const v = this.views[s.tab];
    return v.exportData ? v.exportData() : null;
  }
}
