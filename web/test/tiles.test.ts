import { describe, expect, it } from 'vitest';
import {
  allMasked,
  blockText,
  buildLut,
  cellAt,
  clampView,
  EXACT_PX,
  FetchQueue,
  firstTick,
  fitScale,
  fitView,
  gridCellSize,
  gridMove,
  heatmapQuery,
  heatmapUrl,
  labelDensity,
  LABEL_PX,
  legendTicks,
  levelFor,
  Lru,
  lutIndex,
  MAX_PX,
  niceStep,
  nPositions,
  panBy,
  parseHeatmap,
  positionAt,
  pow2ceil,
  queryStep,
  scaleT,
  stepQuery,
  TILE,
  tileKey,
  tileOf,
  tilePixels,
  tileRequest,
  tilesFor,
  viridis,
  rgbHex,
  visibleCells,
  visibleWindow,
  zoomAbout,
  zoomAnchor,
  type HeatTile,
} from '../src/views/tiles';

// ------------------------------------------------------------------ a reference pooling (what the server does)

/** A deterministic causal matrix: rows sum to 1 over k <= q. */
function matrix(n: number): Float32Array {
  const m = new Float32Array(n * n);
  for (let q = 0; q < n; q++) {
    let sum = 0;
    for (let k = 0; k <= q; k++) sum += (m[q * n + k] = 1 + ((q * 7 + k * 13) % 11));
    for (let k = 0; k <= q; k++) m[q * n + k] /= sum;
  }
  return m;
}

/** The server's pooling (src/api.c view_heatmap): max or mean of the causal entries of each cell. */
function pool(m: Float32Array, n: number, w: { q0: number; q1: number; k0: number; k1: number }, size: number, p: 'max' | 'mean'): HeatTile {
  const bq = Math.ceil((w.q1 - w.q0) / size);
  const bk = Math.ceil((w.k1 - w.k0) / size);
  const rows = Math.ceil((w.q1 - w.q0) / bq);
  const cols = Math.ceil((w.k1 - w.k0) / bk);
  const data = new Float32Array(rows * cols);
  const cnt = new Int32Array(rows * cols);
  for (let q = w.q0; q < w.q1; q++)
    for (let k = w.k0; k < w.k1 && k <= q; k++) {
      const i = Math.floor((q - w.q0) / bq) * cols + Math.floor((k - w.k0) / bk);
      const v = m[q * n + k];
      if (p === 'max') data[i] = Math.max(data[i], v);
      else data[i] += v;
      cnt[i]++;
    }
  if (p === 'mean') for (let i = 0; i < data.length; i++) data[i] = cnt[i] ? data[i] / cnt[i] : 0;
  return { ...w, bq, bk, rows, cols, pool: p, exact: bq === 1 && bk === 1, data };
}

/** A binary reply body as the server writes it. */
function binary(t: HeatTile, dtype: 'float32' | 'float16'): ArrayBuffer {
  const { data, ...rest } = t;
  const head = JSON.stringify({ ...rest, dtype, shape: [t.rows, t.cols] }) + '\n';
  const hb = new TextEncoder().encode(head);
  const width = dtype === 'float16' ? 2 : 4;
  const buf = new ArrayBuffer(hb.length + data.length * width);
  new Uint8Array(buf).set(hb);
  const dv = new DataView(buf, hb.length);
  for (let i = 0; i < data.length; i++) {
    if (dtype === 'float32') dv.setFloat32(i * 4, data[i], true);
    else dv.setUint16(i * 2, encodeF16(data[i]), true);
  }
  return buf;
}

/** float -> binary16 bits, round to nearest even (normal range and zero; enough for weights in [0, 1]). */
function encodeF16(x: number): number {
  if (x === 0) return 0;
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const e = ((u >>> 23) & 0xff) - 127 + 15;
  const m = u & 0x7fffff;
  if (e <= 0) {
    // subnormal half
    const mant = (m | 0x800000) >>> (1 - e + 13);
    return sign | mant;
  }
  let h = sign | (e << 10) | (m >>> 13);
  const rest = m & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
  return h;
}

