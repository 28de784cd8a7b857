"""What each proxy should have: per-proxy snapshots of versioned, pre-encoded resources.

The cache knows nothing about streams. `ResourceInterner` turns generator output into
`VersionedResource`s — version = hash of the deterministic serialization — and hands out the
*same* object for identical content, so a CLA shared by 1000 proxies is serialized and stored
once. `SnapshotCache` holds the latest `Snapshot` per proxy and tells the proxy's watchers
which types changed; an unchanged snapshot notifies no one.
"""

from __future__ import annotations

import functools
import hashlib
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import any_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from zonemesh.envoy_types import CLUSTER
from zonemesh.resources.base import ResourceKey
from zonemesh.translate.generator import ProxyResources
from zonemesh.xds import wire
from zonemesh.xds.types import MESSAGE_CLASSES


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=10).hexdigest()


_VERSION_BITS = 80
_VERSION_MASK = (1 << _VERSION_BITS) - 1


@functools.lru_cache(maxsize=1 << 16)
def item_hash(name: str, version: str) -> int:
    """One (name, version) pair as an 80-bit number; `versions_hash` adds them up."""
    data = name.encode() + b"\0" + version.encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=10).digest(), "big")


def format_version(total: int) -> str:
    """The version string of a sum of `item_hash`es (`versions_total`)."""
    return format(total & _VERSION_MASK, "020x")


def versions_total(items: Iterable[tuple[str, str]]) -> int:
    return sum(item_hash(name, version) for name, version in items)


def versions_hash(items: Iterable[tuple[str, str]]) -> str:
    """A version for a set of (name, version) pairs, independent of their order.

    The sum of the pairs' hashes (a multiset hash): no sorting, and a snapshot computes it
    from the hashes its shared resources already carry; a stream that changes a few pairs
    adjusts its sum instead of adding them all up again."""
    return format_version(versions_total(items))


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
    item_hash: int = 0  # item_hash(name, version), for per-type versions

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
        # The previous round's memos: messages reused across states (`content_memo`) are
        # found here without re-encoding. Holding the message keeps its id from being reused.
        self._previous: dict[int, tuple[Message, VersionedResource]] = {}
        self._parts: dict[int, tuple[ProxyResources, Any]] = {}  # shared parts, this round
        self.serializations = 0  # how many messages were encoded (tests, benchmarks)

    def new_round(self) -> None:
        """Start a round of per-object memos; call when the generators' input state changes.

        Objects met in the previous round are still recognised (then kept for the next);
        those not met again are forgotten at the following round."""
        self._previous = self._by_object
        self._by_object = {}
        self._parts = {}

    def intern(self, type_url: str, name: str, message: Message) -> VersionedResource:
        hit = self._by_object.get(id(message))
        if hit is not None and hit[0] is message and hit[1].name == name:
            return hit[1]
        hit = self._previous.get(id(message))
        if hit is not None and hit[0] is message and hit[1].name == name:
            self._by_object[id(message)] = hit
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
                item_hash=item_hash(name, version),
            )
            self._by_content[key] = resource
        self._by_object[id(message)] = (message, resource)
        return resource

    def _intern_all(
        self, type_url: str, messages: Mapping[str, Message]
    ) -> tuple[dict[str, VersionedResource], int]:
        """Intern every message of one type; also returns the sum of their `item_hash`."""
        interned: dict[str, VersionedResource] = {}
        total = 0
        by_object = self._by_object
        for name, message in messages.items():
            # Inline fast path of `intern`: shared messages are met many times per round.
            hit = by_object.get(id(message))
            if hit is not None and hit[0] is message and hit[1].name == name:
                resource = hit[1]
            else:
                resource = self.intern(type_url, name, message)
            interned[name] = resource
            total += resource.item_hash
        return interned, total

    def part(self, part: ProxyResources) -> Interned:
        """A shared part, interned once per round (however many proxies include it)."""
        hit = self._parts.get(id(part))
        if hit is not None and hit[0] is part:
            return hit[1]  # type: ignore[no-any-return]
        interned = {
            type_url: self._intern_all(type_url, by_name)
            for type_url, by_name in part.own().items()
        }
        self._parts[id(part)] = (part, interned)  # holding part keeps its id from being reused
        return interned

    def own(self, resources: ProxyResources) -> Interned:
        """The proxy's own resources (not its parts'), interned."""
        return {
            type_url: self._intern_all(type_url, messages)
            for type_url, messages in resources.own().items()
        }

    def snapshot(self, resources: ProxyResources) -> Snapshot:
        """The proxy's snapshot: its parts and its own resources (see `compose`)."""
        return compose(self.own(resources), [self.part(p) for p in resources.parts()])

    def __len__(self) -> int:
        return len(self._by_content)


# By type URL: the resources by name and the sum of their `item_hash`.
Interned = dict[str, tuple[dict[str, VersionedResource], int]]


