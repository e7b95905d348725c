// Pure data transforms of the mixture-of-experts view (views/experts.ts) and
// of the sliding-window marks of the attention views: no DOM here, so
// web/test/experts.test.ts can check them.

/** One layer's routing at one position (GET /api/runs/{id}/experts): the chosen experts, best first, and their weights. */
export interface ExpertChoice {
  ids: number[];
  weights: number[];
}

export interface ExpertsPosition {
  pos: number;
  layers: ExpertChoice[];
}

/** A layer's load over every position of the run: positions that chose each expert, and the sum of its weights. */
export interface ExpertsLoad {
  layer: number;
  count: number[];
  weight: number[];
}

export interface ExpertsReply {
  n_expert: number;
  n_used: number;
  n_layer: number;
  n_pos: number;
  from: number;
  to: number;
  positions: ExpertsPosition[];
  load: ExpertsLoad[];
}

// ---------------------------------------------------------------- colours

/** A categorical palette (Tableau 10, then its light companions): distinct hues for up to 20 experts. */
export const EXPERT_PALETTE = [
  '#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac',
  '#a0cbe8', '#ffbe7d', '#ff9d9a', '#86bcb6', '#8cd17d', '#f1ce63', '#d4a6c8', '#fabfd2', '#d7b5a6', '#79706e',
] as const;

/** Expert e's colour: the palette, then hues spaced by the golden angle (a model with more than 20 experts). */
export function expertColor(e: number): string {
  if (e >= 0 && e < EXPERT_PALETTE.length) return EXPERT_PALETTE[e];
  const hue = Math.round((((e * 137.508) % 360) + 360) % 360);
  return `hsl(${hue}, 55%, ${e % 2 ? 62 : 45}%)`;
}

/** '#111' or '#fff', whichever reads better on a '#rrggbb' background (WCAG relative luminance). */
export function inkOn(bg: string): string {
  const m = /^#([0-9a-f]{6})$/i.exec(bg);
  if (!m) return '#111111';
  const v = parseInt(m[1], 16);
  const lin = (c: number) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
  };
  const L = 0.2126 * lin((v >> 16) & 255) + 0.7152 * lin((v >> 8) & 255) + 0.0722 * lin(v & 255);
  // contrast with black (L + 0.05) / 0.05 vs with white 1.05 / (L + 0.05)
  return (L + 0.05) / 0.05 >= 1.05 / (L + 0.05) ? '#111111' : '#ffffff';
}

// ---------------------------------------------------------------- cells

export interface ExpertCell {
  /** the expert with the largest weight (-1: no routing recorded) */
  top: number;
  ids: number[];
  weights: number[];
  /** the ids as the cell shows them, best first: "5·4" */
  text: string;
  /** "expert 5: 0.8141" per chosen expert, best first */
  lines: string[];
}

/** A strip cell: the experts one layer chose at one position, sorted by weight (largest first). */
export function expertCell(choice: ExpertChoice | undefined): ExpertCell {
  if (!choice || choice.ids.length === 0) return { top: -1, ids: [], weights: [], text: '–', lines: ['no routing recorded'] };
  const order = choice.ids.map((_, i) => i).sort((a, b) => (choice.weights[b] ?? 0) - (choice.weights[a] ?? 0) || a - b);
  const ids = order.map((i) => choice.ids[i]);
  const weights = order.map((i) => choice.weights[i] ?? 0);
  return {
    top: ids[0],
    ids,
    weights,
    text: ids.join('·'),
    lines: ids.map((e, i) => `expert ${e}: ${weights[i].toFixed(4)}`),
  };
}

// ---------------------------------------------------------------- load

export type LoadMetric = 'count' | 'weight';

export interface LoadBar {
  expert: number;
  count: number;
  weight: number;
  /** the bar's length, 0..1 of the largest value of the metric */
  frac: number;
  /** the metric's share of the layer's total, 0..1 */
  share: number;
}

