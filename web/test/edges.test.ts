import { describe, expect, it } from 'vitest';
import {
  buildStepEdges,
  clampStep,
  countAtLeast,
  EdgeList,
  GraphData,
  IO,
  OO,
  selectEdges,
  type ViewState,
} from '../src/model';
import { graphReply } from './fixtures';

const data = GraphData.fromReply(graphReply);
const view = (v: Partial<ViewState>): ViewState => ({ step: 3, mode: 'current', selected: null, threshold: 0.05, ...v });
const f32 = Math.fround;

/** The API's count: split weights >= threshold (float32), BOS excluded. */
function apiCount(t: number, thr: number): number {
  let n = 0;
  Array.from(graphReply.prompt[t]).forEach((w, k) => (n += k > 0 && w > 0 && f32(w) >= f32(thr) ? 1 : 0));
  Array.from(graphReply.output[t]).forEach((w) => (n += w > 0 && f32(w) >= f32(thr) ? 1 : 0));
  return n;
}

describe('buildStepEdges', () => {
  it('sorts heaviest first, ties by lower source, drops BOS and zero weights', () => {
    const e = buildStepEdges([0.3, 0.2, 0.0, 0.2, 0.6], [0.5, 0.5]);
    expect(Array.from(e.ioSrc)).toEqual([4, 1, 3]);
    expect(Array.from(e.ioW)).toEqual([f32(0.6), f32(0.2), f32(0.2)]);
    expect(Array.from(e.ooSrc)).toEqual([0, 1]);
  });

  it('keeps output position 0 (only the prompt has a BOS)', () => {
    const e = buildStepEdges([0, 1], [0.9, 0.1]);
    expect(Array.from(e.ooSrc)).toEqual([0, 1]);
  });

  it('handles empty rows', () => {
    const e = buildStepEdges([], []);
    expect(e.ioSrc.length + e.ooSrc.length).toBe(0);
  });
});

describe('countAtLeast', () => {
  const w = new Float32Array([0.9, 0.5, 0.05, 0.05, 0.01]);
  it('counts the >= prefix (boundary included)', () => {
    expect(countAtLeast(w, 0.05)).toBe(4);
    expect(countAtLeast(w, 0.0500001)).toBe(2);
    expect(countAtLeast(w, 0)).toBe(5);
    expect(countAtLeast(w, 1)).toBe(0);
    expect(countAtLeast(new Float32Array(), 0.1)).toBe(0);
  });
  it('compares as float32, like the server', () => {
    // 0.050000001 and 0.05 are the same float32 (0.0500000007...)
    expect(countAtLeast(new Float32Array([0.05]), 0.050000001)).toBe(1);
    expect(countAtLeast(new Float32Array([0.05]), 0.05000001)).toBe(0);
  });
});

