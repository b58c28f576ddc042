#!/usr/bin/env bash
# Installs what the dashboard's browser test needs, on top of setup.sh:
#
#  - Debian's chromium, driven headless by playwright-core (which downloads
#    no browser of its own);
#  - the dashboard's npm packages (playwright-core, and the tools that
#    rebuild the committed bundle), from dashboard/package-lock.json.
#
# Idempotent: a no-op when both are already there and up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium" >&2
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

# npm records what it installed in node_modules/.package-lock.json.
# `npm install --no-save` rather than `npm ci`: the versions and hashes still
# come from package-lock.json, which it leaves untouched, but it tolerates
# what `npm ci` refuses here: the registry mirror lacks some of buf's binary
# packages for other platforms (darwin, win32), so the lock cannot list them.
if [ ! dashboard/node_modules/.package-lock.json -nt dashboard/package-lock.json ]; then
  echo "setup: installing the dashboard's npm packages" >&2
  (cd dashboard && npm install --no-save --no-audit --no-fund --loglevel=error)
fi
