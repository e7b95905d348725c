// Pure transforms of the deep views (no DOM): text shading, logit-lens cells,
// PCA of token fingerprints, the sampling filter chain, token alignment of
// two runs and their attention difference, token bytes.
import { displayLabel } from './model';

// ---------------------------------------------------------------- text shading

export interface Shading {
  /** largest weight among the shaded positions (0 when none) */
  max: number;
  /** background opacity per position in [0, 1]: weight / max (0 outside the shaded set) */
  alpha: Float32Array;
  /** shaded positions of the heaviest weights, heaviest first (ties: lower position), at most `top` */
  top: number[];
}

/**
 * Max-normalized shading of the positions [lo, hi) of a weight vector
 * (`weights[i - offset]` is position i's weight), leaving out `skip`
 * (BOS when it is not in the scale). `n` is the number of positions.
 */
export function shade(
  n: number,
  weights: ArrayLike<number>,
  offset: number,
  lo: number,
  hi: number,
  skip: (pos: number) => boolean = () => false,
  top = 3,
): Shading {
  const alpha = new Float32Array(n);
  let max = 0;
  const a = Math.max(0, lo);
  const b = Math.min(n, hi);
  const best: number[] = [];
  for (let i = a; i < b; i++) {
    if (skip(i)) continue;
    const w = Number(weights[i - offset]);
    if (!(w > 0)) continue;
    if (w > max) max = w;
    // keep the `top` heaviest, heaviest first, ties by lower position (i grows, so strict >)
    let j = best.length;
    while (j > 0 && Number(weights[best[j - 1] - offset]) < w) j--;
    if (j < top) {
      best.splice(j, 0, i);
      if (best.length > top) best.pop();
    }
  }
  if (max > 0)
    for (let i = a; i < b; i++) {
      if (skip(i)) continue;
      const w = Number(weights[i - offset]);
      alpha[i] = w > 0 ? Math.min(1, w / max) : 0;
    }
  return { max, alpha, top: best };
}

/** The CSS background for an opacity in [0, 1] (never fully opaque, so the text stays readable). */
export function shadeColor(alpha: number, rgb = '26, 86, 219'): string {
  const a = Math.max(0, Math.min(1, alpha)) * 0.75;
  return a <= 0.004 ? '' : `rgba(${rgb}, ${a.toFixed(3)})`;
}

// ---------------------------------------------------------------- logit lens

export interface LensTop {
  id: number;
  label?: string;
  prob: number;
}
export interface LensLayer {
  layer: number;
  match: boolean;
  top: LensTop[];
}
export interface LensStep {
  step: number;
  id: number;
  layers: LensLayer[];
}
export interface LensReply {
  n_layer: number;
  n_output: number;
  top_k: number;
  from?: number;
  to?: number;
  steps: LensStep[];
}

/** A probability as short text: "97.3%", "0.41%", "<0.01%". */
export function formatProb(p: number): string {
  if (!Number.isFinite(p)) return '–';
  const pc = p * 100;
  if (pc >= 99.95 && p < 1) return '>99.9%';
  if (pc >= 10) return pc.toFixed(1) + '%';
  if (pc >= 0.01) return pc.toFixed(2) + '%';
  if (p > 0) return '<0.01%';
  return '0%';
}

/** A lens token's label: the API's label when present, else "#id". */
export function lensLabel(t: LensTop | undefined): string {
  if (!t) return '–';
  return t.label !== undefined ? displayLabel(t.label) : `#${t.id}`;
}

export interface LensCell {
  text: string; // the top-1 label as shown
  match: boolean; // top-1 is the token the step chose
  prob: number; // top-1 probability
  lines: string[]; // top-k "label  prob" lines for the tooltip
}

