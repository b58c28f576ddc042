#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks, then runs every test
# (unit, integration against private PostgreSQL servers). The Oracle tests
# are ignored, and reported as skipped, unless PROCGATE_ORACLE_TEST_URL points
# at a real Oracle: then they run too.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup-dashboard.sh
./scripts/setup-python.sh >/dev/null
if [ -n "${PROCGATE_ORACLE_TEST_URL:-}" ]; then
  nextest_ignored=(--run-ignored all)
  test_ignored=(-- --include-ignored)
else
  nextest_ignored=()
  test_ignored=()
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "${nextest_ignored[@]}" "$@"
else
  cargo test --no-fail-fast "$@" "${test_ignored[@]}"
fi