/** A layer's load as one bar per expert (in expert order), scaled to the largest value of the metric. */
export function loadBars(load: ExpertsLoad | undefined, metric: LoadMetric): LoadBar[] {
  if (!load) return [];
  const vals = metric === 'count' ? load.count : load.weight;
  let max = 0;
  let sum = 0;
  for (const v of vals) {
    if (v > max) max = v;
    sum += v;
  }
  return load.count.map((c, e) => {
    const v = vals[e] ?? 0;
    return { expert: e, count: c, weight: load.weight[e] ?? 0, frac: max > 0 ? v / max : 0, share: sum > 0 ? v / sum : 0 };
  });
}

/** How even a layer's load is: the normalized entropy of the counts (1 = every expert equally used, 0 = one expert). */
export function loadBalance(count: readonly number[]): number {
  const total = count.reduce((a, b) => a + b, 0);
  if (total <= 0 || count.length < 2) return 0;
  let h = 0;
  for (const c of count) if (c > 0) h -= (c / total) * Math.log(c / total);
  return h / Math.log(count.length);
}

// ---------------------------------------------------------------- paging

/** The pages (of `page` positions) of n positions, the one holding `here` first, then outward from it. */
export function pageOrder(n: number, page: number, here: number): number[] {
  const np = Math.ceil(Math.max(0, n) / page);
  const h = Math.max(0, Math.min(np - 1, Math.floor(here / page)));
  const out = Array.from({ length: np }, (_, i) => i);
  return out.sort((a, b) => Math.abs(a - h) - Math.abs(b - h) || a - b);
}

// ---------------------------------------------------------------- sliding windows

/**
 * The sliding window of a selection: the keys every selected layer's query
 * sees (the query itself included), or 0 when the selected layers attend to
 * every earlier position or do not all have the same window (then no band
 * can be drawn). layer null = all layers.
 */
export function selectionWindow(layerWindow: readonly number[] | undefined, layer: number | null): number {
  if (!layerWindow || layerWindow.length === 0) return 0;
  if (layer !== null) return layerWindow[layer] ?? 0;
  const w = layerWindow[0];
  return layerWindow.every((x) => x === w) ? w : 0;
}

/** Key k is outside query q's sliding window of w keys (w > 0): its attention weight is exactly 0. */
export function outsideWindow(q: number, k: number, w: number): boolean {
  return w > 0 && k <= q - w;
}

/** The first key query q sees under a window of w keys (0 without a window). */
export function windowStart(q: number, w: number): number {
  return w > 0 ? Math.max(0, q - w + 1) : 0;
}

/**
 * What the attention views say about the selection's windows:
 * "layer 0: sliding window of 8 tokens", "every layer: sliding window of 8
 * tokens", "layers 0, 2: sliding window of 8 tokens; the others see every
 * earlier token (mixed: no band)", or '' when no selected layer has one.
 */
export function windowNote(layerWindow: readonly number[] | undefined, layer: number | null): string {
  if (!layerWindow || layerWindow.length === 0) return '';
  if (layer !== null) {
    const w = layerWindow[layer] ?? 0;
    return w > 0 ? `layer ${layer}: sliding window of ${w} tokens` : '';
  }
  if (layerWindow.every((x) => x === 0)) return '';
  const w = selectionWindow(layerWindow, null);
  if (w > 0) return `every layer: sliding window of ${w} tokens`;
  const groups = new Map<number, number[]>();
  layerWindow.forEach((x, l) => {
    if (x > 0) groups.set(x, [...(groups.get(x) ?? []), l]);
  });
  const parts = [...groups].map(([x, ls]) => `${ls.length > 1 ? 'layers' : 'layer'} ${ls.join(', ')}: sliding window of ${x} tokens`);
  return `${parts.join('; ')}; the other layers see every earlier token (the mean mixes them: no window drawn)`;
}
