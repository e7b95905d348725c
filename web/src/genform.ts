// The Generate form: the prompt box (and the open run's prompt shown in it),
// max tokens, the sampling fields with their limits, the documents, the typed
// text kept across reloads, and a refused request said beside its control.
// Pure checks are formstate.ts's and model.ts's; this module owns the DOM.
import { ApiError, type ModelInfo, type RunDoc } from './api';
import { checkDocuments } from './attribution';
import { createDocumentsForm } from './documents';
import { checkField, loadDraft, runPromptText, SAMPLING_FIELDS, SAMPLING_RULES, saveDraft, type Draft, type FieldCheck, type SamplingField } from './formstate';
import { checkMaxTokens, checkPrompt } from './model';
import { mountPromptFile } from './promptfile';

const $ = <T extends HTMLElement = HTMLElement>(sel: string): T => {
  const e = document.querySelector(sel);
  if (!e) throw new Error(`missing ${sel}`);
  return e as T;
};

/** A checked form: what a generation request is made of. */
export interface FormRequest {
  prompt: string;
  chat: boolean;
  maxTokens: number;
  documents: { name: string; text: string }[];
  sampling: Record<SamplingField, number>;
}

export type GenForm = ReturnType<typeof createGenForm>;

/**
 * The form; `model()` is the served model (its limits), `runId()` the open
 * run (a refused request says it is unchanged).
 */
