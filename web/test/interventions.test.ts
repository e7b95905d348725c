import { describe, expect, it } from 'vitest';
import {
  ablateRequest,
  branchRequest,
  describeIntervention,
  effectsRows,
  formatKl,
  formatProbAfter,
  knockoutKey,
  knockoutRequest,
  MAX_POSITION,
  queryPos,
  rolloutRows,
  rolloutStepsNeeded,
  type EffectsReply,
} from '../src/interventions';
import { decodeHash, encodeHash, defaultUrlState } from '../src/model';

const src = {
  id: 'run_a_1',
  n_prompt: 5,
  n_output: 8,
  max_tokens: 8,
  params: { temperature: 0.7, top_k: 20, top_p: 0.9, min_p: 0.1, seed: 42, repeat_penalty: 1 },
};

describe('branch requests', () => {
  it('keep the source run’s sampler settings and budget', () => {
    const r = branchRequest(src, 3, []);
    expect(r).toEqual({
      branch: { run: 'run_a_1', step: 3 },
      interventions: [],
      max_tokens: 8,
      temperature: 0.7,
      top_k: 20,
      top_p: 0.9,
      min_p: 0.1,
      seed: 42,
      attention_split: true,
    });
  });

  it('clamp the step to the run and the budget to at least step + 1', () => {
    expect(branchRequest(src, 99, []).branch.step).toBe(7);
    expect(branchRequest(src, -2, []).branch.step).toBe(0);
    const short = { id: 'r', n_prompt: 3, n_output: 4 };
    const r = branchRequest(short, 3, []);
    expect(r.max_tokens).toBe(4);
    expect(r.temperature).toBe(0); // defaults without params
  });

  it('ablate and mean-ablate one head', () => {
    expect(ablateRequest(src, 2, 1, 3).interventions).toEqual([{ type: 'ablate', layer: 1, head: 3 }]);
    expect(ablateRequest(src, 2, 1, 3, true).interventions).toEqual([{ type: 'ablate_mean', layer: 1, head: 3 }]);
  });

  it('knock out a key for every query from the branch step’s on, all layers and heads', () => {
    expect(queryPos(5, 0)).toBe(4);
    const r = knockoutRequest(src, 3, 2);
    expect(r.interventions).toEqual([{ type: 'knockout', layer: null, head: null, queries: [7, 13], keys: [2, 2] }]);
    // a key after the first query: the queries start at the key
    const k = knockoutRequest(src, 0, 4);
    expect(k.interventions[0]).toMatchObject({ queries: [4, 13], keys: [4, 4] });
    const big = knockoutRequest({ ...src, n_prompt: MAX_POSITION, max_tokens: 100 }, 0, 1);
    expect((big.interventions[0] as { queries: number[] }).queries[1]).toBe(MAX_POSITION);
  });

  it('knockout keys: prompt tokens, and outputs the branch keeps', () => {
    expect(knockoutKey(5, 3, 'input', 0)).toBe(0);
    expect(knockoutKey(5, 3, 'input', 4)).toBe(4);
    expect(knockoutKey(5, 3, 'input', 5)).toBeNull();
    expect(knockoutKey(5, 3, 'output', 2)).toBe(7);
    expect(knockoutKey(5, 3, 'output', 3)).toBeNull(); // generated again
    expect(knockoutKey(5, 3, 'output', -1)).toBeNull();
  });

  it('describe interventions in words', () => {
    expect(describeIntervention({ type: 'ablate', layer: 1, head: 2 })).toBe('ablate layer 1, head 2');
    expect(describeIntervention({ type: 'ablate_mean', layer: 0, head: 5 })).toBe('mean-ablate layer 0, head 5');
    expect(describeIntervention({ type: 'knockout', layer: null, head: null, queries: [7, 20], keys: [2, 2] })).toBe(
      'knock out attention to position 2 from queries 7..20 (all layers and heads)',
    );
    expect(describeIntervention({ type: 'knockout', layer: 3, head: null, queries: [1, 2], keys: [0, 1] })).toContain('positions 0..1');
    expect(describeIntervention({ type: 'scale', layer: 1, head: 1, factor: 2 })).toBe('scale layer 1, head 1 by 2');
  });
});

