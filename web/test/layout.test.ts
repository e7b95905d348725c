import { describe, expect, it } from 'vitest';
import {
  bucketWidth,
  contentY,
  curveControlX,
  scrollFor,
  viewY,
  edgeWidth,
  layoutGraph,
  MIN_ROW,
  rowY,
  visibleRange,
  widthBucket,
  WIDTH_BUCKETS,
  displayLabel,
  formatWeight,
} from '../src/model';

describe('edge width', () => {
  it('maps [0, 1] to 0.5..3.0 px linearly', () => {
    expect(edgeWidth(0)).toBe(0.5);
    expect(edgeWidth(1)).toBe(3);
    expect(edgeWidth(0.5)).toBeCloseTo(1.75, 10);
    expect(edgeWidth(0.2)).toBeCloseTo(0.5 + 2.5 * 0.2, 10);
  });
  it('clamps out-of-range and bad weights', () => {
    expect(edgeWidth(-1)).toBe(0.5);
    expect(edgeWidth(7)).toBe(3);
    expect(edgeWidth(NaN)).toBe(0.5);
  });
  it('buckets widths in quarter pixels', () => {
    expect(widthBucket(0)).toBe(0);
    expect(widthBucket(1)).toBe(WIDTH_BUCKETS - 1);
    for (let w = 0; w <= 1; w += 0.01) expect(Math.abs(bucketWidth(widthBucket(w)) - edgeWidth(w))).toBeLessThanOrEqual(0.125 + 1e-9);
  });
});

describe('layout', () => {
  it('puts inputs at 0.1 w and outputs at 0.9 w', () => {
    const l = layoutGraph(1000, 600, 5, 3);
    expect(l.xIn).toBe(100);
    expect(l.xOut).toBe(900);
    expect(l.height).toBe(600);
  });

  it('spaces rows evenly and keeps them inside the height', () => {
    const l = layoutGraph(800, 600, 20, 10);
    const ys = Array.from({ length: 20 }, (_, i) => rowY(l.input, i));
    const d = ys[1] - ys[0];
    for (let i = 1; i < ys.length; i++) expect(ys[i] - ys[i - 1]).toBeCloseTo(d, 9);
    expect(ys[0]).toBeGreaterThan(0);
    expect(ys[19]).toBeLessThan(600);
    // the shorter column is centered
    const oy = Array.from({ length: 10 }, (_, i) => rowY(l.output, i));
    expect((oy[0] + oy[9]) / 2).toBeCloseTo((ys[0] + ys[19]) / 2, 9);
  });

  it('never packs rows closer than the minimum: the content grows and scrolls', () => {
    const l = layoutGraph(800, 600, 500, 500);
    expect(l.input.spacing).toBe(MIN_ROW);
    expect(l.height).toBe(500 * MIN_ROW + 24);
    expect(rowY(l.output, 499) - rowY(l.output, 0)).toBeCloseTo(499 * MIN_ROW, 6);
  });

  it('keeps a short column in view while the long one scrolls', () => {
    const vh = 600;
    const l = layoutGraph(800, vh, 20, 400);
    expect(l.height).toBe(400 * MIN_ROW + 24);
    expect(l.output.ratio).toBe(1);
    // fits: laid out over the viewport, stays in place
    expect(l.input.ratio).toBe(0);
    expect(viewY(l.input, 0, 0)).toBeGreaterThan(0);
    expect(viewY(l.input, 19, 5000)).toBeLessThan(vh);
    expect(viewY(l.input, 3, 1000)).toBe(viewY(l.input, 3, 0));
    expect(contentY(l.input, 3, 1000)).toBeCloseTo(rowY(l.input, 3) + 1000, 9);
    expect(contentY(l.output, 3, 1000)).toBeCloseTo(rowY(l.output, 3), 9);
    expect(visibleRange(l.input, 5000, vh)).toEqual([0, 19]);
    expect(scrollFor(l, l.input, 5)).toBe(-1);
  });

  it('scrolls a shorter column that does not fit slower, both ending together', () => {
    const vh = 600;
    const l = layoutGraph(800, vh, 60, 400);
    const maxTop = l.height - vh;
    expect(l.input.ratio).toBeGreaterThan(0);
    expect(l.input.ratio).toBeLessThan(1);
    expect(l.input.spacing).toBe(MIN_ROW);
    // top: first rows in view; bottom: the last rows in view
    expect(viewY(l.input, 0, 0)).toBeCloseTo(12 + MIN_ROW / 2, 9);
    expect(viewY(l.input, 59, maxTop)).toBeCloseTo(vh - 12 - MIN_ROW / 2, 9);
    expect(viewY(l.output, 399, maxTop)).toBeCloseTo(vh - 12 - MIN_ROW / 2, 9);
    // content and viewport coordinates agree
    expect(contentY(l.input, 30, 1234) - 1234).toBeCloseTo(viewY(l.input, 30, 1234), 9);
    // the visible rows are those with a viewport y inside it
    const [a, b] = visibleRange(l.input, 2000, vh);
    expect(viewY(l.input, a, 2000)).toBeGreaterThanOrEqual(-MIN_ROW);
    expect(viewY(l.input, b, 2000)).toBeLessThanOrEqual(vh + MIN_ROW);
    // scrolling for a row puts it mid-viewport (clamped)
    const t = scrollFor(l, l.input, 30);
    expect(viewY(l.input, 30, t)).toBeCloseTo(vh / 2, 6);
    expect(scrollFor(l, l.output, 0)).toBe(0);
    expect(scrollFor(l, l.output, 399)).toBe(maxTop);
  });

  it('handles empty columns', () => {
    const l = layoutGraph(800, 600, 0, 0);
    expect(l.input.n).toBe(0);
    expect(visibleRange(l.input, 0, 600)).toEqual([0, -1]);
  });
});

