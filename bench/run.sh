#!/bin/sh
# make bench: engine throughput (bench_decode) and kernel/bandwidth figures
# (bench_kern). Figures only: nothing here passes or fails.
set -e
B=build/bench
echo "== engine: bundled stories260K"
for t in 1 2; do $B/bench_decode -p 64 -n 256 -t $t; done
for f in tiny-llama3 tiny-llama3-q8_0 tiny-qwen3; do
    m=../shared/models/$f.gguf
    if [ -f "$m" ]; then
        echo "== engine: $f"
        for t in 1 2; do $B/bench_decode -m "$m" -p 64 -n 128 -t $t -r 3; done
    else
        echo "== engine: $f: SKIP ($m absent)"
    fi
done
if [ -x $B/bench_kern ]; then
    echo "== kernels"
    $B/bench_kern
fi
