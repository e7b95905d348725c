// Interventions from the UI (pure, tested by Vitest): the branch requests of
// "ablate this head / knock out attention to this token and regenerate from
// step t", the rows of the Effects tab (GET /api/runs/{id}/effects), and the
// attention rollout of a step (GET /api/runs/{id}/rollout) as the graph's
// split rows.
import { formatProb } from './analysis';
import type { SamplingRequest } from './api';

/** An item of a request's / run document's `interventions` (docs/API.md). */
export type Intervention =
  | { type: 'ablate' | 'ablate_mean'; layer: number; head: number }
  | { type: 'scale'; layer: number; head: number; factor: number }
  | { type: 'knockout'; layer: number | null; head: number | null; queries: [number, number]; keys: [number, number] }
  | { type: 'steer'; layer: number; alpha: number; vector?: number[] }
  | { type: 'patch'; run: string; layer: number; pos: number };

/** What a branch request needs of the run it branches from (its document). */
export interface BranchSource {
  id: string;
  n_prompt: number;
  n_output: number;
  max_tokens?: number;
  params?: Record<string, number>;
}

export interface InterventionRequest extends SamplingRequest {
  branch: { run: string; step: number };
  interventions: Intervention[];
}

/** The server's largest position in a knockout range (src/api_gen.c: last < 2^24). */
export const MAX_POSITION = (1 << 24) - 1;

/**
 * A branch of `src` from step `step` with `interventions`: the same sampler
 * settings and token budget as the source run (so only the intervention
 * differs), outputs 0..step-1 reused.
 */
export function branchRequest(src: BranchSource, step: number, interventions: Intervention[]): InterventionRequest {
  const p = src.params ?? {};
  const t = Math.max(0, Math.min(Math.trunc(step), Math.max(0, src.n_output - 1)));
  return {
    branch: { run: src.id, step: t },
    interventions,
    max_tokens: Math.max(t + 1, src.max_tokens ?? src.n_output, src.n_output),
    temperature: p.temperature ?? 0,
    top_k: Math.trunc(p.top_k ?? 40),
    top_p: p.top_p ?? 0.95,
    min_p: p.min_p ?? 0.05,
    seed: Math.trunc(p.seed ?? 0),
    attention_split: true,
  };
}

/** "Ablate (or mean-ablate) layer L head H and regenerate from step t". */
export function ablateRequest(src: BranchSource, step: number, layer: number, head: number, mean = false): InterventionRequest {
  return branchRequest(src, step, [{ type: mean ? 'ablate_mean' : 'ablate', layer, head }]);
}

/** The query position that chose output `step`. */
export function queryPos(nPrompt: number, step: number): number {
  return nPrompt - 1 + step;
}

/**
 * The token positions whose attention to `key` a knockout from `step` can
 * take away: null when the key is not a token the branch keeps (an output at
 * or after the step is generated again, so it has no fixed position to knock
 * out).
 */
export function knockoutKey(nPrompt: number, step: number, side: 'input' | 'output', index: number): number | null {
  if (index < 0) return null;
  if (side === 'input') return index < nPrompt ? index : null;
  return index < step ? nPrompt + index : null;
}

/**
 * "Knock out attention to the token at position `key` (all layers, all heads)
 * and regenerate from step t": every query from the one that chooses output
 * t on can no longer attend to `key`.
 */
export function knockoutRequest(src: BranchSource, step: number, key: number): InterventionRequest {
  const req = branchRequest(src, step, []);
  const q0 = Math.max(queryPos(src.n_prompt, req.branch.step), key);
  const q1 = Math.min(MAX_POSITION, Math.max(q0, src.n_prompt + req.max_tokens));
  req.interventions.push({ type: 'knockout', layer: null, head: null, queries: [q0, q1], keys: [key, key] });
  return req;
}

/** One intervention in words ("ablate layer 2, head 3", "knock out keys 4..4 for queries 6..20, all layers and heads"). */
export function describeIntervention(iv: Intervention): string {
  switch (iv.type) {
    case 'ablate':
      return `ablate layer ${iv.layer}, head ${iv.head}`;
    case 'ablate_mean':
      return `mean-ablate layer ${iv.layer}, head ${iv.head}`;
    case 'scale':
      return `scale layer ${iv.layer}, head ${iv.head} by ${iv.factor}`;
    case 'knockout': {
      const where =
        iv.layer === null || iv.layer === undefined
          ? 'all layers and heads'
          : iv.head === null || iv.head === undefined
            ? `layer ${iv.layer}, all heads`
            : `layer ${iv.layer}, head ${iv.head}`;
      const keys = iv.keys[0] === iv.keys[1] ? `position ${iv.keys[0]}` : `positions ${iv.keys[0]}..${iv.keys[1]}`;
      return `knock out attention to ${keys} from queries ${iv.queries[0]}..${iv.queries[1]} (${where})`;
    }
    case 'steer':
      return `steer after layer ${iv.layer} (alpha ${iv.alpha})`;
    case 'patch':
      return `patch layer ${iv.layer} at position ${iv.pos} from ${iv.run}`;
    default:
      return JSON.stringify(iv);
  }
}

