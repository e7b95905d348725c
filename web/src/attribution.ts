// Attribution from the UI (pure, tested by Vitest): what the graph's line
// width measures (attention or value-weighted attention), the ablation check
// of a step's top sources (GET /api/runs/{id}/verify), the documents a chat
// generation reads (POST /api/runs "documents") and where each generated
// sentence came from in them (GET /api/runs/{id}/provenance).
import { formatProb } from './analysis';

// ---------------------------------------------------------------- measure

/**
 * What a weight measures: the post-softmax attention a_ij, or value-weighted
 * attention a_ij x |W_O^h v_j| (docs/ANALYSIS.md, "Value-weighted attention"):
 * `&measure=value` on /graph, /attention, /heatmap and /verify.
 */
export type Measure = 'attention' | 'value';

export function isMeasure(v: unknown): v is Measure {
  return v === 'attention' || v === 'value';
}

/** The measure's name in a hover, a legend, a table header ("attention 0.12" vs "value-weighted 0.12"). */
export const MEASURE_NAME: Record<Measure, string> = {
  attention: 'attention',
  value: 'value-weighted',
};

/** One line on what the measure is, for titles and notes. */
export const MEASURE_NOTE: Record<Measure, string> = {
  attention: 'attention: the post-softmax weight a_ij of each source',
  value: 'value-weighted attention: a_ij × |W_O^h v_j|, what each source adds to the head’s output (docs/ANALYSIS.md)',
};

/** The `&measure=…` argument of a view request ('' for attention, the server's default). */
export function measureQuery(m: Measure): string {
  return m === 'value' ? '&measure=value' : '';
}

/**
 * Whether an error reply refuses the measure (a run without value norms
 * answers 400 with "param": "measure"): the UI falls back to attention.
 */
export function refusesMeasure(err: unknown): boolean {
  const e = err as { status?: number; param?: string } | null;
  return !!e && e.status === 400 && e.param === 'measure';
}

// ---------------------------------------------------------------- verify (ablation check of a step)

/** One source of GET /api/runs/{id}/verify: its weight, and the step without it. */
export interface VerifySource {
  pos: number;
  label: string;
  /** its weight in the step's row (the reply's measure) */
  weight: number;
  /** the chosen token's log-probability when the step's query may not attend to it (all layers and heads) */
  logprob: number;
  /** base_logprob - logprob */
  drop: number;
  /** the most likely token then */
  top_id: number;
  top_label: string;
  still_chosen: boolean;
}

export interface VerifyReply {
  step: number;
  /** the query position that chose the step's token */
  pos: number;
  token: { id: number; label: string };
  /** as recorded */
  logprob: number;
  /** recomputed without any ablation (what the drops are measured from) */
  base_logprob: number;
  k: number;
  measure: Measure;
  sources: VerifySource[];
}

/**
 * The path of the check of step `step`'s top `k` sources, ranked by
 * `measure` in the row of a layer / head selection (null: the mean of all;
 * the knockout itself is always of every layer and head).
 */
export function verifyPath(runId: string, step: number, k: number, measure: Measure, layer: number | null = null, head: number | null = null): string {
  const sel = layer === null ? '' : `&layer=${Math.trunc(layer)}` + (head === null ? '' : `&head=${Math.trunc(head)}`);
  return `api/runs/${encodeURIComponent(runId)}/verify?step=${Math.trunc(step)}&k=${Math.trunc(k)}&measure=${measure}${sel}`;
}

function num(x: unknown, what: string): number {
  const v = typeof x === 'number' ? x : typeof x === 'string' && x.trim() !== '' ? Number(x) : NaN;
  if (!Number.isFinite(v)) throw new Error(`the verify reply has no number ${what}`);
  return v;
}

function str(x: unknown): string {
  return typeof x === 'string' ? x : x === null || x === undefined ? '' : String(x);
}