/** What a lens cell shows for one (step, layer). */
export function lensCell(layer: LensLayer | undefined, chosen: number): LensCell {
  if (!layer || layer.top.length === 0) return { text: '–', match: false, prob: 0, lines: [] };
  const t0 = layer.top[0];
  return {
    text: lensLabel(t0),
    match: layer.match || t0.id === chosen,
    prob: t0.prob,
    lines: layer.top.map((t) => `${lensLabel(t)}  ${formatProb(t.prob)}${t.id === chosen ? '  ✓ chosen' : ''}`),
  };
}

// ---------------------------------------------------------------- PCA

/**
 * Eigen-decomposition of a symmetric d x d matrix (row-major) by cyclic
 * Jacobi rotations. Returns eigenvalues descending and the matching unit
 * eigenvectors (vectors[i] belongs to values[i]); each vector's largest
 * entry (by magnitude, first on ties) is made positive, so signs are stable.
 */
export function symmetricEigen(m: ArrayLike<number>, d: number): { values: number[]; vectors: number[][] } {
  const a = Float64Array.from(m as ArrayLike<number>);
  const v = new Float64Array(d * d);
  for (let i = 0; i < d; i++) v[i * d + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < d; p++) for (let q = p + 1; q < d; q++) off += a[p * d + q] ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < d; p++)
      for (let q = p + 1; q < d; q++) {
        const apq = a[p * d + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (a[q * d + q] - a[p * d + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < d; k++) {
          const akp = a[k * d + p];
          const akq = a[k * d + q];
          a[k * d + p] = c * akp - s * akq;
          a[k * d + q] = s * akp + c * akq;
        }
        for (let k = 0; k < d; k++) {
          const apk = a[p * d + k];
          const aqk = a[q * d + k];
          a[p * d + k] = c * apk - s * aqk;
          a[q * d + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < d; k++) {
          const vkp = v[k * d + p];
          const vkq = v[k * d + q];
          v[k * d + p] = c * vkp - s * vkq;
          v[k * d + q] = s * vkp + c * vkq;
        }
      }
  }
  const order = Array.from({ length: d }, (_, i) => i).sort((i, j) => a[j * d + j] - a[i * d + i] || i - j);
  const values = order.map((i) => a[i * d + i]);
  const vectors = order.map((i) => {
    const vec = Array.from({ length: d }, (_, k) => v[k * d + i]);
    let big = 0;
    for (let k = 1; k < d; k++) if (Math.abs(vec[k]) > Math.abs(vec[big]) + 1e-12) big = k;
    return vec[big] < 0 ? vec.map((x) => -x) : vec;
  });
  return { values, vectors };
}

export interface Pca {
  /** [x, y] per input row: the projection on the first two principal components */
  points: [number, number][];
  /** variance along each of the two components */
  variance: [number, number];
  /** share of the total variance the two components explain */
  explained: [number, number];
  components: [number[], number[]];
  mean: number[];
}

/** 2-D PCA of the rows (each of the same length d): centered, covariance d x d (/ (n-1)), Jacobi. */
export function pca2(rows: readonly (readonly number[])[]): Pca {
  const n = rows.length;
  const d = n ? rows[0].length : 0;
  const mean = new Array<number>(d).fill(0);
  for (const r of rows) for (let k = 0; k < d; k++) mean[k] += (Number(r[k]) || 0) / n;
  const cov = new Float64Array(d * d);
  const c = new Float64Array(d);
  for (const r of rows) {
    for (let k = 0; k < d; k++) c[k] = (Number(r[k]) || 0) - mean[k];
    for (let i = 0; i < d; i++) for (let j = i; j < d; j++) cov[i * d + j] += c[i] * c[j];
  }
  const div = Math.max(1, n - 1);
  for (let i = 0; i < d; i++)
    for (let j = i; j < d; j++) {
      cov[i * d + j] /= div;
      cov[j * d + i] = cov[i * d + j];
    }
  const zero = new Array<number>(d).fill(0);
  if (d === 0) return { points: rows.map(() => [0, 0]), variance: [0, 0], explained: [0, 0], components: [[], []], mean };
  const { values, vectors } = symmetricEigen(cov, d);
  const total = values.reduce((s, x) => s + Math.max(0, x), 0);
  const pc1 = vectors[0] ?? zero;
  const pc2 = vectors[1] ?? zero;
  const points = rows.map((r): [number, number] => {
    let x = 0;
    let y = 0;
    for (let k = 0; k < d; k++) {
      const v = (Number(r[k]) || 0) - mean[k];
      x += v * pc1[k];
      y += v * (pc2[k] ?? 0);
    }
    return [x, y];
  });
  const v1 = Math.max(0, values[0] ?? 0);
  const v2 = Math.max(0, values[1] ?? 0);
  return {
    points,
    variance: [v1, v2],
    explained: total > 0 ? [v1 / total, v2 / total] : [0, 0],
    components: [pc1, pc2],
    mean,
  };
}

// ---------------------------------------------------------------- zones

export const ZONES = ['syntax_floor', 'semantic_bridge', 'structure_ripple', 'none'] as const;
export type Zone = (typeof ZONES)[number];

export const ZONE_INFO: Record<Zone, { name: string; letter: string; color: string; shape: 'circle' | 'square' | 'triangle' | 'cross' }> = {
  syntax_floor: { name: 'syntax floor (local, d ≤ 7)', letter: 'S', color: '#2a9d8f', shape: 'circle' },
  semantic_bridge: { name: 'semantic bridge (mid, 8–255)', letter: 'B', color: '#8e5cc4', shape: 'square' },
  structure_ripple: { name: 'structure ripple (far, ≥ 256)', letter: 'R', color: '#d08a00', shape: 'triangle' },
  none: { name: 'none (all on the sink)', letter: '·', color: '#8a929c', shape: 'cross' },
};

export function asZone(z: unknown): Zone {
  return (ZONES as readonly string[]).includes(z as string) ? (z as Zone) : 'none';
}

/** Count of tokens per zone, in ZONES order. */
export function zoneCounts(zones: readonly unknown[]): Record<Zone, number> {
  const c = { syntax_floor: 0, semantic_bridge: 0, structure_ripple: 0, none: 0 };
  for (const z of zones) c[asZone(z)]++;
  return c;
}

export interface HeadType {
  layer: number;
  head: number;
  prev: number;
  induction: number;
  sink: number;
  local: number;
  kind: string;
}
export type HeadKey = 'layer' | 'head' | 'prev' | 'induction' | 'sink' | 'local' | 'kind';

/** Head types sorted by a column (scores: descending by default; layer/head/kind ascending), stable by (layer, head). */
export function sortHeads(rows: readonly HeadType[], key: HeadKey, dir: 'asc' | 'desc'): HeadType[] {
  const s = dir === 'asc' ? 1 : -1;
  return rows.slice().sort((a, b) => {
    const x = a[key];
    const y = b[key];
    const c = typeof x === 'string' ? x.localeCompare(y as string) : (x as number) - (y as number);
    return c !== 0 ? s * c : a.layer - b.layer || a.head - b.head;
  });
}

// ---------------------------------------------------------------- sampling

export interface SampleCandidate {
  id: number;
  label: string;
  logit: number;
  prob: number; // the model's own probability (softmax over the whole vocabulary)
}

export interface SamplingParams {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
}

export type CutBy = 'greedy' | 'top-k' | 'top-p' | 'min-p' | null;

export interface SampledCandidate extends SampleCandidate {
  /** survives every filter */
  kept: boolean;
  /** the first filter that removed it (null when kept) */
  cut: CutBy;
  /** the probability of being drawn: softmax at the temperature over the survivors (0 when cut) */
  p: number;
}

export interface SamplingResult {
  candidates: SampledCandidate[]; // in the given order (heaviest first)
  survivors: number;
  /** true when the result may differ from the server's because only the stored candidates are known */
  approximate: boolean;
}

/**
 * The server's sampler (src/samp.c, `choose`) over the stored candidates,
 * heaviest first; the repetition penalty is skipped. Order and rules:
 * - temperature <= 0: greedy, only the best candidate (ties: lower id);
 * - top-k (k > 0 and k < vocabulary): the k best;
 * - top-p (p < 1): the shortest prefix whose softmax mass (temperature 1)
 *   over the candidates left reaches p, at least one;
 * - min-p (> 0): keep logit >= max + ln(min_p), i.e. prob >= min_p * max prob;
 * - temperature: softmax(logit / T) over the survivors.
 * Only the stored top candidates are known: top-p's mass is the model's
 * probability renormalized over the top-k survivors when k <= the number of
 * candidates (exact), else the model's own probability over the whole
 * vocabulary (exact when top-k is off); beyond the stored candidates nothing
 * is known (`approximate`).
 */
export function sampleFilter(cands: readonly SampleCandidate[], sp: SamplingParams, nVocab = Infinity): SamplingResult {
  const n = cands.length;
  const out: SampledCandidate[] = cands.map((c) => ({ ...c, kept: true, cut: null, p: 0 }));
  if (n === 0) return { candidates: out, survivors: 0, approximate: false };
  const cutFrom = (from: number, why: CutBy, keep: (i: number) => boolean = () => false) => {
    for (let i = from; i < n; i++) if (out[i].kept && !keep(i)) (out[i].kept = false), (out[i].cut = why);
  };
  let approximate = false;
  if (!(sp.temperature > 0)) {
    let best = 0;
    for (let i = 1; i < n; i++)
      if (cands[i].logit > cands[best].logit || (cands[i].logit === cands[best].logit && cands[i].id < cands[best].id)) best = i;
    cutFrom(0, 'greedy', (i) => i === best);
    out[best].p = 1;
    return { candidates: out, survivors: 1, approximate: false };
  }
  const k = Math.trunc(sp.topK);
  let kept = n;
  let topKExact = false;
  if (k > 0 && k < nVocab) {
    if (k < n) {
      cutFrom(k, 'top-k');
      kept = k;
    }
    topKExact = k <= n;
    if (!topKExact) approximate = true; // the survivors beyond the stored candidates are unknown
  } else if (nVocab > n) approximate = true;
  if (sp.topP < 1) {
    // mass at temperature 1 over the candidates left: renormalized within an exact top-k, else the model's own
    let z = 1;
    if (topKExact) {
      z = 0;
      for (let i = 0; i < kept; i++) z += cands[i].prob;
      if (!(z > 0)) z = 1;
    }
    let cum = 0;
    let cut = kept;
    for (let i = 0; i < kept; i++) {
      cum += cands[i].prob / z;
      if (cum >= sp.topP) {
        cut = i + 1;
        break;
      }
    }
    if (cut < kept) {
      cutFrom(cut, 'top-p');
      kept = cut;
    }
  }
  if (sp.minP > 0) {
    let max = -Infinity;
    for (let i = 0; i < n; i++) if (out[i].kept && cands[i].logit > max) max = cands[i].logit;
    const floor = max + Math.log(sp.minP);
    for (let i = 0; i < n; i++) if (out[i].kept && !(cands[i].logit >= floor)) (out[i].kept = false), (out[i].cut = 'min-p');
  }
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (out[i].kept && cands[i].logit > max) max = cands[i].logit;
  let z = 0;
  for (let i = 0; i < n; i++)
    if (out[i].kept) {
      out[i].p = Math.exp((cands[i].logit - max) / sp.temperature);
      z += out[i].p;
    }
  let survivors = 0;
  for (let i = 0; i < n; i++)
    if (out[i].kept) {
      out[i].p /= z;
      survivors++;
    }
  return { candidates: out, survivors, approximate };
}

// ---------------------------------------------------------------- alignment

/** One aligned pair: indexes into sequence a and b; null is a gap. */
export interface AlignPair {
  a: number | null;
  b: number | null;
}

/**
 * Aligns two token sequences by a longest common subsequence of ids
 * (Myers' O(ND) diff after trimming the common prefix and suffix). Matched
 * tokens pair up; the rest are gaps (a's deletions before b's insertions
 * within a changed stretch). When the sequences differ in more than
 * `maxD` edits the middle is left unmatched (a's tokens, then b's).
 */
export function alignTokens(a: readonly number[], b: readonly number[], maxD = 4000): AlignPair[] {
  const out: AlignPair[] = [];
  let pre = 0;
  while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++;
  let suf = 0;
  while (suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf]) suf++;
  for (let i = 0; i < pre; i++) out.push({ a: i, b: i });
  const A = a.slice(pre, a.length - suf);
  const B = b.slice(pre, b.length - suf);
  const mid = myers(A, B, maxD);
  for (const p of mid) out.push({ a: p.a === null ? null : p.a + pre, b: p.b === null ? null : p.b + pre });
  for (let i = 0; i < suf; i++) out.push({ a: a.length - suf + i, b: b.length - suf + i });
  return out;
}

