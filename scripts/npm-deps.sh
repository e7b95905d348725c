#!/bin/sh
# Installs what the Node tests (tests/node) need: node and npm from Debian
# when missing, then the pinned npm packages (package-lock.json) with
# `npm ci`, only when node_modules is missing or older than the lock file.
# Exits non-zero with a message when they cannot be had (offline, no root).
set -e
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "heed: installing Debian packages: nodejs npm"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
            echo "heed: please install as root: apt-get install nodejs npm" >&2; exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
dir=tests/node
if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
    touch "$dir/node_modules"
fi
