#!/bin/sh
# Installs the Debian packages the Python package's tests need (python/,
# tests/python/), if missing: Debian's python3 with numpy and pytest, and
# venv and pip, with which the tests install the package offline. The
# tests run /usr/bin/python3 (Debian's), whatever python3 is first on PATH.
set -e
exec sh "$(dirname "$0")/apt-ensure.sh" "the Python package" python3 python3-numpy python3-pytest python3-venv python3-pip
