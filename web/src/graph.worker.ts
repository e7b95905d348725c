// The token graph's reader of a long run's rows, off the main thread: a
// Web Worker that reads a range of steps from /graph (the binary form, or
// JSON from a server without it), builds each step's sorted edge lists
// (model.ts buildStepEdges, the costly part) and hands the rows and the
// lists over (transferred, not copied). Started by web/src/graph.ts
// (RangeReader), which falls back to the same work on the main thread when
// a worker cannot run.
//
// Messages: in {id, url} (an absolute URL); out {id, range} or {id, error}.
import { buildRangeEdges, parseGraphBin, rangeOfReply, type GraphRange, type GraphReply } from './model';

/** Reads one range (url: /graph?from=&to=&format=bin...) and builds its edge lists. */
async function readRange(url: string): Promise<GraphRange> {
  const r = await fetch(url, { headers: { Accept: 'application/octet-stream, application/json' } });
  if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
  let g: GraphRange;
  if ((r.headers.get('Content-Type') ?? '').includes('json')) {
    const j = (await r.json()) as GraphReply & { from?: number; to?: number };
    const u = new URL(url);
    const from = j.from ?? Number(u.searchParams.get('from') ?? 0);
    g = rangeOfReply(j, from, j.to ?? from + j.prompt.length);
  } else g = parseGraphBin(await r.arrayBuffer());
  g.steps = buildRangeEdges(g);
  return g;
}

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<{ id: number; url: string }>) => void) | null;
  postMessage(m: unknown, transfer?: Transferable[]): void;
};

scope.onmessage = (e) => {
  const { id, url } = e.data;
  readRange(url).then(
    (range) => {
      const tr: Transferable[] = [range.rows.buffer];
      for (const s of range.steps ?? []) tr.push(s.ioSrc.buffer, s.ioW.buffer, s.ooSrc.buffer, s.ooW.buffer);
      scope.postMessage({ id, range }, tr);
    },
    (err: unknown) => scope.postMessage({ id, error: String(err instanceof Error ? err.message : err) }),
  );
};
