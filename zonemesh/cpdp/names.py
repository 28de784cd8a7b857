"""Names the control plane's config and `zonemesh dp run` share: SDS secrets, identities, DNS.

Only these: Envoy resource names that only the CP generates (clusters, listeners, SNIs) live
in `zonemesh.translate.names`.
"""

from __future__ import annotations

import hashlib

# --- identities and secrets (SDS from the data plane's own local server) -----------------

# The bootstrap's static cluster to `zonemesh dp run`'s SDS socket, which every TLS context
# takes its secrets from: the workload key never leaves the workload.
SDS_CLUSTER = "zonemesh_local_sds"


def spiffe_id(mesh: str, service: str) -> str:
    """The identity of every instance of `service`: `spiffe://<mesh>/<service>`."""
    return f"spiffe://{mesh}/{service}"


def identity_secret(mesh: str) -> str:
    """The proxy's own certificate and key (SANs: one SPIFFE ID per inbound service)."""
    return f"identity_cert:secret:{mesh}"


def ca_secret(mesh: str) -> str:
    """The mesh root's certificate, to validate peers."""
    return f"mesh_ca:secret:{mesh}"


# --- the DNS table a sidecar's Envoy serves to `dp run` (transparent proxying) ------------

DNS_TABLE_LISTENER = "_zonemesh:dns"
DNS_TABLE_PATH = "/dns"


def dns_table_socket(mesh: str, name: str) -> str:
    """The abstract unix socket where a sidecar's Envoy serves its DNS table to `dp run`.

    Abstract (leading `@`), so nothing is left on disk and each network namespace has its
    own; named after the proxy (hashed: the kernel allows 107 bytes), so sidecars sharing a
    namespace never collide."""
    digest = hashlib.sha256(f"{mesh}.{name}".encode()).hexdigest()[:24]
    return f"@zonemesh-dns-{digest}"
