#!/usr/bin/env bash
# The main job: installs what a fresh machine lacks, then runs the procgate
# demo: a throwaway PostgreSQL loaded with docs/examples/postgres, the gateway
# on 127.0.0.1:50051, and a tour of the service. `--serve` keeps both up
# after the tour until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --release --quiet --bin procgate -- demo "$@"
