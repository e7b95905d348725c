#!/bin/sh
# Installs the Debian packages heed needs to build and test, if missing.
# Says what it installs. Needs root (or sudo) only when something is missing.
set -e
PKGS="gcc make libc6-dev pkg-config libcmocka-dev libjansson-dev libpcre2-dev libmicrohttpd-dev libcurl4-openssl-dev libsqlite3-dev libzstd-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "heed: installing missing Debian packages:$missing"
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install.sh" $missing
echo "heed: installed$missing"
