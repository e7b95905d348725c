import { describe, expect, it } from 'vitest';
import { PROMPT_FILE_MAX, promptFromFile } from '../src/promptfile';

describe('promptFromFile', () => {
  it('takes a text file as the prompt, line ends normalised', () => {
    expect(promptFromFile('a.txt', 9, 'one\r\ntwo\n')).toEqual({ ok: true, text: 'one\ntwo\n' });
  });
  it('refuses binary, empty and oversized files with the reason', () => {
    const bin = promptFromFile('b.bin', 3, 'a\0b');
    expect(bin.ok).toBe(false);
    if (!bin.ok) expect(bin.message).toMatch(/NUL/);
    const empty = promptFromFile('e.txt', 2, ' \n');
    expect(empty.ok).toBe(false);
    if (!empty.ok) expect(empty.message).toMatch(/empty/);
    const big = promptFromFile('big.txt', PROMPT_FILE_MAX + 1, '');
    expect(big.ok).toBe(false);
    if (!big.ok) expect(big.message).toMatch(/at most 8 MB/);
  });
});
