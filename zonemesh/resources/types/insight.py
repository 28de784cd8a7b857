"""DataplaneInsight, ZoneIngressInsight, ZoneEgressInsight: a proxy as its zone's CP sees it.

Written by the zone control plane that holds the proxy's xDS stream (`zonemesh.xds.insights`),
one per Dataplane / ZoneIngress / ZoneEgress and of the same name, and synced up to global
(Kuma's types of the same names travel the same way), so that `inspect` on global shows each
proxy Online or Offline as its zone reports it. A type of its own, not a status on the
Dataplane: a connect or a readiness change then writes only the insight, never the Dataplane,
which everything computed in the zone (MeshServices, xDS) reads.
"""

from __future__ import annotations

from zonemesh.resources.base import Model
from zonemesh.resources.errors import Violations
from zonemesh.resources.types.common import validate_port


class ProxyInsightSpec(Model):
    online: bool = False  # its xDS stream is open to `controlPlaneInstanceId`
    ready: bool = True  # what the data plane reports (readiness of its apps)
    not_ready_inbounds: list[int] = []
    last_connected: str | None = None  # RFC 3339, UTC
    last_disconnected: str | None = None
    control_plane_instance_id: str | None = None
    envoy_version: str | None = None
    responses_sent: int = 0
    acks: int = 0
    nacks: int = 0
    last_nack: str | None = None

    def validate_semantics(self, path: str, errors: Violations) -> None:
        for i, port in enumerate(self.not_ready_inbounds):
            validate_port(port, f"{path}.notReadyInbounds[{i}]", errors)
        counters = {"responsesSent": self.responses_sent, "acks": self.acks, "nacks": self.nacks}
        for name, value in counters.items():
            if value < 0:
                errors.add(f"{path}.{name}", "must be 0 or more")
