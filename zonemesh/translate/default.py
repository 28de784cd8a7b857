"""The generator the control plane serves proxies with: one small generator per concern.

`default_generator()` composes inbound, outbound, zone ingress, zone egress and the builtin
gateway. No workload secrets: the TLS contexts name secrets that each data plane serves its own Envoy over a local SDS
socket (`translate.tls`), so no workload key ever travels over ADS; only an HTTPS gateway
listener's serving certificate does (`translate.gateway_tls` says why).
"""

from __future__ import annotations

from zonemesh.translate.egress import EgressGenerator
from zonemesh.translate.gateway import GatewayGenerator
from zonemesh.translate.generator import CompositeGenerator, Generator
from zonemesh.translate.inbound import InboundGenerator
from zonemesh.translate.ingress import IngressGenerator
from zonemesh.translate.outbound import OutboundGenerator
from zonemesh.translate.transparent import TransparentProxyGenerator


def traffic_generators() -> tuple[Generator, ...]:
    """Listeners, clusters and endpoints for every proxy type."""
    return (
        InboundGenerator(),
        OutboundGenerator(),
        TransparentProxyGenerator(),
        IngressGenerator(),
        EgressGenerator(),
        GatewayGenerator(),
    )


def default_generator() -> Generator:
    return CompositeGenerator(*traffic_generators())
