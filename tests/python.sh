#!/bin/sh
# Runs the Python package's pytest suite (tests/python) with Debian's python3
# against build/libheed.so and build/heed, and prints its counts as one line
# "pytest: N passed, N failed, N skipped" for tests/run.sh.
cd "$(dirname "$0")/.." || exit 1
out=test-output/pytest.xml
rm -f "$out"
/usr/bin/python3 -m pytest -q -rs -p no:cacheprovider --junitxml="$out" tests/python
rc=$?
[ -f "$out" ] && /usr/bin/python3 -c '
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
s = r if r.tag == "testsuite" else r.find("testsuite")
n, f, e, k = (int(s.get(x, 0)) for x in ("tests", "failures", "errors", "skipped"))
print("pytest: %d passed, %d failed, %d skipped" % (n - f - e - k, f + e, k))
' "$out"
exit $rc
