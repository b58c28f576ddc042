#!/usr/bin/env bash
# The README's buf curl walkthrough, as a script CI runs: list the services
# through reflection, start a job with SubmitAsync, follow it with WatchJob.
# buf comes from npm (@bufbuild/buf), installed once into target/.
#   Usage: examples/buf/walkthrough.sh HOST:PORT
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tools="$root/target/npm-tools"
if [ ! -x "$tools/node_modules/.bin/buf" ]; then
  npm install --silent --prefix "$tools" @bufbuild/buf@1.75.0 >/dev/null
fi
buf() { "$tools/node_modules/.bin/buf" "$@"; }
server="http://$1"

echo "\$ buf curl --protocol grpc --http2-prior-knowledge --list-methods $server"
# Captured first: `… | tee | grep -q` would stop reading at the first match,
# and tee's SIGPIPE would fail the pipeline (pipefail).
methods=$(buf curl --protocol grpc --http2-prior-knowledge --list-methods "$server")
echo "$methods"
grep -q '^procgate.v1.ProcedureService/SubmitAsync$' <<<"$methods"

echo "\$ buf curl … ListProcedures"
listed=$(buf curl --protocol grpc --http2-prior-knowledge -d '{"schema":"pkg_etl"}' \
  "$server/procgate.v1.ProcedureService/ListProcedures")
printf '%s\n' "$listed" | grep '"procedure"'
grep -q '"procedure": "pkg_etl.proceso_largo"' <<<"$listed"

echo "\$ buf curl … SubmitAsync"
job=$(buf curl --protocol grpc --http2-prior-knowledge \
  -d '{"call":{"procedure":"pkg_etl.proceso_largo","params":[
        {"name":"p_fecha","value":{"date_value":"2024-05-01"}},
        {"name":"p_pasos","value":{"integer_value":3}},
        {"name":"p_pausa_ms","value":{"integer_value":200}}]}}' \
  "$server/procgate.v1.ProcedureService/SubmitAsync")
echo "$job"
id=$(printf '%s' "$job" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')

echo "\$ buf curl … WatchJob"
watched=$(buf curl --protocol grpc --http2-prior-knowledge -d "{\"id\":\"$id\"}" \
  "$server/procgate.v1.ProcedureService/WatchJob")
printf '%s\n' "$watched" | grep -E '"(state|progress|progressMessage)"'
grep -q '"state": "JOB_STATE_COMPLETED"' <<<"$watched"
echo "walkthrough: job $id COMPLETED"
