import { describe, expect, it } from 'vitest';
import {
  checkMaxTokens,
  checkPrompt,
  decodeHash,
  encodeHash,
  defaultUrlState,
  GraphData,
  hasMasses,
  LiveRun,
  rawGraphData,
  rawOf,
  selectEdges,
} from '../src/model';

// a raw row of step 2 (query n_prompt - 1 + 2), prompt of 4 (BOS first), 2 earlier outputs
const rawRow = [0.5, 0.1, 0.05, 0.15, 0.12, 0.08];
const nP = 4;
function splitOf(row: number[], t: number) {
  const p = row.slice(0, nP).map((w, k) => (k === 0 ? 0 : w));
  const o = row.slice(nP, nP + t);
  const pm = p.reduce((a, b) => a + b, 0);
  const om = o.reduce((a, b) => a + b, 0);
  return { prompt: p.map((w) => w / pm), output: o.map((w) => w / om), pm, om };
}

describe('raw and normalized attention', () => {
  it('rawOf: split x mass, NaN without a mass', () => {
    expect(rawOf(0.5, 0.2)).toBeCloseTo(0.1, 7);
    expect(rawOf(0.5, undefined)).toBeNaN();
    expect(rawOf(0.5, NaN)).toBeNaN();
  });

  it('rawGraphData gives back the raw row (BOS left out), GraphData keeps the masses', () => {
    const s = splitOf(rawRow, 2);
    const d = GraphData.fromReply({
      n_prompt: nP,
      n_output: 3,
      prompt: [[0, 1, 0, 0], [0, 0.5, 0.5, 0], s.prompt],
      output: [[], [1], s.output],
      prompt_mass: [0.4, 0.3, s.pm],
      output_mass: [0, 0.2, s.om],
    });
    expect(hasMasses(d)).toBe(true);
    const r = rawGraphData(d);
    for (let k = 1; k < nP; k++) expect(r.prompt[2][k]).toBeCloseTo(rawRow[k], 6);
    expect(r.prompt[2][0]).toBe(0);
    for (let j = 0; j < 2; j++) expect(r.output[2][j]).toBeCloseTo(rawRow[nP + j], 6);
    expect(d.rawPrompt(2, 3)).toBeCloseTo(0.15, 6);
    expect(d.rawOutput(2, 1)).toBeCloseTo(0.08, 6);
    // the raw view's edges at a threshold are the raw weights
    const e = selectEdges(r, { step: 2, mode: 'current', selected: null, threshold: 0.1 }).toArray();
    expect(e.map((x) => [x.kind, x.src, Number(x.w.toFixed(4))])).toEqual([
      ['io', 3, 0.15],
      ['io', 1, 0.1],
      ['oo', 0, 0.12],
    ]);
  });

  it('a reply without masses: no raw view', () => {
    const d = GraphData.fromReply({ n_prompt: 2, n_output: 1, prompt: [[0, 1]], output: [[]] });
    expect(hasMasses(d)).toBe(false);
    expect(d.rawPrompt(0, 1)).toBeNaN();
  });

  it('the live stream keeps the masses of each split', () => {
    const live = new LiveRun(3);
    live.add({ index: 0, id: 5, label: 'a', attention: { split: { prompt: [0, 0.25, 0.75], output: [], prompt_mass: 0.4, output_mass: 0 } } });
    expect(live.data!.rawPrompt(0, 2)).toBeCloseTo(0.3, 6);
  });

  it('the hash keeps weights=raw and weights=rollout; normalized is the default', () => {
    expect(decodeHash('#weights=raw').weights).toBe('raw');
    expect(decodeHash('#weights=rollout').weights).toBe('rollout');
    expect(decodeHash('#weights=split').weights).toBeUndefined();
    expect(encodeHash({ ...defaultUrlState(), weights: 'raw' })).toBe('weights=raw');
    expect(encodeHash({ ...defaultUrlState(), weights: 'split' })).toBe('');
  });
});

describe('input validation', () => {
  it('max tokens: 1..limit accepted as typed', () => {
    expect(checkMaxTokens('20', 512)).toEqual({ ok: true, value: 20 });
    expect(checkMaxTokens(' 512 ', 512)).toEqual({ ok: true, value: 512 });
    expect(checkMaxTokens('1', 4096)).toEqual({ ok: true, value: 1 });
  });

  it('max tokens: out of range, empty or not whole is refused with a message, never clamped', () => {
    for (const v of ['0', '-5', '100000', '513', '', '  ', '2.5', 'abc', '1e3']) {
      const c = checkMaxTokens(v, 512);
      expect(c.ok, v).toBe(false);
      if (!c.ok) expect(c.message).toMatch(/512/);
    }
    const c = checkMaxTokens('100000', 512);
    expect(!c.ok && c.message).toMatch(/At most 512/);
    const z = checkMaxTokens('0', 512);
    expect(!z.ok && z.message).toMatch(/At least 1/);
  });

  it('an empty prompt is refused', () => {
    expect(checkPrompt('')).toMatch(/empty prompt/);
    expect(checkPrompt('hi')).toBeNull();
  });
});
