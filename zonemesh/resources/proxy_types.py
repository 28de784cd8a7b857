"""The kinds of proxy zonemesh serves, as node metadata, tokens and `dp run` name them.

One home for the words: `dp run` writes them into Envoy's node metadata, a dataplane token's
`Type` claim carries one, the xDS registry parses them, and translation picks a proxy's
generators by them.
"""

from __future__ import annotations

from enum import StrEnum


class ProxyType(StrEnum):
    DATAPLANE = "dataplane"  # a sidecar (or, later, a gateway): a Dataplane resource
    INGRESS = "ingress"  # a ZoneIngress
    EGRESS = "egress"  # a ZoneEgress


PROXY_TYPES: tuple[str, ...] = tuple(t.value for t in ProxyType)