describe('effects rows', () => {
  const reply: EffectsReply = {
    base: 'run_a_1',
    n_steps: 3,
    first_diff: 1,
    mean_kl_lower_bound: 0.2,
    steps: [
      { step: 0, base_id: 10, id: 10, differs: false, kl_lower_bound: 0.1, base_token_prob_base: 0.9, base_token_prob: 0.8, base_token_prob_below: null },
      { step: 1, base_id: 11, id: 12, differs: true, kl_lower_bound: 0.4, base_token_prob_base: 0.6, base_token_prob: null, base_token_prob_below: 0.002 },
      { step: 2, base_id: 13, id: 14, differs: true, kl_lower_bound: 0, base_token_prob_base: 0.5, base_token_prob: 0.25, base_token_prob_below: null },
    ],
  };
  const tok = (id: number, label: string) => ({ id, label });
  const base = { n_prompt: 2, tokens: [tok(1, '<s>'), tok(5, 'A'), tok(10, ' x'), tok(11, ' y'), tok(13, ' z')] };
  const run = { n_prompt: 2, tokens: [tok(1, '<s>'), tok(5, 'A'), tok(10, ' x'), tok(12, ' w'), tok(99, '?')] };

  it('label both tokens, mark the first difference, scale the bars to the largest KL', () => {
    const rows = effectsRows(reply, base, run, 1);
    expect(rows.map((r) => [r.baseLabel, r.label])).toEqual([
      [' x', ' x'],
      [' y', ' w'],
      [' z', '#14'], // the document's token is not the reply's: its id
    ]);
    expect(rows.map((r) => r.firstDiff)).toEqual([false, true, false]);
    expect(rows.map((r) => r.reused)).toEqual([true, false, false]);
    expect(rows.map((r) => r.klFrac)).toEqual([0.25, 1, 0]);
    expect(rows[0].probText).toBe('90.0% → 80.0%');
    expect(rows[1].probText).toBe('60.0% → < 0.20%');
    expect(rows[1].probAfter).toBeNull();
    expect(rows[1].probBelow).toBe(0.002);
  });

  it('no first difference, no branch step, all-zero KL', () => {
    const same: EffectsReply = { ...reply, first_diff: null, steps: reply.steps.map((s) => ({ ...s, kl_lower_bound: 0 })) };
    const rows = effectsRows(same, base, run, null);
    expect(rows.every((r) => !r.firstDiff && !r.reused && r.klFrac === 0)).toBe(true);
  });

  it('formats', () => {
    expect(formatProbAfter(0.5, null)).toBe('50.0%');
    expect(formatProbAfter(null, 0.0001)).toBe('< 0.01%');
    expect(formatProbAfter(null, null)).toBe('–');
    expect(formatKl(0)).toBe('0');
    expect(formatKl(0.01234567)).toBe('0.0123');
    expect(formatKl(0.00001234)).toBe('1.23e-5');
    expect(formatKl(NaN)).toBe('–');
  });
});

describe('rollout as graph rows', () => {
  it('maps positions 0..P to the prompt part (BOS dropped) and the earlier outputs', () => {
    // n_prompt 3, step 2: P = 4, positions 0..2 prompt, 3..4 outputs 0..1
    const r = rolloutRows([0.4, 0.1, 0.1, 0.15, 0.25], 3, 2);
    expect(Array.from(r.prompt)).toEqual([0, Math.fround(0.1), Math.fround(0.1)]);
    expect(Array.from(r.output)).toEqual([Math.fround(0.15), Math.fround(0.25)]);
    const r0 = rolloutRows([0.5, 0.2, 0.3], 3, 0);
    expect(r0.output.length).toBe(0);
    expect(Array.from(r0.prompt)).toEqual([0, Math.fround(0.2), Math.fround(0.3)]);
  });

  it('reads only the steps the view draws', () => {
    expect(rolloutStepsNeeded(3, 'current', null)).toEqual([3]);
    expect(rolloutStepsNeeded(3, 'all', null)).toEqual([0, 1, 2, 3]);
    expect(rolloutStepsNeeded(2, 'current', { side: 'input', index: 1 })).toEqual([0, 1, 2]);
    expect(rolloutStepsNeeded(2, 'current', { side: 'output', index: 1 })).toEqual([1]);
    expect(rolloutStepsNeeded(2, 'current', { side: 'output', index: 5 })).toEqual([]);
    expect(rolloutStepsNeeded(-1, 'current', null)).toEqual([]);
  });

  it('the hash keeps the choice', () => {
    expect(encodeHash({ ...defaultUrlState(), run: 'r', weights: 'rollout' })).toBe('run=r&weights=rollout');
    expect(decodeHash('#run=r&weights=rollout').weights).toBe('rollout');
    expect(decodeHash('#run=r&weights=bogus').weights).toBeUndefined();
    expect(encodeHash({ ...defaultUrlState(), run: 'r', weights: 'split' })).toBe('run=r');
  });
});
