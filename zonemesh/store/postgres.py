"""PostgreSQL store: any number of control-plane instances share one database.

Tables (created by `zonemesh cp migrate up`, see `postgres_schema`):
- `resources`: one row per resource: its key, version, JSON document, timestamps and the
  revision of the write that left it so.
- `resource_events`: the change log, one row per write keyed by its store-wide revision, with
  the resource as the write left it (for a delete: as it was before).
- `store_revision`: a single row, the last revision. Each write transaction increments it
  first. The row lock that takes orders all writers, so revisions follow commit order and have
  no gaps (a write that fails rolls its increment back). "Every event after revision N" is
  then a complete and ordered answer, which is what makes the resync below exact.

Change events, on every instance: each write NOTIFYs `zonemesh_resources` with
`"<revision> <key>"` in its own transaction, so the notification goes out if and only if the
write commits. Each instance LISTENs on one dedicated connection (never a pooled one: the
pool would hand it to a query). A notification is only a wake-up call: the instance then reads
`resource_events` after the last revision it applied, in order, applies each to its
in-memory copy and publishes it on its `EventHub`. That same read is the resync. After a lost
listening connection the instance reconnects with backoff, LISTENs again, and only then reads
everything after its last revision, so whatever committed while it was away is published,
in order, exactly once. A heartbeat query on the listening connection every second notices
a connection that died without a word. It also notices a notification that never came. The
change log keeps the last `EVENTS_KEPT` writes; an instance further behind than that reloads
the whole table and publishes the difference.

Own writes: after its commit the writer applies its own event at once, or, when events of
other instances come before it, catches up through it. `await store.create(...)` so returns
after its event is published, as with the other stores. The NOTIFY of an own write then finds
nothing new: each event is published once per instance, in revision order.

Reads are served from the in-memory copy (as `SqliteStore` serves them): they stay fast and
keep answering while the database is away, which lets the control plane go on serving its
proxies the last known config. Writes go to the database only, and fail with a `StoreError`
while it is unreachable. The database checks versions (`UPDATE ... WHERE version = $n`),
so two instances racing on one resource get exactly one `ConflictError`, whatever their
copies say.

Health: `problem` is None while the listening connection is up and caught up, and says what
is wrong otherwise; `/ready` answers 503 with it until the store has recovered by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from zonemesh.config import PostgresConfig
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire, resource_to_wire
from zonemesh.store.base import (
    AlreadyExistsError,
    ConflictError,
    EventKind,
    NotFoundError,
    ResourceEvent,
    StoreError,
    StoreUnavailableError,
)
from zonemesh.store.memory import IndexedStore
from zonemesh.store.postgres_connection import (
    connect,
    connection_kwargs,
    describe,
    explain,
)
from zonemesh.store.postgres_schema import check_schema

log = logging.getLogger("zonemesh.store")

CHANNEL = "zonemesh_resources"
EVENTS_KEPT = 10_000  # change-log rows kept (by default); pruned every 1/20th of that
_BATCH = 1_000  # change-log rows read per query

HEARTBEAT_S = 1.0  # the listening connection is checked this often
HEARTBEAT_TIMEOUT_S = 3.0
BACKOFF_MIN_S = 0.1  # between reconnect attempts, doubling up to the max
BACKOFF_MAX_S = 2.0

_SELECT_EVENTS = """
SELECT revision, kind, type, mesh, name, version, document, creation_time, modification_time
FROM resource_events WHERE revision > %s ORDER BY revision LIMIT %s
"""
_INSERT_RESOURCE = """
INSERT INTO resources (type, mesh, name, version, document, creation_time, modification_time,
                       revision)
VALUES (%s, %s, %s, 1, %s, %s, %s, %s)
ON CONFLICT (type, mesh, name) DO NOTHING
"""
# GREATEST: a modification time never repeats or goes back, whichever instance's clock wrote it.
_UPDATE_RESOURCE = """
UPDATE resources SET version = version + 1, document = %s, revision = %s,
       modification_time = GREATEST(%s, modification_time + interval '1 microsecond')
