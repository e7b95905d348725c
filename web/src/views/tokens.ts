// Tokens: the prompt (the prompt box, or the open run's prompt) as the
// model's tokenizer splits it: one box per token with its label, id and the
// bytes it decodes to (hex). Data: POST /api/tokenize.
import { hexBytes, tokenBytes } from '../analysis';
import { csvField, type ExportData, type Exportable } from '../datafile';
import { errText, h, Lru, postJson } from './common';
import type { View, ViewContext } from './types';

export interface TokenizeReply {
  ids: number[];
  tokens: { id: number; piece?: string; label: string; bytes?: number[] }[];
}

export interface TokensDeps {
  /** the prompt box */
  prompt: HTMLTextAreaElement;
  /** the open run's prompt text (null: none, or a chat run) */
  runPrompt(): string | null;
}

export interface TokensView extends Exportable {
  show(ctx: ViewContext | null): void;
  hide(): void;
}

const cache = new Lru<string, Promise<TokenizeReply>>(24);

/** A token's text with spaces, tabs and line breaks made visible (␣ ⇥ ↵). */
function visibleSpaces(s: string): string {
  return s === '' ? '∅' : s.replace(/ /g, '␣').replace(/\t/g, '⇥').replace(/\r/g, '␍').replace(/\n/g, '↵');
}

export function createTokensView(root: HTMLElement, deps: TokensDeps): TokensView & View {
  root.classList.add('tokens-view');
  const srcBox = h('input', { type: 'radio', name: 'tk-src', id: 'tk-src-box', value: 'box', checked: true });
  const srcRun = h('input', { type: 'radio', name: 'tk-src', id: 'tk-src-run', value: 'run' });
  const special = h('input', { type: 'checkbox', id: 'tk-special' });
  const bar = h(
    'div',
    { class: 'view-bar' },
    h('fieldset', { class: 'tk-src' }, h('legend', { class: 'visually-hidden', text: 'Text to tokenize' }),
      h('span', { class: 'check inline' }, srcBox, h('label', { for: 'tk-src-box', text: 'Prompt box' })),
      h('span', { class: 'check inline' }, srcRun, h('label', { for: 'tk-src-run', text: 'Open run’s prompt' }))),
    h('span', { class: 'check inline' }, special, h('label', { for: 'tk-special', text: 'Parse special tokens' })),
  );
  const summary = h('p', { class: 'note tk-summary', role: 'status' });
  const key = h('p', { class: 'note', text: 'Each box: the token as text (␣ space, ↵ line break), its id, and the bytes it decodes to in hex. Dashed boxes are special tokens (no bytes).' });
  const list = h('ol', { class: 'tk-list', 'aria-label': 'Tokens' });
  root.append(bar, key, summary, list);

  let visible = false;
  let ctx: ViewContext | null = null;
  let shownKey = '';
  let reply: TokenizeReply | null = null;
  let text = '';
  let timer = 0;
  let load = 0;

  function source(): string | null {
    if (srcRun.checked) return deps.runPrompt();
    return deps.prompt.value;
  }

  function refresh(): void {
    const s = source();
    srcRun.disabled = deps.runPrompt() === null;
    if (srcRun.disabled && srcRun.checked) srcBox.checked = true;
    if (s === null) {
      summary.textContent = 'The open run has no prompt text (a chat run): its prompt tokens are in the other views.';
      list.textContent = '';
      reply = null;
      shownKey = '';
      return;
    }
    const key = `${special.checked ? 1 : 0}|${s}`;
    if (key === shownKey) return;
    shownKey = key;
    text = s;
    const my = ++load;
    root.dataset.status = 'loading';
    let p = cache.get(key);
    if (!p) {
      p = postJson<TokenizeReply>('', '/api/tokenize', special.checked ? { text: s, special: true } : { text: s });
      cache.set(key, p);
      p.catch(() => cache.delete(key));
    }
    p.then((r) => {
      if (my !== load) return;
      reply = r;
      render(r, s);
      root.dataset.status = 'ready';
    }).catch((err) => {
      if (my !== load) return;
      reply = null;
      list.textContent = '';
      root.dataset.status = 'error';
      summary.textContent = `Could not tokenize: ${errText(err)}`;
    });
  }

  function render(r: TokenizeReply, s: string): void {
    let nBytes = 0;
    const frag = document.createDocumentFragment();
    r.tokens.forEach((t, i) => {
      const bytes = tokenBytes(t);
      nBytes += bytes.length;
      const isSpecial = Array.isArray(t.bytes) ? t.bytes.length === 0 : /^\[.*\]$/.test(t.label);
      const li = h(
        'li',
        {
          class: 'tk' + (isSpecial ? ' special' : '') + (i % 2 ? ' odd' : ''),
          'data-index': i,
          'data-id': t.id,
          title: `#${i}: id ${t.id}${t.piece !== undefined ? ` · piece ${JSON.stringify(t.piece)}` : ''} · ${bytes.length} byte${bytes.length === 1 ? '' : 's'}${Array.isArray(t.bytes) ? '' : ' (UTF-8 of the piece)'}`,
        },
        h('span', { class: 'tk-label', text: isSpecial ? t.label : visibleSpaces(t.label) }),
        h('span', { class: 'tk-id', text: String(t.id) }),
        h('span', { class: 'tk-bytes', text: isSpecial ? 'special' : hexBytes(bytes) || '–' }),
      );
      frag.append(li);
    });
    list.replaceChildren(frag);
    const chars = Array.from(s).length;
    summary.textContent = `${r.tokens.length} tokens · ${nBytes} bytes · ${chars} characters${srcRun.checked ? ' (the open run’s prompt)' : ' (the prompt box)'}${
      r.tokens.length ? ` · ${(nBytes / Math.max(1, r.tokens.length)).toFixed(2)} bytes per token` : ''
    }`;
    root.dataset.count = String(r.tokens.length);
  }

  const schedule = () => {
    if (!visible) return;
    clearTimeout(timer);
    timer = window.setTimeout(refresh, 250);
  };
  deps.prompt.addEventListener('input', () => {
    if (!srcRun.checked) schedule();
  });
  srcBox.addEventListener('change', refresh);
  srcRun.addEventListener('change', refresh);
  special.addEventListener('change', refresh);

  return {
    show(c: ViewContext | null): void {
      visible = true;
      if (c?.runId !== ctx?.runId && srcRun.checked) shownKey = '';
      ctx = c;
      refresh();
    },
    hide(): void {
      visible = false;
      clearTimeout(timer);
    },
    exportData(): ExportData | null {
      const r = reply;
      if (!r) return null;
      const rows = ['index,id,piece,label,bytes_hex'];
      r.tokens.forEach((t, i) => rows.push([i, t.id, csvField(t.piece ?? ''), csvField(t.label), hexBytes(tokenBytes(t))].join(',')));
      return {
        name: 'tokens',
        json: { text, special: special.checked, ...r, tokens: r.tokens.map((t) => ({ ...t, bytes: tokenBytes(t) })) },
        csv: rows.join('\r\n') + '\r\n',
        npy: { shape: [r.ids.length], data: r.ids },
      };
    },
  };
}
