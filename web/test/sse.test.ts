import { describe, expect, it } from 'vitest';
import { parseSse, SseParser } from '../src/sse';

const STREAM =
  'event: queued\ndata: {"position":0}\n\n' +
  ': waiting\n\n' +
  'event: token\ndata: {"index":0,"id":426,"label":"."}\n\n' +
  'event: done\ndata: {"run_id":"run_1","n_prompt":5,"n_output":1,"stop":"length"}\n\n';

describe('SSE parser', () => {
  it('parses events and skips comments', () => {
    const ev = parseSse(STREAM);
    expect(ev.map((e) => e.event)).toEqual(['queued', 'token', 'done']);
    expect(JSON.parse(ev[1].data).id).toBe(426);
  });

  it('gives the same events however the text is split', () => {
    const whole = parseSse(STREAM);
    for (let size = 1; size <= 13; size++) {
      const p = new SseParser();
      const got = [];
      for (let i = 0; i < STREAM.length; i += size) got.push(...p.push(STREAM.slice(i, i + size)));
      expect(got).toEqual(whole);
    }
  });

  it('accepts CRLF and CR line ends, also split between chunks', () => {
    const crlf = STREAM.replace(/\n/g, '\r\n');
    expect(parseSse(crlf)).toEqual(parseSse(STREAM));
    const cr = STREAM.replace(/\n/g, '\r');
    expect(parseSse(cr)).toEqual(parseSse(STREAM));
    const p = new SseParser();
    const got = [...p.push('event: a\r'), ...p.push('\ndata: 1\r'), ...p.push('\n\r'), ...p.push('\n')];
    expect(got).toEqual([{ event: 'a', data: '1' }]);
  });

  it('joins multi-line data with newlines', () => {
    const ev = parseSse('data: first\ndata:second\ndata:  third\n\n');
    expect(ev).toEqual([{ event: 'message', data: 'first\nsecond\n third' }]);
  });

  it('drops events without data and unterminated events', () => {
    expect(parseSse('event: x\n\n')).toEqual([]);
    const p = new SseParser();
    expect(p.push('event: token\ndata: {"a":1}\n')).toEqual([]);
    expect(p.end()).toEqual([]);
  });

  it('handles fields without a value and ids', () => {
    expect(parseSse('data\n\n')).toEqual([{ event: 'message', data: '' }]);
    expect(parseSse('id: 7\nevent: e\ndata: x\n\n')).toEqual([{ event: 'e', data: 'x', id: '7' }]);
    expect(parseSse('retry: 100\nfoo: bar\ndata: y\n\n')).toEqual([{ event: 'message', data: 'y' }]);
  });

  it('keeps the event name per event only', () => {
    const ev = parseSse('event: a\ndata: 1\n\ndata: 2\n\n');
    expect(ev.map((e) => e.event)).toEqual(['a', 'message']);
  });
});
