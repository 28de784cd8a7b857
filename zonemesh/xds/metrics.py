"""xDS metrics under Kuma's names, registered in the control plane's registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_GENERATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class XdsMetrics:
    """The counters with a child per label set are read through `sent`/`received`, which
    keep the children: `labels()` takes a lock and builds a tuple, once per response and
    per ACK otherwise (known type URLs only, so a handful)."""

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
        self._sent: dict[str, Any] = {}
        self._received: dict[tuple[str, str], Any] = {}

    def sent(self, type_url: str) -> Any:
        child = self._sent.get(type_url)
        if child is None:
            child = self._sent[type_url] = self.responses_sent.labels(type_url)
        return child

    def received(self, type_url: str, confirmation: str) -> Any:
        key = (type_url, confirmation)
        child = self._received.get(key)
        if child is None:
            child = self._received[key] = self.requests_received.labels(*key)
        return child
