// The offline viewer of `heed export RUN -o run.html` (docs/UI.md): the
// exported page carries the API responses its views read (a JSON object in
// <script id="heed-data">, keyed by path and sorted query), and this script,
// which runs before the app, answers the app's fetch() calls from it. Views
// whose data is not in the file get a 404 that says so; generating needs a
// server and gets a 503.
(function () {
  'use strict';
  var el = document.getElementById('heed-data');
  if (!el) return;
  var data = JSON.parse(el.textContent);
  var runId = data['/api/runs'] && data['/api/runs'].runs[0] && data['/api/runs'].runs[0].id;
  if (runId && !/run=/.test(location.hash)) history.replaceState(null, '', '#run=' + encodeURIComponent(runId));

  function key(u) {
    var url = new URL(u, location.href);
    var pairs = [];
    url.searchParams.forEach(function (v, k) { pairs.push([k, v]); });
    pairs.sort(function (a, b) { return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0; });
    var path = decodeURIComponent(url.pathname);
    path = path.slice(path.search(/\/(api|v1)\//)); // the app asks relative to the page: file:///dir/api/...
    if (path === '/api/runs') return path; // the list: one run, whatever the paging
    return path + (pairs.length ? '?' + pairs.map(function (p) { return p[0] + '=' + p[1]; }).join('&') : '');
  }
  function reply(status, body, type) {
    return Promise.resolve(new Response(body, { status: status, headers: { 'Content-Type': type } }));
  }
  function error(status, message) {
    return reply(status, JSON.stringify({ error: { message: message, type: 'invalid_request_error', code: 'exported_file' } }),
      'application/json');
  }
  function b64bytes(s) {
    var bin = atob(s), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }
  // IEEE binary16 <-> binary32 (round to nearest even), for the binary form
  var f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
  function halfToFloat(h) {
    var s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
    if (e === 0) return s * m * Math.pow(2, -24);
    if (e === 31) return m ? NaN : s * Infinity;
    return s * (1 + m / 1024) * Math.pow(2, e - 15);
  }
  function floatToHalf(x) {
    f32[0] = x;
    var b = u32[0], sign = (b >>> 16) & 0x8000, e = ((b >>> 23) & 255) - 127 + 15, m = b & 0x7fffff;
    if (((b >>> 23) & 255) === 255) return sign | 0x7c00 | (m ? 0x200 : 0);
    if (e >= 31) return sign | 0x7c00;
    if (e <= 0) {
      if (e < -10) return sign;
      m |= 0x800000;
      var shift = 14 - e, hm = m >>> shift, rem = m & ((1 << shift) - 1), half = 1 << (shift - 1);
      if (rem > half || (rem === half && (hm & 1))) hm++;
      return sign | hm;
    }
    var h = (e << 10) | (m >>> 13), r = m & 0x1fff;
    if (r > 0x1000 || (r === 0x1000 && (h & 1))) h++;
    return sign | h;
  }
  // The dense matrix of a selection, if the file has it: {n, at(q, k)}.
  var denseCache = {};
  function dense(runPath, params) {
    var sel = [['dtype', 'float16'], ['format', 'bin']];
    ['agg', 'head', 'layer'].forEach(function (k) { if (params.has(k)) sel.push([k, params.get(k)]); });
    sel.sort(function (a, b) { return a[0] < b[0] ? -1 : 1; });
    var k = runPath + '/attention?' + sel.map(function (p) { return p[0] + '=' + p[1]; }).join('&');
    if (denseCache[k] !== undefined) return denseCache[k];
    var v = data[k], d = null;
    if (v && typeof v.$bin === 'string') {
      var bytes = b64bytes(v.$bin), nl = bytes.indexOf(10);
      var head = JSON.parse(new TextDecoder().decode(bytes.subarray(0, nl))), n = head.shape[0];
      var vals = new Uint16Array(bytes.slice(nl + 1).buffer, 0, n * n), m = new Float32Array(n * n);
      for (var i = 0; i < n * n; i++) m[i] = halfToFloat(vals[i]);
      d = { n: n, m: m };
    }
    return (denseCache[k] = d);
  }
  // GET .../heatmap computed from the embedded dense matrix, as the server
  // pools it (docs/API.md): causal entries only, max or mean per cell.
  function heatmap(runPath, params) {
    var d = dense(runPath, params);
    if (!d) return null;
    var int = function (k, def) { return params.has(k) ? parseInt(params.get(k), 10) : def; };
    var q0 = int('q0', 0), q1 = int('q1', d.n), k0 = int('k0', 0), k1 = int('k1', d.n), size = int('size', 256);
    if (!(q0 >= 0 && q0 < q1 && q1 <= d.n && k0 >= 0 && k0 < k1 && k1 <= d.n && size >= 1)) return error(400, 'bad window');
    var mean = params.get('pool') === 'mean', bq = Math.ceil((q1 - q0) / size), bk = Math.ceil((k1 - k0) / size);
    var rows = Math.ceil((q1 - q0) / bq), cols = Math.ceil((k1 - k0) / bk);
    var cell = new Float32Array(rows * cols), cnt = new Int32Array(rows * cols);
    for (var q = q0; q < q1; q++)
      for (var k = k0; k < k1 && k <= q; k++) {
        var j = Math.floor((q - q0) / bq) * cols + Math.floor((k - k0) / bk), w = d.m[q * d.n + k];
        cell[j] = mean ? cell[j] + w : Math.max(cell[j], w);
        cnt[j]++;
      }
    if (mean) for (var i = 0; i < cell.length; i++) cell[i] = cnt[i] ? cell[i] / cnt[i] : 0;
    var head = { q0: q0, q1: q1, k0: k0, k1: k1, bq: bq, bk: bk, rows: rows, cols: cols,
                 pool: mean ? 'mean' : 'max', exact: bq === 1 && bk === 1 };
    if (params.get('format') !== 'bin') {
      head.data = Array.from(cell);
      return reply(200, JSON.stringify(head), 'application/json');
    }
    var f16 = params.get('dtype') === 'float16';
    head.dtype = f16 ? 'float16' : 'float32';
    head.shape = [rows, cols];
    var line = new TextEncoder().encode(JSON.stringify(head) + '\n');
    var body = new Uint8Array(line.length + cell.length * (f16 ? 2 : 4));
    body.set(line);
    if (f16) {
      var h16 = new Uint16Array(cell.length);
      for (var t = 0; t < cell.length; t++) h16[t] = floatToHalf(cell[t]);
      body.set(new Uint8Array(h16.buffer), line.length);
    } else {
      body.set(new Uint8Array(cell.buffer), line.length);
    }
    return reply(200, body, 'application/octet-stream');
  }

  // A long run's graph is stored sparse (weights under v.$sparse dropped,
  // rows as [index, weight, ...]); the app reads dense rows.
  function denseGraph(v) {
    var g = {}, expand = function (rows, len) {
      return rows.map(function (sp, t) {
        var row = new Array(len(t)).fill(0);
        for (var i = 0; i + 1 < sp.length; i += 2) row[sp[i]] = sp[i + 1];
        return row;
      });
    };
    Object.keys(v).forEach(function (k) { if (k !== '$sparse') g[k] = v[k]; });
    g.prompt = expand(v.prompt, function () { return v.n_prompt; });
    g.output = expand(v.output, function (t) { return t; });
    return g;
  }

  var realFetch = window.fetch.bind(window);
  window.fetch = function (input, init) {
    var u = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    var method = ((init && init.method) || (input && input.method) || 'GET').toUpperCase();
    if (!/\/(api|v1)\//.test(new URL(u, location.href).pathname)) return realFetch(input, init);
    if (method !== 'GET') return error(503, 'this is an exported file: generating, tokenizing and deleting need heed serve');
    var k = key(u), v = data[k];
    var hm = v === undefined && /\/heatmap(\?|$)/.test(k) ? heatmap(k.slice(0, k.indexOf('/heatmap')), new URL(u, location.href).searchParams) : null;
    if (hm) return hm;
    if (v === undefined) return error(404, 'this view is not in the exported file (heed export computes the common ones)');
    if (v && typeof v === 'object' && typeof v.$bin === 'string') return reply(200, b64bytes(v.$bin), 'application/octet-stream');
    return reply(200, JSON.stringify(v && v.$sparse !== undefined ? denseGraph(v) : v), 'application/json');
  };
})();
