#!/usr/bin/env bash
# The Python clients the tests drive procgate with, as data teams use it:
# grpcio (with grpcio-tools to generate stubs from the .proto) and pyarrow's
# Flight client; croniter, the reference schedule times are checked
# against; prometheus-client's parser for /metrics and opentelemetry-proto
# for a small OTLP receiver; PyJWT with cryptography, an identity provider's
# signer for the JWT tests. Installed into a virtual environment outside the checkout
# ($PROCGATE_PYTHON_VENV, default ~/.cache/procgate/python), so that a fresh
# clone reuses it. Idempotent; prints the environment's python.
set -euo pipefail
venv="${PROCGATE_PYTHON_VENV:-$HOME/.cache/procgate/python}"
packages=(grpcio==1.76.0 grpcio-tools==1.76.0 pyarrow==22.0.0 croniter==7.0.0
  prometheus-client==0.26.0 opentelemetry-proto==1.45.2 pyjwt==2.15.1 cryptography==50.0.2)
stamp="$venv/.procgate-packages"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "${packages[*]}" ]; then
  echo "setup-python: installing ${packages[*]}" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${packages[@]}" >&2
  echo "${packages[*]}" > "$stamp"
fi
echo "$venv/bin/python"
