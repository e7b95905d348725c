// The stored runs: the list (refreshed on every change here, in other tabs
// and by other clients; branches under their parent as a tree), the message
// line beneath it, and the downloads of the open run. A run that vanished or
// changed is dropped from the client's cache.
import { api, http, type RunSummary } from './api';
import { download } from './export';
import { branchLine, runTree, type RunNode } from './formstate';
import type { UiState } from './store';

const RUNS_POLL_MS = 4000; // the run list is read again this often while the page is visible (other tabs, other clients)
const TREE_KEY = 'heed.runsTree';

export interface RunListEls {
  runs: HTMLElement;
  tree: HTMLInputElement;
  msg: HTMLElement;
  downloadRun: HTMLButtonElement;
  downloadHtml: HTMLButtonElement;
}

export interface RunList {
  /** Reads the list and shows it (unless nothing changed and not `force`). */
  refresh(force?: boolean): Promise<void>;
  /** The list changed here: other tabs are told, this one reads it again. */
  changed(): void;
  /** The line under the list (null hides it). */
  showMsg(text: string | null): void;
  /** Marks the open run in the list. */
  markCurrent(): void;
  /** The download buttons' states. */
  syncActions(): void;
  /** The tree choice back, the list kept fresh (not in the offline file). */
  start(): void;
}

/** One run of the list: its preview, the branch line (parent and step), its counts. */
function runItem(r: RunSummary, byId: Map<string, RunSummary>): HTMLAnchorElement {
  const a = document.createElement('a');
  a.className = 'run-item';
  a.dataset.runId = r.id;
  a.href = '#run=' + encodeURIComponent(r.id);
  a.title = r.id;
  const title = document.createElement('span');
  title.className = 'run-preview';
  title.textContent = r.preview ? r.preview : r.kind === 'chat' ? '(chat)' : '(no prompt text)';
  a.appendChild(title);
  const line = branchLine(r, byId);
  if (line) {
    a.dataset.parent = r.parent!;
    if (typeof r.step === 'number') a.dataset.step = String(r.step);
    const b = document.createElement('span');
    b.className = 'run-branch';
    b.textContent = line;
    a.appendChild(b);
  }
  const meta = document.createElement('span');
  meta.className = 'run-meta';
  const when = r.created ? new Date(r.created * 1000).toLocaleString() : '';
  meta.textContent = `${r.n_prompt} → ${r.n_output} tokens${r.stop && r.stop !== 'length' ? ` (${r.stop})` : ''}${when ? ' · ' + when : ''}`;
  a.appendChild(meta);
  return a;
}

