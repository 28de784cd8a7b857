"""Resources for builtin-gateway tests: the gateway Dataplane, MeshGateways, serving
certificates in mesh Secrets (Kuma's PEM key + chain bundle), on top of the translation
topologies (`tests/translate/translate_topologies.py`)."""

from __future__ import annotations

import base64
import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from translate.translate_topologies import LOCAL_ZONE, MESH

from zonemesh.resources.base import Resource
from zonemesh.resources.codec import resource_from_wire

GATEWAY_SERVICE = "edge-gateway"


def gateway_dataplane(name: str = "edge-gateway-1", address: str = "127.0.1.80") -> dict[str, Any]:
    return {
        "type": "Dataplane",
        "mesh": MESH,
        "name": name,
        "labels": {"kuma.io/origin": "zone", "kuma.io/zone": LOCAL_ZONE},
        "networking": {
            "address": address,
            "gateway": {"type": "BUILTIN", "tags": {"kuma.io/service": GATEWAY_SERVICE}},
        },
    }


def listener(port: int, protocol: str = "HTTP", **extra: Any) -> dict[str, Any]:
    return {"port": port, "protocol": protocol, **extra}


def https_listener(port: int, secret: str, hostname: str | None = None) -> dict[str, Any]:
    doc = listener(port, "HTTPS", tls={"mode": "TERMINATE", "certificates": [{"secret": secret}]})
    if hostname is not None:
        doc["hostname"] = hostname
    return doc


def mesh_gateway(
    name: str = GATEWAY_SERVICE, listeners: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "MeshGateway",
        "mesh": MESH,
        "name": name,
        "selectors": [{"match": {"kuma.io/service": GATEWAY_SERVICE}}],
        "conf": {"listeners": listeners if listeners is not None else [listener(8080)]},
        **extra,
    }


def resource(doc: dict[str, Any]) -> Resource:
    return resource_from_wire(doc)


def serving_pems(*hosts: str, ca: bool = False) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM): self-signed for `hosts` (SANs), a day long."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "gw")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False
        )
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def tls_secret(name: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    """A mesh Secret as Kuma documents a gateway certificate: key and chain PEM, base64."""
    return {
        "type": "Secret",
        "mesh": MESH,
        "name": name,
        "data": base64.b64encode(key_pem + cert_pem).decode(),
    }
