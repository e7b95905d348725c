import { describe, expect, it } from 'vitest';
import {
  alignTokens,
  diffAligned,
  formatProb,
  hexBytes,
  labelText,
  lensCell,
  matchedCount,
  partnersOfA,
  pca2,
  sampleFilter,
  shade,
  shadeColor,
  signed,
  sortHeads,
  splitRow,
  symmetricEigen,
  tokenBytes,
  utf8Bytes,
  zoneCounts,
  type AlignPair,
  type HeadType,
  type SampleCandidate,
} from '../src/analysis';
import { decodeHash, defaultUrlState, encodeHash } from '../src/model';

// ---------------------------------------------------------------- shading

describe('text shading', () => {
  const row = [0.4, 0.1, 0.3, 0.05, 0.15]; // query 4's row: keys 0..4

  it('max-normalizes the earlier tokens and marks the top 3', () => {
    const s = shade(6, row, 0, 0, 4); // earlier than 4: keys 0..3
    expect(s.max).toBeCloseTo(0.4);
    expect(s.alpha[0]).toBeCloseTo(1);
    expect(s.alpha[2]).toBeCloseTo(0.75);
    expect(s.alpha[4]).toBe(0); // the token itself is not shaded
    expect(s.top).toEqual([0, 2, 1]);
  });

  it('leaves BOS out of the scale when asked', () => {
    const s = shade(6, row, 0, 0, 4, (i) => i === 0);
    expect(s.max).toBeCloseTo(0.3);
    expect(s.alpha[0]).toBe(0);
    expect(s.alpha[2]).toBeCloseTo(1);
    expect(s.top).toEqual([2, 1, 3]);
  });

  it('shades a column: later tokens, offset by the key', () => {
    const col = [0.9, 0.2, 0.6, 0.6]; // key 3, queries 3..6
    const s = shade(8, col, 3, 4, 7);
    expect(s.max).toBeCloseTo(0.6);
    expect(s.top).toEqual([5, 6, 4]); // tie 0.6: lower position first
    expect(s.alpha[3]).toBe(0);
    expect(s.alpha[4]).toBeCloseTo(1 / 3);
  });

  it('is empty for no weight', () => {
    const s = shade(3, [0, 0, 0], 0, 0, 3);
    expect(s.max).toBe(0);
    expect(s.top).toEqual([]);
    expect(Array.from(s.alpha)).toEqual([0, 0, 0]);
  });

  it('turns an opacity into a CSS colour (none for ~0)', () => {
    expect(shadeColor(0)).toBe('');
    expect(shadeColor(1)).toBe('rgba(26, 86, 219, 0.750)');
    expect(shadeColor(2)).toBe('rgba(26, 86, 219, 0.750)');
  });
});

// ---------------------------------------------------------------- lens

describe('logit lens cells', () => {
  it('formats probabilities', () => {
    expect(formatProb(0.973)).toBe('97.3%');
    expect(formatProb(0.0041)).toBe('0.41%');
    expect(formatProb(0.00001)).toBe('<0.01%');
    expect(formatProb(0.99999)).toBe('>99.9%');
    expect(formatProb(1)).toBe('100.0%');
    expect(formatProb(0)).toBe('0%');
  });

  it('shows the top-1 label, marks a match, lists the top k', () => {
    const c = lensCell(
      {
        layer: 2,
        match: true,
        top: [
          { id: 5, label: ' time', prob: 0.9 },
          { id: 7, label: '\n', prob: 0.05 },
        ],
      },
      5,
    );
    expect(c.text).toBe(' time');
    expect(c.match).toBe(true);
    expect(c.prob).toBe(0.9);
    expect(c.lines).toEqual([' time  90.0%  ✓ chosen', '↵  5.00%']);
  });

  it('falls back to #id without a label, and to a dash without data', () => {
    expect(lensCell({ layer: 0, match: false, top: [{ id: 42, prob: 0.5 }] }, 1).text).toBe('#42');
    expect(lensCell({ layer: 0, match: false, top: [{ id: 42, prob: 0.5 }] }, 1).match).toBe(false);
    expect(lensCell(undefined, 1)).toEqual({ text: '–', match: false, prob: 0, lines: [] });
  });
});

