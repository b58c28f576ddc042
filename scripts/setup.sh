#!/usr/bin/env bash
# Installs what a fresh Debian-like machine lacks for procgate's demo and
# tests, and nothing more. Idempotent: a no-op on a machine that has it all.
#
#  - PostgreSQL server binaries (initdb, postgres) for the embedded database
#    and the tests; found under /usr/lib/postgresql/<v>/bin. As root,
#    procgate runs them as the package's `postgres` user itself (no sudo).
#  - the DejaVu font, for the labels of procgate-bench's chart.
#  - h2load (nghttp2-client), the C load generator procgate-bench drives
#    ExecuteSync with, so that the client's cost does not hide the gateway's.
set -euo pipefail

missing=()
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  missing+=(postgresql)
fi
if ! command -v psql >/dev/null; then
  missing+=(postgresql-client)
fi
# The benchmark's chart labels (procgate-bench).
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  missing+=(fonts-dejavu-core)
fi

if ! command -v h2load >/dev/null; then
  missing+=(nghttp2-client)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
