"""Envoy resource names every generator shares: clusters, listeners, SNIs.

One place, so that the cluster a sidecar dials and the SNI a zone ingress routes by can never
drift apart. Names the data plane also uses (SDS secrets, SPIFFE IDs, the DNS table) live in
`zonemesh.cpdp.names`, which `dp run` imports without loading the translation layer.
"""

from __future__ import annotations

# --- SNIs through zone ingress / egress (contract §xDS) ----------------------------------
# Kuma's KRI-derived form (`pkg/core/resources/sni`): the last segment is the port's section
# name, i.e. its `name` when it has one, else its number: `sni.mzsvc.default.echo.http` for a
# port named `http`, `sni.mzsvc.default.echo.1027` for an unnamed one. Client and ingress both
# build it from the same port (the MMZS port, or the synced MeshService port), so they agree.


def section_name(port: int, name: str | None = None) -> str:
    """A port as the last SNI segment: its name when it has one, else its number."""
    return name or str(port)


def mmzs_sni(mesh: str, name: str, port: int, port_name: str | None = None) -> str:
    return f"sni.mzsvc.{mesh}.{name}.{section_name(port, port_name)}"


def mesh_service_sni(mesh: str, name: str, port: int, port_name: str | None = None) -> str:
    return f"sni.msvc.{mesh}.{name}.{section_name(port, port_name)}"


# --- sidecar resources -------------------------------------------------------------------


def inbound_listener(address: str, port: int) -> str:
    return f"inbound:{address}:{port}"


def local_app_cluster(address: str, port: int) -> str:
    """The app behind an inbound, reached directly by the sidecar."""
    return f"localhost:{address}:{port}"


def outbound_listener(address: str, port: int) -> str:
    return f"outbound:{address}:{port}"


def mmzs_cluster(mesh: str, name: str, port: int) -> str:
    """A MeshMultiZoneService port: local instances at priority 0, other zones at priority 1."""
    return f"{mesh}_{name}__mzsvc_{port}"


def mesh_service_cluster(mesh: str, name: str, zone: str, port: int) -> str:
    """A MeshService port of one zone (local instances only)."""
    return f"{mesh}_{name}_{zone}_msvc_{port}"


# --- zone ingress --------------------------------------------------------------------------


def ingress_listener(address: str, port: int) -> str:
    return f"ingress:{address}:{port}"


def ingress_cluster(sni: str) -> str:
    """What a zone ingress forwards one SNI to: this zone's instances only, never another ingress."""
    return f"ingress:{sni}"


# --- zone egress ---------------------------------------------------------------------------


def egress_listener(address: str, port: int) -> str:
    return f"egress:{address}:{port}"


def egress_cluster(zone: str) -> str:
    """A remote zone's ingress, reached through this zone's egress."""
    return f"egress:zone:{zone}"


# --- transparent proxying (zonemesh.translate.transparent) ----------------------------------

OUTBOUND_PASSTHROUGH = "outbound:passthrough:ipv4"
INBOUND_PASSTHROUGH = "inbound:passthrough:ipv4"
