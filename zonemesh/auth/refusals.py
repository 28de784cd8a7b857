"""Every refused credential, on every interface, is logged and counted here.

`zonemesh_auth_refusals_total{interface, reason}`: interface is `api`, `xds`, `kds` or `ca`
(certificate signing); reason is the short word of the `TokenError` or authorization failure
(`missing`, `expired`, `bad-signature`, `revoked`, `unknown-key`, `malformed`, `forbidden` …).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("zonemesh.auth")


class Refusals:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._counter = Counter(
            "zonemesh_auth_refusals",
            "Credentials refused, by interface and reason",
            ("interface", "reason"),
            registry=registry,
        )

    def record(self, interface: str, reason: str, message: str, peer: str = "") -> None:
        """Log one refusal (WARNING, with who asked) and count it."""
        self._counter.labels(interface, reason).inc()
        log.warning(
            "refused %s credential%s: %s (%s)",
            interface,
            f" from {peer}" if peer else "",
            message,
            reason,
        )

    def count(self, interface: str, reason: str) -> float:
        return self._counter.labels(interface, reason)._value.get()
