import { describe, expect, it, vi } from 'vitest';
import type { ModelInfo, RunDoc } from '../src/api';
import { GraphData } from '../src/model';
import { initialState, reduce, runColumns, Store, type UiState } from '../src/store';

const MODEL = { id: 'm', arch: 'llama', n_layer: 4, n_head: 8, n_vocab: 100, n_ctx: 256, chat_template: null } as ModelInfo;

function doc(nPrompt: number, nOutput: number, over: Partial<RunDoc> = {}): RunDoc {
  const tokens = Array.from({ length: nPrompt + nOutput }, (_, i) => ({ id: i, label: `t${i}` }));
  return { id: 'r1', n_prompt: nPrompt, n_output: nOutput, tokens, steps: [], ...over };
}

function withRun(n = 5): UiState {
  return reduce(initialState(), { type: 'runShown', runId: 'r1', doc: doc(3, n), data: new GraphData(3) });
}

describe('store: step bounds', () => {
  it('holds the step within the outputs, does nothing without any', () => {
    const s0 = initialState();
    expect(reduce(s0, { type: 'step', step: 3 })).toBe(s0);
    const s = withRun(5);
    expect(reduce(s, { type: 'step', step: 99 }).view.step).toBe(4);
    expect(reduce(s, { type: 'step', step: -3 }).view.step).toBe(0);
    expect(reduce(s, { type: 'step', step: 2 }).view.step).toBe(2);
  });
  it('clampStep: within the outputs, 0 without any, the last for a non-number', () => {
    const s = reduce(withRun(5), { type: 'viewRestored', step: 42 });
    expect(s.view.step).toBe(42);
    expect(reduce(s, { type: 'clampStep' }).view.step).toBe(4);
    expect(reduce(reduce(s, { type: 'viewRestored', step: NaN }), { type: 'clampStep' }).view.step).toBe(4);
    expect(reduce(reduce(s, { type: 'viewRestored', step: 2.7 }), { type: 'clampStep' }).view.step).toBe(2);
    const empty = reduce(initialState(), { type: 'viewRestored', step: 7 });
    expect(reduce(empty, { type: 'clampStep' }).view.step).toBe(0);
    const ok = reduce(s, { type: 'viewRestored', step: 1 });
    expect(reduce(ok, { type: 'clampStep' })).toBe(ok);
  });
});

describe('store: tabs, compare, weights, measure', () => {
  it('takes a tab name, the graph for anything else', () => {
    const s = reduce(initialState(), { type: 'tab', tab: 'heatmap' });
    expect(s.tab).toBe('heatmap');
    expect(reduce(s, { type: 'tab', tab: 'nope' as never }).tab).toBe('graph');
    expect(reduce(s, { type: 'tab', tab: 'heatmap' })).toBe(s);
  });
  it('compare run, weights and measure normalized', () => {
    const s = initialState();
    expect(reduce(s, { type: 'cmp', cmp: 'r2' }).cmp).toBe('r2');
    expect(reduce(s, { type: 'weights', weights: 'raw' }).weights).toBe('raw');
    expect(reduce(s, { type: 'weights', weights: 'rollout' }).weights).toBe('rollout');
    expect(reduce(reduce(s, { type: 'weights', weights: 'raw' }), { type: 'weights', weights: 'bogus' as never }).weights).toBe('split');
    expect(reduce(s, { type: 'measure', measure: 'value' }).measure).toBe('value');
    expect(reduce(reduce(s, { type: 'measure', measure: 'value' }), { type: 'measure', measure: 'x' as never }).measure).toBe('attention');
  });
  it('a refused measure falls back to attention; the data measure is what was read', () => {
    const s = reduce(initialState(), { type: 'measure', measure: 'value' });
    const ok = reduce(s, { type: 'measureTaken', measure: 'value', refused: false });
    expect([ok.measure, ok.dataMeasure]).toEqual(['value', 'value']);
    const no = reduce(s, { type: 'measureTaken', measure: 'attention', refused: true });
    expect([no.measure, no.dataMeasure]).toEqual(['attention', 'attention']);
  });
});