// ------------------------------------------------------------------ tests

describe('positions and steps', () => {
  it('n_pos = n_prompt + n_output - 1', () => {
    expect(nPositions(5, 12)).toBe(16);
    expect(nPositions(1, 0)).toBe(0);
    expect(nPositions(0, 0)).toBe(0);
  });
  it('step t is chosen by query n_prompt - 1 + t', () => {
    expect(stepQuery(5, 0)).toBe(4);
    expect(queryStep(4, 5, 12)).toBe(0);
    expect(queryStep(15, 5, 12)).toBe(11);
    expect(queryStep(3, 5, 12)).toBeNull(); // a prompt row
    expect(queryStep(16, 5, 12)).toBeNull();
  });
});

describe('view transform', () => {
  it('fits the whole matrix in the smaller side', () => {
    expect(fitScale(100, 800, 400)).toBe(4);
    expect(fitView(100, 800, 400)).toEqual({ x0: 0, y0: 0, s: 4 });
    expect(fitScale(0, 800, 400)).toBe(1);
  });
  it('clamps the scale and keeps the view on the matrix', () => {
    expect(clampView({ x0: -5, y0: 50, s: 1 }, 100, 400, 400).s).toBe(4); // not below fit
    expect(clampView({ x0: 0, y0: 0, s: 1000 }, 100, 400, 400).s).toBe(MAX_PX);
    const v = clampView({ x0: 95, y0: -3, s: 8 }, 100, 400, 400); // 50 positions visible
    expect(v).toEqual({ x0: 50, y0: 0, s: 8 });
    // a side that fits starts at 0
    expect(clampView({ x0: 3, y0: 3, s: 4 }, 100, 800, 400).x0).toBe(0);
  });
  it('zooms about a point, which stays under the pointer', () => {
    const v0 = { x0: 0, y0: 0, s: 4 };
    const v = zoomAbout(v0, 2, 200, 100, 100, 400, 400);
    expect(v.s).toBe(8);
    // the matrix point under (200, 100) before and after
    expect(v.x0 + 200 / v.s).toBeCloseTo(0 + 200 / 4, 10);
    expect(v.y0 + 100 / v.s).toBeCloseTo(0 + 100 / 4, 10);
    // zooming out past the fit comes back to it
    expect(zoomAbout(v, 0.01, 10, 10, 100, 400, 400)).toEqual({ x0: 0, y0: 0, s: 4 });
  });
  it('the buttons zoom about the visible centre, on the diagonal when the centre is masked', () => {
    // the whole matrix in the left square of a wide plot: its centre (on the diagonal)
    expect(zoomAnchor({ x0: 0, y0: 0, s: 4 }, 100, 800, 400)).toEqual({ px: 200, py: 200 });
    // a wide view whose centre (k 60, q 45) is masked: the anchor moves left to k = q = 45
    const a = zoomAnchor({ x0: 20, y0: 20, s: 8 }, 100, 800, 400);
    expect(a.py).toBe(200);
    expect(20 + a.px / 8).toBeCloseTo(45, 10);
    // zooming in about it keeps the diagonal point in place
    const v = zoomAbout({ x0: 20, y0: 20, s: 8 }, 2, a.px, a.py, 100, 800, 400);
    expect(v.x0 + a.px / v.s).toBeCloseTo(45, 10);
    expect(v.y0 + a.py / v.s).toBeCloseTo(45, 10);
  });
  it('pans with the pointer and stops at the edges', () => {
    const v = { x0: 10, y0: 10, s: 8 };
    expect(panBy(v, 16, -8, 100, 400, 400)).toEqual({ x0: 8, y0: 11, s: 8 });
    expect(panBy(v, 1e6, -1e6, 100, 400, 400)).toEqual({ x0: 0, y0: 50, s: 8 });
  });
  it('the visible window covers the partly visible positions', () => {
    expect(visibleWindow({ x0: 0, y0: 0, s: 4 }, 100, 400, 400)).toEqual({ q0: 0, q1: 100, k0: 0, k1: 100 });
    expect(visibleWindow({ x0: 10.5, y0: 20, s: 8 }, 100, 400, 200)).toEqual({ q0: 20, q1: 45, k0: 10, k1: 61 });
    expect(visibleWindow({ x0: 0, y0: 0, s: 40 }, 16, 800, 600)).toEqual({ q0: 0, q1: 15, k0: 0, k1: 16 });
    expect(visibleWindow({ x0: 0, y0: 0, s: 1 }, 0, 10, 10)).toEqual({ q0: 0, q1: 0, k0: 0, k1: 0 });
  });
  it('finds the position under a point', () => {
    expect(positionAt({ x0: 10, y0: 20, s: 8 }, 17, 9, 100)).toEqual({ q: 21, k: 12 });
    expect(positionAt({ x0: 0, y0: 0, s: 8 }, -1, 9, 100)).toBeNull();
    expect(positionAt({ x0: 0, y0: 0, s: 8 }, 8 * 100, 9, 100)).toBeNull();
  });
});

