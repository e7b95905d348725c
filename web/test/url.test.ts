import { describe, expect, it } from 'vitest';
import { decodeHash, defaultUrlState, encodeHash, type UrlState } from '../src/model';

describe('URL hash state', () => {
  it('round-trips', () => {
    const states: UrlState[] = [
      { run: 'run_18eaecb234d0ceba_1', step: 5, layer: null, head: null, threshold: 0.05, mode: 'current' },
      { run: 'run_a', step: 0, layer: 2, head: 1, threshold: 0.1, mode: 'all' },
      { run: 'run_b', step: null, layer: 3, head: null, threshold: 0, mode: 'current' },
      defaultUrlState(),
    ];
    for (const s of states) expect(decodeHash('#' + encodeHash(s))).toEqual(s);
  });

  it('reads the documented form', () => {
    const s = decodeHash('#run=run_x_1&step=3');
    expect(s.run).toBe('run_x_1');
    expect(s.step).toBe(3);
    expect(s.threshold).toBe(0.05);
    expect(s.layer).toBeNull();
    expect(decodeHash('run=r&step=7').step).toBe(7); // without "#"
  });

  it('leaves defaults out', () => {
    expect(encodeHash({ ...defaultUrlState(), run: 'r', step: 2 })).toBe('run=r&step=2');
    expect(encodeHash(defaultUrlState())).toBe('');
    // a head only with a layer
    expect(encodeHash({ ...defaultUrlState(), run: 'r', head: 4 })).toBe('run=r');
  });

  it('reads garbage as defaults and never throws', () => {
    const garbage = [
      '',
      '#',
      '#%',
      '#%E0%A4%A',
      '#step=-1&layer=x&head=2&threshold=abc&mode=weird',
      '#run=<script>&step=1e9999',
      '#threshold=5',
      '#threshold=-0.1',
      '#step=1.5',
      '#run=' + 'x'.repeat(500),
      '#&&&===&',
      null as unknown as string,
      undefined as unknown as string,
      42 as unknown as string,
    ];
    for (const g of garbage) {
      let s!: UrlState;
      expect(() => (s = decodeHash(g))).not.toThrow();
      expect(s.threshold).toBeGreaterThanOrEqual(0);
      expect(s.threshold).toBeLessThanOrEqual(1);
      expect(s.step === null || (Number.isInteger(s.step) && s.step >= 0)).toBe(true);
    }
    expect(decodeHash('#step=-1&layer=x&head=2&threshold=abc&mode=weird')).toEqual(defaultUrlState());
    expect(decodeHash('#run=<script>').run).toBeNull();
  });

  it('ignores a head without a layer', () => {
    expect(decodeHash('#run=r&head=3').head).toBeNull();
    expect(decodeHash('#run=r&layer=1&head=3').head).toBe(3);
  });
});
