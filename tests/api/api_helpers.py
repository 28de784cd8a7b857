"""Shared by the API tests: configurations, the `Api` handle, request bodies, error checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from zonemesh.api.server import ApiServer
from zonemesh.config import CpConfig
from zonemesh.runtime.kernel import Runtime

FEDERATED_ZONE: dict[str, Any] = {
    "mode": "zone",
    "multizone": {"zone": {"name": "zone-1", "globalAddress": "grpc://127.0.0.1:1"}},
}
GLOBAL: dict[str, Any] = {"mode": "global"}


@dataclass
class Api:
    runtime: Runtime
    server: ApiServer
    client: httpx.AsyncClient

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


def make_config(overrides: dict[str, Any]) -> CpConfig:
    raw = {"store": {"type": "memory"}, "apiServer": {"http": {"port": 0}}, **overrides}
    return CpConfig.model_validate(raw)


ApiFactory = Callable[..., Awaitable[Api]]

MMZS_PATH = "/meshes/default/meshmultizoneservices"


def mmzs(name: str = "echo", mesh: str = "default", **spec: Any) -> dict[str, Any]:
    body = {
        "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": name}}},
        "ports": [{"port": 1027, "appProtocol": "http"}],
    }
    body.update(spec)
    return {"type": "MeshMultiZoneService", "name": name, "mesh": mesh, "spec": body}


def dataplane(name: str = "dp-1", mesh: str = "default") -> dict[str, Any]:
    return {
        "type": "Dataplane",
        "mesh": mesh,
        "name": name,
        "networking": {
            "address": "127.0.1.11",
            "inbound": [{"port": 21027, "servicePort": 1027, "tags": {"kuma.io/service": "echo"}}],
        },
    }


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """Every error is AIP-193 JSON; returns the body for further checks."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "/std-errors"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


def invalid(response: httpx.Response) -> dict[str, str]:
    body = assert_error(response, 400)
    return {p["field"]: p["reason"] for p in body["invalid_parameters"]}


def attacker_ca() -> tuple[bytes, bytes]:
    """A CA certificate and key of the attacker's own making."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "attacker")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