// ---------------------------------------------------------------- PCA

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('PCA', () => {
  it('finds the eigenpairs of a small symmetric matrix', () => {
    const { values, vectors } = symmetricEigen([2, 1, 1, 2], 2);
    expect(values[0]).toBeCloseTo(3);
    expect(values[1]).toBeCloseTo(1);
    expect(vectors[0][0]).toBeCloseTo(Math.SQRT1_2);
    expect(vectors[0][1]).toBeCloseTo(Math.SQRT1_2);
  });

  it('satisfies A v = λ v on a random 20 x 20 covariance', () => {
    const r = rng(7);
    const rows = Array.from({ length: 50 }, () => Array.from({ length: 20 }, () => r()));
    const d = 20;
    const mean = Array(d).fill(0);
    rows.forEach((x) => x.forEach((v, k) => (mean[k] += v / rows.length)));
    const cov = new Array(d * d).fill(0);
    rows.forEach((x) => {
      for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) cov[i * d + j] += ((x[i] - mean[i]) * (x[j] - mean[j])) / (rows.length - 1);
    });
    const { values, vectors } = symmetricEigen(cov, d);
    for (let e = 0; e < d; e++) {
      for (let i = 0; i < d; i++) {
        let av = 0;
        for (let j = 0; j < d; j++) av += cov[i * d + j] * vectors[e][j];
        expect(av).toBeCloseTo(values[e] * vectors[e][i], 9);
      }
      if (e > 0) expect(values[e]).toBeLessThanOrEqual(values[e - 1] + 1e-12);
    }
    // orthonormal
    for (let a = 0; a < d; a++)
      for (let b = 0; b < d; b++) {
        const dot = vectors[a].reduce((s, x, k) => s + x * vectors[b][k], 0);
        expect(dot).toBeCloseTo(a === b ? 1 : 0, 9);
      }
  });

  it('projects points on a line onto PC1 with all the variance', () => {
    const rows = [0, 1, 2, 3, 4].map((t) => [t, 2 * t, 0, 1]);
    const p = pca2(rows);
    expect(p.explained[0]).toBeCloseTo(1);
    expect(p.explained[1]).toBeCloseTo(0);
    const xs = p.points.map((q) => q[0]);
    // equally spaced by sqrt(5), centered
    for (let i = 1; i < xs.length; i++) expect(Math.abs(xs[i] - xs[i - 1])).toBeCloseTo(Math.sqrt(5));
    expect(xs.reduce((a, b) => a + b, 0)).toBeCloseTo(0);
    p.points.forEach((q) => expect(q[1]).toBeCloseTo(0));
  });

  it('matches the variance of the projections', () => {
    const r = rng(3);
    const rows = Array.from({ length: 80 }, () => {
      const a = r() * 4;
      const b = r();
      return Array.from({ length: 20 }, (_, k) => (k % 2 ? a : b) * (1 + k / 20) + 0.01 * r());
    });
    const p = pca2(rows);
    const varOf = (xs: number[]) => xs.reduce((s, x) => s + x * x, 0) / (xs.length - 1);
    expect(varOf(p.points.map((q) => q[0]))).toBeCloseTo(p.variance[0], 8);
    expect(varOf(p.points.map((q) => q[1]))).toBeCloseTo(p.variance[1], 8);
    expect(p.variance[0]).toBeGreaterThan(p.variance[1]);
  });

  it('handles degenerate input', () => {
    expect(pca2([]).points).toEqual([]);
    const one = pca2([[1, 2, 3]]);
    expect(one.points).toEqual([[0, 0]]);
    expect(one.explained).toEqual([0, 0]);
  });
});

// ---------------------------------------------------------------- sampling

const cands = (logits: number[]): SampleCandidate[] => {
  const m = Math.max(...logits);
  const z = logits.reduce((s, l) => s + Math.exp(l - m), 0);
  return logits.map((l, i) => ({ id: 100 + i, label: `t${i}`, logit: l, prob: Math.exp(l - m) / z }));
};