export function createGenForm(opts: { offline: boolean; storage: Storage | null; model: () => ModelInfo | null; runId: () => string | null }) {
  const { offline, storage } = opts;
  const el = {
    form: $<HTMLFormElement>('#gen-form'),
    prompt: $<HTMLTextAreaElement>('#prompt'),
    promptMsg: $('#prompt-msg'),
    maxTokens: $<HTMLInputElement>('#max-tokens'),
    maxTokensNum: $<HTMLInputElement>('#max-tokens-num'),
    maxTokensMsg: $('#max-tokens-msg'),
    maxTokensLimit: document.createElement('span'),
    chat: $<HTMLInputElement>('#chat'),
    chatNote: $('#chat-note'),
    promptSource: $('#prompt-source'),
    promptSourceText: $('#prompt-source-text'),
    promptRestore: $<HTMLButtonElement>('#prompt-restore'),
    promptMessages: $('#prompt-messages'),
    generateMsg: $('#generate-msg'),
  };
  const samplingInputs: Record<SamplingField, HTMLInputElement> = {
    temperature: $<HTMLInputElement>('#temperature'),
    topK: $<HTMLInputElement>('#top-k'),
    topP: $<HTMLInputElement>('#top-p'),
    minP: $<HTMLInputElement>('#min-p'),
    seed: $<HTMLInputElement>('#seed'),
  };
  const samplingMsgs = {} as Record<SamplingField, HTMLElement>;
  const documentsForm = createDocumentsForm({
    details: $<HTMLDetailsElement>('#documents'),
    list: $('#doc-list'),
    add: $<HTMLButtonElement>('#doc-add'),
    upload: $<HTMLButtonElement>('#doc-upload'),
    file: $<HTMLInputElement>('#doc-file'),
    msg: $('#documents-msg'),
    count: $('#documents-count'),
  });
  /** the user's own prompt text (kept while the box shows an opened run's prompt) */
  let draftPrompt = el.prompt.value;
  let draftChat = false;
  /** the run whose prompt the box shows (null: the user's text) */
  let promptFromRun: string | null = null;

  const maxTokenLimit = (): number => {
    const l = opts.model()?.limits?.max_tokens; // 0 in an exported file (no server): no limit known
    return typeof l === 'number' && l >= 1 ? Math.trunc(l) : 512;
  };

  /** Checks the max-tokens box: a refused value is said beside it (and marked), never silently changed. */
  const validateMaxTokens = (): number | null => {
    const c = checkMaxTokens(el.maxTokensNum.value, maxTokenLimit());
    el.maxTokensMsg.hidden = c.ok;
    el.maxTokensMsg.textContent = c.ok ? '' : c.message;
    el.maxTokensNum.setAttribute('aria-invalid', String(!c.ok));
    if (c.ok) el.maxTokens.value = String(c.value);
    return c.ok ? c.value : null;
  };

  const syncMaxTokensLimit = (): void => {
    el.maxTokensLimit.textContent = `1 to ${maxTokenLimit()}`;
  };

  /** Checks one sampling field: a refused value stays as typed, marked, with the reason beside it. */
  const checkSamplingField = (f: SamplingField): number | null => {
    const input = samplingInputs[f];
    const r = SAMPLING_RULES[f];
    // what the browser could not read as a number (1e400, "1-"): its value reads empty
    const c: FieldCheck = input.validity?.badInput ? { ok: false, message: `${r.name}: what is typed is not a number the browser can read (${r.limit}).` } : checkField(input.value, r);
    const msg = samplingMsgs[f];
    msg.hidden = c.ok;
    msg.textContent = c.ok ? '' : c.message;
    input.setAttribute('aria-invalid', String(!c.ok));
    return c.ok ? c.value : null;
  };

  /** The sampling fields' limit lines and message slots (beside each field). */
  const mountSamplingChecks = (): void => {
    for (const f of SAMPLING_FIELDS) {
      const input = samplingInputs[f];
      const r = SAMPLING_RULES[f];
      const lim = document.createElement('span');
      lim.id = `${input.id}-limit`;
      lim.className = 'field-limit';
      lim.textContent = r.limit;
      document.querySelector(`label[for="${input.id}"]`)?.append(' ', lim);
      const msg = document.createElement('p');
      msg.id = `${input.id}-msg`;
      msg.className = 'field-msg';
      msg.setAttribute('role', 'alert');
      msg.hidden = true;
      input.insertAdjacentElement('afterend', msg);
      input.setAttribute('aria-describedby', `${lim.id} ${msg.id}`);
      input.min = String(r.min);
      input.max = String(r.max);
      samplingMsgs[f] = msg;
      input.addEventListener('input', () => void checkSamplingField(f));
      input.addEventListener('change', () => void checkSamplingField(f));
    }
    el.maxTokensLimit.id = 'max-tokens-limit';
    el.maxTokensLimit.className = 'field-limit';
    document.querySelector('label[for="max-tokens"]')?.append(' ', el.maxTokensLimit);
    syncMaxTokensLimit();
  };

  /** Every sampling field checked (null: one is refused; the Sampling section opens to show why). */
  const validateSampling = (): Record<SamplingField, number> | null => {
    const out = {} as Record<SamplingField, number>;
    let ok = true;
    for (const f of SAMPLING_FIELDS) {
      const v = checkSamplingField(f);
      if (v === null) ok = false;
      else out[f] = v;
    }
    if (!ok) ($('#advanced') as HTMLDetailsElement).open = true;
    return ok ? out : null;
  };

  /**
   * The documents, checked (null: refused, and said beside them). The server
   * puts them into the system message in chat mode, else before the prompt.
   */
  const checkFormDocuments = (): { name: string; text: string }[] | null => {
    documentsForm.clearError();
    const docs = documentsForm.values();
    if (docs.length === 0) return [];
    const c = checkDocuments(docs);
    if (!c.ok) {
      documentsForm.refuse(c.message, c.index, c.field);
      return null;
    }
    return c.docs;
  };

  const currentDraft = (): Draft => {
    const sampling: Draft['sampling'] = {};
    for (const f of SAMPLING_FIELDS) sampling[f] = samplingInputs[f].value;
    return { prompt: draftPrompt, chat: promptFromRun ? draftChat : el.chat.checked, maxTokens: el.maxTokensNum.value, sampling };
  };

  const keepDraft = (): void => {
    if (!offline) saveDraft(storage, currentDraft());
  };

  /** Puts the stored draft back into the form; the prompt too unless a run's prompt will take the box. */
  const restoreDraft = (withPrompt: boolean): void => {
    const d = loadDraft(storage);
    if (!d) return;
    if (withPrompt) {
      el.prompt.value = d.prompt;
      el.chat.checked = d.chat;
    }
    draftPrompt = d.prompt;
    draftChat = d.chat;
    if (d.maxTokens !== '') {
      el.maxTokensNum.value = d.maxTokens;
      const c = checkMaxTokens(d.maxTokens, maxTokenLimit());
      if (c.ok) el.maxTokens.value = String(c.value);
    }
    for (const f of SAMPLING_FIELDS) if (d.sampling[f] !== undefined) samplingInputs[f].value = d.sampling[f]!;
  };

  const syncPromptSource = (): void => {
    const id = promptFromRun;
    el.promptSource.hidden = !id;
    el.prompt.classList.toggle('from-run', !!id);
    if (!id) {
      el.promptMessages.hidden = true;
      return;
    }
    el.promptSourceText.textContent = offline
      ? `The prompt of this exported run (read-only).`
      : `The prompt of the open run ${id}${el.chat.checked ? ' (its last user message)' : ''}: edit it to generate from it.`;
    el.promptRestore.hidden = offline || draftPrompt === '' || draftPrompt === el.prompt.value;
    el.promptRestore.title = `Back to the text you typed: “${draftPrompt.slice(0, 60)}${draftPrompt.length > 60 ? '…' : ''}”`;
  };

  /** The exported file: the controls that need a server are hidden, the prompt box is read-only. */
  const applyOffline = (): void => {
    if (!offline) return;
    document.body.classList.add('offline');
    el.prompt.readOnly = true;
    const keep = new Set<Element>([el.prompt, el.promptMsg, el.promptSource, el.promptMessages, document.querySelector('label[for="prompt"]')!]);
    for (const c of Array.from(el.form.children)) if (!keep.has(c)) c.classList.add('server-only');
    for (const s of ['#delete-run', '#open-run-file', '.run-actions', '#runs-msg', '.intervene', '#verify-sources'])
      document.querySelectorAll(s).forEach((x) => x.classList.add('server-only'));
  };

  // ---- events

  el.maxTokens.addEventListener('input', () => {
    el.maxTokensNum.value = el.maxTokens.value;
    validateMaxTokens();
  });
  el.maxTokensNum.addEventListener('input', () => void validateMaxTokens());
  el.maxTokensNum.addEventListener('change', () => void validateMaxTokens());
  mountPromptFile($<HTMLButtonElement>('#prompt-file-btn'), $<HTMLInputElement>('#prompt-file'), el.prompt, (m) => {
    el.promptMsg.hidden = m === null;
    el.promptMsg.textContent = m ?? '';
  });
  el.prompt.addEventListener('input', () => {
    if (!el.promptMsg.hidden && checkPrompt(el.prompt.value) === null) {
      el.promptMsg.hidden = true;
      el.prompt.removeAttribute('aria-invalid');
    }
  });
  el.prompt.addEventListener('input', () => {
    promptFromRun = null; // the box is the user's text again
    draftPrompt = el.prompt.value;
    syncPromptSource();
  });
  el.chat.addEventListener('change', () => {
    if (!promptFromRun) draftChat = el.chat.checked;
  });
  el.form.addEventListener('input', keepDraft);
  el.form.addEventListener('change', keepDraft);
  el.promptRestore.addEventListener('click', () => {
    el.prompt.value = draftPrompt;
    if (!el.chat.disabled) el.chat.checked = draftChat;
    promptFromRun = null;
    syncPromptSource();
    keepDraft();
    el.prompt.focus();
  });

  return {
    prompt: el.prompt,
    form: el.form,
    /** the run whose prompt the box shows (null: the user's text) */
    promptFromRun: (): string | null => promptFromRun,

    /** Start: the limits beside the fields, the offline file's read-only form, the draft back. */
    start(runInUrl: boolean): void {
      mountSamplingChecks();
      applyOffline();
      if (!offline) restoreDraft(!runInUrl);
    },

    /** The served model's chat template and token limit. */
    showModel(m: ModelInfo): void {
      if (m.chat_template) {
        el.chat.disabled = false;
        el.chatNote.textContent = `Uses the model's ${m.chat_template} chat template.`;
      } else {
        el.chat.checked = false;
        el.chat.disabled = true;
        el.chatNote.textContent = 'Not available: this model has no chat template heed knows.';
      }
      const lim = maxTokenLimit();
      el.maxTokensNum.max = String(lim);
      el.maxTokens.max = String(lim); // the slider reaches the server's limit too
      syncMaxTokensLimit();
      validateMaxTokens();
    },

    /** The form checked, each refusal said beside its field (null: one was refused). */
    read(): FormRequest | null {
      const prompt = el.prompt.value;
      const chat = el.chat.checked && !el.chat.disabled;
      const mt = validateMaxTokens();
      const pm = checkPrompt(prompt);
      el.promptMsg.hidden = pm === null;
      el.promptMsg.textContent = pm ?? '';
      if (pm) el.prompt.setAttribute('aria-invalid', 'true');
      else el.prompt.removeAttribute('aria-invalid');
      const documents = checkFormDocuments();
      const sampling = validateSampling();
      if (mt === null || pm !== null || documents === null || sampling === null) return null;
      return { prompt, chat, maxTokens: mt, documents, sampling };
    },

    /** Hides the messages an earlier refused request left beside the controls. */
    clearRequestErrors(): void {
      el.generateMsg.hidden = true;
      el.generateMsg.textContent = '';
    },

    /**
     * A request the server refused (or could not be sent): said beside the
     * control it concerns (the field its `param` names, else beside Generate);
     * returns the text (the status line says it too).
     */
    requestError(err: unknown, what: string): string {
      const msg = err instanceof Error ? err.message : String(err);
      const param = err instanceof ApiError ? err.param : undefined;
      const fields: Record<string, [HTMLElement, HTMLElement]> = {
        prompt: [el.promptMsg, el.prompt],
        messages: [el.promptMsg, el.prompt],
        max_tokens: [el.maxTokensMsg, el.maxTokensNum],
      };
      for (const f of SAMPLING_FIELDS) {
        const name = f === 'topK' ? 'top_k' : f === 'topP' ? 'top_p' : f === 'minP' ? 'min_p' : f;
        fields[name] = [samplingMsgs[f], samplingInputs[f]];
      }
      const at = param ? fields[param] : undefined;
      const runId = opts.runId();
      const text = `${what}: ${msg}${runId ? ` The open run (${runId}) is unchanged.` : ''}`;
      if (at) {
        at[0].hidden = false;
        at[0].textContent = text;
        at[1].setAttribute('aria-invalid', 'true');
      } else {
        el.generateMsg.hidden = false;
        el.generateMsg.textContent = text;
      }
      return text;
    },

    /** The prompt box shows the opened run's prompt (its last user message and the other messages, for a chat run). */
    showRunPrompt(doc: RunDoc, id: string): void {
      const p = runPromptText(doc);
      if (!p) return;
      el.prompt.value = p.text; // draftPrompt keeps the user's own text
      if (!el.chat.disabled || !p.chat) el.chat.checked = p.chat;
      el.promptMsg.hidden = true;
      el.prompt.removeAttribute('aria-invalid');
      promptFromRun = id;
      el.promptMessages.textContent = '';
      const msgs = doc.messages ?? [];
      for (const m of msgs) {
        const li = document.createElement('li');
        const role = document.createElement('strong');
        role.textContent = m.role + ': ';
        li.append(role, m.content);
        el.promptMessages.appendChild(li);
      }
      el.promptMessages.hidden = msgs.length < 2;
      syncPromptSource();
    },
  };
}
