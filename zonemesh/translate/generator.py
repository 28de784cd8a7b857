"""The generator interface: `generate(state, proxy) -> ProxyResources`, and how generators compose.

A generator is a pure function of the `MeshState` and the proxy: no I/O, no clock. It returns
protobuf messages keyed by type URL and name; the xDS cache versions them by content, so a
generator never invents versions. Generators for separate concerns are combined with
`CompositeGenerator`, which refuses two generators producing the same (type, name).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf.message import Message

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.translate.state import MeshState

TYPE_PREFIX = "type.googleapis.com/"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# The order every push follows (make-before-break): a cluster before its endpoints, both
# before the listeners that use them, listeners before their routes.
TYPE_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)

MESSAGE_CLASSES: Mapping[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    SECRET: secret_pb2.Secret,
}


class GenerationError(Exception):
    """A generator produced something inconsistent (e.g. two resources with one name)."""


class ProxyType(StrEnum):
    DATAPLANE = "dataplane"
    INGRESS = "ingress"
    EGRESS = "egress"


@dataclass(frozen=True)
class Proxy:
    """The proxy being generated for: its identity and its resource as in the state."""

    key: ResourceKey  # Dataplane (mesh, name); ZoneIngress/ZoneEgress ("", name)
    proxy_type: ProxyType
    resource: Resource
    node_id: str = ""

    @property
    def mesh(self) -> str:
        return self.key.mesh

    @property
    def name(self) -> str:
        return self.key.name


def type_url_of(message: Message) -> str:
    return TYPE_PREFIX + message.DESCRIPTOR.full_name


def name_of(message: Message) -> str:
    """The xDS resource name: `cluster_name` for a ClusterLoadAssignment, else `name`."""
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return message.cluster_name
    return message.name  # type: ignore[attr-defined, no-any-return]


class ProxyResources:
    """Resources for one proxy by type URL and name. Messages may be shared: never mutate."""

    def __init__(self) -> None:
        self._by_type: dict[str, dict[str, Message]] = {}

    def add(self, message: Message, name: str | None = None) -> None:
        type_url = type_url_of(message)
        name = name if name is not None else name_of(message)
        if not name:
            raise GenerationError(f"{type_url}: resource without a name")
        by_name = self._by_type.setdefault(type_url, {})
        if name in by_name:
            raise GenerationError(f"{type_url}: duplicate resource name {name!r}")
        by_name[name] = message

    def merge(self, other: ProxyResources) -> None:
        for type_url, by_name in other._by_type.items():
            for name, message in by_name.items():
                if name in self._by_type.get(type_url, {}):
                    raise GenerationError(f"{type_url}: duplicate resource name {name!r}")
                self._by_type.setdefault(type_url, {})[name] = message

    def of_type(self, type_url: str) -> Mapping[str, Message]:
        return self._by_type.get(type_url, {})

    def types(self) -> Iterator[str]:
        return iter(self._by_type)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_type.values())


class Generator(Protocol):
    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources: ...


class CompositeGenerator:
    """Runs generators in order and merges their output (a name clash is an error)."""

    def __init__(self, *generators: Generator) -> None:
        self.generators = generators

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        merged = ProxyResources()
        for generator in self.generators:
            merged.merge(generator.generate(state, proxy))
        return merged
