#!/bin/sh
# Installs the Debian packages heed needs to build and test, if missing.
# Says what it installs. Needs root (or sudo) only when something is missing.
set -e
exec sh "$(dirname "$0")/apt-ensure.sh" heed gcc make libc6-dev pkg-config libcmocka-dev libjansson-dev libpcre2-dev \
    libmicrohttpd-dev libcurl4-openssl-dev libsqlite3-dev libzstd-dev
