import { afterEach, describe, expect, it, vi } from 'vitest';
import { api, ApiError } from '../src/api';
import {
  checkDocuments,
  documentAt,
  documentName,
  documentTokens,
  firstSentence,
  formatNats,
  formatShare,
  isMeasure,
  MAX_DOCUMENT_BYTES,
  MEASURE_NAME,
  measureQuery,
  parseProvenance,
  parseVerify,
  provenancePath,
  provenanceRows,
  refusesMeasure,
  sourceShades,
  verifyPath,
  verifyRows,
  verifySummary,
  type ProvenanceReply,
} from '../src/attribution';
import { decodeHash, defaultUrlState, encodeHash } from '../src/model';
import { provenanceError } from '../src/views/sources';
import { verifyError } from '../src/views/verify';

// ---------------------------------------------------------------- fixtures (the contract of docs/API.md)

const VERIFY = {
  step: 2,
  pos: 6,
  token: { id: 12, label: ' the' },
  logprob: -0.03,
  base_logprob: -0.031,
  k: 3,
  measure: 'value',
  sources: [
    { pos: 3, label: ' cat', weight: 0.41, logprob: -2.7, drop: 2.669, top_id: 88, top_label: ' dog', still_chosen: false },
    { pos: 5, label: ' sat', weight: 0.2, logprob: -0.5, drop: 0.469, top_id: 12, top_label: ' the', still_chosen: true },
    { pos: 1, label: 'The', weight: 0.1, logprob: -0.02, drop: -0.011, top_id: 12, top_label: ' the', still_chosen: true },
  ],
};

const PROV: ProvenanceReply = {
  documents: [
    { name: 'a', first: 2, n_tok: 6 },
    { name: 'b', first: 8, n_tok: 4 },
  ],
  sentences: [
    { first: 14, n_tok: 3, text: ' Hi.', sources: [] },
    {
      first: 17,
      n_tok: 5,
      text: ' The cat sat.',
      sources: [
        { doc: 'a', first: 3, n_tok: 3, text: ' A cat sat', score: 0.6 },
        { doc: 'b', first: 9, n_tok: 2, text: ' on mat', score: 0.3 },
        { doc: 'a', first: 5, n_tok: 2, text: ' sat on', score: 0.1 },
      ],
      verified: { doc: 'a', first: 3, n_tok: 3, drop: 3.1 },
    },
  ],
};

function mockFetch(status: number, body: unknown) {
  const f = vi.fn(async (_url: string, _init?: RequestInit) =>
    new Response(typeof body === 'string' ? body : JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } }),
  );
  vi.stubGlobal('fetch', f);
  return f;
}

afterEach(() => {
  vi.unstubAllGlobals();
});

// ---------------------------------------------------------------- measure

