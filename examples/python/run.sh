#!/usr/bin/env bash
# Runs the Python example against a procgate server: makes a venv (once, in
# target/), installs grpcio and grpcio-tools, generates the stubs from
# proto/, and runs client.py.   Usage: examples/python/run.sh HOST:PORT [--token T]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/examples-python-venv"
stubs="$root/target/examples-python-stubs"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

rm -rf "$stubs" && mkdir -p "$stubs"
"$venv/bin/python" -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$stubs" --grpc_python_out="$stubs" \
  "$root/proto/procgate/v1/procgate.proto"

PYTHONPATH="$stubs" exec "$venv/bin/python" "$here/client.py" "$@"