describe('tile pyramid', () => {
  it('exact from EXACT_PX px per position, else power-of-two blocks of >= 2 px', () => {
    expect(pow2ceil(1)).toBe(1);
    expect(pow2ceil(3)).toBe(4);
    expect(pow2ceil(4)).toBe(4);
    expect(levelFor(EXACT_PX, 1000)).toBe(1);
    expect(levelFor(40, 1000)).toBe(1);
    expect(levelFor(3.9, 1000)).toBe(2); // under EXACT_PX: pooled
    expect(levelFor(1, 1000)).toBe(2);
    expect(levelFor(0.5, 1000)).toBe(4);
    expect(levelFor(0.3, 1000)).toBe(8);
    expect(levelFor(0.001, 1000)).toBe(1024); // never past the matrix
    for (const s of [0.01, 0.07, 0.3, 0.9, 1.7, 3.99]) {
      const b = levelFor(s, 1 << 20);
      expect(b * s).toBeGreaterThanOrEqual(2 - 1e-9);
      expect(b === 2 || b * s < 4).toBe(true);
    }
  });
  it('a full tile asks for size = TILE and gets b x b cells', () => {
    const t = tileRequest(1, 0, 4, 10000);
    expect(t).toMatchObject({ q0: TILE * 4, q1: TILE * 8, k0: 0, k1: TILE * 4, size: TILE });
    // what the server makes of it
    expect(Math.ceil((t.q1 - t.q0) / t.size)).toBe(4);
    expect(Math.ceil((t.k1 - t.k0) / t.size)).toBe(4);
  });
  it('an exact tile is bq = bk = 1, also at the matrix edge', () => {
    for (const n of [16, 130, 257]) {
      for (const t of tilesFor({ q0: 0, q1: n, k0: 0, k1: n }, n, 1)) {
        expect(Math.ceil((t.q1 - t.q0) / t.size)).toBe(1);
        expect(Math.ceil((t.k1 - t.k0) / t.size)).toBe(1);
        expect(t.q1).toBeLessThanOrEqual(n);
      }
    }
  });
  it('covers the window, skips tiles above the diagonal, centre first', () => {
    const n = 1000;
    const w = { q0: 0, q1: 1000, k0: 0, k1: 1000 };
    const ts = tilesFor(w, n, 2); // 256 positions a tile: 4 x 4, 6 above the diagonal
    expect(ts.length).toBe(10);
    expect(ts.every((t) => !allMasked(t))).toBe(true);
    // every causal position is in exactly one tile
    for (const [q, k] of [[0, 0], [999, 0], [999, 999], [300, 255], [300, 256], [511, 511]]) {
      expect(ts.filter((t) => q >= t.q0 && q < t.q1 && k >= t.k0 && k < t.k1).length).toBe(1);
    }
    const c = tilesFor({ q0: 300, q1: 700, k0: 300, k1: 700 }, n, 2);
    expect(c[0]).toMatchObject({ q0: 256, k0: 256 }); // centre (384, 384): nearest (500, 500)
    expect(c.length).toBe(3); // (1,1), (2,1), (2,2); (1,2) is above the diagonal
    expect(tilesFor({ q0: 0, q1: 0, k0: 0, k1: 0 }, n, 1)).toEqual([]);
  });
  it('tileOf finds the tile of a position', () => {
    const t = tileOf(300, 10, 2, 1000);
    expect(t).toMatchObject({ ti: 1, tj: 0, q0: 256, q1: 512, k0: 0, k1: 256 });
  });
  it('pooled cells of a tile match the reference pooling', () => {
    const n = 300;
    const m = matrix(n);
    const t = tileRequest(0, 0, 4, n); // 300 x 300 positions (partial tile), size 75
    const tile = pool(m, n, t, t.size, 'max');
    expect(tile.bq).toBe(4);
    const c = cellAt(tile, 13, 6)!;
    expect(c).toMatchObject({ r: 3, c: 1, q0: 12, q1: 16, k0: 4, k1: 8, masked: false, exact: false });
    let mx = 0;
    for (let q = 12; q < 16; q++) for (let k = 4; k < 8 && k <= q; k++) mx = Math.max(mx, m[q * n + k]);
    expect(c.value).toBe(mx);
    expect(blockText(c, 'max')).toBe('max of a 4×4 block');
    const above = cellAt(tile, 1, 9)!;
    expect(above.masked).toBe(true);
    expect(above.value).toBe(0);
    // a cell on the diagonal is not masked
    expect(cellAt(tile, 5, 5)!.masked).toBe(false);
    expect(cellAt(tile, 300, 0)).toBeNull();
    // the last cell is cut by the window
    const last = cellAt(tile, 299, 299)!;
    expect([last.q0, last.q1, last.k0, last.k1]).toEqual([296, 300, 296, 300]);
  });
  it('exact cells are the values, without a block text', () => {
    const n = 16;
    const m = matrix(n);
    const tile = pool(m, n, { q0: 0, q1: n, k0: 0, k1: n }, 256, 'max');
    expect(tile.exact).toBe(true);
    const c = cellAt(tile, 9, 3)!;
    expect(c.value).toBe(m[9 * n + 3]);
    expect(blockText(c, 'max')).toBe('');
    const mean = pool(m, n, { q0: 0, q1: n, k0: 0, k1: n }, 8, 'mean');
    expect(blockText(cellAt(mean, 9, 3)!, 'mean')).toBe('mean of a 2×2 block');
  });
});

