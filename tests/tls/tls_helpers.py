"""Helpers of the TLS tests: certificates made here, `zonemesh` runs that must end, files."""

from __future__ import annotations

import ipaddress
import os
import ssl
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from support.processes import ZONEMESH

from zonemesh.tls import certs
from zonemesh.tls.certs import Names

DATAPLANE = """\
type: Dataplane
mesh: default
name: {name}
networking:
  address: 127.0.0.1
  inbound:
  - port: {inbound}
    servicePort: {app}
    tags: {{kuma.io/service: {name}, kuma.io/protocol: http}}
"""


@dataclass
class Pki:
    """A CA of the test's own and a server certificate it signed, as files."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_pki(directory: Path, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca, ca_key = certs.new_ca(now)
    names = Names(frozenset(dns), frozenset(ipaddress.ip_address(i) for i in ips))
    cert, key = certs.issue_server_cert(ca, ca_key, names, now)
    pki = Pki(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    pki.ca_file.write_bytes(certs.cert_pem(ca))
    pki.cert_file.write_bytes(certs.cert_pem(cert))
    pki.key_file.write_bytes(certs.key_pem(key))
    return pki


def verifying_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def run_zonemesh(
    args: list[str], timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs a command that must exit by itself within `timeout` (fails the test otherwise)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KUMA_", "ZONEMESH_"))}
    return subprocess.run(
        [ZONEMESH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )
