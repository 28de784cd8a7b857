"""The kinds of proxy zonemesh serves, as node metadata, tokens and `dp run` name them.

One home for the words: `dp run` writes them into Envoy's node metadata, a dataplane token's
`Type` claim carries one, the xDS registry parses them, and translation picks a proxy's
generators by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from zonemesh.resources.registry import DATAPLANE, ZONE_EGRESS, ZONE_INGRESS


class ProxyType(StrEnum):
    DATAPLANE = "dataplane"  # a sidecar (or, later, a gateway): a Dataplane resource
    INGRESS = "ingress"  # a ZoneIngress
    EGRESS = "egress"  # a ZoneEgress


PROXY_TYPES: tuple[str, ...] = tuple(t.value for t in ProxyType)

# The resource behind each kind of proxy (its key's type), and back.
RESOURCE_TYPE: Mapping[ProxyType, str] = {
    ProxyType.DATAPLANE: DATAPLANE.name,
    ProxyType.INGRESS: ZONE_INGRESS.name,
    ProxyType.EGRESS: ZONE_EGRESS.name,
}
PROXY_TYPE_OF: Mapping[str, ProxyType] = {rtype: p for p, rtype in RESOURCE_TYPE.items()}