describe('requests and cache keys', () => {
  const p = { q0: 0, q1: 128, k0: 128, k1: 256, size: 64, pool: 'max' as const };
  it('builds the query string', () => {
    expect(heatmapQuery({ layer: 2, head: 1 }, { ...p, format: 'bin', dtype: 'float16' })).toBe(
      'layer=2&head=1&q0=0&q1=128&k0=128&k1=256&size=64&pool=max&format=bin&dtype=float16',
    );
    expect(heatmapQuery({ layer: null, head: null }, p)).toBe('q0=0&q1=128&k0=128&k1=256&size=64&pool=max');
  });
  it('same origin paths are relative like src/api.ts; a base is joined', () => {
    expect(heatmapUrl('', 'run_a b', { layer: 0, head: null }, p)).toBe(
      'api/runs/run_a%20b/heatmap?layer=0&q0=0&q1=128&k0=128&k1=256&size=64&pool=max',
    );
    expect(heatmapUrl('http://h:1/', 'r', { layer: null, head: null }, p).startsWith('http://h:1/api/runs/r/heatmap?')).toBe(true);
  });
  it('keys differ by run, selection, window, size, pool and dtype', () => {
    const base = tileKey('r', { layer: 1, head: 2 }, p);
    const variants = [
      tileKey('s', { layer: 1, head: 2 }, p),
      tileKey('r', { layer: 1, head: null }, p),
      tileKey('r', { layer: null, head: null }, p),
      tileKey('r', { layer: 1, head: 3 }, p),
      tileKey('r', { layer: 1, head: 2 }, { ...p, q1: 127 }),
      tileKey('r', { layer: 1, head: 2 }, { ...p, size: 32 }),
      tileKey('r', { layer: 1, head: 2 }, { ...p, pool: 'mean' }),
      tileKey('r', { layer: 1, head: 2 }, { ...p, dtype: 'float16' }),
    ];
    expect(new Set([base, ...variants]).size).toBe(variants.length + 1);
    expect(tileKey('r', { layer: 1, head: 2 }, { ...p })).toBe(base);
  });
});

