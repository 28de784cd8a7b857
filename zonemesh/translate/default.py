"""The generator the control plane serves proxies with: one small generator per concern.

`default_generator(identities)` composes inbound, outbound, zone ingress and zone egress with
the mTLS `SecretsGenerator`, which delivers the certificates every TLS context here names.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from zonemesh.translate.egress import EgressGenerator
from zonemesh.translate.generator import CompositeGenerator, Generator
from zonemesh.translate.inbound import InboundGenerator
from zonemesh.translate.ingress import IngressGenerator
from zonemesh.translate.outbound import OutboundGenerator
from zonemesh.translate.transparent import TransparentProxyGenerator

if TYPE_CHECKING:
    from zonemesh.mtls.identities import IdentityProvider

log = logging.getLogger("zonemesh.translate")


def traffic_generators() -> tuple[Generator, ...]:
    """Everything but secrets: listeners, clusters and endpoints for every proxy type."""
    return (
        InboundGenerator(),
        OutboundGenerator(),
        TransparentProxyGenerator(),
        IngressGenerator(),
        EgressGenerator(),
    )


def default_generator(identities: IdentityProvider | None = None) -> Generator:
    """Traffic generators plus `SecretsGenerator(identities)` (the mesh CA and the proxies'
    certificates over SDS). Without identities, or before the secrets module exists, secrets
    are left out: the configuration is still served, TLS handshakes wait for their secrets."""
    generators = list(traffic_generators())
    if identities is not None:
        try:
            from zonemesh.translate.secrets import SecretsGenerator
        except ImportError:
            log.warning("zonemesh.translate.secrets is not available; serving no secrets")
        else:
            generators.append(SecretsGenerator(identities))
    return CompositeGenerator(*generators)
