// Downloads of what is on screen: the graph as SVG / PNG, and the tab's data
// as CSV / JSON / NPY (the graph's rows here; a deep view's through the
// registry: src/views/registry.ts).
import { matrixCsv, npyBytes, type ExportData } from './datafile';
import { buildSvg, download, svgToPng, type ExportToken } from './export';
import type { GraphView } from './graph';
import type { GraphController } from './graphctl';
import { clampStep, displayLabel, QUANTITY } from './model';
import type { Store } from './store';
import type { ViewDriver } from './views/registry';

export interface ExportDeps {
  store: Store;
  graph: GraphView;
  graphCtl: GraphController;
  driver: ViewDriver;
  graphEl: HTMLElement;
  status: HTMLElement;
  /** the layer / head selection in words */
  selectionText(): string;
  setStep(t: number): void;
}

/** The graph at the current step as an SVG (and what PNG is made from). */
function graphSvg(d: ExportDeps) {
  const s = d.store.state;
  const n = s.outputs.length;
  const t = clampStep(s.view.step, n);
  const sel = s.view.selected;
  const inputs: ExportToken[] = s.inputs.map((tk, i) => ({
    id: tk.id,
    label: tk.label,
    state: sel && sel.side === 'input' && sel.index === i ? 'selected' : 'input',
  }));
  const outputs: ExportToken[] = s.outputs.slice(0, t + 1).map((tk, i) => ({
    id: tk.id,
    label: tk.label,
    state: sel && sel.side === 'output' && sel.index === i ? 'selected' : i === t ? 'current' : 'previous',
  }));
  const what = sel ? `edges of ${sel.side} token ${sel.index}` : s.view.mode === 'all' ? 'all connections up to this step' : "the current step's edges";
  return buildSvg({
    title: `heed · ${s.model?.id ?? 'model'} · ${s.runId ?? 'live run'}`,
    subtitle: `step ${Math.max(0, t) + 1} of ${n} · ${what} · lines: ${d.graphCtl.linesText()} ≥ ${s.view.threshold.toFixed(3)} · ${d.selectionText()}`,
    inputs,
    outputs,
    nOutRows: outputs.length, // the outputs shown at this step, laid out over the whole height
    edges: d.graph.currentEdges(),
    width: Math.max(760, Math.min(1400, d.graphEl.clientWidth)),
  });
}

function imageName(d: ExportDeps, ext: string): string {
  const s = d.store.state;
  const base = (s.runId ?? 'live').replace(/[^\w.-]/g, '_');
  return `heed-${base}-step${s.view.step}.${ext}`;
}

export function exportSvg(d: ExportDeps): void {
  const r = graphSvg(d);
  download(new Blob([r.svg], { type: 'image/svg+xml' }), imageName(d, 'svg'));
}

export async function exportPng(d: ExportDeps): Promise<void> {
  try {
    const r = graphSvg(d);
    download(await svgToPng(r, 2), imageName(d, 'png'));
  } catch (err) {
    d.status.textContent = `PNG export failed: ${err instanceof Error ? err.message : err}`;
  }
}

/**
 * The graph's data: every step's rows (prompt part, then output part) as one
 * n_output x (n_prompt + n_output) matrix: the raw attention when the graph
 * shows it, else the normalized (split) rows; `quantity` says which.
 */
function graphExport(dp: ExportDeps): ExportData | null {
  const s = dp.store.state;
  const raw = s.weights === 'raw';
  const d = raw ? dp.graphCtl.rawData() : s.data;
  if (!d || d.nOutput === 0) return null;
  const quantity = raw ? 'raw' : 'normalized';
  const measure = s.dataMeasure;
  const mName = measure === 'value' ? 'value-weighted attention' : 'attention';
  const nP = d.nPrompt;
  const nO = d.nOutput;
  const cols = nP + nO;
  const arr = new Float32Array(nO * cols);
  for (let t = 0; t < nO; t++) {
    arr.set(d.prompt[t], t * cols);
    for (let j = 0; j < t; j++) arr[t * cols + nP + j] = d.output[t][j];
  }
  const inLab = (k: number) => displayLabel(s.inputs[k]?.label);
  const outLab = (j: number) => displayLabel(s.outputs[j]?.label);
  return {
    name: 'graph',
    json: {
      run: s.runId,
      quantity,
      quantity_note: measure === 'value' ? `${QUANTITY[raw ? 'raw' : 'split']}, of value-weighted attention (a_ij x |W_O^h v_j|)` : QUANTITY[raw ? 'raw' : 'split'],
      measure,
      selection: dp.selectionText(),
      layer: s.layer,
      head: s.head,
      n_prompt: nP,
      n_output: nO,
      step: s.view.step,
      threshold: s.view.threshold,
      inputs: s.inputs,
      outputs: s.outputs.map((o) => ({ id: o.id, label: o.label, prob: o.prob })),
      prompt: d.prompt.map((r) => Array.from(r)),
      output: d.output.map((r) => Array.from(r)),
      prompt_mass: s.data ? s.data.promptMass.map((m) => (Number.isFinite(m) ? m : null)) : null,
      output_mass: s.data ? s.data.outputMass.map((m) => (Number.isFinite(m) ? m : null)) : null,
    },
    csv: matrixCsv(nO, cols, arr, (t) => `step ${t + 1}: ${outLab(t)}`, (k) => (k < nP ? `in ${k}: ${inLab(k)}` : `out ${k - nP}: ${outLab(k - nP)}`), `step\\source (${quantity} ${mName})`),
    npy: { shape: [nO, cols], data: arr },
  };
}

/** Downloads the tab's data as CSV, JSON or NPY. */
export async function exportData(dp: ExportDeps, kind: 'csv' | 'json' | 'npy'): Promise<void> {
  try {
    const s = dp.store.state;
    const d = s.tab === 'graph' ? graphExport(dp) : await dp.driver.exportData(s, dp.setStep);
    if (!d) {
      dp.status.textContent = 'Nothing to export in this view yet.';
      return;
    }
    const base = `heed-${(dp.store.state.runId ?? 'prompt').replace(/[^\w.-]/g, '_')}-${d.name.replace(/[^\w.-]/g, '_')}`;
    if (kind === 'csv') download(new Blob([d.csv], { type: 'text/csv' }), base + '.csv');
    else if (kind === 'json') download(new Blob([JSON.stringify(d.json)], { type: 'application/json' }), base + '.json');
    else {
      if (!d.npy) {
        dp.status.textContent = 'This view has no numeric array to export as NPY.';
        return;
      }
      const bytes = npyBytes(d.npy.shape, d.npy.data);
      download(new Blob([bytes.buffer as ArrayBuffer], { type: 'application/octet-stream' }), base + '.npy');
    }
  } catch (err) {
    dp.status.textContent = `Export failed: ${err instanceof Error ? err.message : err}`;
  }
}