describe('sampling filter (src/samp.c order)', () => {
  const c = cands([5, 4, 3, 2, 1, 0]);
  const all = { temperature: 1, topK: 0, topP: 1, minP: 0 };

  it('greedy keeps only the best', () => {
    const r = sampleFilter(c, { ...all, temperature: 0 });
    expect(r.survivors).toBe(1);
    expect(r.candidates[0]).toMatchObject({ kept: true, p: 1 });
    expect(r.candidates[1]).toMatchObject({ kept: false, cut: 'greedy', p: 0 });
  });

  it('greedy ties go to the lower id', () => {
    const t: SampleCandidate[] = [
      { id: 9, label: 'a', logit: 2, prob: 0.5 },
      { id: 3, label: 'b', logit: 2, prob: 0.5 },
    ];
    const r = sampleFilter(t, { ...all, temperature: 0 });
    expect(r.candidates.map((x) => x.kept)).toEqual([false, true]);
  });

  it('top-k 3 keeps 3, renormalized', () => {
    const r = sampleFilter(c, { ...all, topK: 3 }, 512);
    expect(r.survivors).toBe(3);
    expect(r.candidates.slice(3).every((x) => x.cut === 'top-k')).toBe(true);
    const s = r.candidates.reduce((a, x) => a + x.p, 0);
    expect(s).toBeCloseTo(1);
    const z = Math.exp(0) + Math.exp(-1) + Math.exp(-2);
    expect(r.candidates[0].p).toBeCloseTo(1 / z);
    expect(r.approximate).toBe(false);
  });

  it('top-p takes the shortest prefix reaching p, mass renormalized within top-k', () => {
    // cumulative mass over the 6: 0.634, 0.867, 0.953, 0.984, 0.996, 1
    expect(sampleFilter(c, { ...all, topP: 0.6 }, 6).survivors).toBe(1);
    expect(sampleFilter(c, { ...all, topP: 0.8 }, 6).survivors).toBe(2);
    expect(sampleFilter(c, { ...all, topP: 0.86 }, 6).survivors).toBe(2);
    expect(sampleFilter(c, { ...all, topP: 0.87 }, 6).survivors).toBe(3);
    expect(sampleFilter(c, { ...all, topP: 0.87 }, 6).candidates[3].cut).toBe('top-p');
    // with top-k 2 the mass is renormalized over the two: 0.634/0.867 = 0.731 >= 0.7
    const r = sampleFilter(c, { ...all, topK: 2, topP: 0.7 }, 6);
    expect(r.survivors).toBe(1);
    expect(r.candidates[1].cut).toBe('top-p');
    // without the renormalization 0.634 < 0.7 keeps two
    expect(sampleFilter(c, { ...all, topP: 0.7 }, 6).survivors).toBe(2);
  });

  it('min-p keeps prob >= min_p * max prob, after top-k and top-p', () => {
    // ratios to the best: 1, e^-1 = .368, e^-2 = .135, e^-3 = .050, ...
    expect(sampleFilter(c, { ...all, minP: 0.1 }, 6).survivors).toBe(3);
    expect(sampleFilter(c, { ...all, minP: 0.4 }, 6).survivors).toBe(1);
    const r = sampleFilter(c, { ...all, topK: 2, minP: 0.1 }, 6);
    expect(r.survivors).toBe(2);
    expect(r.candidates[2].cut).toBe('top-k');
  });

  it('temperature reshapes the survivors only', () => {
    const hot = sampleFilter(c, { ...all, topK: 2, temperature: 2 }, 6);
    expect(hot.candidates[0].p).toBeCloseTo(1 / (1 + Math.exp(-0.5)));
    const cold = sampleFilter(c, { ...all, topK: 2, temperature: 0.5 }, 6);
    expect(cold.candidates[0].p).toBeCloseTo(1 / (1 + Math.exp(-2)));
    expect(cold.candidates[2].p).toBe(0);
  });

  it('says when the stored candidates cannot decide', () => {
    expect(sampleFilter(c, all, 512).approximate).toBe(true); // top-k off, vocabulary beyond the 6
    expect(sampleFilter(c, { ...all, topK: 40 }, 512).approximate).toBe(true);
    expect(sampleFilter(c, { ...all, topK: 6 }, 512).approximate).toBe(false);
    expect(sampleFilter([], all).survivors).toBe(0);
  });
});

// ---------------------------------------------------------------- alignment

function lcsLength(a: number[], b: number[]): number {
  const dp = Array.from({ length: a.length + 1 }, () => new Array(b.length + 1).fill(0));
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) dp[i][j] = a[i - 1] === b[j - 1] ? dp[i - 1][j - 1] + 1 : Math.max(dp[i - 1][j], dp[i][j - 1]);
  return dp[a.length][b.length];
}

