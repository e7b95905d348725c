// Export of the current view: an SVG document built as a string from the same
// data the canvas draws (pure, unit-tested), and a PNG made by drawing that
// SVG into an offscreen canvas.
import { COLORS, EDGE_ALPHA } from './theme';
import { curveControlX, edgeWidth, EdgeList, IO, layoutGraph, rowY, displayLabel } from './model';

export type TokenState = 'input' | 'selected' | 'previous' | 'current';

export interface ExportToken {
  id: number;
  label: string;
  state: TokenState;
}

export interface ExportView {
  title: string;
  subtitle: string;
  inputs: ExportToken[];
  /** the visible outputs 0..t */
  outputs: ExportToken[];
  /** rows of the output column (every output of the run, so positions match the screen) */
  nOutRows: number;
  edges: EdgeList;
  width?: number;
}

export interface SvgResult {
  svg: string;
  width: number;
  height: number;
}

/** Escapes text for XML content and attributes; drops characters XML 1.0 cannot hold. */
export function xmlEscape(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
    .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

const FONT = 'system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif';
const CHAR_W = 7; // px per character at 12px, an estimate for pill widths

function fill(state: TokenState): [string, string] {
  switch (state) {
    case 'selected':
      return [COLORS.selected, COLORS.selectedBorder];
    case 'previous':
      return [COLORS.previous, COLORS.previousBorder];
    case 'current':
      return [COLORS.current, COLORS.currentBorder];
    default:
      return [COLORS.input, COLORS.inputBorder];
  }
}

function f(x: number): string {
  return (Math.round(x * 100) / 100).toString();
}

/** The SVG document of a view: header (title, settings, legend), tokens, edges. */
export function buildSvg(v: ExportView): SvgResult {
  const width = Math.max(480, Math.round(v.width ?? 960));
  const head = 112;
  const rows = Math.max(v.inputs.length, v.nOutRows, 1);
  const lay = layoutGraph(width, Math.max(420, rows * 22 + 24), v.inputs.length, Math.max(v.nOutRows, v.outputs.length), {
    minRow: 22,
  });
  const height = head + lay.height;
  const maxPill = Math.max(40, 0.18 * width);
  const o: string[] = [];
  o.push('<?xml version="1.0" encoding="UTF-8"?>');
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}" font-size="12">`,
  );
  o.push(`<title>${xmlEscape(v.title)}</title>`);
  o.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="${COLORS.background}"/>`);
  // header
  o.push(`<text x="16" y="26" font-size="16" font-weight="600" fill="${COLORS.text}">${xmlEscape(v.title)}</text>`);
  o.push(`<text x="16" y="46" fill="${COLORS.muted}">${xmlEscape(v.subtitle)}</text>`);
  const ly = 70;
  o.push('<g class="legend">');
  o.push(`<line x1="16" y1="${ly}" x2="46" y2="${ly}" stroke="${COLORS.io}" stroke-width="2"/>`);
  o.push(`<text x="52" y="${ly + 4}" fill="${COLORS.text}">input → output (straight, blue)</text>`);
  o.push(`<path d="M 250 ${ly + 6} Q 290 ${ly} 250 ${ly - 6}" fill="none" stroke="${COLORS.oo}" stroke-width="2"/>`);
  o.push(`<text x="276" y="${ly + 4}" fill="${COLORS.text}">output → output (curved, orange)</text>`);
  const chips: [TokenState, string][] = [
    ['input', 'input'],
    ['selected', 'selected'],
    ['previous', 'generated'],
    ['current', '▶ current'],
  ];
  let cx = 16;
  const cy = ly + 22; // token states on a second line
  for (const [st, name] of chips) {
    const [bg, bd] = fill(st);
    o.push(`<rect x="${cx}" y="${cy - 8}" width="14" height="14" rx="3" fill="${bg}" stroke="${bd}"${st === 'input' ? '' : ' stroke-width="2"'}/>`);
    o.push(`<text x="${cx + 20}" y="${cy + 4}" fill="${COLORS.text}">${xmlEscape(name)}</text>`);
    cx += 30 + name.length * CHAR_W;
  }
  o.push('</g>');
  o.push(`<g transform="translate(0 ${head})">`);
  // edges, lightest first so heavy ones lie on top
  const order = Array.from({ length: v.edges.n }, (_, i) => i).sort((a, b) => v.edges.w[a] - v.edges.w[b]);
  o.push(`<g class="edges" fill="none" stroke-linecap="round" stroke-opacity="${EDGE_ALPHA}">`);
  for (const i of order) {
    const w = v.edges.w[i];
    const sw = f(edgeWidth(w));
    const yd = rowY(lay.output, v.edges.dst[i]);
    if (v.edges.kind[i] === IO) {
      const ys = rowY(lay.input, v.edges.src[i]);
      o.push(
        `<line class="edge io" x1="${f(lay.xIn)}" y1="${f(ys)}" x2="${f(lay.xOut)}" y2="${f(yd)}" stroke="${COLORS.io}" stroke-width="${sw}"><title>${w.toFixed(4)}</title></line>`,
      );
    } else {
      const ys = rowY(lay.output, v.edges.src[i]);
      const c = curveControlX(lay.xOut, ys, yd, width);
      o.push(
        `<path class="edge oo" d="M ${f(lay.xOut)} ${f(ys)} Q ${f(c)} ${f((ys + yd) / 2)} ${f(lay.xOut)} ${f(yd)}" stroke="${COLORS.oo}" stroke-width="${sw}"><title>${w.toFixed(4)}</title></path>`,
      );
    }
  }
  o.push('</g>');
  // tokens
  const pill = (t: ExportToken, x: number, y: number, side: string, index: number) => {
    let text = displayLabel(t.label);
    const maxChars = Math.max(2, Math.floor((maxPill - 12) / CHAR_W));
    if (t.state === 'current') text = '▶ ' + text;
    if (text.length > maxChars) text = text.slice(0, maxChars - 1) + '…';
    const w = Math.min(maxPill, text.length * CHAR_W + 12);
    const [bg, bd] = fill(t.state);
    const strong = t.state === 'selected' || t.state === 'current';
    o.push(
      `<g class="token ${side}" data-index="${index}"><rect x="${f(x - w / 2)}" y="${f(y - 9)}" width="${f(w)}" height="18" rx="4" fill="${bg}" stroke="${bd}" stroke-width="${strong ? 2 : 1}"/>` +
        `<text x="${f(x)}" y="${f(y + 4)}" text-anchor="middle" xml:space="preserve" fill="${COLORS.text}"${strong ? ' font-weight="600"' : ''}>${xmlEscape(text)}</text></g>`,
    );
  };
  o.push('<g class="tokens">');
  v.inputs.forEach((t, i) => pill(t, lay.xIn, rowY(lay.input, i), 'input', i));
  v.outputs.forEach((t, i) => pill(t, lay.xOut, rowY(lay.output, i), 'output', i));
  o.push('</g>');
  o.push('</g>');
  o.push('</svg>');
  return { svg: o.join('\n'), width, height };
}

/** Renders an SVG document into a PNG blob (browser only). */
export async function svgToPng(r: SvgResult, scale = 2): Promise<Blob> {
  const img = new Image();
  const url = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(r.svg);
  await new Promise<void>((resolve, reject) => {
    img.onload = () => resolve();
    img.onerror = () => reject(new Error('the SVG could not be rendered'));
    img.src = url;
  });
  // stay inside the browsers' canvas limits
  const s = Math.max(0.25, Math.min(scale, 16000 / r.height, 16000 / r.width));
  const canvas = document.createElement('canvas');
  canvas.width = Math.round(r.width * s);
  canvas.height = Math.round(r.height * s);
  const ctx = canvas.getContext('2d');
  if (!ctx) throw new Error('no 2D canvas');
  ctx.fillStyle = COLORS.background;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('PNG encoding failed'))), 'image/png'),
  );
}

/** Saves a blob as a file through a temporary link. */
export function download(blob: Blob, name: string): void {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