describe('store: runs opened, closed, streamed', () => {
  it('a stored run: its columns, rows and one output row per step', () => {
    const s = withRun(4);
    expect(s.runId).toBe('r1');
    expect(s.inputs.map((t) => t.id)).toEqual([0, 1, 2]);
    expect(s.outputs.map((t) => t.index)).toEqual([0, 1, 2, 3]);
    expect(s.nOutRows).toBe(4);
    const steps = [{ index: 0, id: 9, label: 'x' }];
    expect(runColumns(doc(2, 1, { steps })).outputs).toBe(steps);
  });
  it('closing a run clears it, keeps the threshold and mode', () => {
    let s = reduce(withRun(5), { type: 'step', step: 3 });
    s = reduce(s, { type: 'mode', mode: 'all' });
    s = reduce(s, { type: 'threshold', threshold: 0.2 });
    s = reduce(s, { type: 'runCleared' });
    expect([s.runId, s.runDoc, s.data, s.nOutRows, s.view.step]).toEqual([null, null, null, 0, 0]);
    expect(s.inputs).toEqual([]);
    expect(s.view.mode).toBe('all');
    expect(s.view.threshold).toBe(0.2);
  });
  it('a live run replaces the open one; progress sets the step and pads the prompt', () => {
    let s = reduce(withRun(5), { type: 'select', layer: 1, head: 2 });
    s = reduce(s, { type: 'measureTaken', measure: 'value', refused: false });
    s = reduce(s, { type: 'liveStarted', nOutRows: 16 });
    expect([s.runId, s.layer, s.head, s.nOutRows, s.dataMeasure, s.view.step]).toEqual([null, null, null, 16, 'attention', 0]);
    s = reduce(s, { type: 'liveInputs', inputs: [{ id: 1, label: 'a' }] });
    const outs = [{ index: 0, id: 5, label: 'b' }, { index: 1, id: 6, label: 'c' }];
    s = reduce(s, { type: 'liveProgress', outputs: outs, data: new GraphData(3), nPrompt: 3, nOutRows: 16 });
    expect(s.view.step).toBe(1);
    expect(s.inputs.map((t) => t.label)).toEqual(['a', '…', '…']);
    expect(s.nOutRows).toBe(16);
    const more = Array.from({ length: 20 }, (_, i) => ({ index: i, id: i, label: 'x' }));
    expect(reduce(s, { type: 'liveProgress', outputs: more, data: null, nPrompt: null, nOutRows: 16 }).nOutRows).toBe(20);
    const s2 = reduce(reduce(initialState(), { type: 'liveStarted', nOutRows: 4 }), { type: 'liveProgress', outputs: outs, data: null, nPrompt: 2, nOutRows: 4 });
    expect(s2.inputs.map((t) => t.label)).toEqual(['[BOS]', '…']);
  });
});

describe('store: selection', () => {
  it('toggles a token, resets, a mode change drops the selected token', () => {
    let s = reduce(withRun(3), { type: 'toggleSelect', side: 'input', index: 1 });
    expect(s.view.selected).toEqual({ side: 'input', index: 1 });
    s = reduce(s, { type: 'toggleSelect', side: 'output', index: 1 });
    expect(s.view.selected).toEqual({ side: 'output', index: 1 });
    expect(reduce(s, { type: 'toggleSelect', side: 'output', index: 1 }).view.selected).toBeNull();
    const all = reduce(s, { type: 'mode', mode: 'all' });
    expect([all.view.mode, all.view.selected]).toEqual(['all', null]);
    const r = reduce(reduce(all, { type: 'toggleSelect', side: 'input', index: 0 }), { type: 'resetSelection' });
    expect([r.view.mode, r.view.selected]).toEqual(['current', null]);
  });
  it('a layer / head choice is a fresh look; a head needs a layer', () => {
    let s = reduce(withRun(3), { type: 'mode', mode: 'all' });
    s = reduce(s, { type: 'select', layer: 2, head: 5 });
    expect([s.layer, s.head, s.view.mode]).toEqual([2, 5, 'current']);
    expect(reduce(s, { type: 'select', layer: null, head: 5 }).head).toBeNull();
  });
  it('a URL selection is kept only where the model has it', () => {
    const s = reduce(initialState(), { type: 'model', model: MODEL });
    expect(reduce(s, { type: 'restoreSelection', layer: 3, head: 7 })).toMatchObject({ layer: 3, head: 7 });
    expect(reduce(s, { type: 'restoreSelection', layer: 4, head: 1 })).toMatchObject({ layer: null, head: null });
    expect(reduce(s, { type: 'restoreSelection', layer: 1, head: 8 })).toMatchObject({ layer: 1, head: null });
    expect(reduce(s, { type: 'restoreSelection', layer: null, head: 1 })).toMatchObject({ layer: null, head: null });
    // no model known yet: taken as given
    expect(reduce(initialState(), { type: 'restoreSelection', layer: 40, head: 3 })).toMatchObject({ layer: 40, head: 3 });
  });
  it('the threshold is held to [0, 1], the default for a non-number', () => {
    const s = initialState();
    expect(reduce(s, { type: 'threshold', threshold: 2 }).view.threshold).toBe(1);
    expect(reduce(s, { type: 'threshold', threshold: -1 }).view.threshold).toBe(0);
    expect(reduce(s, { type: 'threshold', threshold: NaN }).view.threshold).toBe(s.view.threshold);
    expect(reduce(s, { type: 'viewRestored', threshold: 0.3, mode: 'all', unselect: true }).view).toMatchObject({ threshold: 0.3, mode: 'all', selected: null });
  });
});

describe('store: model and generation status', () => {
  it('status changes; the same status is no change', () => {
    const s = initialState();
    const g = reduce(s, { type: 'status', status: 'generating' });
    expect(g.status).toBe('generating');
    expect(reduce(g, { type: 'status', status: 'generating' })).toBe(g);
    expect(reduce(g, { type: 'status', status: 'done' }).status).toBe('done');
    expect(reduce(s, { type: 'model', model: MODEL }).model).toBe(MODEL);
  });
  it('the store tells subscribers after a change, not after none', () => {
    const st = new Store();
    const f = vi.fn();
    const off = st.subscribe(f);
    st.dispatch({ type: 'status', status: 'idle' });
    expect(f).not.toHaveBeenCalled();
    st.dispatch({ type: 'status', status: 'generating' });
    expect(f).toHaveBeenCalledTimes(1);
    expect(f.mock.calls[0][0].status).toBe('generating');
    expect(f.mock.calls[0][1].status).toBe('idle');
    expect(st.state.status).toBe('generating');
    off();
    st.dispatch({ type: 'status', status: 'done' });
    expect(f).toHaveBeenCalledTimes(1);
  });
});
