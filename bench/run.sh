#!/bin/sh
# make bench: engine throughput (bench_decode) and kernel/bandwidth figures
# (bench_kern). Figures only: nothing here passes or fails.
#
# The model matrix: random-weight models written by build/bench/mkmodel into
# $HEED_BENCH_MODELS (default build/bench-models; generated once, ~5 GB in
# all) at SmolLM2-135M and Llama-3.2-1B geometry, in F16, Q8_0 and Q4_K
# (135M: its 576-wide rows are not a multiple of 256, so most tensors fall
# back to Q5_0 as in the reference engine; 1B: the Q4_K_M mix). Each is run
# with prompts of 64 and 512 tokens, then decodes 128 tokens (best of 2
# repeats for 135M, one run for 1B: about 25 minutes in all), on 1 and 2
# threads, with each capture mode (off, on, qk, sum). The summary gives decode as a fraction of the bandwidth limit:
# read bandwidth / weight bytes per token.
#
#   HEED_BENCH_QUICK=1   only the 135M models and prompt 64
# The section "paths" measures what users run (bench/paths.mjs): decode and
# prompt rates of `generate --save`, `POST /api/runs` and `/v1` streaming as
# ratios to `generate` with no capture, on the 135M and 1B Q8_0 models.
#   HEED_BENCH_SKIP_MATRIX=1   only the old small-model and kernel figures
set -e
B=build/bench
M=${HEED_BENCH_MODELS:-build/bench-models}
OUT=${HEED_BENCH_OUT:-build/bench-results.txt}

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
[ -n "$HEED_BENCH_SKIP_MATRIX" ] && exec $B/bench_kern

# Memory bandwidth is measured before and after the model runs and the
# larger figure kept: a machine shared with other work only ever lowers it.
echo "== memory bandwidth"
$B/bench_kern -b | tee build/bench-bw.txt

