"""In-memory store: for tests and throwaway control planes; state ends with the process."""

from __future__ import annotations

from datetime import UTC, datetime

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.store.base import (
    AlreadyExistsError,
    ConflictError,
    EventKind,
    NotFoundError,
    ResourceEvent,
    Store,
)


class MemoryStore(Store):
    def __init__(self) -> None:
        super().__init__()
        self._resources: dict[ResourceKey, Resource] = {}
        self._values: dict[str, str] = {}
        self._revision = 0

    async def find(self, key: ResourceKey) -> Resource | None:
        return self._resources.get(key)

    async def list(self, type_name: str, mesh: str | None = None) -> list[Resource]:
        found = [
            r
            for k, r in self._resources.items()
            if k.type == type_name and (mesh is None or k.mesh == mesh)
        ]
        return sorted(found, key=lambda r: (r.mesh, r.name))

    async def create(self, resource: Resource) -> Resource:
        if resource.key in self._resources:
            raise AlreadyExistsError(resource.key)
        now = datetime.now(UTC)
        stored = resource.with_(version=1, creation_time=now, modification_time=now)
        self._resources[stored.key] = stored
        self._publish(EventKind.CREATED, stored)
        return stored

    async def update(self, resource: Resource) -> Resource:
        current = self._resources.get(resource.key)
        if current is None:
            raise NotFoundError(resource.key)
        if resource.version != current.version:
            raise ConflictError(resource.key, resource.version, current.version)
        stored = resource.with_(
            version=current.version + 1,
            creation_time=current.creation_time,
            modification_time=datetime.now(UTC),
        )
        self._resources[stored.key] = stored
        self._publish(EventKind.UPDATED, stored)
        return stored

    async def delete(self, key: ResourceKey, version: int | None = None) -> Resource:
        current = self._resources.get(key)
        if current is None:
            raise NotFoundError(key)
        if version is not None and version != current.version:
            raise ConflictError(key, version, current.version)
        del self._resources[key]
        self._publish(EventKind.DELETED, current)
        return current

    async def get_value(self, name: str) -> str | None:
        return self._values.get(name)

    async def set_value(self, name: str, value: str) -> None:
        self._values[name] = value

    def _publish(self, kind: EventKind, resource: Resource) -> None:
        self._revision += 1
        self.events.publish(ResourceEvent(kind, resource, self._revision))
