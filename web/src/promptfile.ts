// Loads a plain-text file into the prompt box (issue: long prompts). The
// file is read as UTF-8; a file that is not text (a NUL byte) or over the
// size limit is refused with a message beside the box, and the box keeps
// what it had.

/** Largest prompt file read, in bytes: far beyond any model's context. */
export const PROMPT_FILE_MAX = 8 << 20;

/** The prompt text of a file's contents, or the reason it is refused. */
export function promptFromFile(name: string, size: number, text: string): { ok: true; text: string } | { ok: false; message: string } {
  if (size > PROMPT_FILE_MAX) return { ok: false, message: `“${name}” is ${(size / 1048576).toFixed(1)} MB; a prompt file may be at most ${PROMPT_FILE_MAX >> 20} MB.` };
  if (text.includes('\0')) return { ok: false, message: `“${name}” holds a NUL character: is it a text file?` };
  if (!text.trim()) return { ok: false, message: `“${name}” is empty.` };
  return { ok: true, text: text.replace(/\r\n/g, '\n') };
}

/** Wires the button and file input: the chosen file's text replaces the prompt. */
export function mountPromptFile(button: HTMLButtonElement, input: HTMLInputElement, prompt: HTMLTextAreaElement,
                                say: (message: string | null) => void): void {
  button.addEventListener('click', () => input.click());
  input.addEventListener('change', async () => {
    const f = input.files?.[0];
    input.value = '';
    if (!f) return;
    const r = promptFromFile(f.name, f.size, f.size > PROMPT_FILE_MAX ? '' : await f.text());
    if (!r.ok) {
      say(r.message);
      return;
    }
    say(null);
    prompt.value = r.text;
    prompt.dispatchEvent(new Event('input', { bubbles: true }));
  });
}
