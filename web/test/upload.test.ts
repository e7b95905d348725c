import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiError, uploadRun } from '../src/api';

function reply(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

afterEach(() => vi.unstubAllGlobals());

describe('uploadRun', () => {
  it('posts the raw bytes as application/octet-stream and returns the stored run', async () => {
    const fetchMock = vi.fn(async () => reply(201, { id: 'run_1', model: 'm.gguf', n_prompt: 5, n_output: 3, own_model: true }));
    vi.stubGlobal('fetch', fetchMock);
    const bytes = new Uint8Array([0x48, 0x45, 0x45, 0x44, 1, 2, 3]);
    const r = await uploadRun(bytes);
    expect(r).toEqual({ id: 'run_1', model: 'm.gguf', n_prompt: 5, n_output: 3, own_model: true });
    expect(fetchMock).toHaveBeenCalledTimes(1);
    const [url, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe('api/runs/upload');
    expect(init.method).toBe('POST');
    expect((init.headers as Record<string, string>)['Content-Type']).toBe('application/octet-stream');
    expect(init.body).toBe(bytes); // as they are: no JSON, no form encoding
  });

  it('rejects with the server\'s message on a 400', async () => {
    vi.stubGlobal('fetch', vi.fn(async () =>
      reply(400, { error: { message: 'body: not a heed run file (bad magic)', type: 'invalid_request_error', param: 'body', code: 'invalid_run' } })));
    const p = uploadRun(new Uint8Array([1, 2, 3]));
    await expect(p).rejects.toBeInstanceOf(ApiError);
    await expect(p).rejects.toMatchObject({ status: 400, param: 'body', message: 'body: not a heed run file (bad magic)' });
  });

  it('explains a reply that is not JSON and a network failure', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => new Response('gateway down', { status: 502, statusText: 'Bad Gateway' })));
    await expect(uploadRun(new Uint8Array(1))).rejects.toMatchObject({ status: 502, message: expect.stringContaining('gateway down') });
    vi.stubGlobal('fetch', vi.fn(async () => { throw new TypeError('Failed to fetch'); }));
    await expect(uploadRun(new Uint8Array(1))).rejects.toMatchObject({ message: 'the upload failed: Failed to fetch' });
  });

  it('refuses a 201 without an id', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => reply(201, {})));
    await expect(uploadRun(new Uint8Array(1))).rejects.toBeInstanceOf(ApiError);
  });
});
