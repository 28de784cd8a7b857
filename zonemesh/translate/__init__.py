"""Translation from store resources to Envoy resources, one proxy at a time.

`MeshState` is the immutable input, `Generator.generate(state, proxy)` the pure function, and
`ProxyResources` the output the xDS cache versions and streams. Generators per concern
(inbound, outbound, ingress, egress, secrets) compose with `CompositeGenerator`.
"""

from zonemesh.translate.generator import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    TYPE_ORDER,
    CompositeGenerator,
    GenerationError,
    Generator,
    Proxy,
    ProxyResources,
    ProxyType,
)
from zonemesh.translate.state import HealthSnapshot, MeshState, build_mesh_state

__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "ROUTE",
    "SECRET",
    "TYPE_ORDER",
    "CompositeGenerator",
    "GenerationError",
    "Generator",
    "HealthSnapshot",
    "MeshState",
    "Proxy",
    "ProxyResources",
    "ProxyType",
    "build_mesh_state",
]
