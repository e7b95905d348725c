import { describe, expect, it } from 'vitest';
import {
  EXPERT_PALETTE,
  expertCell,
  expertColor,
  inkOn,
  loadBalance,
  loadBars,
  outsideWindow,
  pageOrder,
  selectionWindow,
  windowNote,
  windowStart,
} from '../src/experts';

describe('expert cells', () => {
  it('sorts the chosen experts by weight, best first', () => {
    const c = expertCell({ ids: [4, 5], weights: [0.186, 0.814] });
    expect(c.top).toBe(5);
    expect(c.ids).toEqual([5, 4]);
    expect(c.weights).toEqual([0.814, 0.186]);
    expect(c.text).toBe('5·4');
    expect(c.lines).toEqual(['expert 5: 0.8140', 'expert 4: 0.1860']);
  });

  it('keeps the server order on ties and handles no routing', () => {
    expect(expertCell({ ids: [3, 1], weights: [0.5, 0.5] }).ids).toEqual([3, 1]);
    const none = expertCell(undefined);
    expect(none.top).toBe(-1);
    expect(none.text).toBe('–');
    expect(expertCell({ ids: [], weights: [] }).top).toBe(-1);
  });
});

describe('expert colours', () => {
  it('gives the first 20 experts distinct palette colours, then hues', () => {
    const cs = Array.from({ length: 20 }, (_, e) => expertColor(e));
    expect(new Set(cs).size).toBe(20);
    expect(cs[0]).toBe(EXPERT_PALETTE[0]);
    expect(expertColor(20)).toMatch(/^hsl\(\d+, 55%, \d+%\)$/);
    expect(expertColor(21)).not.toBe(expertColor(20));
  });

  it('picks readable ink', () => {
    expect(inkOn('#ffffff')).toBe('#111111');
    expect(inkOn('#000000')).toBe('#ffffff');
    expect(inkOn('#1f3a5f')).toBe('#ffffff');
    expect(inkOn('#4e79a7')).toBe('#111111'); // 4.6:1 on black vs 4.5:1 on white
    expect(inkOn('#edc948')).toBe('#111111');
    expect(inkOn('hsl(1, 2%, 3%)')).toBe('#111111');
  });
});

describe('expert load', () => {
  const load = { layer: 0, count: [0, 0, 0, 1, 3, 3, 1, 0], weight: [0, 0, 0, 0.6, 1.2, 1.8, 0.4, 0] };

  it('scales count bars to the busiest expert', () => {
    const b = loadBars(load, 'count');
    expect(b).toHaveLength(8);
    expect(b.map((x) => x.expert)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(b[4].frac).toBe(1);
    expect(b[3].frac).toBeCloseTo(1 / 3);
    expect(b[4].share).toBeCloseTo(3 / 8);
    expect(b[5].weight).toBeCloseTo(1.8);
  });

  it('scales weight bars to the heaviest expert', () => {
    const b = loadBars(load, 'weight');
    expect(b[5].frac).toBe(1);
    expect(b[4].frac).toBeCloseTo(1.2 / 1.8);
    expect(b[4].count).toBe(3);
    expect(b[6].share).toBeCloseTo(0.4 / 4);
  });

  it('is empty without a load and zero without counts', () => {
    expect(loadBars(undefined, 'count')).toEqual([]);
    expect(loadBars({ layer: 0, count: [0, 0], weight: [0, 0] }, 'count').map((x) => x.frac)).toEqual([0, 0]);
  });

  it('measures balance as normalized entropy', () => {
    expect(loadBalance([2, 2, 2, 2])).toBeCloseTo(1);
    expect(loadBalance([8, 0, 0, 0])).toBe(0);
    expect(loadBalance([])).toBe(0);
    expect(loadBalance([1, 1, 0, 0])).toBeCloseTo(0.5);
  });
});

describe('paging', () => {
  it('starts at the current page and goes outward', () => {
    expect(pageOrder(200, 64, 130)).toEqual([2, 1, 3, 0]);
    expect(pageOrder(64, 64, 10)).toEqual([0]);
    expect(pageOrder(65, 64, 64)).toEqual([1, 0]);
    expect(pageOrder(0, 64, 0)).toEqual([]);
    expect(pageOrder(300, 64, 9999)).toEqual([4, 3, 2, 1, 0]);
  });
});

describe('sliding windows', () => {
  const gemma2 = [8, 0, 8, 0];

  it('is a layer’s own window', () => {
    expect(selectionWindow(gemma2, 0)).toBe(8);
    expect(selectionWindow(gemma2, 1)).toBe(0);
    expect(selectionWindow(undefined, 0)).toBe(0);
  });

  it('is drawn for all layers only when every layer has the same window', () => {
    expect(selectionWindow(gemma2, null)).toBe(0);
    expect(selectionWindow([8, 8, 8], null)).toBe(8);
    expect(selectionWindow([0, 0], null)).toBe(0);
  });

  it('marks the keys before the window', () => {
    // query 10, window 8: keys 3..10 seen, 0..2 outside
    expect(outsideWindow(10, 2, 8)).toBe(true);
    expect(outsideWindow(10, 3, 8)).toBe(false);
    expect(outsideWindow(10, 10, 8)).toBe(false);
    expect(outsideWindow(5, 0, 8)).toBe(false);
    expect(outsideWindow(10, 0, 0)).toBe(false);
    expect(windowStart(10, 8)).toBe(3);
    expect(windowStart(5, 8)).toBe(0);
    expect(windowStart(10, 0)).toBe(0);
  });

  it('says which layers have a window', () => {
    expect(windowNote(gemma2, 0)).toBe('layer 0: sliding window of 8 tokens');
    expect(windowNote(gemma2, 1)).toBe('');
    expect(windowNote([8, 8, 8], null)).toBe('every layer: sliding window of 8 tokens');
    expect(windowNote([0, 0], null)).toBe('');
    expect(windowNote(undefined, null)).toBe('');
    expect(windowNote(gemma2, null)).toBe(
      'layers 0, 2: sliding window of 8 tokens; the other layers see every earlier token (the mean mixes them: no window drawn)',
    );
    expect(windowNote([8, 8, 8, 8, 8, 0], null)).toMatch(/^layers 0, 1, 2, 3, 4: sliding window of 8 tokens; /);
  });
});