/** Reads a /verify reply (throws, naming the field, when it is not one). */
export function parseVerify(x: unknown): VerifyReply {
  const o = (x ?? {}) as Record<string, unknown>;
  if (!Array.isArray(o.sources)) throw new Error('the verify reply has no sources');
  const tok = (o.token ?? {}) as Record<string, unknown>;
  return {
    step: num(o.step, 'step'),
    pos: num(o.pos, 'pos'),
    token: { id: num(tok.id, 'token.id'), label: str(tok.label) },
    logprob: num(o.logprob, 'logprob'),
    base_logprob: num(o.base_logprob ?? o.logprob, 'base_logprob'),
    k: num(o.k ?? o.sources.length, 'k'),
    measure: o.measure === 'value' ? 'value' : 'attention',
    sources: o.sources.map((s, i) => {
      const r = (s ?? {}) as Record<string, unknown>;
      return {
        pos: num(r.pos, `sources[${i}].pos`),
        label: str(r.label),
        weight: num(r.weight, `sources[${i}].weight`),
        logprob: num(r.logprob, `sources[${i}].logprob`),
        drop: num(r.drop, `sources[${i}].drop`),
        top_id: num(r.top_id ?? -1, `sources[${i}].top_id`),
        top_label: str(r.top_label),
        still_chosen: r.still_chosen === true,
      };
    }),
  };
}

/** A row of the Verify sources table. */
export interface VerifyRow {
  rank: number;
  pos: number;
  label: string;
  /** "input 3" or "output of step 2" (1-based steps, as on screen) */
  where: string;
  side: 'input' | 'output';
  /** the graph's index of the token on its side */
  index: number;
  weight: number;
  logprob: number;
  drop: number;
  /** drop / the largest drop of the reply (0..1; 0 for a rise), the bar's length */
  dropFrac: number;
  /** "97.0% → 6.72%": the chosen token's probability, then without the source */
  probText: string;
  stillChosen: boolean;
  topId: number;
  topLabel: string;
}

/** The table's rows, in the reply's order (heaviest source first). */
export function verifyRows(r: VerifyReply, nPrompt: number): VerifyRow[] {
  let max = 0;
  for (const s of r.sources) if (Number.isFinite(s.drop) && s.drop > max) max = s.drop;
  return r.sources.map((s, i) => {
    const input = s.pos < nPrompt;
    return {
      rank: i + 1,
      pos: s.pos,
      label: s.label,
      where: input ? `input ${s.pos}` : `output of step ${s.pos - nPrompt + 1}`,
      side: input ? 'input' : 'output',
      index: input ? s.pos : s.pos - nPrompt,
      weight: s.weight,
      logprob: s.logprob,
      drop: s.drop,
      dropFrac: max > 0 && s.drop > 0 ? Math.min(1, s.drop / max) : 0,
      probText: `${formatProb(Math.exp(r.base_logprob))} → ${formatProb(Math.exp(s.logprob))}`,
      stillChosen: s.still_chosen,
      topId: s.top_id,
      topLabel: s.top_label,
    };
  });
}

/** A log-probability or a drop in nats for a cell: 2 decimals, 3 significant digits below 0.01. */
export function formatNats(x: number): string {
  if (!Number.isFinite(x)) return '–';
  if (x === 0) return '0';
  const a = Math.abs(x);
  const s = a >= 0.01 ? a.toFixed(2) : a.toPrecision(2);
  return (x < 0 ? '−' : '') + s;
}

/** A verify reply's summary: how many of its sources the token survives without. */
export function verifySummary(r: VerifyReply): string {
  const n = r.sources.length;
  const kept = r.sources.filter((s) => s.still_chosen).length;
  if (n === 0) return 'No sources to check.';
  const lost = n - kept;
  if (lost === 0) return `The token stays the model’s choice without any one of these ${n} sources.`;
  return `Without ${lost === 1 ? 'one' : lost} of these ${n} sources the model would choose another token.`;
}

// ---------------------------------------------------------------- documents (POST /api/runs)

/** A named document sent with chat messages: the server puts it into the prompt and records where it is. */
export interface DocumentInput {
  name: string;
  text: string;
}

/** Request bodies are limited to 1 MiB (docs/API.md); the documents may take this much of it. */
export const MAX_DOCUMENT_BYTES = 960 * 1024;
/** The server's limits (src/api_gen.c): a name of at most 200 bytes (UTF-8), at most 32 documents. */
export const MAX_DOCUMENT_NAME = 200;
export const MAX_DOCUMENTS = 32;

export type DocumentsCheck =
  | { ok: true; docs: DocumentInput[] }
  | { ok: false; message: string; index: number; field: 'name' | 'text' };

/**
 * Checks the Generate form's documents: at most 32, each with a name
 * (unique, at most 200 bytes) and some text (no NUL), and together they must
 * fit the request body. Names are trimmed; text is sent as typed. `index` is
 * the document to mark (-1: all of them).
 */
