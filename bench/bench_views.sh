#!/bin/sh
# bench_views.sh - how long the web UI's views take to compute on a long run:
# starts `heed serve` (bundled stories260K) on a free port with a fresh data
# folder, records a run of 5 prompt + 500 output tokens, and times the first
# (uncached) read of each view the UI's tabs use, then one cached read.
# Figures only. Usage: sh bench/bench_views.sh [build/heed]
set -e
HEED=${1:-build/heed}
name=bench_views
. "$(dirname "$0")/serve.sh"
t0=$(date +%s.%N)
id=$(curl -s -N -d '{"prompt":"Once upon a time","max_tokens":500,"temperature":0.8,"seed":1}' "$base/api/runs" |
     sed -n 's/.*"run_id":"\([^"]*\)".*/\1/p')
t1=$(date +%s.%N)
echo "views: generating and recording 500 tokens over HTTP: $(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") s"
for v in "graph" "graph?layer=2&head=3" "heatmap" "heatmap?layer=1&head=0&size=32" "stats" "logit-lens" \
         "candidates?step=250" "attention?format=bin&dtype=float16" "attention?pos=400" "attention?key=10" \
         "attention?step=499&norm=split&threshold=0.05"; do
    first=$(curl -s -o "$dir/body" -w '%{time_total}' "$base/api/runs/$id/$v")
    size=$(wc -c <"$dir/body")
    again=$(curl -s -o /dev/null -w '%{time_total}' "$base/api/runs/$id/$v")
    awk -v v="$v" -v a="$first" -v b="$again" -v n="$size" \
        'BEGIN { printf "views: %-44s first %6.0f ms  cached %5.1f ms  %8d bytes\n", v, a * 1000, b * 1000, n }'
done
