#!/bin/sh
# Installs what the browser tests and benchmark need: Debian's chromium
# (driven by playwright-core from npm, tests/browser/package.json).
set -e
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
    echo "heed: installing Debian package: chromium"
    sh scripts/apt-install.sh chromium
fi
sh scripts/npm-deps.sh tests/browser