function checkAlignment(a: number[], b: number[], pairs: AlignPair[]) {
  // every index once, in order, matched ids equal
  const as = pairs.filter((p) => p.a !== null).map((p) => p.a);
  const bs = pairs.filter((p) => p.b !== null).map((p) => p.b);
  expect(as).toEqual(a.map((_, i) => i));
  expect(bs).toEqual(b.map((_, i) => i));
  for (const p of pairs) {
    expect(p.a !== null || p.b !== null).toBe(true);
    if (p.a !== null && p.b !== null) expect(a[p.a]).toBe(b[p.b]);
  }
}

describe('token alignment', () => {
  it('pairs identical runs one to one', () => {
    const p = alignTokens([1, 2, 3], [1, 2, 3]);
    expect(p).toEqual([
      { a: 0, b: 0 },
      { a: 1, b: 1 },
      { a: 2, b: 2 },
    ]);
  });

  it('shows a changed word as a gap on each side', () => {
    // "Once upon a time , there" vs "Once upon a day , there"
    const a = [1, 403, 407, 261, 378, 432, 383];
    const b = [1, 403, 407, 261, 500, 432, 383];
    const p = alignTokens(a, b);
    checkAlignment(a, b, p);
    expect(p).toEqual([
      { a: 0, b: 0 },
      { a: 1, b: 1 },
      { a: 2, b: 2 },
      { a: 3, b: 3 },
      { a: 4, b: null },
      { a: null, b: 4 },
      { a: 5, b: 5 },
      { a: 6, b: 6 },
    ]);
    expect(matchedCount(p)).toBe(6);
    expect(Array.from(partnersOfA(p, a.length))).toEqual([0, 1, 2, 3, -1, 5, 6]);
  });

  it('handles insertions, deletions and empty sides', () => {
    checkAlignment([1, 2, 3], [1, 9, 9, 2, 3], alignTokens([1, 2, 3], [1, 9, 9, 2, 3]));
    expect(matchedCount(alignTokens([1, 2, 3], [1, 9, 9, 2, 3]))).toBe(3);
    expect(alignTokens([], [4, 5])).toEqual([
      { a: null, b: 0 },
      { a: null, b: 1 },
    ]);
    expect(alignTokens([4], [])).toEqual([{ a: 0, b: null }]);
    expect(alignTokens([], [])).toEqual([]);
  });

  it('finds a longest common subsequence (random sequences)', () => {
    const r = rng(11);
    for (let trial = 0; trial < 200; trial++) {
      const n = Math.floor(r() * 30);
      const m = Math.floor(r() * 30);
      const k = 1 + Math.floor(r() * 5);
      const a = Array.from({ length: n }, () => Math.floor(r() * k));
      const b = Array.from({ length: m }, () => Math.floor(r() * k));
      const p = alignTokens(a, b);
      checkAlignment(a, b, p);
      expect(matchedCount(p)).toBe(lcsLength(a, b));
    }
  });

  it('leaves the middle unmatched past the edit limit', () => {
    const a = [1, 2, 3, 4, 5];
    const b = [6, 7, 8, 9, 10];
    const p = alignTokens(a, b, 3);
    checkAlignment(a, b, p);
    expect(matchedCount(p)).toBe(0);
  });

  it('stays fast on long, slightly different runs', () => {
    const a = Array.from({ length: 5000 }, (_, i) => i % 97);
    const b = a.slice();
    b.splice(2500, 3, 1000, 1001);
    b.splice(100, 0, 2000);
    const t0 = performance.now();
    const p = alignTokens(a, b);
    expect(performance.now() - t0).toBeLessThan(500);
    checkAlignment(a, b, p);
    expect(matchedCount(p)).toBe(4997);
  });
});

