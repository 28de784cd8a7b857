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
from translate.translate_topologies import LOCAL_ZONE, MESH, Topology

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


# --- golden topologies: zone-1 with two echo instances, zone-2 with one, and a gateway ------

ECHO_MMZS = {"kind": "MeshMultiZoneService", "name": "echo", "port": 1027}
ECHO_MS = {"kind": "MeshService", "name": "echo", "port": 1027}
GATEWAY_REF = {"kind": "MeshGateway", "name": GATEWAY_SERVICE}


def gateway_route(
    name: str, rules: list[dict[str, Any]], hostnames: list[str] | None = None
) -> dict[str, Any]:
    """A MeshHTTPRoute on the MeshGateway, `to: Mesh` (Kuma's gateway form)."""
    entry: dict[str, Any] = {"targetRef": {"kind": "Mesh"}, "rules": rules}
    if hostnames is not None:
        entry["hostnames"] = hostnames
    return {
        "type": "MeshHTTPRoute",
        "mesh": MESH,
        "name": name,
        "spec": {"targetRef": GATEWAY_REF, "to": [entry]},
    }


def path_rule(path: str, *refs: dict[str, Any], kind: str = "PathPrefix") -> dict[str, Any]:
    return {
        "matches": [{"path": {"type": kind, "value": path}}],
        "default": {"backendRefs": list(refs)},
    }


ECHO_ROUTE = gateway_route("edge-echo", [path_rule("/echo", ECHO_MMZS)])


def gateway_topologies(cert_pem: bytes, key_pem: bytes) -> list[Topology]:
    """One per gateway feature, each seen by the gateway Dataplane."""
    from translate.translate_topologies import build

    def topology(
        name: str, *docs: dict[str, Any], mtls: bool = False, tcp: bool = False
    ) -> Topology:
        base = build(name, local_instances=2, remote={"zone-2": 1}, mtls=mtls, tcp=tcp)
        dataplane = resource(gateway_dataplane())
        extra = [dataplane, *(resource(d) for d in docs)]
        return Topology(name, [*base.resources, *extra], {"gateway": dataplane.key})

    secret = tls_secret("gw-cert", cert_pem, key_pem)
    return [
        topology("gateway-no-route", mesh_gateway()),
        topology(
            "gateway-http",
            mesh_gateway(listeners=[listener(8080), listener(8080, hostname="api.example.com")]),
            gateway_route(
                "edge",
                [
                    path_rule("/echo", ECHO_MMZS),
                    path_rule("/local", ECHO_MS),
                    path_rule("/gone", {"kind": "MeshService", "name": "nowhere", "port": 80}),
                ],
            ),
            gateway_route("api", [path_rule("/", ECHO_MMZS)], hostnames=["api.example.com"]),
        ),
        topology("gateway-mtls", mesh_gateway(), ECHO_ROUTE, mtls=True),
        topology(
            "gateway-https",
            mesh_gateway(
                listeners=[
                    https_listener(8443, "gw-cert", "example.com"),
                    https_listener(8443, "gw-cert"),
                    https_listener(9443, "missing-cert"),
                ]
            ),
            secret,
            ECHO_ROUTE,
        ),
        topology(
            "gateway-tcp",
            mesh_gateway(listeners=[listener(9000, "TCP")]),
            gateway_route(
                "edge-tcp",
                [path_rule("/", {"kind": "MeshMultiZoneService", "name": "echo", "port": 1028})],
            ),
            tcp=True,
        ),
        topology(
            "gateway-mlbs",
            mesh_gateway(),
            ECHO_ROUTE,
            {
                "type": "MeshLoadBalancingStrategy",
                "mesh": MESH,
                "name": "flat",
                "spec": {
                    "targetRef": {"kind": "Mesh"},
                    "to": [
                        {
                            "targetRef": {"kind": "MeshMultiZoneService", "name": "echo"},
                            "default": {
                                "localityAwareness": {"disabled": True},
                                "loadBalancer": {
                                    "type": "RingHash",
                                    "ringHash": {
                                        "hashPolicies": [
                                            {"type": "Header", "header": {"name": "x-user"}}
                                        ]
                                    },
                                },
                            },
                        }
                    ],
                },
            },
        ),
    ]