describe('selectEdges', () => {
  it('current mode: the edges into output t only', () => {
    const e = selectEdges(data, view({ step: 1 }));
    const a = e.toArray();
    expect(a.every((x) => x.dst === 1)).toBe(true);
    // prompt: 0.3, 0.3, 0.351 (0.049 < 0.05); output: 1.0
    expect(e.nIO).toBe(3);
    expect(e.nOO).toBe(1);
    expect(e.n).toBe(apiCount(1, 0.05));
    expect(a[0]).toEqual({ kind: 'io', src: 4, dst: 1, w: f32(0.351) });
  });

  it('threshold is >= (the boundary weight is drawn)', () => {
    const e = selectEdges(data, view({ step: 0 }));
    // 0.1, 0.05 (boundary), 0.6, 0.25
    expect(e.nIO).toBe(4);
    expect(e.toArray().map((x) => x.src)).toEqual([3, 4, 1, 2]);
    expect(selectEdges(data, view({ step: 0, threshold: 0.0501 })).nIO).toBe(3);
  });

  it('never draws BOS, even at threshold 0', () => {
    for (let t = 0; t < 4; t++) {
      const e = selectEdges(data, view({ step: t, threshold: 0, mode: 'all' }));
      expect(e.toArray().some((x) => x.kind === 'io' && x.src === 0)).toBe(false);
    }
    // zero weights are not edges either: step 2 prompt[2] = 0
    const e = selectEdges(data, view({ step: 2, threshold: 0 }));
    expect(e.toArray().filter((x) => x.kind === 'io').map((x) => x.src).sort()).toEqual([1, 3, 4]);
  });

  it('all mode: every step 0..t, counts add up per kind', () => {
    for (let t = 0; t < 4; t++) {
      const e = selectEdges(data, view({ step: t, mode: 'all' }));
      let want = 0;
      for (let s = 0; s <= t; s++) want += apiCount(s, 0.05);
      expect(e.n).toBe(want);
      expect(e.nIO + e.nOO).toBe(e.n);
      expect(Math.max(...e.toArray().map((x) => x.dst))).toBe(t);
    }
  });

  it('a selected input shows its edges to outputs <= t in either mode', () => {
    for (const mode of ['current', 'all'] as const) {
      const e = selectEdges(data, view({ step: 2, mode, selected: { side: 'input', index: 3 } }));
      expect(e.toArray()).toEqual([
        { kind: 'io', src: 3, dst: 0, w: f32(0.6) },
        { kind: 'io', src: 3, dst: 1, w: f32(0.3) },
        { kind: 'io', src: 3, dst: 2, w: f32(0.25) },
      ]);
      expect(e.nOO).toBe(0);
    }
    // input 1 at step 3: 0.1, (0.049 no), 0.5, (0.04 no)
    expect(selectEdges(data, view({ selected: { side: 'input', index: 1 } })).n).toBe(2);
    // BOS selected: nothing
    expect(selectEdges(data, view({ selected: { side: 'input', index: 0 } })).n).toBe(0);
  });

  it('a selected output shows only its incoming edges', () => {
    const e = selectEdges(data, view({ step: 3, mode: 'all', selected: { side: 'output', index: 2 } }));
    expect(e.toArray().every((x) => x.dst === 2)).toBe(true);
    expect(e.n).toBe(apiCount(2, 0.05));
    // an output after the step: hidden, no edges
    expect(selectEdges(data, view({ step: 1, selected: { side: 'output', index: 2 } })).n).toBe(0);
  });

  it('output->output edges go from earlier outputs', () => {
    const e = selectEdges(data, view({ step: 3 }));
    const oo = e.toArray().filter((x) => x.kind === 'oo');
    expect(oo.map((x) => x.src)).toEqual([1, 0, 2]);
    expect(oo.every((x) => x.src < x.dst)).toBe(true);
  });

  it('clamps the step and handles no data', () => {
    expect(selectEdges(null, view({})).n).toBe(0);
    expect(selectEdges(data, view({ step: 99 })).n).toBe(apiCount(3, 0.05));
    expect(selectEdges(new GraphData(3), view({ step: 0 })).n).toBe(0);
    expect(clampStep(5, 0)).toBe(-1);
    expect(clampStep(-3, 4)).toBe(0);
    expect(clampStep(NaN, 4)).toBe(3);
  });
});

describe('EdgeList', () => {
  it('grows and counts kinds', () => {
    const e = new EdgeList(1);
    for (let i = 0; i < 100; i++) e.push(i % 3 === 0 ? OO : IO, i, i + 1, i / 100);
    expect(e.n).toBe(100);
    expect(e.nOO).toBe(34);
    expect(e.nIO).toBe(66);
    expect(e.src[99]).toBe(99);
  });
});

describe('GraphData', () => {
  it('stores rows as float32 and appends steps', () => {
    const d = new GraphData(3);
    d.setStep(0, [0, 0.5, 0.5], []);
    d.setStep(2, [0, 1, 0], [0.5, 0.5]); // step 1 missing: zeros
    expect(d.nOutput).toBe(3);
    expect(Array.from(d.prompt[1])).toEqual([0, 0, 0]);
    expect(d.steps[1].ioSrc.length).toBe(0);
    expect(d.output[2].length).toBe(2);
  });
});

it('matches the IO/OO constants', () => {
  expect([IO, OO]).toEqual([0, 1]);
});

describe('buildStepEdges at scale', () => {
  it('orders like a comparator sort (weight desc, then source asc) on large rows with ties', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed / 2147483648);
    const row = Array.from({ length: 3000 }, (_, k) => (k % 7 === 0 ? 0 : k % 5 === 0 ? 0.125 : Math.pow(rnd(), 4)));
    const e = buildStepEdges(row, row);
    const want = row
      .map((w, k) => ({ k, w: Math.fround(w) }))
      .filter((x) => x.w > 0)
      .sort((a, b) => b.w - a.w || a.k - b.k);
    expect(Array.from(e.ooSrc)).toEqual(want.map((x) => x.k));
    expect(Array.from(e.ooW)).toEqual(want.map((x) => x.w));
    expect(Array.from(e.ioSrc)).toEqual(want.filter((x) => x.k !== 0).map((x) => x.k));
  });
});