function myers(a: readonly number[], b: readonly number[], maxD: number): AlignPair[] {
  const n = a.length;
  const m = b.length;
  const out: AlignPair[] = [];
  if (n === 0 || m === 0) {
    for (let i = 0; i < n; i++) out.push({ a: i, b: null });
    for (let j = 0; j < m; j++) out.push({ a: null, b: j });
    return out;
  }
  const max = Math.min(n + m, maxD);
  const off = max + 1;
  const v = new Int32Array(2 * max + 3);
  const trace: Int32Array[] = [];
  let found = -1;
  for (let d = 0; d <= max && found < 0; d++) {
    // snapshot of the diagonals -d..d of the previous round (what backtracking needs)
    trace.push(v.slice(off - d - 1, off + d + 2));
    for (let k = -d; k <= d; k += 2) {
      let x: number;
      if (k === -d || (k !== d && v[off + k - 1] < v[off + k + 1])) x = v[off + k + 1];
      else x = v[off + k - 1] + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) x++, y++;
      v[off + k] = x;
      if (x >= n && y >= m) {
        found = d;
        break;
      }
    }
  }
  if (found < 0) {
    for (let i = 0; i < n; i++) out.push({ a: i, b: null });
    for (let j = 0; j < m; j++) out.push({ a: null, b: j });
    return out;
  }
  // backtrack: trace[d] holds v before round d, diagonal k at index k + d + 1
  const rev: AlignPair[] = [];
  let x = n;
  let y = m;
  for (let d = found; d > 0; d--) {
    const vp = trace[d];
    const at = (k: number) => vp[k + d + 1];
    const k = x - y;
    const down = k === -d || (k !== d && at(k - 1) < at(k + 1));
    const pk = down ? k + 1 : k - 1;
    const px = at(pk);
    const py = px - pk;
    // round d's snake starts after its edit: (px, py + 1) going down, (px + 1, py) going right
    const sx = down ? px : px + 1;
    const sy = down ? py + 1 : py;
    while (x > sx && y > sy) {
      x--, y--;
      rev.push({ a: x, b: y });
    }
    rev.push(down ? { a: null, b: py } : { a: px, b: null });
    x = px;
    y = py;
  }
  while (x > 0 && y > 0) {
    x--, y--;
    rev.push({ a: x, b: y });
  }
  rev.reverse();
  // within each changed stretch: deletions (a) first, then insertions (b)
  let i = 0;
  while (i < rev.length) {
    if (rev[i].a !== null && rev[i].b !== null) {
      out.push(rev[i++]);
      continue;
    }
    const dels: AlignPair[] = [];
    const ins: AlignPair[] = [];
    while (i < rev.length && (rev[i].a === null || rev[i].b === null)) (rev[i].b === null ? dels : ins).push(rev[i++]);
    out.push(...dels, ...ins);
  }
  return out;
}

