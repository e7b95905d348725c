#!/bin/sh
# Runs every cmocka suite, first the normal build, then the ASan+UBSan build,
# then the Node suite (tests/node), the web UI's unit tests (Vitest, web/)
# and its browser tests (tests/browser), and prints one closing line
# "N passed, N failed, N skipped" counting test cases over all of them.
# A suite that crashes counts as one more failure.
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
# Adds the counts of a log to the totals: node's TAP summary ("# pass N",
# "# fail N", "# skipped N") or the "N passed, N failed, N skipped" line
# tests/vitest.sh prints for Vitest and tests/python.sh for pytest. rc != 0
# with no failure counted is one.
add_counts() { # log rc name
    p=$(sed -n -e 's/^# pass \([0-9]*\)$/\1/p' -e 's/^\(vitest\|pytest\): \([0-9]*\) passed.*/\2/p' "$1" | tail -n 1)
    f=$(sed -n -e 's/^# fail \([0-9]*\)$/\1/p' -e 's/^\(vitest\|pytest\): .* \([0-9]*\) failed.*/\2/p' "$1" | tail -n 1)
    s=$(sed -n -e 's/^# skipped \([0-9]*\)$/\1/p' -e 's/^\(vitest\|pytest\): .* \([0-9]*\) skipped$/\2/p' "$1" | tail -n 1)
    pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0})); skip=$((skip + ${s:-0}))
    if [ "$2" -ne 0 ]; then
        { [ -z "$f" ] || [ "$f" = 0 ]; } && fail=$((fail + 1))
        failed="$failed $3"
    fi
}

# Runs a suite after its setup command; a setup that fails (no node, npm,
# chromium or registry) is one skip, said loudly, not a silent pass.
suite() { # name log setup command...
    name=$1; log=$2; setup=$3; shift 3
    echo "== $name"
    if sh -c "$setup" >"$log" 2>&1; then
        "$@" >>"$log" 2>&1
        rc=$?
        cat "$log"
        add_counts "$log" "$rc" "$name"
    else
        cat "$log"
        echo "SKIP: $name: its tools could not be installed (see above)"
        skip=$((skip + 1))
    fi
}

# The Node suite: a stock OpenAI client against the server.
suite "node --test tests/node/" test-output/node.log "sh scripts/npm-deps.sh tests/node" node --test tests/node/
# The web UI's data transforms (Vitest) and the UI in Chromium against a real
# heed serve (Playwright; the binary embeds web/dist when it was built).
suite "vitest (web/)" test-output/vitest.log "sh scripts/npm-deps.sh web" sh tests/vitest.sh
suite "node --test tests/browser/" test-output/browser.log "sh scripts/browser-deps.sh" node --test tests/browser/
# The Python package (python/) with Debian's python3, numpy and pytest.
suite "pytest tests/python/" test-output/pytest.log "sh scripts/py-deps.sh" sh tests/python.sh
[ -n "$failed" ] && echo "FAILED:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ -z "$failed" ]