def changed_types(a: Sequence[Interned], b: Sequence[Interned]) -> frozenset[str] | None:
    """The types whose (name, version) pairs differ between two lists of interned pieces of
    the same shape (piece by piece); None when the shapes differ (compare everything)."""
    if len(a) != len(b):
        return None
    changed: set[str] = set()
    for x, y in zip(a, b, strict=True):
        for type_url in x.keys() | y.keys():
            old, new = x.get(type_url), y.get(type_url)
            if old is None or new is None or old[1] != new[1] or len(old[0]) != len(new[0]):
                changed.add(type_url)
    return frozenset(changed)


def changed_names(
    a: Sequence[Interned], b: Sequence[Interned], types: Iterable[str]
) -> dict[str, frozenset[str]]:
    """Per type of `types`, the names whose resource differs between two lists of pieces
    (added, changed or gone): computed once per group of proxies, so that each member's
    Delta stream looks only at those (`Snapshot.delta`)."""
    out: dict[str, frozenset[str]] = {}
    for type_url in types:
        old: dict[str, VersionedResource] = {}
        new: dict[str, VersionedResource] = {}
        for pieces, merged in ((a, old), (b, new)):
            for piece in pieces:
                entry = piece.get(type_url)
                if entry is not None:
                    merged.update(entry[0])
        out[type_url] = frozenset(
            n for n in old.keys() | new.keys() if old.get(n) is not new.get(n)
        )
    return out


def compose(
    own: Interned,
    parts: Iterable[Interned],
    *,
    base: Snapshot | None = None,
    types: frozenset[str] | None = None,
    delta: Mapping[str, frozenset[str]] | None = None,
) -> Snapshot:
    """A proxy's snapshot from interned pieces. A type that comes from one piece alone is
    that piece's dict itself, shared by every snapshot with that piece (read-only); only a
    type several pieces contribute to gets a dict of this snapshot's own.

    With `base` and `types`: only those types are composed, the others are `base`'s (their
    dicts and versions shared, not rebuilt): an endpoint change recomposes endpoints only.
    With `base` and `delta` (from `changed_names`: per type, the only names that may differ
    from `base`), the new snapshot records both (`parent`, `delta`)."""
    by_type: dict[str, dict[str, VersionedResource]] = {}
    totals: dict[str, int] = {}
    copied: set[str] = set()  # types whose dict is this snapshot's own

    def add(type_url: str, interned: dict[str, VersionedResource], total: int) -> None:
        if types is not None and type_url not in types:
            return
        mine = by_type.get(type_url)
        if mine is None:
            by_type[type_url], totals[type_url] = interned, total
            return
        if type_url not in copied:
            mine = by_type[type_url] = dict(mine)
            copied.add(type_url)
        mine.update(interned)
        totals[type_url] += total

    for piece in (*parts, own):
        for type_url, (interned, total) in piece.items():
            add(type_url, interned, total)
    versions = {t: format_version(totals[t]) for t in by_type}
    parent = weakref.ref(base) if base is not None and delta is not None else None
    if base is None or types is None:
        return Snapshot(resources=by_type, versions=versions, parent=parent, delta=delta)
    resources = {t: r for t, r in base.resources.items() if t not in types}
    kept = {t: v for t, v in base.versions.items() if t not in types}
    return Snapshot(
        resources={**resources, **by_type},
        versions={**kept, **versions},
        parent=parent,
        delta=delta,
    )


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Everything one proxy should have, by type URL and name, with a version per type."""

    resources: Mapping[str, Mapping[str, VersionedResource]]
    versions: Mapping[str, str]
    created_at: float = field(default_factory=time.monotonic)
    # When known: the snapshot this one was derived from, and per type the only names that
    # may differ from it (any type not in `delta` is the same). A Delta stream in step with
    # the parent diffs those names alone. Weak, so that snapshots never form a chain: a
    # stream in step holds its parent itself.
    parent: weakref.ReferenceType[Snapshot] | None = field(default=None, repr=False)
    delta: Mapping[str, frozenset[str]] | None = field(default=None, repr=False)

    def derives_from(self, other: Snapshot | None) -> bool:
        return other is not None and self.parent is not None and self.parent() is other

    @classmethod
    def of(cls, resources: Mapping[str, Mapping[str, VersionedResource]]) -> Snapshot:
        versions = {
            type_url: format_version(
                sum(r.item_hash or item_hash(n, r.version) for n, r in by_name.items())
            )
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
        """For people (`/xds`, inspect): everything as sent. The CP sends no private key (the
        workload's stays in `dp run`); the API strips any anyway (`zonemesh.api.redact`)."""
        return {
            type_url: [MessageToDict(by_name[n].to_message()) for n in sorted(by_name)]
            for type_url, by_name in self.resources.items()
        }


_EMPTY_VERSION = versions_hash(())
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
