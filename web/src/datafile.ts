// Data files of the views (pure, no DOM): NPY v1.0 (float32), CSV, JSON,
// and the binary attention matrix of the API (a JSON header line, then
// little-endian float32 or float16 values).

// ---------------------------------------------------------------- NPY

/** The NPY v1.0 header (magic, version, length, dict padded to a multiple of 64 bytes) for a little-endian float32 array. */
export function npyHeader(shape: readonly number[]): Uint8Array {
  for (const d of shape) if (!Number.isInteger(d) || d < 0) throw new Error(`bad NPY shape ${shape.join('x')}`);
  const tuple = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': ${tuple}, }`;
  // magic (6) + version (2) + header length (2) + dict + padding + '\n' = multiple of 64
  const pre = 10;
  let len = dict.length + 1;
  const total = Math.ceil((pre + len) / 64) * 64;
  len = total - pre;
  if (len > 0xffff) throw new Error('NPY header too long');
  const out = new Uint8Array(total);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0); // \x93NUMPY 1.0
  out[8] = len & 0xff;
  out[9] = len >> 8;
  for (let i = 0; i < dict.length; i++) out[pre + i] = dict.charCodeAt(i);
  for (let i = pre + dict.length; i < total - 1; i++) out[i] = 0x20;
  out[total - 1] = 0x0a;
  return out;
}

/** A complete .npy file: header, then the values as little-endian float32 (C order). */
export function npyBytes(shape: readonly number[], data: ArrayLike<number>): Uint8Array {
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new Error(`NPY: ${data.length} values for shape ${shape.join('x')}`);
  const head = npyHeader(shape);
  const out = new Uint8Array(head.length + 4 * n);
  out.set(head, 0);
  const dv = new DataView(out.buffer, head.length, 4 * n);
  for (let i = 0; i < n; i++) dv.setFloat32(4 * i, Number(data[i]), true);
  return out;
}

// ---------------------------------------------------------------- CSV

/** One CSV field (RFC 4180): quoted when it holds a comma, quote, CR or LF, or starts/ends with a space. */
export function csvField(v: string | number | boolean | null | undefined): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : '';
  const s = String(v);
  return /[",\r\n]|^\s|\s$/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

/** Rows as CSV text (CRLF line ends, a final CRLF). */
export function toCsv(rows: readonly (readonly (string | number | boolean | null | undefined)[])[]): string {
  return rows.map((r) => r.map(csvField).join(',')).join('\r\n') + '\r\n';
}

/** A dense row-major matrix as CSV with a header row and a label column. */
export function matrixCsv(
  rows: number,
  cols: number,
  data: ArrayLike<number>,
  rowName: (i: number) => string,
  colName: (j: number) => string,
  corner = '',
): string {
  const out: string[] = [];
  const head = [corner];
  for (let j = 0; j < cols; j++) head.push(colName(j));
  out.push(head.map(csvField).join(','));
  for (let i = 0; i < rows; i++) {
    const r = [csvField(rowName(i))];
    for (let j = 0; j < cols; j++) r.push(fmtNum(data[i * cols + j]));
    out.push(r.join(','));
  }
  return out.join('\r\n') + '\r\n';
}

/** A number for CSV/JSON: up to 9 significant digits (float32 round trip), no exponent noise for 0. */
export function fmtNum(x: number): string {
  if (!Number.isFinite(x)) return '';
  if (x === 0) return '0';
  return String(Number(x.toPrecision(9)));
}

/** What a view exports: a name, a JSON value, CSV text, and (when numeric) an array for NPY. */
export interface ExportData {
  name: string;
  json: unknown;
  csv: string;
  npy?: { shape: number[]; data: ArrayLike<number> } | null;
}

/** Anything that can hand over the data it shows (null: nothing to export now). */
export interface Exportable {
  exportData(): ExportData | null | Promise<ExportData | null>;
}

// ---------------------------------------------------------------- binary attention

/** The element types of the API's binary replies (docs/API.md). */
export type Dtype = 'float32' | 'float16';

/** IEEE binary16 bits to a number (subnormals, infinities and NaN included). */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const F16_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) t[i] = f16ToF32(i);
  return t;
})();

/**
 * A reply's first line: its text (the whole body when there is no LF) and
 * where the values after it start (-1: no LF).
 */
export function binHeader(buf: ArrayBuffer): { text: string; off: number } {
  const bytes = new Uint8Array(buf);
  const nl = bytes.indexOf(0x0a);
  const text = new TextDecoder().decode(nl < 0 ? bytes : bytes.subarray(0, nl));
  return { text, off: nl < 0 ? -1 : nl + 1 };
}

/** Bytes per value of a binary reply (anything but float16 is float32). */
export function dtypeBytes(dtype: unknown): 2 | 4 {
  return dtype === 'float16' ? 2 : 4;
}

/** n little-endian float16 or float32 values from byte `off` on (the caller has checked the length). */
export function binValues(buf: ArrayBuffer, off: number, n: number, dtype: unknown): Float32Array {
  const dv = new DataView(buf, off);
  const data = new Float32Array(n);
  if (dtype === 'float16') for (let i = 0; i < n; i++) data[i] = F16_TABLE[dv.getUint16(2 * i, true)];
  else for (let i = 0; i < n; i++) data[i] = dv.getFloat32(4 * i, true);
  return data;
}

export interface Matrix {
  rows: number;
  cols: number;
  data: Float32Array;
}

/** Parses the binary form of /attention (or /heatmap): `{"dtype","shape"}\n` then LE float32/float16 values. */
export function parseBinMatrix(buf: ArrayBuffer): Matrix & { header: Record<string, unknown> } {
  const { text, off } = binHeader(buf);
  if (off < 0) throw new Error('binary matrix: no header line');
  const header = JSON.parse(text) as Record<string, unknown>;
  const shape = header.shape as number[];
  if (!Array.isArray(shape) || shape.length !== 2) throw new Error('binary matrix: bad shape');
  const [rows, cols] = shape;
  const n = rows * cols;
  if (header.dtype !== 'float16' && header.dtype !== 'float32') throw new Error(`binary matrix: dtype ${String(header.dtype)}`);
  if (buf.byteLength - off < dtypeBytes(header.dtype) * n) throw new Error('binary matrix: short body');
  return { rows, cols, data: binValues(buf, off, n, header.dtype), header };
}