describe('binary replies', () => {
  it('reads a float32 reply exactly (header of any length: unaligned data)', () => {
    const n = 37;
    const tile = pool(matrix(n), n, { q0: 3, q1: n, k0: 0, k1: 20 }, 16, 'max');
    const t = parseHeatmap(binary(tile, 'float32'));
    expect(t).toMatchObject({ q0: 3, q1: 37, k0: 0, k1: 20, bq: tile.bq, bk: tile.bk, rows: tile.rows, cols: tile.cols, pool: 'max', exact: false });
    expect([...t.data]).toEqual([...tile.data]);
  });
  it('reads a float16 reply to half precision', () => {
    const n = 40;
    const tile = pool(matrix(n), n, { q0: 0, q1: n, k0: 0, k1: n }, 32, 'mean');
    const t = parseHeatmap(binary(tile, 'float16'));
    expect(t.pool).toBe('mean');
    for (let i = 0; i < t.data.length; i++) expect(Math.abs(t.data[i] - tile.data[i])).toBeLessThanOrEqual(tile.data[i] * 2 ** -11 + 1e-7);
  });
  it('reads a JSON reply', () => {
    const body = JSON.stringify({ q0: 0, q1: 8, k0: 0, k1: 8, bq: 3, bk: 3, rows: 3, cols: 3, pool: 'max', exact: false,
      data: [1.0, 0.0, 0.0, 0.326, 0.334, 0.0, 0.164, 0.271, 0.268] }) + '\n';
    const t = parseHeatmap(new TextEncoder().encode(body).buffer as ArrayBuffer);
    expect(t.rows).toBe(3);
    expect(t.data[3]).toBeCloseTo(0.326, 6);
    expect(cellAt(t, 7, 7)).toMatchObject({ r: 2, c: 2, q0: 6, q1: 8, k0: 6, k1: 8 });
  });
  it('refuses a truncated body', () => {
    const tile = pool(matrix(8), 8, { q0: 0, q1: 8, k0: 0, k1: 8 }, 8, 'max');
    const b = binary(tile, 'float32');
    expect(() => parseHeatmap(b.slice(0, b.byteLength - 4))).toThrow(/bytes/);
  });
});

