"""In-memory store: for tests and throwaway control planes; state ends with the process.

`IndexedStore` holds the in-memory index, the version rules and the event publishing that
every backend shares; a persistent backend (`SqliteStore`) only adds the `_persist_*` hooks,
so both backends behave identically by construction and serve reads at the same speed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.store.base import (
    AlreadyExistsError,
    ConflictError,
    EventKind,
    NotFoundError,
    ResourceEvent,
    Store,
)

_TICK = timedelta(microseconds=1)


def _sort_key(resource: Resource) -> tuple[str, str]:
    return (resource.mesh, resource.name)


class IndexedStore(Store):
    """Resources indexed in memory by type; subclasses persist each write before it lands here.

    Every write follows the same order: check against the index, build the stored resource,
    `_persist_*` it (which may raise; then nothing changed), update the index, publish the
    event. Nothing awaits in between, so each write is atomic with respect to the event loop.
    """

    def __init__(self) -> None:
        super().__init__()
        self._by_type: dict[str, dict[ResourceKey, Resource]] = {}
        # Per-type lists sorted by (mesh, name), rebuilt lazily after a write to that type:
        # the control plane lists whole types far more often than it writes them.
        self._sorted: dict[str, list[Resource]] = {}
        self._values: dict[str, str] = {}
        self._revision = 0

    # -- persistence hooks (no-ops in memory) -------------------------------------------

    def _persist_put(self, resource: Resource, revision: int) -> None:
        """Durably store `resource` (insert or replace) and the new store revision."""

    def _persist_delete(self, key: ResourceKey, revision: int) -> None:
        """Durably remove `key` and store the new store revision."""

    def _persist_value(self, name: str, value: str) -> None:
        """Durably store one internal value."""

    # -- reads ------------------------------------------------------------------------------

    async def find(self, key: ResourceKey) -> Resource | None:
        by_key = self._by_type.get(key.type)
        return by_key.get(key) if by_key else None

    async def list(self, type_name: str, mesh: str | None = None) -> list[Resource]:
        ordered = self._sorted.get(type_name)
        if ordered is None:
            ordered = sorted(self._by_type.get(type_name, {}).values(), key=_sort_key)
            self._sorted[type_name] = ordered
        if mesh is None:
            return list(ordered)
        return [r for r in ordered if r.mesh == mesh]

    async def get_value(self, name: str) -> str | None:
        return self._values.get(name)

    # -- writes -----------------------------------------------------------------------------

    async def create(self, resource: Resource) -> Resource:
        if self._lookup(resource.key) is not None:
            raise AlreadyExistsError(resource.key)
        now = datetime.now(UTC)
        stored = resource.with_(version=1, creation_time=now, modification_time=now)
        self._put(EventKind.CREATED, stored)
        return stored

    async def update(self, resource: Resource) -> Resource:
        current = self._lookup(resource.key)
        if current is None:
            raise NotFoundError(resource.key)
        if resource.version != current.version:
            raise ConflictError(resource.key, resource.version, current.version)
        stored = resource.with_(
            version=current.version + 1,
            creation_time=current.creation_time,
            modification_time=_later_than(current.modification_time),
        )
        self._put(EventKind.UPDATED, stored)
        return stored

    async def delete(self, key: ResourceKey, version: int | None = None) -> Resource:
        current = self._lookup(key)
        if current is None:
            raise NotFoundError(key)
        if version is not None and version != current.version:
            raise ConflictError(key, version, current.version)
        revision = self._revision + 1
        self._persist_delete(key, revision)
        del self._by_type[key.type][key]
        self._sorted.pop(key.type, None)
        self._publish(EventKind.DELETED, current, revision)
        return current

    async def set_value(self, name: str, value: str) -> None:
        self._persist_value(name, value)
        self._values[name] = value

    # -- internals --------------------------------------------------------------------------

    def _lookup(self, key: ResourceKey) -> Resource | None:
        by_key = self._by_type.get(key.type)
        return by_key.get(key) if by_key else None

    def _index(self, resource: Resource) -> None:
        self._by_type.setdefault(resource.type, {})[resource.key] = resource
        self._sorted.pop(resource.type, None)

    def _put(self, kind: EventKind, stored: Resource) -> None:
        revision = self._revision + 1
        self._persist_put(stored, revision)
        self._index(stored)
        self._publish(kind, stored, revision)

    def _publish(self, kind: EventKind, resource: Resource, revision: int) -> None:
        self._revision = revision
        self.events.publish(ResourceEvent(kind, resource, revision))


def _later_than(previous: datetime | None) -> datetime:
    """Now, but strictly after `previous`: a modification time never repeats or goes back,
    even when the wall clock steps backwards or two writes land in the same microsecond."""
    now = datetime.now(UTC)
    if previous is not None and now <= previous:
        return previous + _TICK
    return now


class MemoryStore(IndexedStore):
    """Nothing persisted: every hook is a no-op."""
