#!/bin/sh
# Runs every cmocka suite, first the normal build, then the ASan+UBSan build,
# then the Node suite (tests/node), and prints one closing line
# "N passed, N failed, N skipped" counting test cases over both builds and
# the Node suite. A suite that crashes counts as one more failure.
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
# The Node suite (a stock OpenAI client against the server): its TAP
# summary's "# pass N" / "# fail N" / "# skipped N" join the counts.
echo "== node --test tests/node/"
log=test-output/node.log
if sh scripts/npm-deps.sh >"$log" 2>&1; then
    node --test tests/node/ >>"$log" 2>&1
    rc=$?
    cat "$log"
    p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -n 1)
    f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -n 1)
    s=$(sed -n 's/^# skipped \([0-9]*\)$/\1/p' "$log" | tail -n 1)
    pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0})); skip=$((skip + ${s:-0}))
    if [ "$rc" -ne 0 ]; then
        [ -z "$f" ] || [ "$f" = 0 ] && fail=$((fail + 1))
        failed="$failed tests/node"
    fi
else
    cat "$log"
    echo "node tests skipped: node, npm or the npm packages could not be installed (see above)"
    skip=$((skip + 1))
fi
[ -n "$failed" ] && echo "FAILED:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ -z "$failed" ]
