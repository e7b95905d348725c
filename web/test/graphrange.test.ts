import { describe, expect, it } from 'vitest';
import { buildRangeEdges, buildStepEdges, GraphData, parseGraphBin, rangeOfReply, rangeRows } from '../src/model';

// A /graph?format=bin body: the header line, then rows x cols float32 (docs/API.md).
function body(h: object, values: number[], pad = ''): ArrayBuffer {
  const head = new TextEncoder().encode(JSON.stringify(h) + pad + '\n');
  const out = new Uint8Array(head.length + 4 * values.length);
  out.set(head);
  const dv = new DataView(out.buffer);
  values.forEach((v, i) => dv.setFloat32(head.length + 4 * i, v, true));
  return out.buffer;
}

describe('parseGraphBin', () => {
  // steps 1 and 2 of a run with 3 prompt tokens: cols = 3 + (3 - 1)
  const h = { n_prompt: 3, n_output: 3, from: 1, to: 3, prompt_mass: [0.5, 0.25], output_mass: [0.1, null], dtype: 'float32', shape: [2, 5] };
  const values = [0, 0.7, 0.3, 1, 0, 0, 0.1, 0.9, 0.6, 0.4];

  it('reads the rows as views, at any header length', () => {
    for (const pad of ['', ' ', '  ', '   ']) {
      const r = parseGraphBin(body(h, values, pad));
      expect([r.nPrompt, r.nOutput, r.from, r.to, r.cols]).toEqual([3, 3, 1, 3, 5]);
      const [p1, o1] = rangeRows(r, 0);
      const [p2, o2] = rangeRows(r, 1);
      expect(Array.from(p1)).toEqual([0, 0.7, 0.3].map(Math.fround));
      expect(Array.from(o1)).toEqual([1]);
      expect(Array.from(p2)).toEqual([0, 0.1, 0.9].map(Math.fround));
      expect(Array.from(o2)).toEqual([0.6, 0.4].map(Math.fround));
      expect(r.outputMass).toEqual([0.1, null]);
    }
  });

  it('rejects a body that does not match its header', () => {
    expect(() => parseGraphBin(body(h, values.slice(1)))).toThrow(/does not match/);
    expect(() => parseGraphBin(body({ ...h, dtype: 'float16' }, values))).toThrow(/does not match/);
    expect(() => parseGraphBin(new TextEncoder().encode('{"n_prompt":3}').buffer)).toThrow(/no header line/);
  });

  it('gives the same rows, edges and masses as the JSON reply', () => {
    const json = { n_prompt: 3, n_output: 3, from: 1, to: 3, prompt: [[0, 0.7, 0.3], [0, 0.1, 0.9]], output: [[1], [0.6, 0.4]], prompt_mass: [0.5, 0.25], output_mass: [0.1] };
    const a = parseGraphBin(body(h, values));
    const b = rangeOfReply(json, 1, 3);
    expect(Array.from(b.rows)).toEqual(Array.from(a.rows));
    const ea = buildRangeEdges(a);
    expect(ea[1]).toEqual(buildStepEdges(json.prompt[1], json.output[1]));
    // set into graph data without copies: the same numbers as setStep's copies
    const d = new GraphData(3);
    const ref = new GraphData(3);
    ref.setStep(0, [0, 1, 0], []);
    for (let i = 0; i < 2; i++) {
      const [p, o] = rangeRows(a, i);
      d.setStepRows(1 + i, p, o, a.promptMass[i], a.outputMass[i], ea[i]);
      ref.setStep(1 + i, json.prompt[i], json.output[i], json.prompt_mass[i], json.output_mass[i]);
    }
    expect(d.nOutput).toBe(3);
    for (const t of [1, 2]) {
      expect(Array.from(d.prompt[t])).toEqual(Array.from(ref.prompt[t]));
      expect(Array.from(d.output[t])).toEqual(Array.from(ref.output[t]));
      expect(d.steps[t]).toEqual(ref.steps[t]);
      expect(d.rawPrompt(t, 2)).toBe(ref.rawPrompt(t, 2));
    }
    expect(Number.isNaN(d.outputMass[2])).toBe(true); // null: unknown
  });
});
