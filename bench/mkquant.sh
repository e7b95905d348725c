#!/bin/sh
# Writes the model files test_quant's test_model_files reads (build/qm, or
# the folder given): one random-weight llama (4 layers, width 256, FFN 768,
# vocabulary 2048, seed 1) as F16 and as each of Q2_K, Q3_K, IQ4_NL, IQ4_XS,
# quantized with heed's reference quantizers (mkmodel). About 18 MB in all.
set -e
dir=${1:-build/qm}
make --no-print-directory -s build/bench/mkmodel
mkdir -p "$dir"
for t in f16 q2_k q3_k iq4_nl iq4_xs; do
    build/bench/mkmodel --arch llama --layers 4 --embd 256 --heads 4 --kv-heads 4 --ff 768 --vocab 2048 \
        --ctx 512 --type "$t" --seed 1 -o "$dir/$t.gguf"
done
