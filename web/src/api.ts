// The heed HTTP API (same origin): JSON routes and the POST /api/runs event stream.
import { measureQuery, parseProvenance, parseVerify, provenancePath, verifyPath, type DocumentInput, type Measure, type ProvenanceReply, type VerifyReply } from './attribution';
import type { EffectsReply, Intervention } from './interventions';
import type { GraphReply, Step, Token, TokenEvent } from './model';
import { SseParser } from './sse';

export interface ModelInfo {
  id: string;
  name?: string;
  arch: string;
  n_layer: number;
  n_head: number;
  n_head_kv?: number;
  n_vocab: number;
  n_ctx: number;
  chat_template: string | null;
  bos?: number;
  eos?: number;
  limits?: { max_tokens?: number; max_prompt?: number; attention_tokens_top_k?: number };
  /** keys each layer's query sees (0 = every earlier position) */
  layer_window?: number[];
  attn_softcap?: number;
  final_softcap?: number;
  n_expert?: number;
  n_expert_used?: number;
}

export interface RunSummary {
  id: string;
  kind?: string;
  created?: number;
  model?: string;
  n_prompt: number;
  n_output: number;
  stop?: string;
  preview?: string | null;
  /** a branch: the run it was made from, and the step (0-based output) it branched at */
  parent?: string | null;
  step?: number | null;
}

export interface RunDoc {
  id: string;
  kind?: string;
  created?: number;
  model?: string;
  prompt?: string | null;
  messages?: { role: string; content: string }[] | null;
  params?: Record<string, number>;
  max_tokens?: number;
  n_prompt: number;
  n_output: number;
  stop?: string;
  tokens: Token[];
  text?: string;
  steps: Step[];
  /** a mixture-of-experts run: GET /api/runs/{id}/experts has its routing */
  experts?: { n_expert: number; n_used: number } | null;
  /** a branch of a stored run: where it starts */
  branch?: { run: string; step: number; token?: number | null } | null;
  /** the interventions the run was made with */
  interventions?: Intervention[] | null;
  /** the documents a chat run was given, where they are (GET /api/runs/{id}/provenance has the detail) */
  documents?: { name: string; first?: number; n_tok?: number }[] | null;
}

/** Where a branch run starts: step `step` of stored run `run` (token: forced there, else sampled). */
export interface BranchFrom {
  run: string;
  step: number;
  token?: number;
}

/** The sampler settings every generation request carries (a new run's or a branch's). */
export interface SamplingRequest {
  max_tokens: number;
  temperature: number;
  top_k: number;
  top_p: number;
  min_p: number;
  seed: number;
  attention_split: true;
}

export interface GenerateRequest extends SamplingRequest {
  prompt?: string;
  messages?: { role: string; content: string }[];
  /** a new run from step `step` of a stored run (token: forced there, else sampled) */
  branch?: BranchFrom;
  /** heads ablated or scaled, attention knocked out, ... (docs/API.md) */
  interventions?: Intervention[];
  /** named documents put into the prompt with `messages` (chat models); GET /provenance says where each sentence came from */
  documents?: DocumentInput[];
}

export interface DoneEvent {
  run_id: string;
  n_prompt: number;
  n_output: number;
  stop: string;
  cached?: boolean;
}

