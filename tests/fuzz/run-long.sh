#!/bin/sh
# run-long.sh NAME...: `make fuzz-long`. Runs each built target
# build-fuzz/fuzz/fuzz_NAME for $FUZZ_TIME seconds (default 3600) on
# build-fuzz/corpus/NAME, a corpus that starts as a copy of
# tests/fuzz/corpus_NAME and keeps what earlier runs found (the committed
# seeds stay as they are). Crash reproducers go to build-fuzz/crashes/NAME/.
# An input that runs over 30 s counts as a crash (a hang). Dictionaries
# tests/fuzz/NAME.dict are used where they exist. Prints per target the
# executions, coverage and whether it crashed, then a summary; exits 1 if
# any target crashed.
FUZZ_TIME=${FUZZ_TIME:-3600}
# -max_len per target: above its largest seed, small enough to stay fast
max_len() {
    case $1 in
    run) echo 65536 ;;        # saved runs are 20-30 KB
    tokenizer) echo 16384 ;;  # a tokenizer.json with the 256 byte pieces is ~4 KB
    gguf | hf_config | api | safetensors) echo 8192 ;;
    *) echo 2048 ;;           # text: bpe, spm, chat
    esac
}
summary=""
crashed=0
mkdir -p build-fuzz/corpus build-fuzz/crashes build-fuzz/logs
for n in "$@"; do
    bin=build-fuzz/fuzz/fuzz_$n
    corpus=build-fuzz/corpus/$n
    crashes=build-fuzz/crashes/$n
    log=build-fuzz/logs/$n.log
    mkdir -p "$corpus" "$crashes"
    [ -d "tests/fuzz/corpus_$n" ] && cp -n tests/fuzz/corpus_"$n"/* "$corpus"/ 2>/dev/null
    dict=""
    [ -f "tests/fuzz/$n.dict" ] && dict="-dict=tests/fuzz/$n.dict"
    echo "== fuzz_$n: $FUZZ_TIME s, -max_len=$(max_len "$n"), corpus $corpus"
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$FUZZ_TIME" -max_len="$(max_len "$n")" -timeout=30 -print_final_stats=1 \
        -artifact_prefix="$crashes/" $dict "$corpus" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(sed -n 's/^#[0-9]*[^c]*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, ft \2, corpus \3/p' "$log" | tail -n 1)
    if [ "$rc" -ne 0 ] && ! grep -q 'Test unit written to' "$log"; then
        # no reproducer: the harness could not start (fuzz_unavailable: data absent)
        found="DID NOT RUN (exit $rc): $(tail -n 1 "$log")"
    elif [ "$rc" -ne 0 ]; then
        crashed=1
        found="CRASH (exit $rc): $(grep -m1 -E '^==[0-9]+==ERROR|^SUMMARY|deadly signal|runtime error|ALARM' "$log"); reproducer: $(ls -t "$crashes" | head -n 1) in $crashes/"
    else
        found="no crash"
    fi
    line="fuzz_$n: ${execs:-?} executions, ${cov:-no coverage line}, $found (log $log)"
    echo "$line"
    summary="$summary$line
"
done
echo "== fuzz-long summary ($FUZZ_TIME s per target)"
printf '%s' "$summary"
exit $crashed
