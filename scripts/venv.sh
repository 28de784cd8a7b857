# Sourced by test.sh and demo.sh: make .venv with Python >= 3.11 and install zonemesh into it.
# Usage: install_zonemesh [EXTRAS], e.g. `install_zonemesh '[dev]'`.
install_zonemesh() {
  local extras="${1:-}"
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "zonemesh needs Python >= 3.11; python3 is $(python3 --version 2>&1)" >&2
    exit 1
  fi
  # Debian's python3 ships venv/ensurepip separately.
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".${extras}"
}