/** The number of matched pairs (the LCS length the alignment found). */
export function matchedCount(pairs: readonly AlignPair[]): number {
  let n = 0;
  for (const p of pairs) if (p.a !== null && p.b !== null) n++;
  return n;
}

/** For each index of sequence a (length na), its partner in b (-1: a gap). */
export function partnersOfA(pairs: readonly AlignPair[], na: number): Int32Array {
  const m = new Int32Array(na).fill(-1);
  for (const p of pairs) if (p.a !== null && p.b !== null && p.a < na) m[p.a] = p.b;
  return m;
}

export interface DiffRow {
  a: number | null;
  b: number | null;
  /** weight in run A (null: no such key in A's row) */
  wa: number | null;
  wb: number | null;
  /** wb - wa, a missing weight read as 0; null when both are missing */
  d: number | null;
}

/**
 * The attention difference on aligned positions: `rowA[i]` is run A's weight
 * on its position i (positions past the row's end have no weight), likewise B.
 */
export function diffAligned(pairs: readonly AlignPair[], rowA: ArrayLike<number>, rowB: ArrayLike<number>): DiffRow[] {
  return pairs.map((p) => {
    const wa = p.a !== null && p.a < rowA.length ? Number(rowA[p.a]) : null;
    const wb = p.b !== null && p.b < rowB.length ? Number(rowB[p.b]) : null;
    const d = wa === null && wb === null ? null : (wb ?? 0) - (wa ?? 0);
    return { a: p.a, b: p.b, wa, wb, d };
  });
}

