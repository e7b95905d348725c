#!/bin/sh
# npm-deps.sh DIR: installs what an npm package folder of heed needs (web/,
# tests/node/, tests/browser/): node and npm from Debian when missing, then
# the pinned packages of DIR/package-lock.json with `npm ci`, only when
# DIR/node_modules is missing or older than the lock file.
# Exits non-zero with a message when they cannot be had (offline, no root).
set -e
dir=${1:?usage: npm-deps.sh DIR}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "heed: installing Debian packages: nodejs npm"
    sh "$(dirname "$0")/apt-install.sh" nodejs npm
fi
if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
    touch "$dir/node_modules"
fi
