"""The two halves of a sync stream, shared by global and zone: `Outbox` and `Inbox`.

Why this shape: every (re)connection starts with a full snapshot in both directions, and the
receiver reconciles against it (writes what differs, deletes what the snapshot no longer
names). That one rule gives convergence after any outage, restart or crash on either side,
without persisted sync cursors. After the snapshot only changes flow, driven by store events.
Duplicates are impossible by construction: the sender remembers the hash of what the peer
holds and sends a key only when it changes; the receiver skips writes of identical content.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from zonemesh.federation import mapping
from zonemesh.federation.mapping import Entry
from zonemesh.federation.proto import kds_pb2 as pb
from zonemesh.federation.protocol import batches, key_of, ref
from zonemesh.resources import documents
from zonemesh.resources.base import Resource, ResourceKey, ResourceType
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.errors import ValidationError
from zonemesh.resources.registry import UnknownTypeError, by_kind
from zonemesh.store.base import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    ResourceEvent,
    Store,
    Subscription,
)

log = logging.getLogger("zonemesh.kds")

WRITE_ATTEMPTS = 20


class Rejected(Exception):
    """The receiver refuses one resource; the reason goes back to the sender in the Ack."""


@dataclass
class Recheck:
    """Recompute these keys (e.g. a zone's resources after its availability changed)."""

    keys: Callable[[], Awaitable[Iterable[ResourceKey]]]


class Outbox:
    """Sends what the peer should hold: a snapshot, then changes as the store reports them.

    `entry_for(resource)` is the sender's view of one stored resource: what to send, or None
    when the peer must not hold it (then a delete goes out if the peer has it).
    """

    def __init__(
        self,
        store: Store,
        types: Sequence[ResourceType],
        entry_for: Callable[[Resource], Entry | None],
        send: Callable[[pb.Changes], Awaitable[None]],
        *,
        coalesce_s: float = 0.005,
    ) -> None:
        self._store = store
        self._types = {t.name for t in types}
        self._ordered_types = [t.name for t in types]
        self._entry_for = entry_for
        self._send = send
        self._coalesce_s = coalesce_s
        self._queue: asyncio.Queue[ResourceEvent | Recheck] = asyncio.Queue()
        self.sent: dict[ResourceKey, str] = {}  # key -> hash of what the peer holds
        self.batch = 0
        self.snapshot_sent = asyncio.Event()

    def recheck(self, keys: Callable[[], Awaitable[Iterable[ResourceKey]]]) -> None:
        self._queue.put_nowait(Recheck(keys))

    async def run(self) -> None:
        subscription = self._store.subscribe()  # before listing: no change falls in between
        pump = asyncio.create_task(self._pump(subscription))
        try:
            await self._send_snapshot()
            while True:
                items = [await self._queue.get()]
                if self._coalesce_s:
                    await asyncio.sleep(self._coalesce_s)
                while not self._queue.empty():
                    items.append(self._queue.get_nowait())
                await self._send_changes(items)
        finally:
            pump.cancel()
            subscription.close()

    async def _pump(self, subscription: Subscription) -> None:
        async for event in subscription:
            if event.key.type in self._types:
                self._queue.put_nowait(event)

    async def _send_snapshot(self) -> None:
        upserts: list[Entry] = []
        for type_name in self._ordered_types:
            for resource in await self._store.list(type_name):
                item = self._entry_for(resource)
                if item is not None:
                    upserts.append(item)
        self.sent = {item.key: item.hash for item in upserts}
        for message in batches(upserts, (), snapshot=True):
            await self._emit(message)
        self.snapshot_sent.set()

    async def _send_changes(self, items: list[ResourceEvent | Recheck]) -> None:
        dirty: dict[ResourceKey, None] = {}  # ordered set
        for item in items:
            if isinstance(item, Recheck):
                for key in await item.keys():
                    dirty[key] = None
            else:
                dirty[item.key] = None
        upserts: list[Entry] = []
        deletes: list[ResourceKey] = []
        # Read the current state rather than trusting event payloads: the store is newer.
        for key in sorted(dirty, key=self._type_order):
            current = await self._store.find(key)
            item = self._entry_for(current) if current is not None else None
            if item is None:
                if self.sent.pop(key, None) is not None:
                    deletes.append(key)
            elif self.sent.get(key) != item.hash:
                self.sent[key] = item.hash
                upserts.append(item)
        for message in batches(upserts, deletes, snapshot=False):
            await self._emit(message)

    def _type_order(self, key: ResourceKey) -> tuple[int, ResourceKey]:
        order = self._ordered_types.index(key.type) if key.type in self._types else 0
        return (order, key)

    async def _emit(self, message: pb.Changes) -> None:
        self.batch += 1
        message.batch = self.batch
        await self._send(message)


class InboxPolicy:
    """What one side accepts from its peer, and which local resources the peer controls."""

    peer: str = "peer"

    def accepts_type(self, rtype: ResourceType) -> bool:
        raise NotImplementedError

    def to_local(self, resource: Resource) -> Resource:
        """The received resource as stored here; raises `Rejected`."""
        raise NotImplementedError

    def local_key(self, key: ResourceKey) -> ResourceKey | None:
        """The local key of a resource the peer names (for deletes)."""
        raise NotImplementedError

    def owns(self, existing: Resource) -> bool:
        """Came from this peer: it may update and delete it."""
        raise NotImplementedError

    def may_replace(self, existing: Resource) -> bool:
        """A local resource that the peer's version takes over (e.g. global's Mesh)."""
        return False

    async def owned(self) -> list[Resource]:
        """Everything here that came from this peer (for snapshot reconciliation)."""
        raise NotImplementedError


@dataclass
class InboxStats:
    applied: int = 0  # created, updated or deleted
    unchanged: int = 0
    rejected: int = 0
    snapshots: int = 0


@dataclass
class Inbox:
    """Applies the peer's changes to the store, straight through the versioned writes.

    A resource the policy refuses (invalid, unknown type, not this direction, a name taken
    locally) is skipped and named in the Ack; the rest of the batch applies. A store failure
    is not the peer's fault: it propagates and ends the stream, and the snapshot exchanged on
    the next connection repairs whatever the failure left out.
    """

    store: Store
    policy: InboxPolicy
    stats: InboxStats = field(default_factory=InboxStats)
    _seen: set[ResourceKey] | None = None  # keys named by the snapshot in progress
    snapshot_done: asyncio.Event = field(default_factory=asyncio.Event)

    async def apply(self, changes: pb.Changes) -> list[pb.Rejection]:
        rejections: list[pb.Rejection] = []
        if changes.snapshot and self._seen is None:
            self._seen = set()
        for message in changes.upserts:
            try:
                local_key = await self._upsert(message)
                if self._seen is not None and changes.snapshot:
                    self._seen.add(local_key)
            except Rejected as e:
                self.stats.rejected += 1
                rejections.append(pb.Rejection(ref=ref(key_of(message)), reason=str(e)))
                log.warning("refused %s from %s: %s", key_of(message), self.policy.peer, e)
                if self._seen is not None and changes.snapshot:
                    # Keep what we have: a refused update must not delete the last good copy.
                    local = self.policy.local_key(key_of(message))
                    if local is not None:
                        self._seen.add(local)
        for message in changes.deletes:
            await self._delete(key_of(message))
        if changes.snapshot_complete:
            await self._reconcile(self._seen or set())
            self._seen = None
            self.stats.snapshots += 1
            self.snapshot_done.set()
        return rejections

    async def _upsert(self, message: pb.Resource) -> ResourceKey:
        try:
            rtype = by_kind(message.type)
        except UnknownTypeError:
            log.warning(
                "ignoring %s/%s/%s from %s: unknown resource type %r",
                message.type,
                message.mesh,
                message.name,
                self.policy.peer,
                message.type,
            )
            raise Rejected(f"unknown resource type {message.type!r}: ignored") from None
        if not self.policy.accepts_type(rtype):
            raise Rejected(f"{rtype.name} is not synced in this direction")
        if mapping.content_hash(message.json) != message.hash:
            raise Rejected("content does not match its hash (corrupted in transit?)")
        try:
            # Bounded like every document we parse: a peer's nesting cannot blow the stack.
            doc = documents.load_json(message.json.decode("utf-8"), source="content")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise Rejected(f"not JSON: {e}") from None
        except documents.DocumentLimitError as e:
            raise Rejected(str(e)) from None
        if not isinstance(doc, dict):
            raise Rejected("not a JSON object")
        if (doc.get("type"), doc.get("mesh", ""), doc.get("name")) != (
            message.type,
            message.mesh,
            message.name,
        ):
            raise Rejected("type, mesh or name of the content differ from the message")
        try:
            received = resource_from_wire(doc)
        except ValidationError as e:
            raise Rejected(f"invalid: {e}") from None
        local = self.policy.to_local(received)
        await self._write(local)
        return local.key

    async def _write(self, local: Resource) -> None:
        for _ in range(WRITE_ATTEMPTS):
            existing = await self.store.find(local.key)
            try:
                if existing is None:
                    await self.store.create(local)
                    self.stats.applied += 1
                    return
                owned = self.policy.owns(existing)
                if not owned and not self.policy.may_replace(existing):
                    raise Rejected(
                        f"{local.key} exists here and does not come from {self.policy.peer}"
                    )
                if owned and mapping.same_content(existing, local):
                    self.stats.unchanged += 1
                    return
                # Keep the status computed here: it is this control plane's, not the peer's.
                status = existing.status if owned else None
                await self.store.update(local.with_(status=status, version=existing.version))
                self.stats.applied += 1
                return
            except (ConflictError, AlreadyExistsError, NotFoundError):
                continue  # written concurrently (e.g. a status update): read again and retry
        raise RuntimeError(f"{local.key}: gave up after {WRITE_ATTEMPTS} conflicting writes")

    async def _delete(self, key: ResourceKey) -> None:
        local_key = self.policy.local_key(key)
        if local_key is not None:
            await self._delete_local(local_key)

    async def _delete_local(self, key: ResourceKey) -> None:
        """Delete what the peer owns under `key` (never a local resource of that name)."""
        for _ in range(WRITE_ATTEMPTS):
            existing = await self.store.find(key)
            if existing is None or not self.policy.owns(existing):
                return
            try:
                await self.store.delete(key, version=existing.version)
                self.stats.applied += 1
                return
            except ConflictError:
                continue  # e.g. a status update landed in between
            except NotFoundError:
                return
        raise RuntimeError(f"{key}: gave up after {WRITE_ATTEMPTS} conflicting writes")

    async def _reconcile(self, seen: set[ResourceKey]) -> None:
        for resource in await self.policy.owned():
            if resource.key not in seen:
                log.info("deleting %s: %s no longer has it", resource.key, self.policy.peer)
                await self._delete_local(resource.key)
