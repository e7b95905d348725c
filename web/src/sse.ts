// Server-Sent Events parser for a fetch() body (EventSource cannot POST).
// Text in, events out; follows the WHATWG event-stream rules: lines end with
// CRLF, LF or CR (a CR at the end of one chunk and the LF starting the next
// are one line end), ":" lines are comments, "data" lines of one event join
// with "\n", a blank line dispatches, an event without data is dropped.

export interface SseEvent {
  event: string; // "message" when the stream names none
  data: string;
  id?: string;
}

export class SseParser {
  private buf = '';
  private skipLF = false;
  private event = '';
  private data: string[] = [];
  private id: string | undefined;

  /** Feeds decoded text; returns the events completed by it. */
  push(chunk: string): SseEvent[] {
    const out: SseEvent[] = [];
    let s = chunk;
    if (this.skipLF) {
      if (s.startsWith('\n')) s = s.slice(1);
      if (s.length > 0) this.skipLF = false;
    }
    this.buf += s;
    let start = 0;
    const b = this.buf;
    for (let i = 0; i < b.length; i++) {
      const c = b.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.line(b.slice(start, i), out);
      if (c === 13) {
        if (i + 1 < b.length) {
          if (b.charCodeAt(i + 1) === 10) i++;
        } else {
          this.skipLF = true; // a LF may open the next chunk
        }
      }
      start = i + 1;
    }
    this.buf = b.slice(start);
    return out;
  }

  /** End of stream: a pending unterminated event is discarded (as the spec says). */
  end(): SseEvent[] {
    this.buf = '';
    this.event = '';
    this.data = [];
    return [];
  }

  private line(l: string, out: SseEvent[]): void {
    if (l === '') {
      if (this.data.length > 0) {
        const ev: SseEvent = { event: this.event || 'message', data: this.data.join('\n') };
        if (this.id !== undefined) ev.id = this.id;
        out.push(ev);
      }
      this.event = '';
      this.data = [];
      return;
    }
    if (l.charCodeAt(0) === 58) return; // ":" comment / heartbeat
    const colon = l.indexOf(':');
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? '' : l.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}

/** Parses a whole stream text at once (tests, small replies). */
export function parseSse(text: string): SseEvent[] {
  const p = new SseParser();
  return p.push(text);
}
