#!/bin/sh
# Runs the web UI's Vitest suite (web/test) and prints its counts as one line
# "vitest: N passed, N failed, N skipped" for tests/run.sh.
cd "$(dirname "$0")/../web" || exit 1
out=../test-output/vitest.json
rm -f "$out"
npx vitest run --reporter=default --reporter=json --outputFile.json="$out"
rc=$?
[ -f "$out" ] && node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
console.log(`vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' "$out"
exit $rc
