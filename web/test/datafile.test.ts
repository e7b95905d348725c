import { describe, expect, it } from 'vitest';
import {
  binHeader,
  binValues,
  csvField,
  dtypeBytes,
  f16ToF32,
  fmtNum,
  matrixCsv,
  npyBytes,
  npyHeader,
  parseBinMatrix,
  toCsv,
} from '../src/datafile';

const ascii = (b: Uint8Array) => String.fromCharCode(...b);

describe('NPY v1.0', () => {
  it('writes the documented header for a 2-D float32 array', () => {
    const h = npyHeader([2, 3]);
    expect(h.length % 64).toBe(0);
    expect(Array.from(h.subarray(0, 8))).toEqual([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
    const len = h[8] | (h[9] << 8);
    expect(len).toBe(h.length - 10);
    const dict = ascii(h.subarray(10));
    expect(dict.startsWith("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }")).toBe(true);
    expect(dict.endsWith('\n')).toBe(true);
    expect(dict.slice(0, -1).trimEnd()).toBe("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
    // 10 bytes + 59 characters + 1 LF = 70 > 64: padded with spaces to 128 (header length 118 = 0x76, as numpy writes it)
    expect(h.length).toBe(128);
    expect(len).toBe(0x76);
    expect(ascii(h.subarray(10 + 59, 127))).toBe(' '.repeat(127 - 69));
    expect(h[127]).toBe(0x0a);
  });

  it('writes 1-D and 0-D shapes as Python tuples', () => {
    expect(ascii(npyHeader([5]))).toContain("'shape': (5,), }");
    expect(ascii(npyHeader([]))).toContain("'shape': (), }");
    expect(ascii(npyHeader([4, 8, 4]))).toContain("'shape': (4, 8, 4), }");
    for (const s of [[1], [12345, 67890], [1, 2, 3, 4, 5, 6, 7, 8]]) expect(npyHeader(s).length % 64).toBe(0);
  });

  it('grows the header to the next multiple of 64 when the dict is long', () => {
    const h = npyHeader(Array(8).fill(1000000000));
    expect(h.length).toBe(192);
    expect(h[8] | (h[9] << 8)).toBe(182);
    expect(h[191]).toBe(0x0a);
  });

  it('writes the values as little-endian float32 after the header', () => {
    const b = npyBytes([2, 2], [1, -2, 0.5, 3.25]);
    expect(b.length).toBe(128 + 16);
    const dv = new DataView(b.buffer, 128);
    expect([0, 4, 8, 12].map((o) => dv.getFloat32(o, true))).toEqual([1, -2, 0.5, 3.25]);
    expect(Array.from(b.subarray(128, 132))).toEqual([0x00, 0x00, 0x80, 0x3f]); // 1.0f
  });

  it('refuses data that does not fill the shape', () => {
    expect(() => npyBytes([2, 2], [1, 2, 3])).toThrow();
    expect(() => npyHeader([-1])).toThrow();
  });
});

describe('CSV', () => {
  it('quotes only what needs quoting', () => {
    expect(csvField('plain')).toBe('plain');
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField(' lead')).toBe('" lead"');
    expect(csvField('line\nbreak')).toBe('"line\nbreak"');
    expect(csvField(1.5)).toBe('1.5');
    expect(csvField(NaN)).toBe('');
    expect(csvField(null)).toBe('');
  });

  it('joins rows with CRLF', () => {
    expect(toCsv([['a', 1], ['b,c', 2]])).toBe('a,1\r\n"b,c",2\r\n');
  });

  it('writes a labelled matrix', () => {
    const csv = matrixCsv(2, 2, [0.5, 0, 0.25, 0.75], (i) => `q${i}`, (j) => `k ${j}`, 'q\\k');
    expect(csv).toBe('q\\k,k 0,k 1\r\nq0,0.5,0\r\nq1,0.25,0.75\r\n');
  });

  it('formats float32 numbers without noise', () => {
    expect(fmtNum(Math.fround(0.1))).toBe('0.100000001');
    expect(fmtNum(0)).toBe('0');
    expect(fmtNum(Infinity)).toBe('');
  });
});

describe('binary attention matrix', () => {
  it('decodes IEEE binary16', () => {
    expect(f16ToF32(0x0000)).toBe(0);
    expect(f16ToF32(0x3c00)).toBe(1);
    expect(f16ToF32(0x3800)).toBe(0.5);
    expect(f16ToF32(0xc000)).toBe(-2);
    expect(f16ToF32(0x7bff)).toBe(65504);
    expect(f16ToF32(0x0001)).toBe(2 ** -24); // smallest subnormal
    expect(f16ToF32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16ToF32(0x0400)).toBe(2 ** -14); // smallest normal
    expect(f16ToF32(0x7c00)).toBe(Infinity);
    expect(f16ToF32(0xfc00)).toBe(-Infinity);
    expect(f16ToF32(0x7e00)).toBeNaN();
    expect(f16ToF32(0x3555)).toBeCloseTo(1 / 3, 3);
  });

  const body = (header: string, values: number[], bytesPer: 2 | 4) => {
    const head = new TextEncoder().encode(header + '\n');
    const buf = new ArrayBuffer(head.length + values.length * bytesPer);
    new Uint8Array(buf).set(head);
    const dv = new DataView(buf, head.length);
    values.forEach((v, i) => (bytesPer === 2 ? dv.setUint16(2 * i, v, true) : dv.setFloat32(4 * i, v, true)));
    return buf;
  };

  it('splits the header line from the values (shared with the /heatmap parser)', () => {
    const b = body('{"dtype":"float16","shape":[1,2]}', [0x3c00, 0xc000], 2);
    const h = binHeader(b);
    expect(h.text).toBe('{"dtype":"float16","shape":[1,2]}');
    expect(h.off).toBe(h.text.length + 1);
    expect(Array.from(binValues(b, h.off, 2, 'float16'))).toEqual([1, -2]);
    expect([dtypeBytes('float16'), dtypeBytes('float32'), dtypeBytes(undefined)]).toEqual([2, 4, 4]);
    // no LF: the whole body is the header text
    expect(binHeader(new TextEncoder().encode('{"a":1}').buffer as ArrayBuffer)).toEqual({ text: '{"a":1}', off: -1 });
  });

  it('parses the float16 form', () => {
    const m = parseBinMatrix(body('{"dtype":"float16","shape":[2,2]}', [0x3c00, 0, 0x3800, 0x3800], 2));
    expect([m.rows, m.cols]).toEqual([2, 2]);
    expect(Array.from(m.data)).toEqual([1, 0, 0.5, 0.5]);
  });

  it('parses the float32 form', () => {
    const m = parseBinMatrix(body('{"dtype":"float32","shape":[1,3]}', [0.25, 0.5, 0.25], 4));
    expect(Array.from(m.data)).toEqual([0.25, 0.5, 0.25]);
  });

  it('refuses a short body or an unknown dtype', () => {
    expect(() => parseBinMatrix(body('{"dtype":"float32","shape":[2,2]}', [1, 2], 4))).toThrow();
    expect(() => parseBinMatrix(body('{"dtype":"int8","shape":[1,1]}', [1], 4))).toThrow();
    expect(() => parseBinMatrix(new TextEncoder().encode('no header').buffer as ArrayBuffer)).toThrow();
  });
});
