#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks, then runs every test
# (unit, integration against private PostgreSQL servers, and the Oracle tests,
# which report why they skip when PROCGATE_ORACLE_TEST_URL is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup-dashboard.sh
./scripts/setup-python.sh >/dev/null
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test --no-fail-fast "$@"
fi