/**
 * A step's split view as one vector over key positions: prompt token k at
 * k (BOS 0), earlier output j at n_prompt + j; n_prompt + t entries.
 */
export function splitRow(prompt: ArrayLike<number>, output: ArrayLike<number>): Float32Array {
  const r = new Float32Array(prompt.length + output.length);
  for (let k = 0; k < prompt.length; k++) r[k] = Number(prompt[k]);
  for (let j = 0; j < output.length; j++) r[prompt.length + j] = Number(output[j]);
  return r;
}

/** Signed text of a difference: "+0.123", "−0.045" (U+2212), "0.000". */
export function signed(d: number, digits = 3): string {
  const s = Math.abs(d).toFixed(digits);
  if (Number(s) === 0) return (0).toFixed(digits);
  return (d > 0 ? '+' : '−') + s;
}

// ---------------------------------------------------------------- running text

/**
 * A token label as running text: the API writes line feeds, tabs and
 * carriage returns in labels as two-character escapes (backslash n, t, r); in running text
 * they become a visible mark plus the character itself (↵ and a real line
 * break, ⇥ and a tab, ␍).
 */
export function labelText(label: string): string {
  return label.replace(/\\([ntr])/g, (_, c: string) => (c === 'n' ? '↵\n' : c === 't' ? '⇥\t' : '␍'));
}

// ---------------------------------------------------------------- bytes

/** UTF-8 bytes of a string. */
export function utf8Bytes(s: string): number[] {
  return Array.from(new TextEncoder().encode(s));
}

/** Bytes as hex: "20 4f 6e". */
export function hexBytes(b: readonly number[]): string {
  return b.map((x) => (x & 0xff).toString(16).padStart(2, '0')).join(' ');
}

/** A token's bytes: the API's `bytes` when present, else the UTF-8 of its piece (SentencePiece's ▁ read as a space). */
export function tokenBytes(t: { piece?: string; label?: string; bytes?: number[] }): number[] {
  if (Array.isArray(t.bytes)) return t.bytes;
  const s = t.piece !== undefined ? t.piece.replace(/\u2581/g, ' ') : (t.label ?? '');
  return utf8Bytes(s);
}
