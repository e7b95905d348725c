// Shared pieces of the deep views: requests with the API base (through the
// page's client, src/api.ts), a small LRU cache of derived data, element
// helpers, the shared tooltip, animation frames, canvas sizing.
import { http } from '../api';
import type { ViewContext } from './types';

export { ApiError as HttpError } from '../api';

/** A route's URL: with base '' a path relative to the page ("api/..."), like src/api.ts; else base + the path. */
export function apiUrl(base: string, path: string): string {
  const rel = path.replace(/^\/+/, '');
  return base ? base.replace(/\/+$/, '') + '/' + rel : rel;
}

// The views' requests go through the page's one client (src/api.ts): a stored
// run's data comes from its cache when it was read before.

export function getJson<T>(base: string, path: string, signal?: AbortSignal): Promise<T> {
  return http.getJson<T>(apiUrl(base, path), signal);
}

export function getBinary(base: string, path: string, signal?: AbortSignal): Promise<ArrayBuffer> {
  return http.getBinary(apiUrl(base, path), signal);
}

export function postJson<T>(base: string, path: string, body: unknown, signal?: AbortSignal): Promise<T> {
  return http.postJson<T>(apiUrl(base, path), body, signal);
}

/** `/api/runs/{id}` + a sub path. */
export function runPath(runId: string, sub = ''): string {
  return `/api/runs/${encodeURIComponent(runId)}${sub}`;
}

/** The selection's query arguments (`layer`, `head` only with a layer), with a leading '&' or '' . */
export function selQuery(layer: number | null, head: number | null): string {
  if (layer === null) return '';
  return `&layer=${layer}` + (head !== null ? `&head=${head}` : '');
}

export function selKey(ctx: Pick<ViewContext, 'runId' | 'layer' | 'head'>): string {
  return `${ctx.runId}|${ctx.layer ?? '*'}|${ctx.layer === null ? '*' : (ctx.head ?? '*')}`;
}

export function selText(layer: number | null, head: number | null): string {
  if (layer === null) return 'mean of all layers and heads';
  if (head === null) return `layer ${layer}, mean of its heads`;
  return `layer ${layer}, head ${head}`;
}

/** A map that forgets its least recently used entries beyond `limit`. */
export class Lru<K, V> {
  private m = new Map<K, V>();
  constructor(private limit: number) {}
  get(k: K): V | undefined {
    const v = this.m.get(k);
    if (v !== undefined) {
      this.m.delete(k);
      this.m.set(k, v);
    }
    return v;
  }
  set(k: K, v: V): void {
    this.m.delete(k);
    this.m.set(k, v);
    while (this.m.size > this.limit) this.m.delete(this.m.keys().next().value as K);
  }
  has(k: K): boolean {
    return this.m.has(k);
  }
  delete(k: K): void {
    this.m.delete(k);
  }
}

type Attrs = Record<string, string | number | boolean | null | undefined>;

/** document.createElement with attributes (class, data-*, aria-*, ...), text and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = String(v);
    else if (k === 'text') e.textContent = String(v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

// ---------------------------------------------------------------- tooltip

let tipEl: HTMLElement | null = null;
let tipOwner: unknown = null;

function tip(): HTMLElement {
  if (!tipEl) tipEl = document.getElementById('tooltip') ?? document.body.appendChild(h('div', { class: 'tooltip', role: 'tooltip', hidden: true }));
  return tipEl;
}

/** Shows the shared tooltip: a title line and "key value" lines, near a point (client coordinates). */
export function showTip(owner: unknown, x: number, y: number, title: string, lines: (string | [string, string])[] = []): void {
  const t = tip();
  tipOwner = owner;
  t.textContent = '';
  t.append(h('div', { class: 'tip-title', text: title }));
  for (const l of lines) {
    const d = h('div');
    if (Array.isArray(l)) d.append(h('span', { class: 'k', text: l[0] + ' ' }), l[1]);
    else d.textContent = l;
    t.append(d);
  }
  t.hidden = false;
  const r = t.getBoundingClientRect();
  const W = window.innerWidth;
  const H = window.innerHeight;
  let left = x + 14;
  let top = y + 14;
  if (left + r.width > W - 6) left = Math.max(6, x - r.width - 14);
  if (top + r.height > H - 6) top = Math.max(6, y - r.height - 14);
  t.style.left = `${left}px`;
  t.style.top = `${top}px`;
}

/** Shows the tooltip next to an element (keyboard focus). */
export function showTipAt(owner: unknown, el: Element, title: string, lines: (string | [string, string])[] = []): void {
  const r = el.getBoundingClientRect();
  showTip(owner, r.left, r.bottom - 8, title, lines);
}

export function hideTip(owner?: unknown): void {
  if (owner !== undefined && owner !== tipOwner) return;
  tipOwner = null;
  tip().hidden = true;
}

// ---------------------------------------------------------------- frames

/** Runs `fn` at the next animation frame, once however often it is requested before then. */
export function frameTask(fn: () => void): { request(): void; cancel(): void } {
  let raf = 0;
  return {
    request(): void {
      if (raf) return;
      raf = requestAnimationFrame(() => {
        raf = 0;
        fn();
      });
    },
    cancel(): void {
      cancelAnimationFrame(raf);
      raf = 0;
    },
  };
}

// ---------------------------------------------------------------- canvas

/** Sizes a canvas to css px w x h at the device pixel ratio; returns its 2-D context scaled to css px. */
export function sizeCanvas(c: HTMLCanvasElement, w: number, hgt: number): CanvasRenderingContext2D {
  const dpr = Math.min(2, window.devicePixelRatio || 1);
  const W = Math.max(1, Math.round(w * dpr));
  const H = Math.max(1, Math.round(hgt * dpr));
  if (c.width !== W) c.width = W;
  if (c.height !== H) c.height = H;
  c.style.width = `${w}px`;
  c.style.height = `${hgt}px`;
  const ctx = c.getContext('2d')!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  return ctx;
}

export function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === 'AbortError';
}

/** A "loading" / "error" / "empty" note inside a view. */
export function note(text: string, cls = ''): HTMLParagraphElement {
  return h('p', { class: `note view-note ${cls}`.trim(), text });
}
