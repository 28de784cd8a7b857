"""Read-only views that components publish for the API (`inspect`, `/xds`).

The xDS server publishes an `XdsView` as `runtime.views["xds"]`; the API only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from zonemesh.resources.base import ResourceKey


@dataclass(frozen=True)
class ProxyInsight:
    key: ResourceKey  # Dataplane (mesh, name) or ZoneIngress/ZoneEgress (mesh "")
    proxy_type: str  # dataplane | ingress | egress
    online: bool
    last_connected: datetime | None
    last_disconnected: datetime | None
    responses_sent: int  # "updates" in kumactl's columns
    acks: int
    nacks: int
    last_nack: str | None  # Envoy's error_detail message of the latest NACK
    ready: bool  # readiness reported by the data plane
    not_ready_inbounds: tuple[int, ...] = ()
    envoy_version: str = ""


class XdsView(Protocol):
    def insights(self) -> list[ProxyInsight]:
        """Every proxy seen since this CP started, connected or not."""
        ...

    def config_dump(self, key: ResourceKey) -> dict[str, list[dict[str, Any]]] | None:
        """The resources this CP serves that proxy, as JSON per type URL; None if unknown."""
        ...
