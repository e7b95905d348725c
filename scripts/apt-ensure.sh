#!/bin/sh
# apt-ensure.sh WHAT PKG...: installs whichever of the Debian packages PKG
# are missing (scripts/apt-install.sh), saying so with WHAT ("heed", "the
# Python package"); does nothing when all are installed.
set -e
what=$1
shift
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "heed: installing missing Debian packages for $what:$missing"
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install.sh" $missing
echo "heed: installed$missing"