WHERE type = %s AND mesh = %s AND name = %s AND version = %s
RETURNING version, creation_time, modification_time
"""
_DELETE_RESOURCE = """
DELETE FROM resources
WHERE type = %s AND mesh = %s AND name = %s AND (%s::bigint IS NULL OR version = %s)
RETURNING version, document, creation_time, modification_time
"""
_LOG_AND_NOTIFY = """
WITH logged AS (
    INSERT INTO resource_events (revision, kind, type, mesh, name, version, document,
                                 creation_time, modification_time)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
    RETURNING revision
)
SELECT pg_notify(%s, %s) FROM logged
"""

# One statement: the claim if the IP and the resource are both free, else the VIP the
# resource already holds. A conflict on the IP with another resource returns no row. (A claim
# committed by another instance during this statement is seen by the caller's next attempt.)
_CLAIM_VIP = """
WITH claimed AS (
    INSERT INTO vip_claims (pool, ip, owner_type, owner_mesh, owner_name)
    VALUES (%(pool)s, %(ip)s, %(type)s, %(mesh)s, %(name)s)
    ON CONFLICT DO NOTHING
    RETURNING ip
)
SELECT ip FROM claimed
UNION ALL
SELECT ip FROM vip_claims
WHERE pool = %(pool)s AND owner_type = %(type)s AND owner_mesh = %(mesh)s
  AND owner_name = %(name)s
LIMIT 1
"""
# The database's clock only: no comparison of the instances' clocks.
_RELEASE_STALE_VIPS = """
DELETE FROM vip_claims c
WHERE c.pool = %s AND c.claimed_at < now() - make_interval(secs => %s)
  AND NOT EXISTS (
      SELECT 1 FROM resources r
      WHERE r.type = c.owner_type AND r.mesh = c.owner_mesh AND r.name = c.owner_name
  )
