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
  var realFetch = window.fetch.bind(window);
  window.fetch = function (input, init) {
    var u = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    var method = ((init && init.method) || (input && input.method) || 'GET').toUpperCase();
    if (!/\/(api|v1)\//.test(new URL(u, location.href).pathname)) return realFetch(input, init);
    if (method !== 'GET') return error(503, 'this is an exported file: generating, tokenizing and deleting need heed serve');
    var v = data[key(u)];
    if (v === undefined) return error(404, 'this view is not in the exported file (heed export computes the common ones)');
    if (v && typeof v === 'object' && typeof v.$bin === 'string') {
      var bin = atob(v.$bin), bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      return reply(200, bytes, 'application/octet-stream');
    }
    return reply(200, JSON.stringify(v), 'application/json');
  };
})();
