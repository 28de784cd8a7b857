"""The store interface every backend implements, and the change events it publishes.

Rules every backend follows (checked by `tests/store/test_store_conformance.py`):
- `create` sets version 1 and both timestamps; `update` needs `resource.version` equal to the
  stored version (else `ConflictError`), then stores version + 1 and a new modification time.
- `delete(key, version=None)` checks the version only when one is given.
- Every successful write publishes one `ResourceEvent`, after the write is durable, in write
  order. Subscribe before listing so that no change falls between the two. A store shared by
  several control planes (PostgreSQL) publishes the writes of all of them, in one order.
- Returned resources are never mutated by the store afterwards (they are shared, not copied).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum

from zonemesh.resources.base import Resource, ResourceKey


class StoreError(Exception):
    pass


class StoreUnavailableError(StoreError):
    """The store cannot take this write now (its database is unreachable or refused us);
    the message names where and why. The API answers 503 with it."""


class NotFoundError(StoreError):
    def __init__(self, key: ResourceKey) -> None:
        super().__init__(f"{key} not found")
        self.key = key


class AlreadyExistsError(StoreError):
    def __init__(self, key: ResourceKey) -> None:
        super().__init__(f"{key} already exists")
        self.key = key


class ConflictError(StoreError):
    """The resource changed since it was read: the caller's version is stale."""

    def __init__(self, key: ResourceKey, expected: int, actual: int) -> None:
        super().__init__(f"{key}: version {expected} is stale (stored: {actual})")
        self.key = key


class EventKind(Enum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True)
class ResourceEvent:
    kind: EventKind
    resource: Resource  # the new state; for DELETED, the last state before deletion
    revision: int  # store-wide, increases with every write

    @property
    def key(self) -> ResourceKey:
        return self.resource.key


class Subscription:
    """An unbounded queue of events for one subscriber; iterate it, close it when done."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[ResourceEvent] = asyncio.Queue()

    def put(self, event: ResourceEvent) -> None:
        self._queue.put_nowait(event)

    async def get(self) -> ResourceEvent:
        return await self._queue.get()

    def drain(self) -> list[ResourceEvent]:
        """Everything queued right now, without waiting (for batching consumers)."""
        events = []
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        return events

    def close(self) -> None:
        self._hub.unsubscribe(self)

    def __aiter__(self) -> AsyncIterator[ResourceEvent]:
        return self

    async def __anext__(self) -> ResourceEvent:
        return await self.get()


class EventHub:
    """Fan-out of store events to subscribers, in publish order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def publish(self, event: ResourceEvent) -> None:
        for sub in self._subscribers:
            sub.put(event)


class Store(abc.ABC):
    """Resources keyed by (type, mesh, name); global-scoped types use mesh ""."""

    def __init__(self) -> None:
        self.events = EventHub()

    def subscribe(self) -> Subscription:
        return self.events.subscribe()

    @abc.abstractmethod
    async def find(self, key: ResourceKey) -> Resource | None: ...

    async def get(self, key: ResourceKey) -> Resource:
        found = await self.find(key)
        if found is None:
            raise NotFoundError(key)
        return found

    @abc.abstractmethod
    async def list(self, type_name: str, mesh: str | None = None) -> list[Resource]:
        """All resources of a type (in one mesh, or all meshes with None), by (mesh, name)."""

    @abc.abstractmethod
    async def create(self, resource: Resource) -> Resource: ...

    @abc.abstractmethod
    async def update(self, resource: Resource) -> Resource: ...

    @abc.abstractmethod
    async def delete(self, key: ResourceKey, version: int | None = None) -> Resource: ...

    @abc.abstractmethod
    async def get_value(self, name: str) -> str | None:
        """Small internal values that must survive restarts (e.g. the IPAM cursor)."""

    @abc.abstractmethod
    async def set_value(self, name: str, value: str) -> None: ...

    async def claim_vip(self, pool: str, ip: str, owner: ResourceKey) -> str | None:
        """Claim `ip` of `pool` (a CIDR) for `owner`. Returns the VIP `owner` holds afterwards:
        `ip`, or the one it already held (a resource holds one VIP per pool); None when
        another resource holds `ip`. A store shared by several instances decides this in its
        database, so two allocators at once never hand one VIP to two resources. A local
        store has one allocator, whose own bookkeeping keeps VIPs unique: always granted."""
        return ip

    async def release_stale_vips(self, pool: str, older_than_s: float) -> int:
        """Free the claims of `pool` whose resource no longer exists, claimed more than
        `older_than_s` ago (a claim is made just before its resource is written). Returns
        how many were freed; local stores keep no claims."""
        return 0

    async def start(self) -> None:  # noqa: B027
        """Connect and begin following changes made elsewhere (a shared database); raises a
        `StoreError` naming the problem. Local stores are ready when constructed."""

    async def catch_up(self) -> None:  # noqa: B027
        """Apply now what other instances sharing the database wrote (after an
        `AlreadyExistsError`, so `find` sees their resource). Local stores are always current."""

    @property
    def problem(self) -> str | None:
        """Why the store cannot take writes right now (e.g. its database is unreachable), for
        `/ready`; None while it can. Reads keep answering from what the store last knew."""
        return None

    async def close(self) -> None:  # noqa: B027
        """Release files and connections."""