mkdir -p "$M"
SMOL="--layers 30 --embd 576 --heads 9 --kv-heads 3 --ff 1536 --vocab 49152 --ctx 2048 --tied"
L1B="--layers 16 --embd 2048 --heads 32 --kv-heads 8 --ff 8192 --vocab 128256 --ctx 4096 --tied"
models="smol135m:f16 smol135m:q8_0 smol135m:q4_k"
[ -z "$HEED_BENCH_QUICK" ] && models="$models llama1b:f16 llama1b:q8_0 llama1b:q4_k_m"
for mt in $models; do
    g=${mt%%:*}; ty=${mt#*:}
    f="$M/$g-$ty.gguf"
    if [ ! -f "$f" ]; then
        if [ "$g" = smol135m ]; then geo=$SMOL; else geo=$L1B; fi
        echo "== mkmodel $f"
        $B/mkmodel --arch llama $geo --type "$ty" --seed 1 -o "$f.tmp" && mv "$f.tmp" "$f"
    fi
done

# The paths users take (generate --save, POST /api/runs, /v1 streaming with
# attention) against the engine with no capture, alternating, best of 3, and
# the reference engine on the same file and thread count where it is present.
if command -v node >/dev/null 2>&1; then
    for g in smol135m llama1b; do
        f="$M/$g-q8_0.gguf"
        [ -f "$f" ] || continue
        if [ "$g" = smol135m ]; then r=3; else r=2; fi
        node bench/paths.mjs "$f" --threads 2 --prompt 64 --tokens 128 --repeats $r
        if [ -x ../shared/ref/llama-bench ]; then
            echo "== reference engine, same file: $g q8_0, 2 threads (prompt 512 and decode 128)"
            ../shared/ref/llama-bench -m "$f" -p 512 -n 128 -t 2 -r 2 2>/dev/null | grep -E "pp512|tg128" ||
                echo "   (the reference did not run here)"
            $B/bench_decode -m "$f" -p 512 -n 128 -t 2 -r 2 -c off | tail -n 2
        fi
    done
else
    echo "== paths: SKIP (node is missing: make bench installs it with the web UI's dependencies)"
fi

# The families beyond llama (issue: model families): GPT-2 small, Gemma 3 1B
# and Qwen3-30B-A3B shrunk to 4 of its 48 layers (every layer's geometry is
# the real one: 128 experts, 8 per token), Q8_0, random weights; heed's
# decode and prompt rates with no capture and with the recording the
# product makes, and the reference engine's on the same file when it runs
# here (it needs AVX-512).
GPT2="--arch gpt2 --layers 12 --embd 768 --heads 12 --kv-heads 12 --ff 3072 --vocab 50257 --ctx 1024 --tied"
GEMMA3="--arch gemma3 --layers 26 --embd 1152 --heads 4 --kv-heads 1 --head-dim 256 --ff 6912 --vocab 262144 --ctx 32768 --window 512 --tied"
QMOE="--arch qwen3moe --layers 4 --embd 2048 --heads 32 --kv-heads 4 --head-dim 128 --ff 6144 --experts 128 --experts-used 8 --ff-exp 768 --vocab 151936 --ctx 32768"
for ag in "gpt2-124m:$GPT2" "gemma3-1b:$GEMMA3" "qwen3moe-30b-a3b-4l:$QMOE"; do
    g=${ag%%:*}; geo=${ag#*:}
    f="$M/$g-q8_0.gguf"
    if [ ! -f "$f" ]; then
        echo "== mkmodel $f"
        $B/mkmodel $geo --type q8_0 --seed 1 -o "$f.tmp" && mv "$f.tmp" "$f"
    fi
    echo "== family: $g q8_0, 2 threads"
    for rep in 1 2; do
        $B/bench_decode -m "$f" -p 512 -n 64 -t 2 -r 1 -c off,qk | tail -n 2
        if [ -x ../shared/ref/llama-bench ]; then
            ../shared/ref/llama-bench -m "$f" -p 512 -n 64 -t 2 -r 1 2>/dev/null | grep -E "pp512|tg64" ||
                echo "   (the reference did not run here: it needs AVX-512)"
        fi
    done
done

: >"$OUT"
for mt in $models; do
    g=${mt%%:*}; ty=${mt#*:}
    f="$M/$g-$ty.gguf"
    if [ "$g" = smol135m ]; then r=2; else r=1; fi
    n=128
    prompts="64 512"
    [ -n "$HEED_BENCH_QUICK" ] && prompts=64
    for p in $prompts; do
        for t in 1 2; do
            echo "== $g $ty prompt $p threads $t"
            $B/bench_decode -m "$f" -p $p -n $n -t $t -r $r | tee -a "$OUT"
        done
    done
done

$B/bench_kern -b | tee -a build/bench-bw.txt
BW=$(awk '$1 == "read_gbs_2" && $2 > m {m = $2} END {print m}' build/bench-bw.txt)
BW1=$(awk '$1 == "read_gbs_1" && $2 > m {m = $2} END {print m}' build/bench-bw.txt)
echo
echo "== summary (read bandwidth: 1 thread $BW1 GB/s, 2 threads $BW GB/s; limit = bandwidth / weight bytes)"
printf "%-24s %3s %3s %-3s %9s %9s %9s %6s\n" model thr cap pp "pp tok/s" "tg tok/s" "limit" "% bw"
for f in "$M"/*.gguf; do
    b=$(basename "$f")
    bytes=$(stat -c %s "$f")
    awk -v b="$b" -v bytes="$bytes" -v bw1="$BW1" -v bw2="$BW" '
        $1 == b {
            thr = $3; cap = $5; pp = $7; sub(":", "", pp); pps = $8; tg = $12
            bw = thr == 1 ? bw1 : bw2
            lim = bw * 1e9 / bytes
            printf "%-24s %3s %3s %-4s %9.1f %9.1f %9.1f %5.0f%%\n", b, thr, cap, pp, pps, tg, lim, 100 * tg / lim
        }' "$OUT"
done
if [ -x $B/bench_kern ]; then
    echo "== kernels"
    $B/bench_kern
fi

if command -v wrk >/dev/null 2>&1; then
    echo "== HTTP: stored-view reads"
    sh bench/bench_http.sh "$B/../heed" || true
fi

echo "== views of a 500-token run (uncached and cached reads)"
sh bench/bench_views.sh "$B/../heed" || true

echo "== web UI: 500 + 500 tokens in headless chromium"
if sh scripts/browser-deps.sh >/dev/null 2>&1; then
    node bench/ui_bench.mjs 500 500 || true
else
    echo "web UI: SKIP (chromium or playwright-core could not be installed: sh scripts/browser-deps.sh)"
fi
