import { describe, expect, it } from 'vitest';
import { buildSvg, xmlEscape, type ExportToken } from '../src/export';
import { GraphData, selectEdges } from '../src/model';
import { graphReply } from './fixtures';

const labels = ['[BOS]', ' <The>', ' & "old"', " wiz'", 'ard'];
const inputs: ExportToken[] = labels.map((label, i) => ({ id: 100 + i, label, state: i === 3 ? 'selected' : 'input' }));
const outLabels = [' .', ' She\n', ' saw', ' a'];

function view(step: number, mode: 'current' | 'all') {
  const data = GraphData.fromReply(graphReply);
  const edges = selectEdges(data, { step, mode, selected: null, threshold: 0.05 });
  const outputs: ExportToken[] = outLabels
    .slice(0, step + 1)
    .map((label, i) => ({ id: 200 + i, label, state: i === step ? 'current' : 'previous' }));
  return { edges, res: buildSvg({ title: 'heed · test & <run>', subtitle: 'step', inputs, outputs, nOutRows: 4, edges }) };
}

/** Well-formedness light: tags balance, no raw "<" or "&" in text. */
function balanced(svg: string): boolean {
  const stack: string[] = [];
  const re = /<(\/?)([a-zA-Z][\w:-]*)([^>]*?)(\/?)>/g;
  let m: RegExpExecArray | null;
  const body = svg.replace(/^<\?xml[^>]*\?>\s*/, '');
  let last = 0;
  while ((m = re.exec(body))) {
    const between = body.slice(last, m.index);
    if (/[<>]/.test(between) || /&(?!(amp|lt|gt|quot|apos);)/.test(between)) return false;
    last = m.index + m[0].length;
    if (m[4] === '/') continue;
    if (m[1] === '/') {
      if (stack.pop() !== m[2]) return false;
    } else stack.push(m[2]);
  }
  return stack.length === 0 && body.slice(last).trim() === '';
}

describe('SVG export', () => {
  it('is an SVG document with balanced tags', () => {
    const { res } = view(3, 'all');
    expect(res.svg).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(res.svg.trim().endsWith('</svg>')).toBe(true);
    expect(balanced(res.svg)).toBe(true);
    expect(res.width).toBeGreaterThan(0);
    expect(res.height).toBeGreaterThan(0);
  });

  it('contains every visible token label, escaped', () => {
    const { res } = view(2, 'current');
    for (const l of labels) expect(res.svg).toContain(xmlEscape(l));
    expect(res.svg).toContain('&lt;The&gt;');
    expect(res.svg).toContain('&amp; &quot;old&quot;');
    expect(res.svg).toContain('wiz&apos;');
    expect(res.svg).toContain('She↵'); // newline shown as a symbol
    expect(res.svg).toContain('▶  saw'); // the current token marked, not only coloured
    expect(res.svg).not.toContain(' a<'); // output 3 is after the step: not shown
    expect((res.svg.match(/class="token output"/g) || []).length).toBe(3);
    expect((res.svg.match(/class="token input"/g) || []).length).toBe(5);
  });

  it('draws one element per edge, straight for input->output, curved for output->output', () => {
    for (const [t, mode] of [
      [0, 'current'],
      [3, 'current'],
      [3, 'all'],
    ] as const) {
      const { edges, res } = view(t, mode);
      expect((res.svg.match(/class="edge /g) || []).length).toBe(edges.n);
      expect((res.svg.match(/<line class="edge io"/g) || []).length).toBe(edges.nIO);
      expect((res.svg.match(/<path class="edge oo" d="M [\d.]+ [\d.]+ Q /g) || []).length).toBe(edges.nOO);
    }
  });

  it('uses the weight-proportional widths and colours', () => {
    const { res } = view(1, 'current');
    // the output edge of weight 1.0 at step 1: 3 px, orange
    expect(res.svg).toMatch(/class="edge oo"[^>]*stroke="#ff7f0e" stroke-width="3"/);
    // 0.351 -> 0.5 + 2.5 * 0.351 = 1.3775 -> 1.38
    expect(res.svg).toMatch(/class="edge io"[^>]*stroke="#1f77b4" stroke-width="1.38"/);
  });

  it('escapes the title and drops characters XML cannot hold', () => {
    const { res } = view(0, 'current');
    expect(res.svg).toContain('<title>heed · test &amp; &lt;run&gt;</title>');
    expect(xmlEscape('a\u0001b\u0000c')).toBe('abc');
    expect(xmlEscape('\ud800x')).toBe('\ufffdx');
    expect(xmlEscape('😀')).toBe('😀');
  });

  it('exports an empty view', () => {
    const { res } = (() => {
      const edges = selectEdges(null, { step: 0, mode: 'current', selected: null, threshold: 0.05 });
      return { res: buildSvg({ title: 't', subtitle: 's', inputs: [], outputs: [], nOutRows: 0, edges }) };
    })();
    expect(balanced(res.svg)).toBe(true);
    expect(res.svg).not.toContain('class="edge ');
  });
});
