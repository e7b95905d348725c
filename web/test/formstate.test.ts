import { describe, expect, it } from 'vitest';
import { branchLine, checkField, loadDraft, runTree, SAMPLING_RULES, saveDraft } from '../src/formstate';

describe('checkField', () => {
  it('refuses what the server would refuse, keeps the reason', () => {
    expect(checkField('0.7', SAMPLING_RULES.temperature)).toEqual({ ok: true, value: 0.7 });
    expect(checkField('-1', SAMPLING_RULES.temperature).ok).toBe(false);
    expect(checkField('0', SAMPLING_RULES.topP).ok).toBe(false);
    expect(checkField('1', SAMPLING_RULES.topP)).toEqual({ ok: true, value: 1 });
    expect(checkField('1.5', SAMPLING_RULES.topK).ok).toBe(false);
    expect(checkField('', SAMPLING_RULES.seed).ok).toBe(false);
    expect(checkField('9007199254740992', SAMPLING_RULES.seed).ok).toBe(false);
    expect(checkField('abc', SAMPLING_RULES.minP).ok).toBe(false);
  });
});

describe('drafts', () => {
  it('round-trips and survives garbage', () => {
    const m = new Map<string, string>();
    const st = { getItem: (k: string) => m.get(k) ?? null, setItem: (k: string, v: string) => void m.set(k, v) };
    expect(loadDraft(st)).toBe(null);
    saveDraft(st, { prompt: 'hi', chat: true, maxTokens: '8', sampling: { seed: '3' } });
    expect(loadDraft(st)).toEqual({ prompt: 'hi', chat: true, maxTokens: '8', sampling: { seed: '3' } });
    m.set('heed.draft', '{not json');
    expect(loadDraft(st)).toBe(null);
  });
});

describe('runTree', () => {
  const r = (id: string, parent: string | null = null, step: number | null = null) => ({ id, n_prompt: 5, n_output: 8, parent, step, preview: 'Once upon a time' });
  it('nests branches under their parent; an unlisted parent makes a root; a loop does not hang', () => {
    const t = runTree([r('c', 'b', 5), r('b', 'a', 2), r('a'), r('x', 'gone', 1)]);
    expect(t.map((n) => n.run.id)).toEqual(['a', 'x']);
    expect(t[0].children[0].run.id).toBe('b');
    expect(t[0].children[0].children[0].run.id).toBe('c');
    expect(t[0].children[0].children[0].depth).toBe(2);
    const loop = runTree([r('p', 'q'), r('q', 'p')]);
    expect(loop.length).toBeGreaterThan(0);
  });
  it('says the parent and the 1-based step', () => {
    const a = r('a');
    const b = r('b', 'a', 20);
    expect(branchLine(b, new Map([['a', a]]))).toBe('↳ branch of “Once upon a time” (a) at step 21');
    expect(branchLine(a, new Map())).toBe(null);
  });
});
