"""xDS metrics under Kuma's names, registered in the control plane's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_GENERATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class XdsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.streams_active = Gauge(
            "xds_streams_active", "ADS streams currently open", registry=registry
        )
        self.requests_received = Counter(
            "xds_requests_received",
            "Discovery requests received, by type and confirmation (ACK or NACK)",
            ["type_url", "confirmation"],
            registry=registry,
        )
        self.responses_sent = Counter(
            "xds_responses_sent",
            "Discovery responses sent, by type",
            ["type_url"],
            registry=registry,
        )
        self.delivery = Histogram(
            "xds_delivery",
            "Seconds from sending a response to the proxy acknowledging it",
            buckets=_DELIVERY_BUCKETS,
            registry=registry,
        )
        self.generation = Histogram(
            "xds_generation",
            "Seconds to compute one proxy's resources",
            buckets=_GENERATION_BUCKETS,
            registry=registry,
        )