describe('measure', () => {
  it('names and arguments', () => {
    expect(isMeasure('value')).toBe(true);
    expect(isMeasure('attention')).toBe(true);
    expect(isMeasure('values')).toBe(false);
    expect(MEASURE_NAME.value).toBe('value-weighted');
    expect(MEASURE_NAME.attention).toBe('attention');
    expect(measureQuery('attention')).toBe('');
    expect(measureQuery('value')).toBe('&measure=value');
  });

  it('is in the hash only when value-weighted', () => {
    const s = { ...defaultUrlState(), run: 'r', step: 2, measure: 'value' as const };
    expect(encodeHash(s)).toBe('run=r&step=2&measure=value');
    expect(decodeHash('#run=r&step=2&measure=value')).toEqual(s);
    expect(encodeHash({ ...s, measure: 'attention' })).toBe('run=r&step=2');
    expect(decodeHash('#run=r&measure=attention').measure).toBeUndefined();
    expect(decodeHash('#run=r&measure=junk').measure).toBeUndefined();
    expect(decodeHash('#run=r&weights=raw&measure=value')).toMatchObject({ weights: 'raw', measure: 'value' });
  });

  it('a 400 naming measure is a refusal (fall back to attention); other errors are not', () => {
    expect(refusesMeasure(new ApiError('needs value norms', 400, 'invalid_parameter', 'measure'))).toBe(true);
    expect(refusesMeasure(new ApiError('bad layer', 400, 'invalid_parameter', 'layer'))).toBe(false);
    expect(refusesMeasure(new ApiError('x', 500, 'engine_error', 'measure'))).toBe(false);
    expect(refusesMeasure(null)).toBe(false);
  });

  it('api.graph sends measure=value, and the refusal arrives as an ApiError with its param', async () => {
    const f = mockFetch(200, { n_prompt: 2, n_output: 1, prompt: [[0, 1]], output: [[]] });
    await api.graph('run_x_1', 1, 2, undefined, 'value');
    expect(f.mock.calls[0][0]).toBe('api/runs/run_x_1/graph?layer=1&head=2&measure=value');
    await api.graph('run_x_1', null, null);
    expect(f.mock.calls[1][0]).toBe('api/runs/run_x_1/graph');
    mockFetch(400, { error: { message: 'measure=value needs the run’s value norms', type: 'invalid_request_error', param: 'measure', code: 'invalid_parameter' } });
    const err = await api.graph('run_x_1', null, null, undefined, 'value').catch((e) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(refusesMeasure(err)).toBe(true);
  });
});

// ---------------------------------------------------------------- verify

describe('verify sources', () => {
  it('the request path', () => {
    expect(verifyPath('run a', 3, 5, 'attention')).toBe('api/runs/run%20a/verify?step=3&k=5&measure=attention');
    expect(verifyPath('r', 0, 5, 'value')).toBe('api/runs/r/verify?step=0&k=5&measure=value');
  });

  it('parses the reply and refuses one without sources or numbers', () => {
    const r = parseVerify(VERIFY);
    expect(r.measure).toBe('value');
    expect(r.sources).toHaveLength(3);
    expect(r.sources[0]).toEqual(VERIFY.sources[0]);
    expect(() => parseVerify({ step: 1 })).toThrow(/sources/);
    expect(() => parseVerify({ ...VERIFY, sources: [{ ...VERIFY.sources[0], drop: 'x' }] })).toThrow(/sources\[0\]\.drop/);
    // base_logprob absent: the recorded one
    const { base_logprob: _b, ...noBase } = VERIFY;
    expect(parseVerify(noBase).base_logprob).toBe(-0.03);
  });

  it('rows: where each source is, the drop bar, the verdict', () => {
    const rows = verifyRows(parseVerify(VERIFY), 5);
    expect(rows.map((r) => r.where)).toEqual(['input 3', 'output of step 1', 'input 1']);
    expect(rows.map((r) => [r.side, r.index])).toEqual([
      ['input', 3],
      ['output', 0],
      ['input', 1],
    ]);
    expect(rows[0].dropFrac).toBe(1);
    expect(rows[1].dropFrac).toBeCloseTo(0.469 / 2.669, 6);
    expect(rows[2].dropFrac).toBe(0); // a rise draws no bar
    expect(rows[0].stillChosen).toBe(false);
    expect(rows[0].topLabel).toBe(' dog');
    expect(rows[0].probText).toBe('96.9% → 6.72%');
    expect(rows.map((r) => r.rank)).toEqual([1, 2, 3]);
  });

  it('numbers and the summary', () => {
    expect(formatNats(-2.7)).toBe('−2.70');
    expect(formatNats(2.669)).toBe('2.67');
    expect(formatNats(0.0042)).toBe('0.0042');
    expect(formatNats(0)).toBe('0');
    expect(formatNats(NaN)).toBe('–');
    expect(verifySummary(parseVerify(VERIFY))).toMatch(/Without one of these 3 sources/);
    expect(verifySummary(parseVerify({ ...VERIFY, sources: VERIFY.sources.slice(1) }))).toMatch(/stays the model’s choice/);
  });

  it('api.verify with a mocked fetch: the reply, 409, 400, cancel', async () => {
    const f = mockFetch(200, VERIFY);
    const r = await api.verify('run_x_1', 2, 5, 'value');
    expect(f.mock.calls[0][0]).toBe('api/runs/run_x_1/verify?step=2&k=5&measure=value');
    expect(r.sources[0].label).toBe(' cat');

    mockFetch(409, { error: { message: 'the run was made with model x.gguf', type: 'invalid_request_error', param: null, code: 'model_needed' } });
    const e409 = await api.verify('run_x_1', 2, 5, 'attention').catch((e) => e);
    expect(e409).toBeInstanceOf(ApiError);
    expect(e409.status).toBe(409);
    expect(verifyError(e409)).toMatch(/needs the model that made the run/);

    mockFetch(400, { error: { message: 'step must be 0..5', type: 'invalid_request_error', param: 'step', code: 'invalid_parameter' } });
    const e400 = await api.verify('run_x_1', 99, 5, 'attention').catch((e) => e);
    expect(e400.status).toBe(400);
    expect(e400.param).toBe('step');
    expect(verifyError(e400)).toBe('The sources could not be verified: step must be 0..5');

    mockFetch(404, { error: { message: 'no route GET /api/runs/r/verify', type: 'not_found_error', param: null, code: 'not_found' } });
    expect(verifyError(await api.verify('r', 0, 5, 'attention').catch((e) => e))).toMatch(/no \/verify route/);

    // cancel: the signal reaches fetch, and an aborted fetch rejects with the AbortError
    const ctl = new AbortController();
    const slow = vi.fn(
      (_url: string, init?: RequestInit) =>
        new Promise<Response>((_res, rej) => init?.signal?.addEventListener('abort', () => rej(new DOMException('aborted', 'AbortError')))),
    );
    vi.stubGlobal('fetch', slow);
    const p = api.verify('r', 0, 5, 'attention', ctl.signal);
    ctl.abort();
    const ea = await p.catch((e) => e);
    expect(ea).toBeInstanceOf(DOMException);
    expect(ea.name).toBe('AbortError');
    expect(slow.mock.calls[0][1]?.signal).toBe(ctl.signal);
  });
});

// ---------------------------------------------------------------- documents

describe('documents', () => {
  it('are checked: names, text, size', () => {
    expect(checkDocuments([])).toEqual({ ok: true, docs: [] });
    expect(checkDocuments([{ name: ' a ', text: 'x' }])).toEqual({ ok: true, docs: [{ name: 'a', text: 'x' }] });
    expect(checkDocuments([{ name: ' ', text: 'x' }])).toMatchObject({ ok: false, index: 0, field: 'name' });
    expect(checkDocuments([{ name: 'a', text: 'x' }, { name: 'a', text: 'y' }])).toMatchObject({ ok: false, index: 1, field: 'name' });
    expect(checkDocuments([{ name: 'a', text: 'x' }, { name: 'b', text: ' \n' }])).toMatchObject({ ok: false, index: 1, field: 'text' });
    expect(checkDocuments([{ name: 'n'.repeat(201), text: 'x' }])).toMatchObject({ ok: false, field: 'name' });
    const big = checkDocuments([{ name: 'a', text: 'é'.repeat(MAX_DOCUMENT_BYTES / 2 + 1) }]);
    expect(big).toMatchObject({ ok: false, index: -1 });
  });

  it('take their name from a file', () => {
    expect(documentName('notes.txt')).toBe('notes');
    expect(documentName('C:\\x\\Report.TXT')).toBe('Report');
    expect(documentName('.txt')).toBe('.txt');
    expect(documentName('a.b.md')).toBe('a.b');
  });

  it('are sent with the chat messages', async () => {
    const f = vi.fn(async (_u: string, _i?: RequestInit) => new Response('event: done\ndata: {"run_id":"r","n_prompt":1,"n_output":0,"stop":"length"}\n\n', { status: 200 }));
    vi.stubGlobal('fetch', f);
    const { streamRun } = await import('../src/api');
    await streamRun(
      { max_tokens: 1, temperature: 0, top_k: 40, top_p: 0.95, min_p: 0.05, seed: 0, attention_split: true, messages: [{ role: 'user', content: 'q' }], documents: [{ name: 'a', text: 'A cat.' }] },
      { token: () => {}, done: () => {} },
      new AbortController().signal,
    );
    const body = JSON.parse(String(f.mock.calls[0][1]?.body));
    expect(body.documents).toEqual([{ name: 'a', text: 'A cat.' }]);
    expect(body.messages).toEqual([{ role: 'user', content: 'q' }]);
  });
});

// ---------------------------------------------------------------- provenance

describe('provenance', () => {
  it('the path', () => {
    expect(provenancePath('r', false)).toBe('api/runs/r/provenance');
    expect(provenancePath('r', true)).toBe('api/runs/r/provenance?verify=1');
  });

  it('parses the reply (verified only when present) and refuses a malformed one', () => {
    const r = parseProvenance(PROV);
    expect(r.documents).toEqual(PROV.documents);
    expect(r.sentences[0].verified).toBeNull();
    expect(r.sentences[1].verified).toEqual({ doc: 'a', first: 3, n_tok: 3, drop: 3.1 });
    expect(parseProvenance({ documents: [], sentences: [] })).toEqual({ documents: [], sentences: [] });
    expect(() => parseProvenance({ sentences: [] })).toThrow(/documents/);
    expect(() => parseProvenance({ documents: [{ name: 'a', first: -1, n_tok: 2 }], sentences: [] })).toThrow(/documents\[0\]\.first/);
  });

  it('document tokens come from the run’s tokens', () => {
    const tokens = Array.from({ length: 12 }, (_, i) => ({ id: i, label: `t${i}` }));
    const d = documentTokens(PROV.documents, tokens);
    expect(d[0].tokens.map((t) => t.pos)).toEqual([2, 3, 4, 5, 6, 7]);
    expect(d[1].tokens.map((t) => t.label)).toEqual(['t8', 't9', 't10', 't11']);
    // past the run's tokens: left out
    expect(documentTokens([{ name: 'x', first: 10, n_tok: 5 }], tokens)[0].tokens).toHaveLength(2);
    expect(documentAt(PROV.documents, 8)?.name).toBe('b');
    expect(documentAt(PROV.documents, 12)).toBeNull();
  });

  it('shades: strength by score over the sentence’s best, overlaps take the larger', () => {
    const m = sourceShades(PROV.sentences[1]);
    expect([...m.keys()].sort((a, b) => a - b)).toEqual([3, 4, 5, 6, 9, 10]);
    expect(m.get(3)).toEqual({ score: 0.6, strength: 1, source: 0 });
    expect(m.get(5)).toEqual({ score: 0.6, strength: 1, source: 0 }); // in both spans: the top one
    expect(m.get(6)?.strength).toBeCloseTo(0.1 / 0.6, 9);
    expect(m.get(9)?.source).toBe(1);
    expect(sourceShades(PROV.sentences[0]).size).toBe(0);
    expect(sourceShades(null).size).toBe(0);
  });

  it('the first sentence shown, shares, CSV rows', () => {
    expect(firstSentence(PROV)).toBe(1);
    expect(firstSentence({ documents: [], sentences: [] })).toBe(-1);
    expect(firstSentence({ documents: [], sentences: [{ first: 0, n_tok: 1, text: 'x', sources: [] }] })).toBe(0);
    expect(formatShare(0.62)).toBe('62%');
    expect(formatShare(0.045)).toBe('4.5%');
    expect(formatShare(0.0004)).toBe('<0.1%');
    const rows = provenanceRows(PROV);
    expect(rows[0][0]).toBe('sentence');
    expect(rows).toHaveLength(1 + 1 + 3);
    expect(rows[2]).toEqual([1, 17, 5, ' The cat sat.', 'a', 3, 3, ' A cat sat', 0.6, 3.1]);
    expect(rows[4][9]).toBe('');
  });

  it('api.provenance with a mocked fetch: plain, verified, no documents, errors', async () => {
    const f = mockFetch(200, PROV);
    const r = await api.provenance('run_x_1');
    expect(f.mock.calls[0][0]).toBe('api/runs/run_x_1/provenance');
    expect(r.sentences).toHaveLength(2);
    await api.provenance('run_x_1', true);
    expect(f.mock.calls[1][0]).toBe('api/runs/run_x_1/provenance?verify=1');

    mockFetch(200, { documents: [], sentences: [{ first: 5, n_tok: 2, text: ' Hi.', sources: [] }] });
    const none = await api.provenance('r');
    expect(none.documents).toEqual([]);
    expect(firstSentence(none)).toBe(0);

    mockFetch(409, { error: { message: 'made with model x', type: 'invalid_request_error', param: null, code: 'model_needed' } });
    expect(provenanceError(await api.provenance('r', true).catch((e) => e), true)).toMatch(/needs the model that made the run/);
    mockFetch(404, { error: { message: 'no route', type: 'not_found_error', param: null, code: 'not_found' } });
    expect(provenanceError(await api.provenance('r').catch((e) => e), false)).toMatch(/no \/provenance route/);
    mockFetch(404, { error: { message: 'no run r', type: 'not_found_error', param: 'id', code: 'run_not_found' } });
    expect(provenanceError(await api.provenance('r').catch((e) => e), false)).toBe('The sources could not be read: no run r');
  });
});
