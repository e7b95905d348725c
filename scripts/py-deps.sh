#!/bin/sh
# Installs the Debian packages the Python package's tests need (python/,
# tests/python/), if missing: Debian's python3 with numpy and pytest, and
# venv and pip, with which the tests install the package offline. The
# tests run /usr/bin/python3 (Debian's), whatever python3 is first on PATH.
set -e
PKGS="python3 python3-numpy python3-pytest python3-venv python3-pip"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "heed: installing missing Debian packages for the Python package:$missing"
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install.sh" $missing