describe('attention difference', () => {
  it('puts split rows on positions and differences aligned pairs', () => {
    expect(Array.from(splitRow([0, 0.5, 0.5], [0.25, 0.75]))).toEqual([0, 0.5, 0.5, 0.25, 0.75]);
    const pairs: AlignPair[] = [
      { a: 0, b: 0 },
      { a: 1, b: null },
      { a: null, b: 1 },
      { a: 2, b: 2 },
      { a: 3, b: 3 },
    ];
    const rows = diffAligned(pairs, [0, 0.6, 0.4], [0, 0.3, 0.5, 0.2]);
    expect(rows.map((r) => r.d)).toEqual([0, -0.6, 0.3, expect.closeTo(0.1), 0.2]);
    expect(rows[1]).toMatchObject({ wa: 0.6, wb: null });
    expect(rows[4]).toMatchObject({ wa: null, wb: 0.2 });
    expect(diffAligned([{ a: 5, b: 5 }], [0], [0])[0].d).toBeNull();
  });

  it('writes signed differences with a real minus', () => {
    expect(signed(0.1234)).toBe('+0.123');
    expect(signed(-0.0456)).toBe('−0.046');
    expect(signed(0.0001)).toBe('0.000');
    expect(signed(-0.0001)).toBe('0.000');
  });
});

// ---------------------------------------------------------------- bytes, zones, heads

describe('running text of labels', () => {
  it('turns the label escapes into a mark and the character', () => {
    expect(labelText('\\n')).toBe('↵\n');
    expect(labelText('a\\tb')).toBe('a⇥\tb');
    expect(labelText('\\r')).toBe('␍');
    expect(labelText(' Once')).toBe(' Once');
    expect(labelText('<0x0B>')).toBe('<0x0B>');
  });
});

describe('token bytes', () => {
  it('uses the API bytes, else the UTF-8 of the piece', () => {
    expect(tokenBytes({ piece: '▁Once', bytes: [32, 79, 110, 99, 101] })).toEqual([32, 79, 110, 99, 101]);
    expect(tokenBytes({ piece: '▁Once' })).toEqual([32, 79, 110, 99, 101]);
    expect(tokenBytes({ label: 'é' })).toEqual([0xc3, 0xa9]);
    expect(tokenBytes({ piece: '<s>', bytes: [] })).toEqual([]);
    expect(utf8Bytes('€')).toEqual([0xe2, 0x82, 0xac]);
    expect(hexBytes([32, 79, 255, 0])).toBe('20 4f ff 00');
  });
});

describe('zones and head types', () => {
  it('counts zones, unknown as none', () => {
    expect(zoneCounts(['syntax_floor', 'syntax_floor', 'semantic_bridge', 'none', 'weird'])).toEqual({
      syntax_floor: 2,
      semantic_bridge: 1,
      structure_ripple: 0,
      none: 2,
    });
  });

  it('sorts head types by a score, ties by layer and head', () => {
    const h = (layer: number, head: number, prev: number, kind = 'other'): HeadType => ({ layer, head, prev, induction: 0, sink: 0, local: 0, kind });
    const rows = [h(0, 0, 0.2), h(0, 1, 0.9, 'prev'), h(1, 0, 0.2), h(1, 1, 0.5)];
    expect(sortHeads(rows, 'prev', 'desc').map((r) => `${r.layer}.${r.head}`)).toEqual(['0.1', '1.1', '0.0', '1.0']);
    expect(sortHeads(rows, 'prev', 'asc').map((r) => `${r.layer}.${r.head}`)).toEqual(['0.0', '1.0', '1.1', '0.1']);
    expect(sortHeads(rows, 'kind', 'asc')[0].kind).toBe('other');
  });
});

describe('URL state of the tabs', () => {
  it('round-trips the view and the compared run', () => {
    const s = { ...defaultUrlState(), run: 'run_a_1', step: 3, view: 'text' as const, cmp: 'run_b_2' };
    expect(encodeHash(s)).toBe('run=run_a_1&step=3&view=text&cmp=run_b_2');
    expect(decodeHash('#' + encodeHash(s))).toEqual(s);
  });

  it('leaves the graph view out and ignores unknown views', () => {
    expect(encodeHash({ ...defaultUrlState(), run: 'r', view: 'graph' })).toBe('run=r');
    expect(decodeHash('#run=r&view=graph').view).toBeUndefined();
    expect(decodeHash('#run=r&view=nope').view).toBeUndefined();
    expect(decodeHash('#run=r&view=lens').view).toBe('lens');
    expect(decodeHash('#cmp=<x>').cmp).toBeUndefined();
  });
});
