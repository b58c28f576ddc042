#!/usr/bin/env bash
# The main job: installs what a fresh machine lacks, then runs procgate on an
# embedded throwaway PostgreSQL loaded with docs/examples/postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --release --quiet -- serve "$@"
