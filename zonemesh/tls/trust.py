"""A client's trust anchor: the CA file that verifies the control plane it dials.

`dp run --ca-cert-file` and the zone's `KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE` are read and
checked here once, at start, so a missing or unusable file is reported by name before any
connection is tried, never discovered as a stream of failed handshakes.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from zonemesh.tls import certs


class StartCheckError(Exception):
    """A client cannot work with what it was given; the message names the problem."""


@dataclass(frozen=True)
class ClientCa:
    path: Path
    pem: bytes
    option: str  # how the user gave it, for messages (e.g. "--ca-cert-file")

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the server's chain against this CA and the host dialled against its SANs."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.pem.decode())
        context.set_alpn_protocols(["h2"])
        return context


def load_client_ca(path: str | Path, option: str) -> ClientCa:
    file = Path(path).expanduser().resolve()
    try:
        data = file.read_bytes()
    except OSError as e:
        raise StartCheckError(f"{option} {path}: cannot read it: {e.strerror or e}") from None
    try:
        found = certs.parse_certs(data)
    except ValueError as e:
        raise StartCheckError(f"{option} {path}: not a PEM CA certificate: {e}") from None
    try:
        ssl.create_default_context(cadata=data.decode())
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as e:
        raise StartCheckError(f"{option} {path}: not usable as a CA: {e}") from None
    if not any(certs.is_ca(c) for c in found):
        raise StartCheckError(
            f"{option} {path}: holds no CA certificate (give the CA that signed the "
            "control plane's certificate, e.g. <data-dir>/tls/ca.crt)"
        )
    return ClientCa(path=file, pem=data, option=option)