export function checkDocuments(docs: readonly DocumentInput[]): DocumentsCheck {
  const out: DocumentInput[] = [];
  const seen = new Set<string>();
  let bytes = 0;
  const enc = new TextEncoder();
  if (docs.length > MAX_DOCUMENTS)
    return { ok: false, index: -1, field: 'text', message: `At most ${MAX_DOCUMENTS} documents (the server’s limit): remove ${docs.length - MAX_DOCUMENTS}.` };
  for (let i = 0; i < docs.length; i++) {
    const name = docs[i].name.trim();
    const text = docs[i].text;
    const n = i + 1;
    if (name === '') return { ok: false, index: i, field: 'name', message: `Document ${n} needs a name.` };
    if (enc.encode(name).length > MAX_DOCUMENT_NAME)
      return { ok: false, index: i, field: 'name', message: `Document ${n}’s name is longer than ${MAX_DOCUMENT_NAME} bytes.` };
    if (seen.has(name))
      return { ok: false, index: i, field: 'name', message: `Two documents are named “${name}”: the Sources tab tells them apart by name.` };
    if (text.trim() === '') return { ok: false, index: i, field: 'text', message: `Document “${name}” is empty: type or load its text, or remove it.` };
    if (text.includes('\0')) return { ok: false, index: i, field: 'text', message: `Document “${name}” holds a NUL character: is it a text file?` };
    seen.add(name);
    bytes += enc.encode(text).length + enc.encode(name).length;
    out.push({ name, text });
  }
  if (bytes > MAX_DOCUMENT_BYTES)
    return {
      ok: false,
      index: -1,
      field: 'text',
      message: `The documents hold ${Math.ceil(bytes / 1024)} KB; a request may carry about ${MAX_DOCUMENT_BYTES / 1024} KB (the server takes bodies up to 1 MiB).`,
    };
  return { ok: true, docs: out };
}

/** A document's default name from an uploaded file ("notes.txt" -> "notes"). */
export function documentName(fileName: string): string {
  const base = fileName.replace(/^.*[\\/]/, '');
  const stem = base.replace(/\.(txt|text|md)$/i, '');
  let name = stem || base || 'document';
  const enc = new TextEncoder();
  while (enc.encode(name).length > MAX_DOCUMENT_NAME) name = Array.from(name).slice(0, -1).join('');
  return name;
}

// ---------------------------------------------------------------- provenance

/** A document's place in the run: tokens first .. first + n_tok - 1. */
export interface ProvDocument {
  name: string;
  first: number;
  n_tok: number;
}

/** A span of a document a sentence drew on; score: its share of the sentence's value-weighted attention into document text. */
export interface ProvSource {
  doc: string;
  first: number;
  n_tok: number;
  text: string;
  score: number;
}

/** The ablation check of a sentence's top source (with ?verify=1). */
export interface ProvVerified {
  doc: string;
  first: number;
  n_tok: number;
  /** the fall of the sentence's total log-probability when its tokens may not attend to the span */
  drop: number;
}

export interface ProvSentence {
  first: number;
  n_tok: number;
  text: string;
  sources: ProvSource[];
  verified?: ProvVerified | null;
}

export interface ProvenanceReply {
  documents: ProvDocument[];
  sentences: ProvSentence[];
  /** what the scores weigh: value-weighted attention, or attention for a run without value norms (absent: value) */
  measure?: Measure;
}

/** The path of a run's provenance (verify: with the ablation check of each sentence's top source). */
export function provenancePath(runId: string, verify: boolean): string {
  return `api/runs/${encodeURIComponent(runId)}/provenance${verify ? '?verify=1' : ''}`;
}

function int(x: unknown, what: string): number {
  const v = num(x, what);
  if (!Number.isInteger(v) || v < 0) throw new Error(`the provenance reply’s ${what} is not a position`);
  return v;
}

/** Reads a /provenance reply (throws, naming the field, when it is not one). */
export function parseProvenance(x: unknown): ProvenanceReply {
  const o = (x ?? {}) as Record<string, unknown>;
  if (!Array.isArray(o.documents)) throw new Error('the provenance reply has no documents list');
  if (!Array.isArray(o.sentences)) throw new Error('the provenance reply has no sentences list');
  const documents = o.documents.map((d, i) => {
    const r = (d ?? {}) as Record<string, unknown>;
    return { name: str(r.name), first: int(r.first, `documents[${i}].first`), n_tok: int(r.n_tok, `documents[${i}].n_tok`) };
  });
  const sentences = o.sentences.map((s, i) => {
    const r = (s ?? {}) as Record<string, unknown>;
    const srcs = Array.isArray(r.sources) ? r.sources : [];
    const v = r.verified as Record<string, unknown> | null | undefined;
    return {
      first: int(r.first, `sentences[${i}].first`),
      n_tok: int(r.n_tok, `sentences[${i}].n_tok`),
      text: str(r.text),
      sources: srcs.map((q, j) => {
        const t = (q ?? {}) as Record<string, unknown>;
        const w = `sentences[${i}].sources[${j}]`;
        return { doc: str(t.doc), first: int(t.first, w + '.first'), n_tok: int(t.n_tok, w + '.n_tok'), text: str(t.text), score: num(t.score, w + '.score') };
      }),
      verified:
        v && typeof v === 'object'
          ? { doc: str(v.doc), first: int(v.first, `sentences[${i}].verified.first`), n_tok: int(v.n_tok, `sentences[${i}].verified.n_tok`), drop: num(v.drop, `sentences[${i}].verified.drop`) }
          : null,
    };
  });
  const out: ProvenanceReply = { documents, sentences };
  if (o.measure === 'attention' || o.measure === 'value') out.measure = o.measure;
  return out;
}

/** A document's tokens on screen: its positions with the run's labels. */
export interface DocTokens {
  name: string;
  first: number;
  n_tok: number;
  tokens: { pos: number; label: string }[];
}

/** Every document's tokens from the run's token list (prompt, then outputs); positions past the list are left out. */
export function documentTokens(docs: readonly ProvDocument[], tokens: readonly { label: string }[]): DocTokens[] {
  return docs.map((d) => {
    const toks: { pos: number; label: string }[] = [];
    for (let p = d.first; p < d.first + d.n_tok && p < tokens.length; p++) toks.push({ pos: p, label: tokens[p]?.label ?? '' });
    return { name: d.name, first: d.first, n_tok: d.n_tok, tokens: toks };
  });
}

/**
 * The shading of the document tokens for one sentence: position -> the
 * score of the source span covering it (the largest when spans overlap) and
 * its strength (score / the sentence's largest score, 0..1), and which
 * source (index in the sentence's list) it belongs to.
 */
export function sourceShades(s: ProvSentence | null | undefined): Map<number, { score: number; strength: number; source: number }> {
  const m = new Map<number, { score: number; strength: number; source: number }>();
  if (!s) return m;
  let max = 0;
  for (const q of s.sources) if (Number.isFinite(q.score) && q.score > max) max = q.score;
  s.sources.forEach((q, i) => {
    if (!(q.score > 0)) return;
    for (let p = q.first; p < q.first + q.n_tok; p++) {
      const had = m.get(p);
      if (!had || q.score > had.score) m.set(p, { score: q.score, strength: max > 0 ? q.score / max : 0, source: i });
    }
  });
  return m;
}

/** The document that holds a position, or null. */
export function documentAt(docs: readonly ProvDocument[], pos: number): ProvDocument | null {
  for (const d of docs) if (pos >= d.first && pos < d.first + d.n_tok) return d;
  return null;
}

/** The index of the sentence to select first: the first with a source, else 0 (-1: none). */
export function firstSentence(r: ProvenanceReply): number {
  if (r.sentences.length === 0) return -1;
  const i = r.sentences.findIndex((s) => s.sources.length > 0);
  return i >= 0 ? i : 0;
}

/** A share as a percentage for the score column ("62%", "4.5%", "<0.1%"). */
export function formatShare(x: number): string {
  if (!Number.isFinite(x)) return '–';
  const pc = x * 100;
  if (pc >= 10) return pc.toFixed(0) + '%';
  if (pc >= 0.1) return pc.toFixed(1) + '%';
  return x > 0 ? '<0.1%' : '0%';
}

/** The provenance as CSV rows: one per (sentence, source). */
export function provenanceRows(r: ProvenanceReply): (string | number)[][] {
  const rows: (string | number)[][] = [['sentence', 'sentence_first', 'sentence_n_tok', 'sentence_text', 'doc', 'source_first', 'source_n_tok', 'source_text', 'score', 'verified_drop']];
  r.sentences.forEach((s, i) => {
    const v = s.verified;
    if (s.sources.length === 0) rows.push([i, s.first, s.n_tok, s.text, '', '', '', '', '', '']);
    for (const q of s.sources) {
      const isV = !!v && v.doc === q.doc && v.first === q.first && v.n_tok === q.n_tok;
      rows.push([i, s.first, s.n_tok, s.text, q.doc, q.first, q.n_tok, q.text, q.score, isV ? v!.drop : '']);
    }
  });
  return rows;
}
