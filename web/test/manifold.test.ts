import { describe, expect, it } from 'vitest';
import { ZONE_INFO } from '../src/analysis';
import {
  assembleManifold,
  cluster,
  clusterColor,
  FINGERPRINT_DIM,
  legendCounts,
  NOISE_COLOR,
  pointColor,
  project,
  seededRandom,
  stepOfPos,
  type ManifoldRun,
} from '../src/views/manifold';

/** A fingerprint putting its mass on distance bin `bin` (plus a little noise from rnd). */
function fp(bin: number, rnd: () => number): number[] {
  const v = new Array(FINGERPRINT_DIM).fill(0).map(() => 0.02 * rnd());
  v[bin] += 0.8;
  return v;
}

function run(id: string, nPrompt: number, nOutput: number, bins: number[], rnd: () => number): ManifoldRun {
  const n = nPrompt + nOutput;
  return {
    id,
    nPrompt,
    nOutput,
    labels: Array.from({ length: n }, (_, i) => (i === 0 ? '[BOS]' : ` t${i}`)),
    tokens: Array.from({ length: n - 1 }, (_, p) => ({ pos: p, zone: ['syntax_floor', 'semantic_bridge', 'structure_ripple'][bins[p % bins.length] % 3], fingerprint: fp(bins[p % bins.length], rnd) })),
  };
}

describe('manifold data', () => {
  it('maps positions to the step their query chose', () => {
    // 3 prompt tokens, 4 outputs: query 2 chose step 0, query 5 step 3, position 6 (the last output) none
    expect([0, 1, 2, 3, 4, 5, 6].map((p) => stepOfPos(p, 3, 4))).toEqual([-1, -1, 0, 1, 2, 3, -1]);
  });

  it('assembles several runs in order, with run, step, zone and label per point', () => {
    const rnd = seededRandom(1);
    const a = run('a', 3, 4, [0, 1], rnd);
    const b = run('b', 2, 2, [3], rnd);
    b.tokens.reverse(); // order of the reply does not matter
    b.tokens.push({ pos: 9, zone: 'none', fingerprint: [1, 2] }); // wrong length: skipped
    const d = assembleManifold([a, b]);
    expect(d.points.length).toBe(6 + 3);
    expect(d.X.length).toBe(d.points.length);
    expect(d.skipped).toBe(1);
    expect(d.points.slice(0, 6).every((p) => p.runId === 'a' && p.run === 0)).toBe(true);
    expect(d.points.slice(6).map((p) => [p.runId, p.pos, p.step])).toEqual([
      ['b', 0, -1],
      ['b', 1, 0],
      ['b', 2, 1],
    ]);
    expect(d.points[0].label).toBe('[BOS]');
    expect(d.points[1].label).toBe(' t1');
    expect(d.points[2].zone).toBe('syntax_floor');
    expect(d.points[3].zone).toBe('semantic_bridge');
    expect(d.X[0]).not.toBe(a.tokens[0].fingerprint); // copied
  });

  it('unknown zones become none', () => {
    const d = assembleManifold([{ id: 'x', nPrompt: 1, nOutput: 1, labels: ['a', 'b'], tokens: [{ pos: 0, zone: 'bogus', fingerprint: new Array(20).fill(0) }] }]);
    expect(d.points[0].zone).toBe('none');
  });
});

describe('manifold projection', () => {
  const rnd = seededRandom(7);
  const runs = [run('a', 10, 40, [0, 0, 5, 12], rnd), run('b', 10, 40, [5, 12, 12], rnd)];
  const d = assembleManifold(runs);

  it('is the same for the same seed and differs for another', () => {
    const p1 = project(d.X, { seed: 42 });
    const p2 = project(d.X, { seed: 42 });
    const p3 = project(d.X, { seed: 43 });
    expect(p1.xy.length).toBe(d.points.length);
    expect(p2.xy).toEqual(p1.xy);
    expect(p2.labels).toEqual(p1.labels);
    expect(p3.xy).not.toEqual(p1.xy);
    expect(p1.xy.every(([x, y]) => Number.isFinite(x) && Number.isFinite(y))).toBe(true);
  });

  it('reports progress up to the last epoch', () => {
    let last: [number, number] = [0, 0];
    project(d.X, { seed: 1 }, (done, total) => (last = [done, total]));
    expect(last[0]).toBe(last[1]);
    expect(last[1]).toBeGreaterThan(0);
  });

  it('separates fingerprints of different kinds into different clusters', () => {
    const p = project(d.X, { seed: 42 });
    expect(p.nClusters).toBeGreaterThanOrEqual(2);
    // points with the same dominant bin share their cluster more often than not
    const byBin = new Map<number, number[]>();
    d.X.forEach((x, i) => {
      const bin = x.indexOf(Math.max(...x));
      if (!byBin.has(bin)) byBin.set(bin, []);
      if (p.labels[i] >= 0) byBin.get(bin)!.push(p.labels[i]);
    });
    const majorities = [...byBin.values()].filter((ls) => ls.length).map((ls) => mode(ls));
    expect(new Set(majorities).size).toBeGreaterThanOrEqual(2);
  });

  it('handles tiny inputs', () => {
    expect(project([]).xy).toEqual([]);
    const p = project([new Array(20).fill(0), new Array(20).fill(1)]);
    expect(p.xy.length).toBe(2);
    expect(p.labels).toEqual([-1, -1]);
  });

  it('clusters a sample and gives the rest their nearest sampled point’s cluster', () => {
    const xy: [number, number][] = [];
    for (let i = 0; i < 90; i++) xy.push([(i % 2) * 100 + (i % 7) * 0.1, (i % 5) * 0.1]);
    const r = cluster(xy, 5, 30);
    expect(r.clustered).toBe(30);
    expect(r.labels.length).toBe(90);
    for (let i = 0; i < 90; i++) for (let j = 0; j < 90; j++) if (r.labels[i] >= 0 && r.labels[j] >= 0 && i % 2 !== j % 2) expect(r.labels[i]).not.toBe(r.labels[j]);
  });
});

describe('manifold colours', () => {
  it('colours by zone or by cluster, noise grey', () => {
    expect(pointColor({ zone: 'semantic_bridge' }, 3, 'zone')).toBe(ZONE_INFO.semantic_bridge.color);
    expect(pointColor({ zone: 'semantic_bridge' }, -1, 'cluster')).toBe(NOISE_COLOR);
    expect(pointColor({ zone: 'semantic_bridge' }, 0, 'cluster')).toBe(clusterColor(0));
    const cs = Array.from({ length: 25 }, (_, i) => clusterColor(i));
    expect(new Set(cs).size).toBe(25);
    expect(cs).not.toContain(NOISE_COLOR);
  });

  it('counts zones and clusters for the legend', () => {
    const d = assembleManifold([run('a', 2, 3, [0, 8, 10], seededRandom(2))]);
    const c = legendCounts(d.points, [0, 0, 1, -1]);
    expect(c.zones.syntax_floor + c.zones.semantic_bridge + c.zones.structure_ripple + c.zones.none).toBe(4);
    expect([...c.clusters.entries()].sort()).toEqual([
      [-1, 1],
      [0, 2],
      [1, 1],
    ]);
  });
});

function mode(xs: number[]): number {
  const m = new Map<number, number>();
  for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
  return [...m.entries()].sort((a, b) => b[1] - a[1])[0][0];
}
