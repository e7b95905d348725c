import { describe, expect, it } from 'vitest';
import { LiveRun, selectEdges, type TokenEvent } from '../src/model';
import { parseSse } from '../src/sse';

function tokenEvent(index: number, prompt: number[] | null, output: number[] | null): TokenEvent {
  return {
    index,
    id: 300 + index,
    label: ` w${index}`,
    text: ` w${index}`,
    prob: 0.5,
    logprob: -0.69,
    top: [],
    attention: prompt ? { top: [], split: { prompt, output: output ?? [], prompt_mass: 0.5, output_mass: 0.5 } } : { top: [] },
  };
}

describe('stream accumulation', () => {
  it('turns token events into per-step split rows', () => {
    const live = new LiveRun(3); // tokenized prompt guess
    live.add(tokenEvent(0, [0, 0.7, 0.2, 0.1], []));
    // the split says 4 prompt tokens: authoritative
    expect(live.nPrompt).toBe(4);
    live.add(tokenEvent(1, [0, 0.5, 0.25, 0.25], [1]));
    live.add(tokenEvent(2, [0, 0.1, 0.1, 0.8], [0.4, 0.6]));
    expect(live.nOutput).toBe(3);
    const d = live.data!;
    expect(d.nOutput).toBe(3);
    expect(d.nPrompt).toBe(4);
    expect(Array.from(d.output[2])).toEqual([Math.fround(0.4), Math.fround(0.6)]);
    expect(live.steps[1]).toMatchObject({ index: 1, id: 301, label: ' w1', prob: 0.5 });
    expect((live.steps[1] as TokenEvent).attention).toBeUndefined();
    const e = selectEdges(d, { step: 2, mode: 'current', selected: null, threshold: 0.05 });
    expect(e.nIO).toBe(3);
    expect(e.nOO).toBe(2);
  });

  it('accepts events without split (a replayed run): tokens without edges', () => {
    const live = new LiveRun(5);
    live.add(tokenEvent(0, null, null));
    live.add(tokenEvent(1, null, null));
    expect(live.nOutput).toBe(2);
    expect(live.data!.nPrompt).toBe(5);
    expect(selectEdges(live.data, { step: 1, mode: 'all', selected: null, threshold: 0 }).n).toBe(0);
  });

  it('fills the graph from a parsed stream', () => {
    const text =
      'event: queued\ndata: {"position":0}\n\n' +
      [0, 1, 2]
        .map((t) => `event: token\ndata: ${JSON.stringify(tokenEvent(t, [0, 0.5, 0.5], Array(t).fill(1 / t)))}\n\n`)
        .join('') +
      'event: done\ndata: {"run_id":"r","n_prompt":3,"n_output":3,"stop":"length"}\n\n';
    const live = new LiveRun(0);
    for (const ev of parseSse(text)) if (ev.event === 'token') live.add(JSON.parse(ev.data));
    expect(live.nOutput).toBe(3);
    expect(live.nPrompt).toBe(3);
    const all = selectEdges(live.data, { step: 2, mode: 'all', selected: null, threshold: 0.05 });
    // 2 prompt edges per step, plus 1 + 2 output edges
    expect(all.nIO).toBe(6);
    expect(all.nOO).toBe(3);
  });
});