describe('colour scale', () => {
  it('is viridis from dark purple to yellow', () => {
    expect(rgbHex(viridis(0))).toBe('#440154');
    expect(rgbHex(viridis(1))).toBe('#fde725');
    expect(rgbHex(viridis(0.5))).toBe('#21918c');
    expect(rgbHex(viridis(-3))).toBe('#440154');
    // luminance rises monotonically (readable in grey, colour-blind safe)
    const lum = (t: number) => {
      const [r, g, b] = viridis(t);
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    for (let i = 1; i <= 20; i++) expect(lum(i / 20)).toBeGreaterThan(lum((i - 1) / 20));
  });
  it('maps weights by square root or linearly', () => {
    expect(scaleT(0.25, 'sqrt')).toBe(0.5);
    expect(scaleT(0.25, 'linear')).toBe(0.25);
    expect(scaleT(2, 'sqrt')).toBe(1);
    expect(scaleT(NaN, 'linear')).toBe(0);
    expect(lutIndex(1, 'sqrt')).toBe(255);
    expect(lutIndex(0, 'linear')).toBe(0);
    const lut = buildLut();
    expect(lut.length).toBe(256 * 3);
    expect([...lut.slice(0, 3)]).toEqual(viridis(0));
  });
  it('colours a tile, masked cells transparent', () => {
    const n = 4;
    const tile = pool(matrix(n), n, { q0: 0, q1: n, k0: 0, k1: n }, 4, 'max');
    const px = tilePixels(tile, 'linear');
    expect(px.length).toBe(16 * 4);
    expect(px[(0 * 4 + 1) * 4 + 3]).toBe(0); // (q 0, k 1) masked
    expect(px[(1 * 4 + 1) * 4 + 3]).toBe(255);
    expect(px[(0 * 4 + 0) * 4 + 3]).toBe(255);
    const [r, g, b] = viridis(tile.data[0]); // q 0 attends to itself: weight 1
    expect([px[0], px[1], px[2]]).toEqual([r, g, b]);
  });
  it('legend ticks sit where the scale puts them', () => {
    const t = legendTicks('sqrt');
    expect(t[0]).toMatchObject({ value: 0, at: 0, text: '0' });
    expect(t.find((x) => x.value === 0.25)!.at).toBe(0.5);
    expect(t[t.length - 1]).toMatchObject({ value: 1, at: 1, text: '1' });
    expect(legendTicks('linear').map((x) => x.text)).toEqual(['0', '.25', '.5', '.75', '1']);
  });
});

describe('axis labels', () => {
  it('labels once rows are LABEL_PX tall, else ticks 1-2-5 apart', () => {
    expect(labelDensity(LABEL_PX).labels).toBe(true);
    expect(labelDensity(30)).toMatchObject({ labels: true, step: 1 });
    expect(labelDensity(30).font).toBeLessThanOrEqual(13);
    expect(labelDensity(10)).toMatchObject({ labels: false, step: 5 });
    expect(labelDensity(1)).toMatchObject({ labels: false, step: 50 });
    expect(labelDensity(0.1).step).toBe(500);
    expect(niceStep(0.3)).toBe(1);
    expect(niceStep(3)).toBe(5);
    expect(niceStep(11)).toBe(20);
    expect(firstTick(13, 5)).toBe(15);
    expect(firstTick(0, 5)).toBe(0);
  });
});

describe('LRU cache', () => {
  it('drops the least recently used over its budget', () => {
    const c = new Lru<number>(10);
    c.set('a', 1, 4);
    c.set('b', 2, 4);
    expect(c.get('a')).toBe(1); // a is now the most recent
    c.set('c', 3, 4); // 12 > 10: b goes
    expect(c.has('b')).toBe(false);
    expect(c.has('a')).toBe(true);
    expect(c.cost).toBe(8);
    c.set('a', 5, 2); // replaced, cost updated
    expect(c.cost).toBe(6);
    expect(c.peek('a')).toBe(5);
    c.set('big', 0, 100); // alone over budget: kept, the rest dropped
    expect(c.size).toBe(1);
    c.clear();
    expect(c.size).toBe(0);
  });
});

describe('fetch queue', () => {
  it('runs at most `limit` at once; a new want replaces the waiting list', async () => {
    const q = new FetchQueue(2);
    const started: string[] = [];
    const resolvers = new Map<string, () => void>();
    const task = (key: string) => ({
      key,
      run: () => {
        started.push(key);
        return new Promise<void>((r) => resolvers.set(key, r));
      },
    });
    q.want(['a', 'b', 'c', 'd'].map(task));
    expect(started).toEqual(['a', 'b']);
    expect(q.active).toBe(2);
    expect(q.pending).toBe(2);
    q.want(['a', 'e', 'c'].map(task)); // a is running: not again; d no longer wanted
    expect(q.pending).toBe(2);
    resolvers.get('a')!();
    await new Promise((r) => setTimeout(r, 0));
    expect(started).toEqual(['a', 'b', 'e']);
    resolvers.get('b')!();
    await new Promise((r) => setTimeout(r, 0));
    expect(started).toEqual(['a', 'b', 'e', 'c']);
    q.clear();
    expect(q.pending).toBe(0);
  });
  it('a failing task frees its slot', async () => {
    const q = new FetchQueue(1);
    const started: string[] = [];
    q.want([
      { key: 'x', run: () => (started.push('x'), Promise.reject(new Error('no'))) },
      { key: 'y', run: () => (started.push('y'), Promise.resolve()) },
    ]);
    await new Promise((r) => setTimeout(r, 0));
    expect(started).toEqual(['x', 'y']);
  });
});

describe('heads grid', () => {
  const g = { rows: 16, cols: 32, x0: 48, y0: 28, dx: 48, dy: 48, w: 44, h: 44 };
  it('sizes cells to fit the heads, within limits', () => {
    expect(gridCellSize(900, 8, 40, 4)).toBe(102); // 40 + 8 x (102 + 4) + 2 x 4 <= 900
    expect(gridCellSize(900, 32, 40, 4)).toBe(44);
    expect(gridCellSize(5000, 2, 40, 4)).toBe(120);
  });
  it('finds the cells in a viewport', () => {
    // 480 x 300 px at the top left: columns whose left edge < 480 and right edge > 0
    expect(visibleCells({ left: 0, top: 0, width: 480, height: 300 }, g)).toEqual({ r0: 0, r1: 6, c0: 0, c1: 9 });
    // scrolled: a cell partly visible counts
    const v = visibleCells({ left: 1000, top: 500, width: 300, height: 200 }, g);
    expect(v).toEqual({ r0: 9, r1: 14, c0: 19, c1: 27 });
    // a margin grows the range, never past the grid
    const m = visibleCells({ left: 0, top: 0, width: 480, height: 300 }, g, 48);
    expect(m).toEqual({ r0: 0, r1: 7, c0: 0, c1: 10 });
    expect(visibleCells({ left: 0, top: 0, width: 1e5, height: 1e5 }, g)).toEqual({ r0: 0, r1: 16, c0: 0, c1: 32 });
    expect(visibleCells({ left: 0, top: 0, width: 0, height: 100 }, g)).toEqual({ r0: 0, r1: 0, c0: 0, c1: 0 });
    // the gap between two cells shows none of them
    const gap = visibleCells({ left: 92, top: 0, width: 4, height: 10 }, { ...g, x0: 0, y0: 0 });
    expect(gap.c1 - gap.c0).toBe(0);
  });
  it('moves the focus with the arrow keys, staying inside', () => {
    expect(gridMove(0, 0, 'ArrowUp', 5, 8)).toEqual([0, 0]);
    expect(gridMove(0, 0, 'ArrowDown', 5, 8)).toEqual([1, 0]);
    expect(gridMove(2, 7, 'ArrowRight', 5, 8)).toEqual([2, 7]);
    expect(gridMove(2, 3, 'Home', 5, 8)).toEqual([2, 0]);
    expect(gridMove(2, 3, 'End', 5, 8, true)).toEqual([4, 7]);
    expect(gridMove(2, 3, 'PageDown', 5, 8)).toEqual([4, 3]);
    expect(gridMove(2, 3, 'x', 5, 8)).toBeNull();
  });
});