describe('visible range', () => {
  const l = layoutGraph(800, 400, 500, 500); // 20 px rows from y = 12
  it('lists the rows in the viewport', () => {
    expect(visibleRange(l.input, 0, 400)).toEqual([0, 19]);
    const [a, b] = visibleRange(l.input, 1000, 400);
    expect(rowY(l.input, a)).toBeGreaterThanOrEqual(1000 - MIN_ROW);
    expect(rowY(l.input, a - 1)).toBeLessThan(1000);
    expect(rowY(l.input, b)).toBeLessThanOrEqual(1400 + MIN_ROW);
    expect(rowY(l.input, b + 1)).toBeGreaterThan(1400);
  });
  it('adds overscan and clamps to the column', () => {
    expect(visibleRange(l.input, 0, 400, 200)).toEqual([0, 29]);
    expect(visibleRange(l.input, l.height - 400, 400, 1000)[1]).toBe(499);
    expect(visibleRange(l.input, 1e9, 400)).toEqual([0, -1]);
  });
  it('covers every row when the content fits', () => {
    const s = layoutGraph(800, 600, 8, 4);
    expect(visibleRange(s.input, 0, 600)).toEqual([0, 7]);
    expect(visibleRange(s.output, 0, 600)).toEqual([0, 3]);
  });
});

describe('curves and labels', () => {
  it('bends output->output curves to the right, inside the graph', () => {
    const c = curveControlX(900, 10, 800, 1000);
    expect(c).toBeGreaterThan(900);
    // a quadratic peaks at half the control offset
    expect(900 + (c - 900) / 2).toBeLessThanOrEqual(1000);
    expect(curveControlX(900, 10, 30, 1000)).toBeLessThan(c);
  });
  it('shows labels on one line', () => {
    expect(displayLabel('a\nb\tc')).toBe('a↵b⇥c');
    expect(displayLabel('')).toBe('∅');
    expect(displayLabel(' ')).toBe('␣');
    expect(displayLabel(' a ')).toBe(' a ');
    expect(displayLabel(undefined)).toBe('∅');
    expect(formatWeight(0.123456)).toBe('0.1235');
  });
});