/** An error the server explained ({"error": {"message", "param", "code"}}), or a network failure. */
export class ApiError extends Error {
  status: number;
  code?: string;
  param?: string;
  constructor(message: string, status = 0, code?: string, param?: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

async function errorOf(r: Response): Promise<ApiError> {
  let text = '';
  try {
    text = await r.text();
    const j = JSON.parse(text);
    const e = j && j.error;
    if (e && typeof e.message === 'string') return new ApiError(e.message, r.status, e.code, e.param);
  } catch {
    /* not JSON */
  }
  return new ApiError(`${r.status} ${r.statusText}${text ? ': ' + text.slice(0, 200) : ''}`, r.status);
}

async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const r = await fetch(path, { signal, headers: { Accept: 'application/json' } });
  if (!r.ok) throw await errorOf(r);
  return (await r.json()) as T;
}

async function postJson<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
  const r = await fetch(path, {
    method: 'POST',
    signal,
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw await errorOf(r);
  return (await r.json()) as T;
}

export const api = {
  model: () => getJson<ModelInfo>('api/model'),
  runs: (limit = 100) => getJson<{ runs: RunSummary[]; total: number }>(`api/runs?limit=${limit}`),
  run: (id: string, signal?: AbortSignal) => getJson<RunDoc>(`api/runs/${encodeURIComponent(id)}`, signal),
  /** The split rows of every step; `measure` 'value': value-weighted attention (400 with param "measure" for a run without value norms). */
  graph: (id: string, layer: number | null, head: number | null, signal?: AbortSignal, measure: Measure = 'attention') => {
    const q = new URLSearchParams();
    if (layer !== null) q.set('layer', String(layer));
    if (layer !== null && head !== null) q.set('head', String(head));
    if (measureQuery(measure)) q.set('measure', measure);
    const qs = q.toString();
    return getJson<GraphReply>(`api/runs/${encodeURIComponent(id)}/graph${qs ? '?' + qs : ''}`, signal);
  },
  effects: (id: string, base: string, signal?: AbortSignal) =>
    getJson<EffectsReply>(`api/runs/${encodeURIComponent(id)}/effects?base=${encodeURIComponent(base)}`, signal),
  rollout: (id: string, pos: number, signal?: AbortSignal) =>
    getJson<{ pos: number; rollout: number[] }>(`api/runs/${encodeURIComponent(id)}/rollout?pos=${pos}`, signal),
  /**
   * The ablation check of step `step`'s top `k` sources by `measure` in the
   * row of a layer / head selection (GET /verify): rejects with ApiError (409 model_needed: the server's model did
   * not make the run; 400: a bad step) or the signal's AbortError.
   */
  verify: async (id: string, step: number, k: number, measure: Measure, signal?: AbortSignal, layer: number | null = null, head: number | null = null): Promise<VerifyReply> =>
    parseVerify(await getJson<unknown>(verifyPath(id, step, k, measure, layer, head), signal)),
  /** Where each generated sentence came from in the run's documents; `verify`: with the ablation check of each top source. */
  provenance: async (id: string, verify = false, signal?: AbortSignal): Promise<ProvenanceReply> =>
    parseProvenance(await getJson<unknown>(provenancePath(id, verify), signal)),
  tokenize: (text: string, signal?: AbortSignal) =>
    postJson<{ ids: number[]; tokens: { id: number; piece?: string; label: string }[] }>('api/tokenize', { text }, signal),
  /** The run as a run file ('run', docs/RUN_FORMAT.md) or as the offline HTML viewer ('html'); rejects with ApiError. */
  download: async (id: string, format: 'run' | 'html', signal?: AbortSignal): Promise<Blob> => {
    let r: Response;
    try {
      r = await fetch(`api/runs/${encodeURIComponent(id)}/download?format=${format}`, { signal });
    } catch (err) {
      if (err instanceof Error && err.name === 'AbortError') throw err;
      throw new ApiError(`the download failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (!r.ok) throw await errorOf(r);
    return r.blob();
  },
  deleteRun: async (id: string) => {
    const r = await fetch(`api/runs/${encodeURIComponent(id)}`, { method: 'DELETE' });
    if (!r.ok) throw await errorOf(r);
  },
};

/** What POST /api/runs/upload answers (201): the stored run. */
export interface UploadReply {
  id: string;
  model: string;
  n_prompt: number;
  n_output: number;
  /** made by this server's model (the logit lens needs it) */
  own_model: boolean;
}

/**
 * Stores a run file (`.heedrun`, `heed generate --save`) with POST
 * /api/runs/upload: the body is the file's bytes as they are. Resolves with
 * the new run; rejects with ApiError (400: not a run file, with the reader's
 * message; 413: too large) or a network error.
 */
export async function uploadRun(body: Blob | ArrayBuffer | Uint8Array, signal?: AbortSignal): Promise<UploadReply> {
  let r: Response;
  try {
    r = await fetch('api/runs/upload', {
      method: 'POST',
      signal,
      headers: { 'Content-Type': 'application/octet-stream', Accept: 'application/json' },
      body: body as BodyInit,
    });
  } catch (err) {
    if (err instanceof Error && err.name === 'AbortError') throw err;
    throw new ApiError(`the upload failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!r.ok) throw await errorOf(r);
  const j = (await r.json()) as Partial<UploadReply>;
  if (!j || typeof j.id !== 'string') throw new ApiError('the server did not say where it stored the run', r.status);
  return j as UploadReply;
}

export interface StreamHandlers {
  /** the server took the request (200, before any event): a failure before it leaves nothing to undo */
  accepted?: () => void;
  /** run_id: the id the run will be stored under (servers before it sent none) */
  queued?: (position: number, runId: string | null) => void;
  token: (ev: TokenEvent) => void;
  done: (ev: DoneEvent) => void;
}

/**
 * POST /api/runs and reads its event stream until `done` (resolves), an
 * `error` event or a non-200 reply (rejects with ApiError), or the signal
 * aborts (rejects with the AbortError).
 */
export async function streamRun(req: GenerateRequest, h: StreamHandlers, signal: AbortSignal): Promise<DoneEvent> {
  const r = await fetch('api/runs', {
    method: 'POST',
    signal,
    headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
    body: JSON.stringify(req),
  });
  if (!r.ok) throw await errorOf(r);
  if (!r.body) throw new ApiError('the server sent no event stream');
  h.accepted?.();
  const reader = r.body.getReader();
  const dec = new TextDecoder('utf-8');
  const parser = new SseParser();
  let done: DoneEvent | null = null;
  try {
    for (;;) {
      const { value, done: end } = await reader.read();
      const text = end ? dec.decode() : dec.decode(value, { stream: true });
      for (const ev of parser.push(text)) {
        let data: unknown;
        try {
          data = JSON.parse(ev.data);
        } catch {
          continue; // not JSON: not ours
        }
        const d = data as Record<string, unknown>;
        if (ev.event === 'queued') h.queued?.(Number(d.position) || 0, typeof d.run_id === 'string' ? d.run_id : null);
        else if (ev.event === 'token') h.token(d as unknown as TokenEvent);
        else if (ev.event === 'done') {
          done = d as unknown as DoneEvent;
          h.done(done);
        } else if (ev.event === 'error') {
          const e = (d.error || {}) as { message?: string; code?: string };
          throw new ApiError(e.message || 'the generation failed', 500, e.code);
        }
      }
      if (end || done) break;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  if (!done) throw new ApiError('the event stream ended before the run was done');
  return done;
}
