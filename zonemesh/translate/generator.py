"""The generator interface: `generate(state, proxy) -> ProxyResources`, and how generators compose.

A generator is a pure function of the `MeshState` and the proxy: no I/O, no clock. It returns
protobuf messages keyed by type URL and name; the xDS cache versions them by content, so a
generator never invents versions. Generators for separate concerns are combined with
`CompositeGenerator`, which refuses two generators producing the same (type, name).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message

from zonemesh.envoy_types import name_of, type_url_of
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.proxy_types import ProxyType
from zonemesh.translate.state import MeshState


class GenerationError(Exception):
    """A generator produced something inconsistent (e.g. two resources with one name)."""


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


class ProxyResources:
    """Resources for one proxy by type URL and name. Messages may be shared: never mutate.

    Besides its own resources it may hold shared *parts* (`include`): read-only
    `ProxyResources` that many proxies contain (e.g. the outbounds every sidecar of a mesh
    lists), referenced rather than copied, so that the xDS cache can intern a part once."""

    def __init__(self) -> None:
        self._by_type: dict[str, dict[str, Message]] = {}
        self._parts: list[ProxyResources] = []

    def _taken(self, type_url: str, name: str) -> bool:
        if name in self._by_type.get(type_url, ()):
            return True
        return any(name in part._by_type.get(type_url, ()) for part in self._parts)

    def add(self, message: Message, name: str | None = None) -> None:
        type_url = type_url_of(message)
        name = name if name is not None else name_of(message)
        if not name:
            raise GenerationError(f"{type_url}: resource without a name")
        if self._taken(type_url, name):
            raise GenerationError(f"{type_url}: duplicate resource name {name!r}")
        self._by_type.setdefault(type_url, {})[name] = message

    def _check_disjoint(self, type_url: str, names: Mapping[str, Message]) -> None:
        for mine in (self._by_type.get(type_url), *(p._by_type.get(type_url) for p in self._parts)):
            if mine and not mine.keys().isdisjoint(names.keys()):
                name = next(n for n in names if n in mine)
                raise GenerationError(f"{type_url}: duplicate resource name {name!r}")

    def include(self, part: ProxyResources) -> None:
        """Add `part`'s resources by reference; `part` must not change afterwards."""
        if part._by_type:
            for type_url, by_name in part._by_type.items():
                self._check_disjoint(type_url, by_name)
            self._parts.append(part)
        for nested in part._parts:
            self.include(nested)

    def merge(self, other: ProxyResources) -> None:
        for type_url, by_name in other._by_type.items():
            self._check_disjoint(type_url, by_name)
            mine = self._by_type.get(type_url)
            if mine is None:
                self._by_type[type_url] = dict(by_name)
            else:
                mine.update(by_name)
        for part in other._parts:
            self.include(part)

    def of_type(self, type_url: str) -> Mapping[str, Message]:
        own = self._by_type.get(type_url, {})
        shared = [p._by_type[type_url] for p in self._parts if type_url in p._by_type]
        if not shared:
            return own
        merged = dict(own)
        for by_name in shared:
            merged.update(by_name)
        return merged

    def types(self) -> Iterator[str]:
        seen = dict.fromkeys(self._by_type)
        for part in self._parts:
            seen.update(dict.fromkeys(part._by_type))
        return iter(seen)

    def own(self) -> Mapping[str, Mapping[str, Message]]:
        """This proxy's own resources by type (not those of its parts)."""
        return self._by_type

    def parts(self) -> list[ProxyResources]:
        """The shared parts (each without parts of its own)."""
        return self._parts

    def __len__(self) -> int:
        own = sum(len(v) for v in self._by_type.values())
        return own + sum(len(p) for p in self._parts)


class Generator(Protocol):
    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources: ...


def own_output_is_local(generator: Generator) -> bool:
    """Whether a sidecar's *own* resources (those not in shared parts) read only its own
    Dataplane and the mesh-wide inputs (Mesh, MeshService, MMZS, MLBS), never other
    Dataplanes, zone proxies or health. A generator says so with `OWN_OUTPUT_IS_LOCAL = True`;
    the generation engine then refreshes other sidecars through their shared parts alone
    when only those inputs changed. Without the promise every change regenerates everyone."""
    return bool(getattr(generator, "OWN_OUTPUT_IS_LOCAL", False))


class CompositeGenerator:
    """Runs generators in order and merges their output (a name clash is an error)."""

    def __init__(self, *generators: Generator) -> None:
        self.generators = generators
        self.OWN_OUTPUT_IS_LOCAL = all(own_output_is_local(g) for g in generators)

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        merged = ProxyResources()
        for generator in self.generators:
            merged.merge(generator.generate(state, proxy))
        return merged
