"""What each proxy should have: per-proxy snapshots of versioned, pre-encoded resources.

The cache knows nothing about streams. `ResourceInterner` turns generator output into
`VersionedResource`s — version = hash of the deterministic serialization — and hands out the
*same* object for identical content, so a CLA shared by 1000 proxies is serialized and stored
once. `SnapshotCache` holds the latest `Snapshot` per proxy and tells the proxy's watchers
which types changed; an unchanged snapshot notifies no one.
"""

from __future__ import annotations

import hashlib
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import any_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from zonemesh.resources.base import ResourceKey
from zonemesh.translate.generator import CLUSTER, MESSAGE_CLASSES, ProxyResources
from zonemesh.xds import wire


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=10).hexdigest()


def versions_hash(items: Iterable[tuple[str, str]]) -> str:
    """A version for a set of (name, version) pairs, independent of their order."""
    h = hashlib.blake2b(digest_size=10)
    for name, version in sorted(items):
        h.update(name.encode())
        h.update(b"\0")
        h.update(version.encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass(frozen=True, slots=True, weakref_slot=True, eq=False)
class VersionedResource:
    """One resource, encoded once; shared by every snapshot that contains it."""

    type_url: str
    name: str
    version: str
    any_bytes: bytes  # google.protobuf.Any
    sotw_entry: bytes  # DiscoveryResponse.resources field
    delta_entry: bytes  # DeltaDiscoveryResponse.resources field
    # Resources of the next type that must be (re)sent after this one changes: the
    # ClusterLoadAssignment of an EDS cluster, so that a changed cluster leaves warming.
    follow_ups: tuple[str, ...] = ()

    def to_message(self) -> Message:
        message = MESSAGE_CLASSES[self.type_url]()
        any_pb2.Any.FromString(self.any_bytes).Unpack(message)
        return message


def _follow_ups(type_url: str, message: Message) -> tuple[str, ...]:
    is_cluster = type_url == CLUSTER and isinstance(message, cluster_pb2.Cluster)
    if is_cluster and message.type == cluster_pb2.Cluster.EDS:
        return (message.eds_cluster_config.service_name or message.name,)
    return ()


class ResourceInterner:
    """Serializes each distinct resource once and returns shared `VersionedResource`s.

    Two levels: within a round (one state version) the same message *object* is never
    serialized twice; across rounds identical *content* maps to the same instance (the table
    is weak, so resources no snapshot uses any more disappear on their own).
    """

    def __init__(self) -> None:
        self._by_content: weakref.WeakValueDictionary[tuple[str, str, str], VersionedResource] = (
            weakref.WeakValueDictionary()
        )
        self._by_object: dict[int, tuple[Message, VersionedResource]] = {}
        self.serializations = 0  # how many messages were encoded (tests, benchmarks)

    def new_round(self) -> None:
        """Forget per-object memos; call when the generators' input state changes."""
        self._by_object.clear()

    def intern(self, type_url: str, name: str, message: Message) -> VersionedResource:
        hit = self._by_object.get(id(message))
        if hit is not None and hit[0] is message and hit[1].name == name:
            return hit[1]
        data = message.SerializeToString(deterministic=True)
        self.serializations += 1
        version = content_hash(data)
        key = (type_url, name, version)
        resource = self._by_content.get(key)
        if resource is None:
            any_bytes = wire.encode_any(type_url, data)
            resource = VersionedResource(
                type_url=type_url,
                name=name,
                version=version,
                any_bytes=any_bytes,
                sotw_entry=wire.sotw_entry(any_bytes),
                delta_entry=wire.delta_entry(name, version, any_bytes),
                follow_ups=_follow_ups(type_url, message),
            )
            self._by_content[key] = resource
        self._by_object[id(message)] = (message, resource)
        return resource

    def snapshot(self, resources: ProxyResources) -> Snapshot:
        by_type: dict[str, dict[str, VersionedResource]] = {}
        for type_url in resources.types():
            by_type[type_url] = {
                name: self.intern(type_url, name, message)
                for name, message in resources.of_type(type_url).items()
            }
        return Snapshot.of(by_type)

    def __len__(self) -> int:
        return len(self._by_content)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Everything one proxy should have, by type URL and name, with a version per type."""

    resources: Mapping[str, Mapping[str, VersionedResource]]
    versions: Mapping[str, str]
    created_at: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, resources: Mapping[str, Mapping[str, VersionedResource]]) -> Snapshot:
        versions = {
            type_url: versions_hash((n, r.version) for n, r in by_name.items())
            for type_url, by_name in resources.items()
        }
        return cls(resources=resources, versions=versions)

    def of_type(self, type_url: str) -> Mapping[str, VersionedResource]:
        return self.resources.get(type_url, {})

    def version(self, type_url: str) -> str:
        return self.versions.get(type_url) or _EMPTY_VERSION

    def changed_types(self, previous: Snapshot | None) -> frozenset[str]:
        types = set(self.versions) | set(previous.versions if previous else ())
        if previous is None:
            return frozenset(types)
        return frozenset(t for t in types if self.version(t) != previous.version(t))

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        """For people (`/xds`, inspect): private keys are redacted, everything else as sent."""
        return {
            type_url: [_redacted(MessageToDict(by_name[n].to_message())) for n in sorted(by_name)]
            for type_url, by_name in self.resources.items()
        }


_EMPTY_VERSION = versions_hash(())
REDACTED = {"inlineString": "[redacted]"}


def _redacted(resource: dict[str, Any]) -> dict[str, Any]:
    certificate = resource.get("tlsCertificate")
    if isinstance(certificate, dict) and "privateKey" in certificate:
        resource["tlsCertificate"] = {**certificate, "privateKey": REDACTED}
    return resource


SnapshotWatcher = Callable[[Snapshot, frozenset[str]], None]


class SnapshotCache:
    """Latest snapshot per proxy; watchers hear only about types whose version changed."""

    def __init__(self) -> None:
        self._snapshots: dict[ResourceKey, Snapshot] = {}
        self._watchers: dict[ResourceKey, list[SnapshotWatcher]] = {}

    def get(self, key: ResourceKey) -> Snapshot | None:
        return self._snapshots.get(key)

    def set(self, key: ResourceKey, snapshot: Snapshot) -> frozenset[str]:
        """Store and notify; returns the changed types (empty: nothing happened)."""
        previous = self._snapshots.get(key)
        changed = snapshot.changed_types(previous)
        if previous is not None and not changed:
            return changed
        self._snapshots[key] = snapshot
        for watcher in list(self._watchers.get(key, ())):
            watcher(snapshot, changed)
        return changed

    def remove(self, key: ResourceKey) -> None:
        self._snapshots.pop(key, None)

    def watch(self, key: ResourceKey, watcher: SnapshotWatcher) -> Callable[[], None]:
        """Call `watcher` on every change of `key`'s snapshot; returns the unsubscribe."""
        self._watchers.setdefault(key, []).append(watcher)

        def cancel() -> None:
            watchers = self._watchers.get(key, [])
            if watcher in watchers:
                watchers.remove(watcher)
            if not watchers:
                self._watchers.pop(key, None)

        return cancel

    def keys(self) -> list[ResourceKey]:
        return list(self._snapshots)
