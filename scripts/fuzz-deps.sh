#!/bin/sh
# Installs what `make fuzz` needs, if missing: clang and its libFuzzer
# runtime (libclang_rt.fuzzer, Debian's libclang-rt-N-dev for clang N).
# Says what it installs; needs root (or sudo) only when something is missing.
set -e
have_runtime() {
    command -v clang >/dev/null 2>&1 || return 1
    dir=$(clang -print-resource-dir 2>/dev/null) || return 1
    ls "$dir"/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 || ls "$dir"/lib/*/libclang_rt.fuzzer*.a >/dev/null 2>&1
}
have_runtime && exit 0
missing=""
command -v clang >/dev/null 2>&1 || missing="clang"
if [ -z "$missing" ]; then
    v=$(clang -dumpversion | cut -d. -f1)
    missing="libclang-rt-$v-dev"
else
    missing="clang libclang-rt-dev"
fi
echo "heed: installing missing Debian packages for make fuzz: $missing"
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install.sh" $missing
have_runtime || { echo "heed: clang's libFuzzer runtime is still missing after installing $missing" >&2; exit 1; }
echo "heed: installed $missing"
