#!/bin/sh
# Builds the web UI (web/, TypeScript + Vite) into web/dist, which the next
# build of the binary embeds. Installs node, npm and the pinned npm packages
# when missing (scripts/npm-deps.sh); rebuilds only when a source is newer
# than web/dist/index.html. Exits non-zero when it cannot build (offline
# without node_modules, say): the binary then embeds the placeholder page.
set -e
cd "$(dirname "$0")/.."
sh scripts/npm-deps.sh web
stamp=web/dist/index.html
if [ -f "$stamp" ] && [ -z "$(find web/index.html web/src web/package-lock.json web/vite.config.ts web/public \
        -newer "$stamp" 2>/dev/null | head -n 1)" ]; then
    exit 0
fi
echo "heed: building the web UI (web/ -> web/dist)"
npm run --prefix web build --silent