"""

_Body = Callable[[psycopg.AsyncConnection], Awaitable[ResourceEvent]]


class PostgresStore(IndexedStore):
    """Resources in PostgreSQL, mirrored in memory and kept current from the change log."""

    def __init__(
        self, config: PostgresConfig, *, name: str = "zonemesh", events_kept: int = EVENTS_KEPT
    ) -> None:
        super().__init__()
        self._config = config
        self._where = describe(config)
        self._name = name  # shows as application_name in pg_stat_activity
        self._events_kept = events_kept
        self._prune_every = max(1, events_kept // 20)
        self._pool: AsyncConnectionPool | None = None
        self._follower: asyncio.Task[None] | None = None
        # Held while the in-memory copy moves forward, so events go out one at a time in order.
        self._apply_lock = asyncio.Lock()
        self._problem: str | None = f"{self._where}: not connected yet"

    @property
    def where(self) -> str:
        return self._where

    @property
    def revision(self) -> int:
        """The last revision applied to this instance's copy (and published)."""
        return self._revision

    @property
    def problem(self) -> str | None:
        return self._problem

    # -- opening and closing ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect, check the schema, LISTEN, load everything, then follow changes."""
        if self._pool is not None:
            return
        listening = await connect(self._config, f"{self._name} listener")
        pool: AsyncConnectionPool | None = None
        try:
            await check_schema(listening, self._where)
            await listening.execute(f"LISTEN {CHANNEL}")  # before loading: nothing falls between
            pool = AsyncConnectionPool(
                kwargs={"autocommit": True, **connection_kwargs(self._config, self._name)},
                min_size=1,
                max_size=self._config.max_open_connections,
                timeout=float(self._config.connection_timeout),
                # Connections left dead by a database restart are replaced, not handed out.
                check=AsyncConnectionPool.check_connection,
                open=False,
                name=self._name,
            )
            await pool.open(wait=True, timeout=float(self._config.connection_timeout))
            self._pool = pool
            async with self._apply_lock:
                await self._reload(publish=False)
        except BaseException as e:
            self._pool = None
            await _close_quietly(listening)
            if pool is not None:
                await pool.close()
            if isinstance(e, psycopg.Error | PoolTimeout):
                raise StoreUnavailableError(f"cannot open {self._where}: {explain(e)}") from None
            raise
        log.info(
            "opened %s: %d resources, revision %d",
            self._where,
            sum(len(by_key) for by_key in self._by_type.values()),
            self._revision,
        )
        self._set_problem(None)
        self._follower = asyncio.create_task(
            self._follow_forever(listening), name=f"{self._name}: follow {CHANNEL}"
        )

    async def close(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        self._problem = f"{self._where}: the store is closed"

    # -- writes -----------------------------------------------------------------------------

    async def create(self, resource: Resource) -> Resource:
        now = datetime.now(UTC)
        stored = resource.with_(version=1, creation_time=now, modification_time=now)
        document = _encode(stored)
        key = resource.key

        async def insert(conn: psycopg.AsyncConnection) -> ResourceEvent:
            revision = await _next_revision(conn)
            cur = await conn.execute(
                _INSERT_RESOURCE, (key.type, key.mesh, key.name, document, now, now, revision)
            )
            if cur.rowcount != 1:
                raise AlreadyExistsError(key)
            return await self._log(conn, EventKind.CREATED, stored, document, revision)

        return (await self._write(str(key), insert)).resource

    async def update(self, resource: Resource) -> Resource:
        document = _encode(resource)
        key = resource.key

        async def change(conn: psycopg.AsyncConnection) -> ResourceEvent:
            revision = await _next_revision(conn)
            cur = await conn.execute(
                _UPDATE_RESOURCE,
                (
                    document,
                    revision,
                    datetime.now(UTC),
                    key.type,
                    key.mesh,
                    key.name,
                    resource.version,
                ),
            )
            row = await cur.fetchone()
            if row is None:
                raise await _missing_or_conflict(conn, key, resource.version)
            version, created, modified = row
            stored = resource.with_(
                version=int(version), creation_time=created, modification_time=modified
            )
            return await self._log(conn, EventKind.UPDATED, stored, document, revision)

        return (await self._write(str(key), change)).resource

    async def delete(self, key: ResourceKey, version: int | None = None) -> Resource:
        async def remove(conn: psycopg.AsyncConnection) -> ResourceEvent:
            revision = await _next_revision(conn)
            cur = await conn.execute(
                _DELETE_RESOURCE, (key.type, key.mesh, key.name, version, version)
            )
            row = await cur.fetchone()
            if row is None:
                raise await _missing_or_conflict(conn, key, version)
            stored_version, document, created, modified = row
            current = self._lookup(key)
            if current is not None and current.version == stored_version:
                last = current  # what this instance already handed out, not a second copy
            else:
                last = _decode(key, stored_version, document, created, modified)
            return await self._log(conn, EventKind.DELETED, last, document, revision)

        return (await self._write(str(key), remove)).resource

    async def _write(self, what: str, body: _Body) -> ResourceEvent:
        """Run `body` in one transaction; once committed, apply and publish its event here."""
        committing = False
        try:
            async with self._connection() as conn, conn.transaction():
                event = await body(conn)
                committing = True
        except (psycopg.Error, PoolTimeout) as e:
            if committing:
                raise StoreUnavailableError(
                    f"writing {what} to {self._where}: the connection failed while "
                    f"committing ({explain(e)}); the write may or may not have been applied "
                    "(if it was, its event follows once the store has resynced)"
                ) from None
            raise StoreUnavailableError(
                f"writing {what} to {self._where} failed: {explain(e)}"
            ) from None
        await self._apply_own(event)
        return event

    async def _log(
        self,
        conn: psycopg.AsyncConnection,
        kind: EventKind,
        resource: Resource,
        document: str,
        revision: int,
    ) -> ResourceEvent:
        """Append the write to the change log and NOTIFY every instance (at commit)."""
        key = resource.key
        await conn.execute(
            _LOG_AND_NOTIFY,
            (
                revision,
                kind.value,
                key.type,
                key.mesh,
                key.name,
                resource.version,
                document,
                resource.creation_time,
                resource.modification_time,
                CHANNEL,
                f"{revision} {key}",
            ),
        )
        if revision % self._prune_every == 0:
            await conn.execute(
                "DELETE FROM resource_events WHERE revision <= %s",
                (revision - self._events_kept,),
            )
        return ResourceEvent(kind, resource, revision)

    # -- internal values (read and written straight through: other instances write them too) --

    async def get_value(self, name: str) -> str | None:
        try:
            async with self._connection() as conn:
                cur = await conn.execute(
                    "SELECT value FROM internal_values WHERE name = %s", (name,)
                )
                row = await cur.fetchone()
        except (psycopg.Error, PoolTimeout) as e:
            raise StoreUnavailableError(
                f"reading value {name!r} from {self._where} failed: {explain(e)}"
            ) from None
        return None if row is None else str(row[0])

    async def set_value(self, name: str, value: str) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(
                    "INSERT INTO internal_values (name, value) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )
        except (psycopg.Error, PoolTimeout) as e:
            raise StoreUnavailableError(
                f"writing value {name!r} to {self._where} failed: {explain(e)}"
            ) from None

    async def list_values(self, prefix: str) -> dict[str, str]:
        """Every internal value whose name starts with `prefix` (e.g. per-instance health)."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        try:
            async with self._connection() as conn:
                cur = await conn.execute(
                    "SELECT name, value FROM internal_values WHERE name LIKE %s", (pattern,)
                )
                rows = await cur.fetchall()
        except (psycopg.Error, PoolTimeout) as e:
            raise StoreUnavailableError(
                f"reading values {prefix!r}* from {self._where} failed: {explain(e)}"
            ) from None
        return {str(name): str(value) for name, value in rows}

    # -- VIP claims (decided by the database: see `Store.claim_vip`) -------------------------

    async def claim_vip(self, pool: str, ip: str, owner: ResourceKey) -> str | None:
        try:
            async with self._connection() as conn:
                cur = await conn.execute(
                    _CLAIM_VIP,
                    {
                        "pool": pool,
                        "ip": ip,
                        "type": owner.type,
                        "mesh": owner.mesh,
                        "name": owner.name,
                    },
                )
                row = await cur.fetchone()
        except (psycopg.Error, PoolTimeout) as e:
            raise StoreUnavailableError(
                f"claiming VIP {ip} for {owner} in {self._where} failed: {explain(e)}"
            ) from None
        return None if row is None else str(row[0])

    async def release_stale_vips(self, pool: str, older_than_s: float) -> int:
        try:
            async with self._connection() as conn:
                cur = await conn.execute(_RELEASE_STALE_VIPS, (pool, older_than_s))
        except (psycopg.Error, PoolTimeout) as e:
            raise StoreUnavailableError(
                f"freeing the VIPs of deleted resources in {self._where} failed: {explain(e)}"
            ) from None
        return max(cur.rowcount, 0)

    # -- moving the in-memory copy forward --------------------------------------------------

    async def _apply_own(self, event: ResourceEvent) -> None:
        async with self._apply_lock:
            if event.revision <= self._revision:
                return  # the listener caught up through it already
            if event.revision == self._revision + 1:
                self._apply(event)
                return
            try:
                await self._catch_up()  # others' writes come first
            except StoreError as e:
                log.warning(
                    "%s is committed but not yet published here (%s); it will be once the "
                    "store has resynced",
                    event.key,
                    e,
                )

    async def catch_up(self) -> None:
        async with self._apply_lock:
            await self._catch_up()

    async def _catch_up(self) -> None:
        """Apply every logged event after our revision, in order. Hold `_apply_lock`."""
        while True:
            try:
                async with self._connection() as conn:
                    cur = await conn.execute(_SELECT_EVENTS, (self._revision, _BATCH))
                    rows = await cur.fetchall()
            except (psycopg.Error, PoolTimeout) as e:
                raise StoreUnavailableError(
                    f"reading changes from {self._where} failed: {explain(e)}"
                ) from None
            if not rows:
                return
            if rows[0][0] != self._revision + 1:
                log.warning(
                    "this instance is at revision %d but the change log now starts at %d: "
                    "reloading every resource from %s",
                    self._revision,
                    rows[0][0],
                    self._where,
                )
                await self._reload(publish=True)
                return
            for row in rows:
                self._apply_row(row)
            if len(rows) < _BATCH:
                return

    def _apply_row(self, row: tuple[Any, ...]) -> None:
        revision, kind_name, type_name, mesh, name, version, document, created, modified = row
        key = ResourceKey(type_name, mesh, name)
        kind = EventKind(kind_name)
        try:
            resource = _decode(key, version, document, created, modified)
        except Exception as e:  # one unreadable document must not stop every later event
            current = self._lookup(key)
            if kind is not EventKind.DELETED or current is None:
                log.warning("skipping change %d of %s: cannot read it (%s)", revision, key, e)
                self._revision = revision
                return
            resource = current
        self._apply(ResourceEvent(kind, resource, revision))

    def _apply(self, event: ResourceEvent) -> None:
        key = event.key
        if event.kind is EventKind.DELETED:
            by_key = self._by_type.get(key.type)
            if by_key is not None and by_key.pop(key, None) is not None:
                self._sorted.pop(key.type, None)
        else:
            self._index(event.resource)
        self._publish(event.kind, event.resource, event.revision)

    async def _reload(self, *, publish: bool) -> None:
        """Replace the copy with the whole table; publish what changed. Hold `_apply_lock`."""
        try:
            async with self._connection() as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur = await conn.execute("SELECT revision FROM store_revision")
                latest_row = await cur.fetchone()
                cur = await conn.execute(
                    "SELECT type, mesh, name, version, document, creation_time, "
                    "modification_time, revision FROM resources ORDER BY revision"
                )
                rows = await cur.fetchall()
        except (psycopg.Error, PoolTimeout) as e:
            raise StoreUnavailableError(f"reading {self._where} failed: {explain(e)}") from None
        latest = int(latest_row[0]) if latest_row else 0
        fresh: dict[str, dict[ResourceKey, Resource]] = {}
        changes: list[ResourceEvent] = []
        for type_name, mesh, name, version, document, created, modified, revision in rows:
            key = ResourceKey(type_name, mesh, name)
            try:
                resource = _decode(key, version, document, created, modified)
            except Exception as e:
                log.warning("skipping stored resource %s: cannot read it (%s)", key, e)
                continue
            fresh.setdefault(type_name, {})[key] = resource
            old = self._lookup(key)
            if old is None:
                changes.append(ResourceEvent(EventKind.CREATED, resource, int(revision)))
            elif (old.version, old.modification_time) != (version, modified):
                changes.append(ResourceEvent(EventKind.UPDATED, resource, int(revision)))
        for by_key in self._by_type.values():
            for key, old in by_key.items():
                if key not in fresh.get(key.type, {}):
                    changes.append(ResourceEvent(EventKind.DELETED, old, latest))
        self._by_type = fresh
        self._sorted = {}
        self._revision = latest
        if publish:
            for event in changes:
                self.events.publish(event)

    # -- following other instances ----------------------------------------------------------

    async def _follow_forever(self, listening: psycopg.AsyncConnection | None) -> None:
        """Until closed: follow notifications; after a loss reconnect with backoff and resync."""
        backoff = BACKOFF_MIN_S
        while True:
            if listening is None:
                try:
                    listening = await self._reconnect()
                except StoreError as e:
                    self._set_problem(str(e))
                    await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                backoff = BACKOFF_MIN_S
            try:
                await self._follow(listening)
            except (psycopg.Error, PoolTimeout, OSError, TimeoutError, StoreError) as e:
                self._set_problem(f"lost the connection to {self._where}: {explain(e)}")
            except Exception as e:  # a bug must not leave the store silently not following
                log.exception("following %s failed; reconnecting", self._where)
                self._set_problem(f"following {self._where} failed: {explain(e)}")
            finally:
                await _close_quietly(listening)
                listening = None

    async def _reconnect(self) -> psycopg.AsyncConnection:
        listening = await connect(self._config, f"{self._name} listener")
        try:
            await listening.execute(f"LISTEN {CHANNEL}")
            before = self._revision
            async with self._apply_lock:
                await self._catch_up()
        except BaseException as e:
            await _close_quietly(listening)
            if isinstance(e, psycopg.Error):
                raise StoreUnavailableError(f"resyncing with {self._where}: {explain(e)}") from None
            raise
        log.info(
            "reconnected to %s; resynced from revision %d to %d",
            self._where,
            before,
            self._revision,
        )
        self._set_problem(None)
        return listening

    async def _follow(self, listening: psycopg.AsyncConnection) -> None:
        while True:
            async for notify in listening.notifies(timeout=HEARTBEAT_S):
                if _revision_in(notify.payload) > self._revision:
                    async with self._apply_lock:
                        await self._catch_up()
            # The heartbeat: a dead connection fails here; a missed notification shows here.
            async with asyncio.timeout(HEARTBEAT_TIMEOUT_S):
                cur = await listening.execute("SELECT revision FROM store_revision")
                row = await cur.fetchone()
            if row is not None and int(row[0]) > self._revision:
                async with self._apply_lock:
                    await self._catch_up()

    def _set_problem(self, problem: str | None) -> None:
        if problem is not None and problem != self._problem:
            log.warning("store not available: %s", problem)
        self._problem = problem

    # -- helpers ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        if self._pool is None:
            raise StoreUnavailableError(f"{self._where}: the store is not open")
        async with self._pool.connection() as conn:
            yield conn


async def _next_revision(conn: psycopg.AsyncConnection) -> int:
    """Take the next store revision; the row lock holds other writers until we commit."""
    cur = await conn.execute("UPDATE store_revision SET revision = revision + 1 RETURNING revision")
    row = await cur.fetchone()
    if row is None:
        raise StoreError("the store_revision row is missing: run `zonemesh cp migrate up`")
    return int(row[0])


async def _missing_or_conflict(
    conn: psycopg.AsyncConnection, key: ResourceKey, expected: int | None
) -> StoreError:
    cur = await conn.execute(
        "SELECT version FROM resources WHERE type = %s AND mesh = %s AND name = %s",
        (key.type, key.mesh, key.name),
    )
    row = await cur.fetchone()
    if row is None:
        return NotFoundError(key)
    return ConflictError(key, expected or 0, int(row[0]))


def _encode(resource: Resource) -> str:
    """The document without version and timestamps: those live in their own columns."""
    wire = resource_to_wire(resource)
    wire.pop("creationTime", None)
    wire.pop("modificationTime", None)
    return json.dumps(wire, separators=(",", ":"))


def _decode(
    key: ResourceKey, version: int, document: str, created: datetime, modified: datetime
) -> Resource:
    resource = resource_from_wire(json.loads(document), keep_status=True)
    if resource.key != key:
        raise ValueError(f"the document describes {resource.key}")
    return resource.with_(version=int(version), creation_time=created, modification_time=modified)


def _revision_in(payload: str) -> int:
    """The revision a notification announces; unreadable ones count as news (we look)."""
    try:
        return int(payload.split(" ", 1)[0])
    except ValueError:
        return 1 << 62


async def _close_quietly(conn: psycopg.AsyncConnection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()
