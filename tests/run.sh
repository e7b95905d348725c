#!/bin/sh
# Runs every test binary, normal build then the ASan+UBSan build, and the CLI
# tests; prints a summary line "N passed, N failed" at the end.
# Test binaries are cmocka suites; each suite counts as one test here and
# cmocka prints its own per-case summary.
pass=0; fail=0; failed=""
mkdir -p test-output
for build in build build-asan; do
    for t in $build/tests/test_*; do
        [ -x "$t" ] || continue
        echo "== $t"
        if "$t"; then pass=$((pass+1)); else fail=$((fail+1)); failed="$failed $t"; fi
    done
done
echo "== tests/cli.sh"
if sh tests/cli.sh build/heed; then pass=$((pass+1)); else fail=$((fail+1)); failed="$failed tests/cli.sh"; fi
[ -n "$failed" ] && echo "FAILED:$failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
