// The Generate form's state that must not be lost or silently changed: the
// sampling fields' checks (the server's limits, said beside the field), the
// typed text kept in localStorage across reloads, and the run list's branch
// tree. Pure functions and a small storage wrapper; main.ts wires them.
import type { RunSummary } from './api';

/** A field's value, or the message said beside it (the value stays as typed). */
export type FieldCheck = { ok: true; value: number } | { ok: false; message: string };

export interface FieldRule {
  /** the name the message uses */
  name: string;
  min: number;
  max: number;
  /** the minimum itself is refused (top-p: (0, 1]) */
  minOpen?: boolean;
  integer?: boolean;
  /** what the limit line beside the field says */
  limit: string;
}

/**
 * The sampling fields' rules: the server's (api_gen.c's parameter table),
 * except the seed, whose top is the largest integer a JavaScript number holds
 * exactly (a larger one would be sent as another number).
 */
export const SAMPLING_RULES = {
  temperature: { name: 'Temperature', min: 0, max: 1e6, limit: '0 to 1000000 (0: greedy)' },
  topK: { name: 'Top-k', min: 0, max: 2 ** 30, integer: true, limit: 'whole number ≥ 0 (0: off)' },
  topP: { name: 'Top-p', min: 0, max: 1, minOpen: true, limit: 'above 0, at most 1 (1: off)' },
  minP: { name: 'Min-p', min: 0, max: 1, limit: '0 to 1 (0: off)' },
  seed: { name: 'Seed', min: 0, max: Number.MAX_SAFE_INTEGER, integer: true, limit: `whole number 0 to ${Number.MAX_SAFE_INTEGER}` },
} satisfies Record<string, FieldRule>;

export type SamplingField = keyof typeof SAMPLING_RULES;
export const SAMPLING_FIELDS = Object.keys(SAMPLING_RULES) as SamplingField[];

/** Checks a number field's text against its rule: empty, not a number, a fraction where a whole number goes, out of range: refused. */
export function checkField(text: string, r: FieldRule): FieldCheck {
  const s = text.trim();
  const range = `${r.minOpen ? `above ${r.min}` : `${r.min}`} to ${r.max}`;
  if (s === '') return { ok: false, message: `Enter the ${r.name.toLowerCase()} (${range}).` };
  const v = Number(s);
  if (!Number.isFinite(v) || !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s))
    return { ok: false, message: `“${s}” is not a number: enter ${range}.` };
  if (r.integer && !Number.isInteger(v)) return { ok: false, message: `${r.name} takes a whole number: ${s} is not one (${range}).` };
  if (v < r.min || (r.minOpen && v === r.min)) return { ok: false, message: `${r.name} must be ${r.minOpen ? 'above' : 'at least'} ${r.min}: ${s} is too small.` };
  if (v > r.max) return { ok: false, message: `${r.name} must be at most ${r.max}: ${s} is too large.` };
  return { ok: true, value: v };
}

// ------------------------------------------------------------------ typed text kept across reloads

/** What the form holds that a reload must not lose. */
export interface Draft {
  prompt: string;
  chat: boolean;
  maxTokens: string;
  sampling: Partial<Record<SamplingField, string>>;
}

export const DRAFT_KEY = 'heed.draft';

/** The stored draft, or null (none, unreadable, storage off). */
export function loadDraft(store: Pick<Storage, 'getItem'> | null): Draft | null {
  try {
    const s = store?.getItem(DRAFT_KEY);
    if (!s) return null;
    const j = JSON.parse(s) as Partial<Draft>;
    if (!j || typeof j.prompt !== 'string') return null;
    const sampling: Draft['sampling'] = {};
    for (const f of SAMPLING_FIELDS) {
      const v = j.sampling?.[f];
      if (typeof v === 'string') sampling[f] = v;
    }
    return { prompt: j.prompt, chat: j.chat === true, maxTokens: typeof j.maxTokens === 'string' ? j.maxTokens : '', sampling };
  } catch {
    return null;
  }
}

/** Keeps the draft; false when the storage refused it (full, private mode). */
export function saveDraft(store: Pick<Storage, 'setItem'> | null, d: Draft): boolean {
  try {
    store?.setItem(DRAFT_KEY, JSON.stringify(d));
    return !!store;
  } catch {
    return false;
  }
}

/**
 * A run's prompt as the prompt box shows it: the text of a text run, the
 * last user message of a chat run (with `chat` set); null when the document
 * has neither.
 */
export function runPromptText(doc: { prompt?: string | null; messages?: { role: string; content: string }[] | null }): { text: string; chat: boolean } | null {
  const m = doc.messages;
  if (m && m.length) {
    for (let i = m.length - 1; i >= 0; i--) if (m[i].role === 'user') return { text: m[i].content, chat: true };
    return { text: m[m.length - 1].content, chat: true };
  }
  return typeof doc.prompt === 'string' ? { text: doc.prompt, chat: false } : null;
}

// ------------------------------------------------------------------ the run list's branch tree

export interface RunNode {
  run: RunSummary;
  children: RunNode[];
  depth: number;
}

/**
 * The runs as a forest: each branch under its parent when the parent is in
 * the list, else a root; siblings keep the list's order (newest first).
 * A cycle (impossible from the server, but the list is input) breaks at the
 * run met first.
 */
export function runTree(list: RunSummary[]): RunNode[] {
  const byId = new Map<string, RunNode>();
  for (const r of list) byId.set(r.id, { run: r, children: [], depth: 0 });
  const roots: RunNode[] = [];
  for (const r of list) {
    const n = byId.get(r.id)!;
    const p = r.parent ? byId.get(r.parent) : undefined;
    let cyc = false;
    let a = p;
    for (let k = 0; a && !cyc && k <= list.length; k++) {
      cyc = a === n;
      a = a.run.parent ? byId.get(a.run.parent) : undefined;
    }
    if (a && !cyc) cyc = true; // a loop above n that does not pass through it
    if (p && !cyc && p !== n) p.children.push(n);
    else roots.push(n);
  }
  const depth = (ns: RunNode[], d: number, seen: Set<RunNode>) => {
    for (const n of ns) {
      if (seen.has(n)) continue;
      seen.add(n);
      n.depth = d;
      depth(n.children, d + 1, seen);
    }
  };
  depth(roots, 0, new Set());
  return roots;
}

/** A short name of a run for "branch of …": its preview's start, else its id. */
export function runLabel(r: RunSummary | undefined, id: string): string {
  const p = r?.preview?.trim();
  if (!p) return id;
  return p.length > 28 ? p.slice(0, 27) + '…' : p;
}

/** What the run list shows under a branch: its parent and the step it branched at (1-based, as the step slider). */
export function branchLine(r: RunSummary, byId: Map<string, RunSummary>): string | null {
  if (!r.parent) return null;
  const p = byId.get(r.parent);
  const step = typeof r.step === 'number' ? ` at step ${r.step + 1}` : '';
  return `↳ branch of “${runLabel(p, r.parent)}” (${r.parent}${p ? '' : ', not listed'})${step}`;
}