// ---------------------------------------------------------------- effects

/** GET /api/runs/{id}/effects?base=ID (docs/API.md). */
export interface EffectsReply {
  base: string;
  n_steps: number;
  first_diff: number | null;
  mean_kl_lower_bound: number;
  steps: {
    step: number;
    base_id: number;
    id: number;
    differs: boolean;
    kl_lower_bound: number;
    base_token_prob_base: number;
    base_token_prob: number | null;
    base_token_prob_below: number | null;
  }[];
}

export interface EffectsRow {
  step: number;
  baseId: number;
  id: number;
  baseLabel: string;
  label: string;
  differs: boolean;
  firstDiff: boolean;
  /** a step before the branch point: its output was taken from the base */
  reused: boolean;
  kl: number;
  /** kl / the largest kl of the reply (0..1), the bar's length */
  klFrac: number;
  probBefore: number;
  /** the base token's probability in this run; null: below `probBelow` */
  probAfter: number | null;
  probBelow: number | null;
  /** "96.9% → 95.0%", "96.9% → < 0.21%" */
  probText: string;
}

/** "< 0.21%" for a probability only bounded from above, else formatProb. */
export function formatProbAfter(p: number | null, below: number | null): string {
  if (p !== null && p !== undefined && Number.isFinite(p)) return formatProb(p);
  if (below !== null && below !== undefined && Number.isFinite(below)) return '< ' + formatProb(below);
  return '–';
}

/** A KL value in nats for a cell: 4 significant digits, "0" for 0. */
export function formatKl(x: number): string {
  if (!Number.isFinite(x)) return '–';
  if (x === 0) return '0';
  if (Math.abs(x) >= 0.001) return x.toFixed(4);
  return x.toExponential(2);
}

/**
 * The Effects tab's rows: one per step of the reply, token labels from the
 * two runs' documents (`tokens`: prompt then outputs; output t is
 * tokens[n_prompt + t]).
 */
export function effectsRows(
  e: EffectsReply,
  base: { n_prompt: number; tokens: { id: number; label: string }[] },
  run: { n_prompt: number; tokens: { id: number; label: string }[] },
  branchStep: number | null,
): EffectsRow[] {
  let max = 0;
  for (const s of e.steps) if (Number.isFinite(s.kl_lower_bound) && s.kl_lower_bound > max) max = s.kl_lower_bound;
  const lab = (doc: { n_prompt: number; tokens: { id: number; label: string }[] }, t: number, id: number) => {
    const tk = doc.tokens[doc.n_prompt + t];
    return tk && tk.id === id ? tk.label : `#${id}`;
  };
  return e.steps.map((s) => {
    const kl = Number.isFinite(s.kl_lower_bound) ? s.kl_lower_bound : 0;
    return {
      step: s.step,
      baseId: s.base_id,
      id: s.id,
      baseLabel: lab(base, s.step, s.base_id),
      label: lab(run, s.step, s.id),
      differs: s.differs,
      firstDiff: e.first_diff !== null && s.step === e.first_diff,
      reused: branchStep !== null && s.step < branchStep,
      kl,
      klFrac: max > 0 ? Math.max(0, kl) / max : 0,
      probBefore: s.base_token_prob_base,
      probAfter: s.base_token_prob,
      probBelow: s.base_token_prob_below,
      probText: `${formatProb(s.base_token_prob_base)} → ${formatProbAfter(s.base_token_prob, s.base_token_prob_below)}`,
    };
  });
}

// ---------------------------------------------------------------- rollout

/**
 * A step's rollout (`rollout`: positions 0..P, P = n_prompt - 1 + step) as
 * the graph's two rows: prompt[k] = rollout[k] (k < n_prompt; BOS 0, as in
 * the split view it has no edge), output[j] = rollout[n_prompt + j] (j <
 * step). The weights are the rollout's own (shares of the whole row, not
 * renormalized per part).
 */
export function rolloutRows(rollout: ArrayLike<number>, nPrompt: number, step: number): { prompt: Float32Array; output: Float32Array } {
  const prompt = new Float32Array(nPrompt);
  const output = new Float32Array(Math.max(0, step));
  for (let k = 1; k < nPrompt && k < rollout.length; k++) prompt[k] = Number(rollout[k]) || 0;
  for (let j = 0; j < step && nPrompt + j < rollout.length; j++) output[j] = Number(rollout[nPrompt + j]) || 0;
  return { prompt, output };
}

/** The steps whose rows a view of the graph draws (rollout is read per step): current, all up to t, or a selection's. */
export function rolloutStepsNeeded(
  t: number,
  mode: 'current' | 'all',
  selected: { side: 'input' | 'output'; index: number } | null,
): number[] {
  if (t < 0) return [];
  if (selected && selected.side === 'output') return selected.index >= 0 && selected.index <= t ? [selected.index] : [];
  if (selected || mode === 'all') return Array.from({ length: t + 1 }, (_, i) => i);
  return [t];
}
