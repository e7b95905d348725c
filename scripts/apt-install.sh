#!/bin/sh
# apt-install.sh PKG...: installs Debian packages with apt-get, as root or
# through sudo; exits non-zero with the command to run when neither works.
set -e
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "heed: please install as root: apt-get install $*" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$@"
