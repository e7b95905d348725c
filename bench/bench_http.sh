#!/bin/sh
# bench_http.sh - requests/s of stored-view reads over HTTP: starts
# `heed serve` on a free port of 127.0.0.1 with a fresh data folder, records
# one run, then lets wrk (Debian package wrk) read one attention view of it
# for 10 s with 2 threads and 16 connections. The first read computes the
# view; the rest come from the view cache, so this measures the server's
# request path (libmicrohttpd, routing, cache), not the analysis.
# Usage: sh bench/bench_http.sh [build/heed]
set -e
HEED=${1:-build/heed}
command -v wrk >/dev/null 2>&1 || { echo "bench_http: wrk is missing (apt-get install wrk)"; exit 1; }
name=bench_http
. "$(dirname "$0")/serve.sh"
id=$(curl -s -N -d '{"prompt":"Once upon a time","max_tokens":64,"temperature":0}' "$base/api/runs" |
     sed -n 's/.*"run_id":"\([^"]*\)".*/\1/p')
url="$base/api/runs/$id/attention?step=32&norm=split"
curl -sf "$url" >/dev/null
echo "== wrk: GET /api/runs/{id}/attention?step=32&norm=split, 10 s, 2 threads, 16 connections"
wrk -t2 -c16 -d10s "$url" | tee "$dir/wrk.txt"
echo "bench_http: $(sed -n 's/^Requests\/sec: *//p' "$dir/wrk.txt") requests/s"