function runsList(nodes: RunNode[], byId: Map<string, RunSummary>, tree: boolean): HTMLUListElement {
  const ul = document.createElement('ul');
  for (const n of nodes) {
    const li = document.createElement('li');
    li.appendChild(runItem(n.run, byId));
    if (tree && n.children.length) li.appendChild(runsList(n.children, byId, true));
    ul.appendChild(li);
  }
  return ul;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function createRunList(el: RunListEls, state: () => Readonly<UiState>, offline: boolean, storage: Storage | null): RunList {
  let sig = '';
  let seq = 0;
  let channel: BroadcastChannel | null = null;
  const seen = new Map<string, string>(); // id -> what the list said of it (a change drops the cached replies)

  const showMsg = (text: string | null): void => {
    el.msg.hidden = text === null;
    el.msg.textContent = text ?? '';
  };

  const markCurrent = (): void => {
    const id = state().runId;
    el.runs.querySelectorAll<HTMLAnchorElement>('.run-item').forEach((a) => {
      if (a.dataset.runId === id) a.setAttribute('aria-current', 'true');
      else a.removeAttribute('aria-current');
    });
  };

  /** Runs gone from a complete list, or listed differently than before: what was read of them is dropped. */
  const noteChanges = (list: RunSummary[], complete: boolean): void => {
    const now = new Map(list.map((r) => [r.id, `${r.created ?? ''}|${r.n_prompt}|${r.n_output}|${r.stop ?? ''}`]));
    for (const [id, was] of seen) {
      const is = now.get(id);
      if (is === undefined ? complete : is !== was) http.invalidateRun(id);
      if (is === undefined && complete) seen.delete(id);
    }
    for (const [id, v] of now) seen.set(id, v);
  };

  const refresh = async (force = false): Promise<void> => {
    const my = ++seq;
    let list: RunSummary[];
    let total = 0;
    try {
      const rep = await api.runs(100);
      list = rep.runs;
      total = rep.total;
    } catch (err) {
      if (my !== seq) return;
      sig = '';
      el.runs.textContent = '';
      const p = document.createElement('p');
      p.className = 'note';
      p.textContent = `The run list could not be read: ${errText(err)}`;
      el.runs.appendChild(p);
      return;
    }
    if (my !== seq) return; // a newer read is on its way
    noteChanges(list, total <= list.length);
    const tree = el.tree.checked;
    const s = JSON.stringify([tree, list]);
    if (!force && s === sig) return;
    sig = s;
    el.runs.textContent = '';
    el.runs.dataset.total = String(total);
    el.runs.dataset.view = tree ? 'tree' : 'list';
    if (list.length === 0) {
      const p = document.createElement('p');
      p.className = 'note';
      p.textContent = 'No saved runs yet.';
      el.runs.appendChild(p);
    } else {
      const byId = new Map(list.map((r) => [r.id, r]));
      const nodes = tree ? runTree(list) : list.map((run): RunNode => ({ run, children: [], depth: 0 }));
      el.runs.appendChild(runsList(nodes, byId, tree));
    }
    // the open run deleted elsewhere (another tab, another client): said, what is on screen stays
    const open = state().runId;
    if (open && !offline && total <= list.length && !list.some((r) => r.id === open))
      showMsg(`The open run ${open} is no longer stored (deleted in another tab or by another client); what is on screen stays until you open another.`);
    markCurrent();
  };

  const syncActions = (): void => {
    const s = state();
    const can = !!s.runId && s.status !== 'generating';
    el.downloadRun.disabled = el.downloadHtml.disabled = !can;
    const what = s.runId ?? 'the open run';
    el.downloadRun.title = can ? `Download ${what} as a run file (.heedrun: heed, Python and another heed read it)` : 'Open or generate a run first: then download it as a run file';
    el.downloadHtml.title = can ? `Download ${what} as one HTML file that works offline (no server: Generate and the other server controls are hidden there)` : 'Open or generate a run first: then download it as an offline HTML file';
  };

  const downloadOpenRun = async (format: 'run' | 'html'): Promise<void> => {
    const id = state().runId;
    if (!id) return;
    const b = format === 'run' ? el.downloadRun : el.downloadHtml;
    const what = format === 'run' ? 'a run file' : 'offline HTML';
    showMsg(null);
    b.disabled = true;
    b.setAttribute('aria-busy', 'true');
    try {
      const blob = await api.download(id, format);
      download(blob, `${id.replace(/[^\w.-]/g, '_')}.${format === 'run' ? 'heedrun' : 'html'}`);
    } catch (err) {
      showMsg(`Could not download ${id} as ${what}: ${errText(err)}`);
    } finally {
      b.removeAttribute('aria-busy');
      syncActions();
    }
  };

  el.downloadRun.addEventListener('click', () => void downloadOpenRun('run'));
  el.downloadHtml.addEventListener('click', () => void downloadOpenRun('html'));
  el.tree.addEventListener('change', () => {
    try {
      storage?.setItem(TREE_KEY, el.tree.checked ? '1' : '0');
    } catch {
      /* storage off: the choice lasts for this page */
    }
    void refresh(true);
  });

  return {
    refresh,
    changed(): void {
      channel?.postMessage('runs');
      void refresh(true);
    },
    showMsg,
    markCurrent,
    syncActions,
    start(): void {
      try {
        el.tree.checked = storage?.getItem(TREE_KEY) === '1';
      } catch {
        /* storage off */
      }
      if (offline) return;
      if (typeof BroadcastChannel === 'function') {
        channel = new BroadcastChannel('heed-runs');
        channel.addEventListener('message', () => void refresh());
      }
      window.setInterval(() => {
        if (document.visibilityState === 'visible') void refresh();
      }, RUNS_POLL_MS);
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'visible') void refresh();
      });
      window.addEventListener('focus', () => void refresh());
    },
  };
}
