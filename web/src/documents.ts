// The Generate form's Documents section: named texts typed or loaded from
// .txt files, sent as "documents" with the prompt or the chat messages
// (POST /api/runs; the server puts them into the system message in chat
// mode, else before the prompt, and records where each is). Each document is a fieldset with a name, a text and a
// Remove button; the values are checked by checkDocuments (src/attribution.ts)
// when Generate is pressed, and a refused one is marked and said below.
import { documentName, type DocumentInput } from './attribution';

export interface DocumentsForm {
  /** The documents as typed (not checked). */
  values(): DocumentInput[];
  /** Marks a field of document `index` (-1: of every document) and says why below the list. */
  refuse(message: string, index: number, field: 'name' | 'text'): void;
  clearError(): void;
  /** Adds a document (a file's, or an empty one to type into). */
  add(name?: string, text?: string): void;
}

export interface DocumentsElements {
  details: HTMLDetailsElement;
  list: HTMLElement;
  add: HTMLButtonElement;
  upload: HTMLButtonElement;
  file: HTMLInputElement;
  msg: HTMLElement;
  count: HTMLElement;
}

let seq = 0;

export function createDocumentsForm(e: DocumentsElements): DocumentsForm {
  const items = (): HTMLFieldSetElement[] => Array.from(e.list.querySelectorAll<HTMLFieldSetElement>('fieldset.doc-item'));

  function renumber(): void {
    const all = items();
    all.forEach((f, i) => {
      (f.querySelector('legend') as HTMLElement).textContent = `Document ${i + 1}`;
      f.dataset.index = String(i);
    });
    e.count.textContent = all.length ? `(${all.length})` : '';
  }

  function clearError(): void {
    e.msg.hidden = true;
    e.msg.textContent = '';
    for (const f of items()) f.querySelectorAll('[aria-invalid]').forEach((x) => x.removeAttribute('aria-invalid'));
  }

  function add(name?: string, text?: string): void {
    const n = items().length + 1;
    const id = `doc-${++seq}`;
    const f = document.createElement('fieldset');
    f.className = 'doc-item';
    const lg = document.createElement('legend');
    const nameL = document.createElement('label');
    nameL.htmlFor = `${id}-name`;
    nameL.textContent = 'Name';
    const nameI = document.createElement('input');
    nameI.type = 'text';
    nameI.id = `${id}-name`;
    nameI.className = 'doc-name';
    nameI.maxLength = 200;
    nameI.value = name ?? `document ${n}`;
    nameI.setAttribute('aria-describedby', 'documents-msg');
    const textL = document.createElement('label');
    textL.htmlFor = `${id}-text`;
    textL.textContent = 'Text';
    const textI = document.createElement('textarea');
    textI.id = `${id}-text`;
    textI.className = 'doc-text';
    textI.rows = 4;
    textI.spellcheck = false;
    textI.value = text ?? '';
    textI.setAttribute('aria-describedby', 'documents-msg');
    const rm = document.createElement('button');
    rm.type = 'button';
    rm.className = 'doc-remove';
    rm.textContent = 'Remove';
    rm.addEventListener('click', () => {
      const next = f.nextElementSibling ?? f.previousElementSibling;
      f.remove();
      renumber();
      clearError();
      ((next?.querySelector('input, textarea') as HTMLElement | null) ?? e.add).focus();
    });
    const on = () => {
      if (!e.msg.hidden) clearError();
    };
    nameI.addEventListener('input', on);
    nameI.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') ev.preventDefault(); // not the form's Generate
    });
    textI.addEventListener('input', on);
    f.append(lg, nameL, nameI, textL, textI, rm);
    e.list.appendChild(f);
    e.details.open = true;
    renumber();
    clearError();
  }

  e.add.addEventListener('click', () => {
    add();
    const last = items().pop();
    (last?.querySelector('textarea') as HTMLElement | null)?.focus();
  });
  e.upload.addEventListener('click', () => e.file.click());
  e.file.addEventListener('change', async () => {
    const files = Array.from(e.file.files ?? []);
    e.file.value = '';
    for (const file of files) {
      try {
        add(documentName(file.name), await file.text());
      } catch (err) {
        e.msg.hidden = false;
        e.msg.textContent = `${file.name} could not be read: ${err instanceof Error ? err.message : err}`;
      }
    }
  });

  return {
    values: () =>
      items().map((f) => ({
        name: (f.querySelector('.doc-name') as HTMLInputElement).value,
        text: (f.querySelector('.doc-text') as HTMLTextAreaElement).value,
      })),
    refuse(message: string, index: number, field: 'name' | 'text'): void {
      e.details.open = true;
      e.msg.hidden = false;
      e.msg.textContent = message;
      const all = items();
      const marked = index >= 0 ? all.slice(index, index + 1) : all;
      for (const f of marked) f.querySelector(field === 'name' ? '.doc-name' : '.doc-text')?.setAttribute('aria-invalid', 'true');
    },
    clearError,
    add,
  };
}
