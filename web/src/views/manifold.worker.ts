// The fingerprint manifold's projection (UMAP, then HDBSCAN) off the main
// thread: receives { X, opts }, posts { type: 'progress', done, total } between
// UMAP epochs and finally { type: 'done', result } or { type: 'error', error }.
import { projectSteps, type ProjectOptions } from './manifold';

self.onmessage = (e: MessageEvent<{ X: number[][]; opts: ProjectOptions }>) => {
  try {
    const it = projectSteps(e.data.X, e.data.opts);
    for (;;) {
      const r = it.next();
      if (r.done) {
        self.postMessage({ type: 'done', result: r.value });
        return;
      }
      self.postMessage({ type: 'progress', done: r.value[0], total: r.value[1] });
    }
  } catch (err) {
    self.postMessage({ type: 'error', error: err instanceof Error ? err.message : String(err) });
  }
};
