import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiError, ByteLru, cachedRunOf, HttpClient, urlNamesRun } from '../src/api';

function reply(status: number, body: unknown): Response {
  return new Response(typeof body === 'string' ? body : JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

describe('ByteLru', () => {
  it('forgets the least recently used beyond its byte budget', () => {
    const c = new ByteLru<string>(100);
    c.set('a', 'A', 40);
    c.set('b', 'B', 40);
    expect(c.get('a')).toBe('A'); // a is now the most recent
    c.set('c', 'C', 40);
    expect(c.get('b')).toBeUndefined();
    expect([c.get('a'), c.get('c'), c.bytes]).toEqual(['A', 'C', 80]);
    c.set('huge', 'H', 101); // larger than the whole budget: not kept, nothing dropped
    expect([c.get('huge'), c.size]).toEqual([undefined, 2]);
    c.set('a', 'A2', 10);
    expect([c.get('a'), c.bytes]).toEqual(['A2', 50]);
    c.deleteWhere((k) => k === 'c');
    expect([c.size, c.bytes]).toEqual([1, 10]);
  });
});

describe('which URLs are cached', () => {
  it('a stored run and its data; not the list, the model, downloads, re-runs', () => {
    expect(cachedRunOf('api/runs/r1')).toBe('r1');
    expect(cachedRunOf('api/runs/r%3A1/stats?layer=1')).toBe('r:1');
    expect(cachedRunOf('api/runs/r1/logit-lens?from=0&to=8')).toBe('r1');
    expect(cachedRunOf('api/runs?limit=100')).toBeNull();
    expect(cachedRunOf('api/model')).toBeNull();
    expect(cachedRunOf('api/runs/r1/download?format=run')).toBeNull();
    expect(cachedRunOf('api/runs/r1/verify?step=1')).toBeNull();
    expect(cachedRunOf('api/runs/r1/provenance')).toBeNull();
    expect(cachedRunOf('api/runs/upload')).toBeNull();
    expect(urlNamesRun('api/runs/b/effects?base=r1', 'r1')).toBe(true);
    expect(urlNamesRun('api/runs/b/effects?base=r10', 'r1')).toBe(false);
    expect(urlNamesRun('api/runs/r1/graph', 'r1')).toBe(true);
  });
});

describe('HttpClient', () => {
  afterEach(() => vi.restoreAllMocks());

  it('reads a run once, shares a read in flight, forgets it when the run is dropped', async () => {
    const f = vi.fn(async (_url: string) => reply(200, { id: 'r1', n: f.mock.calls.length }));
    const c = new HttpClient(1 << 20, f);
    const [a, b] = await Promise.all([c.getJson<{ n: number }>('api/runs/r1'), c.getJson<{ n: number }>('/api/runs/r1')]);
    expect(f).toHaveBeenCalledTimes(1);
    expect(a).toBe(b);
    expect(await c.getJson('api/runs/r1')).toBe(a);
    expect(f).toHaveBeenCalledTimes(1);
    await c.getJson('api/runs/r2/stats');
    c.invalidateRun('r1');
    await c.getJson('api/runs/r1');
    expect(f).toHaveBeenCalledTimes(3);
    await c.getJson('api/runs/r2/stats'); // another run's entry stays
    expect(f).toHaveBeenCalledTimes(3);
  });

  it('does not cache the run list, errors, or a read the run was dropped during', async () => {
    let status = 404;
    const f = vi.fn(async () => reply(status, status === 200 ? { ok: 1 } : { error: { message: 'no run r1', code: 'run_not_found', param: 'id' } }));
    const c = new HttpClient(1 << 20, f);
    await c.getJson('api/runs?limit=100').catch(() => {});
    await c.getJson('api/runs?limit=100').catch(() => {});
    expect(f).toHaveBeenCalledTimes(2);
    const err = (await c.getJson('api/runs/r1').catch((e) => e)) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect([err.status, err.code, err.param, err.message]).toEqual([404, 'run_not_found', 'id', 'no run r1']);
    status = 200;
    const p = c.getJson('api/runs/r1');
    c.invalidateRun('r1');
    await p;
    await c.getJson('api/runs/r1');
    expect(f).toHaveBeenCalledTimes(5);
  });

  it('a read with a signal is its own; binary replies are cached apart from JSON', async () => {
    const f = vi.fn(async () => new Response(new Uint8Array([1, 2, 3]), { status: 200 }));
    const c = new HttpClient(1 << 20, f);
    const ctl = new AbortController();
    await Promise.all([c.getBinary('api/runs/r1/attention?format=bin', ctl.signal), c.getBinary('api/runs/r1/attention?format=bin', ctl.signal)]);
    expect(f).toHaveBeenCalledTimes(2);
    const b = await c.getBinary('api/runs/r1/attention?format=bin');
    expect(new Uint8Array(b)).toEqual(new Uint8Array([1, 2, 3]));
    expect(f).toHaveBeenCalledTimes(2);
    expect(c.cache.bytes).toBe(3);
  });

  it('POSTs are never cached; a refusal names its param', async () => {
    const f = vi.fn(async () => reply(400, { error: { message: 'bad text', param: 'text' } }));
    const c = new HttpClient(1 << 20, f);
    const e = (await c.postJson('api/tokenize', { text: '' }).catch((x) => x)) as ApiError;
    expect(e).toBeInstanceOf(ApiError);
    expect(e.param).toBe('text');
    expect((f.mock.calls[0] as unknown[])[1]).toMatchObject({ method: 'POST' });
  });
});
