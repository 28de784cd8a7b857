"""What a proxy's resource claims to be: its tags and the SPIFFE IDs its certificate names.

One home for the rule, used twice: authorizing a dataplane token against a proxy (every tag
value it claims must be allowed) and choosing a certificate's SANs in the CA (never from the
CSR). Identities are `spiffe://<mesh>/<service>` for every distinct `kuma.io/service` of the
inbounds and of the gateway, as Kuma names them.
"""

from __future__ import annotations

from collections.abc import Mapping

from zonemesh.cpdp.names import spiffe_id
from zonemesh.resources import labels
from zonemesh.resources.base import Resource
from zonemesh.resources.types.dataplane import DataplaneSpec


def _gateway_tags(spec: DataplaneSpec) -> Mapping[str, object]:
    gateway = spec.networking.gateway
    tags = gateway.get("tags") if isinstance(gateway, dict) else None
    return tags if isinstance(tags, dict) else {}


def claimed_tags(resource: Resource) -> dict[str, frozenset[str]]:
    """Every value of every tag over the proxy's inbounds and gateway (zone proxies: none)."""
    spec = resource.spec
    if not isinstance(spec, DataplaneSpec):
        return {}
    out: dict[str, set[str]] = {}
    for inbound in spec.networking.inbound:
        for tag, value in inbound.tags.items():
            out.setdefault(tag, set()).add(value)
    for tag, value in _gateway_tags(spec).items():
        out.setdefault(str(tag), set()).add(str(value))
    return {tag: frozenset(values) for tag, values in out.items()}


def workload_spiffe_ids(resource: Resource) -> list[str]:
    """The SANs of the proxy's certificate, sorted (empty for a zone proxy)."""
    services = claimed_tags(resource).get(labels.SERVICE_TAG, frozenset())
    return [spiffe_id(resource.mesh, s) for s in sorted(services) if s]
