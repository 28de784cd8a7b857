"""Translation from store resources to Envoy resources, one proxy at a time.

`MeshState` is the immutable input, `Generator.generate(state, proxy)` the pure function, and
`ProxyResources` the output the xDS cache versions and streams. Generators per concern
(inbound, outbound, ingress, egress, transparent proxying) compose with `CompositeGenerator`.
The type URLs the output is keyed by are `zonemesh.envoy_types`'.
"""

from zonemesh.translate.generator import (
    CompositeGenerator,
    GenerationError,
    Generator,
    Proxy,
    ProxyResources,
)
from zonemesh.translate.state import HealthSnapshot, MeshState

__all__ = [
    "CompositeGenerator",
    "GenerationError",
    "Generator",
    "HealthSnapshot",
    "MeshState",
    "Proxy",
    "ProxyResources",
]
