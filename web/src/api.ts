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

/** The server's explanation of a refused request, as an ApiError. */
export async function errorOf(r: Response): Promise<ApiError> {
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

/**
 * The one call of fetch() in the UI's own code (graph.ts and its worker read
 * the graph's ranges themselves). The exported offline file replaces
 * window.fetch with its shim before this runs, so it is looked up per call.
 */
export function rawFetch(url: string, init?: RequestInit): Promise<Response> {
  return fetch(url, init);
}

// ------------------------------------------------------------------ the response cache

/**
 * Least recently used out first, bounded by a total size in bytes (an entry
 * larger than the whole budget is not kept).
 */
export class ByteLru<V> {
  private map = new Map<string, { v: V; bytes: number }>();
  private total = 0;
  constructor(readonly budget: number) {}
  get size(): number {
    return this.map.size;
  }
  get bytes(): number {
    return this.total;
  }
  get(k: string): V | undefined {
    const e = this.map.get(k);
    if (!e) return undefined;
    this.map.delete(k);
    this.map.set(k, e);
    return e.v;
  }
  set(k: string, v: V, bytes: number): void {
    this.delete(k);
    if (bytes > this.budget) return;
    this.map.set(k, { v, bytes });
    this.total += bytes;
    for (const [key, e] of this.map) {
      if (this.total <= this.budget) break;
      this.map.delete(key);
      this.total -= e.bytes;
    }
  }
  delete(k: string): void {
    const e = this.map.get(k);
    if (!e) return;
    this.map.delete(k);
    this.total -= e.bytes;
  }
  /** Drops every entry whose key `drop` accepts. */
  deleteWhere(drop: (k: string) => boolean): void {
    for (const k of Array.from(this.map.keys())) if (drop(k)) this.delete(k);
  }
  clear(): void {
    this.map.clear();
    this.total = 0;
  }
}

/** A route's URL relative to the page ("api/..."; a leading slash is dropped), as every request names it. */
export function apiUrl(path: string): string {
  return path.replace(/^\/+/, '');
}

/**
 * The run a URL reads immutable data of ("api/runs/ID" and its sub-routes but
 * the download, /verify and /provenance), else null: the run list, the
 * model, POSTs are never cached.
 */
export function cachedRunOf(url: string): string | null {
  const m = /^api\/runs\/([^/?]+)(\/[a-z-]+)?(\?|$)/.exec(url);
  // /verify and /provenance re-run the model (their views keep their parsed replies): not kept here
  if (!m || m[1] === 'upload' || m[2] === '/download' || m[2] === '/verify' || m[2] === '/provenance') return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

/** Whether a cached URL depends on run `id` (its own routes, or another run's Effects against it). */
export function urlNamesRun(url: string, id: string): boolean {
  const e = encodeURIComponent(id);
  return cachedRunOf(url) === id || url.includes(`base=${e}&`) || url.endsWith(`base=${e}`);
}

/** What one kind of reply is read as. */
type Body = 'json' | 'bin';

/**
 * The HTTP client: every request of the UI goes through it. GET replies of a
 * stored run's data (immutable once stored) are kept in one LRU keyed by URL,
 * 64 MB at most, and dropped when the run is deleted or changes
 * (`invalidateRun`). Requests without a signal share one reply while in
 * flight; a request with a signal is its own (aborting it cancels only it).
 */
export class HttpClient {
  readonly cache: ByteLru<unknown>;
  private inflight = new Map<string, Promise<unknown>>();
  /** runs dropped while a read of them was in flight: that reply is not kept */
  private epoch = 0;
  constructor(budget = 64 << 20, private fetcher: (url: string, init?: RequestInit) => Promise<Response> = rawFetch) {
    this.cache = new ByteLru(budget);
  }

  /** A reply as it comes, with the server's refusal as ApiError (network errors as they are). */
  async request(url: string, init?: RequestInit): Promise<Response> {
    const r = await this.fetcher(apiUrl(url), init);
    if (!r.ok) throw await errorOf(r);
    return r;
  }

  private async read(url: string, body: Body, signal: AbortSignal | undefined, accept: string): Promise<unknown> {
    const r = await this.request(url, { signal, headers: { Accept: accept } });
    if (body === 'bin') {
      const b = await r.arrayBuffer();
      return { v: b, bytes: b.byteLength };
    }
    const text = await r.text();
    return { v: JSON.parse(text) as unknown, bytes: text.length * 2 + 64 };
  }

  private async get(path: string, body: Body, signal: AbortSignal | undefined, accept: string): Promise<unknown> {
    const url = apiUrl(path);
    const key = body + ' ' + url;
    const cacheable = cachedRunOf(url) !== null;
    if (cacheable) {
      const hit = this.cache.get(key);
      if (hit !== undefined) return hit;
    }
    if (!signal) {
      const p = this.inflight.get(key);
      if (p) return p;
    }
    const epoch = this.epoch;
    const p = this.read(url, body, signal, accept).then((x) => {
      const { v, bytes } = x as { v: unknown; bytes: number };
      if (cacheable && epoch === this.epoch) this.cache.set(key, v, bytes);
      return v;
    });
    if (!signal) {
      this.inflight.set(key, p);
      const done = () => {
        if (this.inflight.get(key) === p) this.inflight.delete(key);
      };
      p.then(done, done);
    }
    return p;
  }

  /** GET a JSON reply (a stored run's data: from the cache when there). */
  getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.get(path, 'json', signal, 'application/json') as Promise<T>;
  }

  /** GET a binary reply (a stored run's data: from the cache when there). */
  getBinary(path: string, signal?: AbortSignal, accept = '*/*'): Promise<ArrayBuffer> {
    return this.get(path, 'bin', signal, accept) as Promise<ArrayBuffer>;
  }

  async postJson<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    const r = await this.request(path, {
      method: 'POST',
      signal,
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body),
    });
    return (await r.json()) as T;
  }

  /** Forgets what was read of run `id` (deleted, or no longer what was read). */
  invalidateRun(id: string): void {
    this.epoch++;
    this.cache.deleteWhere((k) => urlNamesRun(k.slice(k.indexOf(' ') + 1), id));
    for (const k of Array.from(this.inflight.keys())) if (urlNamesRun(k.slice(k.indexOf(' ') + 1), id)) this.inflight.delete(k);
  }
}

/** The page's client. */
export const http = new HttpClient();

const getJson = <T>(path: string, signal?: AbortSignal): Promise<T> => http.getJson<T>(path, signal);
const postJson = <T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> => http.postJson<T>(path, body, signal);

export const api = {
  /** Any GET of JSON (views' own routes). */
  get: getJson,
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
      r = await rawFetch(`api/runs/${encodeURIComponent(id)}/download?format=${format}`, { signal });
    } catch (err) {
      if (err instanceof Error && err.name === 'AbortError') throw err;
      throw new ApiError(`the download failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (!r.ok) throw await errorOf(r);
    return r.blob();
  },
  /** Deletes a stored run; what was read of it is forgotten. */
  deleteRun: async (id: string) => {
    await http.request(`api/runs/${encodeURIComponent(id)}`, { method: 'DELETE' });
    http.invalidateRun(id);
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
    r = await rawFetch('api/runs/upload', {
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
  const r = await rawFetch('api/runs', {
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
