#!/bin/sh
# Runs every cmocka suite, first the normal build, then the ASan+UBSan build,
# and prints one closing line "N passed, N failed, N skipped" counting test
# cases over both builds. A suite that crashes counts as one more failure.
pass=0; fail=0; skip=0; failed=""
mkdir -p test-output
for build in build build-asan; do
    for t in "$build"/tests/test_*; do
        [ -x "$t" ] || continue
        echo "== $t"
        log="test-output/$(echo "$t" | tr '/' '_').log"
        "$t" >"$log" 2>&1
        rc=$?
        cat "$log"
        p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
        f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
        s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
        pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0})); skip=$((skip + ${s:-0}))
        if [ "$rc" -ne 0 ]; then
            [ -z "$f" ] && fail=$((fail + 1))
            failed="$failed $t"
        fi
    done
done
[ -n "$failed" ] && echo "FAILED:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ -z "$failed" ]
