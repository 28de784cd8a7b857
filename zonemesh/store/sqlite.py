"""SQLite store: the embedded default; state survives restarts, including `kill -9`.

Durability: the database runs in WAL mode with `synchronous=NORMAL`. A commit appends the
transaction to the WAL file with write(2) before `COMMIT` returns, so the data sits in the
kernel's page cache and survives the death of this process however it dies (SIGKILL, OOM
killer, a crash): the kernel writes it out. SQLite only fsyncs at checkpoints in this mode,
so an OS crash or power loss may lose the last few transactions, though never corrupt the
database. That is the right trade for a control plane whose state is mostly re-derivable
(MeshServices, statuses) and which users restart far more often than machines crash; FULL
would add an fsync to every write.

One control plane per data directory: an exclusive `flock` on `<db>.lock` is held for as long
as the store is open. The kernel drops it when the process dies, so a crashed control plane
never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire, resource_to_wire
from zonemesh.resources.documents import dump_json
from zonemesh.resources.types.dataplane import OutboundListMemo
from zonemesh.store.base import StoreError
from zonemesh.store.memory import IndexedStore

log = logging.getLogger("zonemesh.store")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    type              TEXT    NOT NULL,
    mesh              TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    version           INTEGER NOT NULL,
    document          TEXT    NOT NULL,
    creation_time     TEXT    NOT NULL,
    modification_time TEXT    NOT NULL,
    PRIMARY KEY (type, mesh, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS "values" (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

_UPSERT_RESOURCE = """
INSERT INTO resources (type, mesh, name, version, document, creation_time, modification_time)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (type, mesh, name) DO UPDATE SET
    version = excluded.version,
    document = excluded.document,
    creation_time = excluded.creation_time,
    modification_time = excluded.modification_time
"""
_SET_REVISION = "INSERT OR REPLACE INTO meta (name, value) VALUES ('revision', ?)"


class DataDirInUseError(StoreError):
    """Another process holds the database: two control planes must never share one."""


class SqliteStore(IndexedStore):
    """Resources in one SQLite file, with every row also held in memory for reads.

    Everything is loaded into the shared in-memory index at open; each write goes to SQLite
    first (one transaction, committed) and then to memory, then its event is published. The
    sqlite3 calls run synchronously on the event-loop thread: a write is well under a
    millisecond, and not awaiting keeps each store operation atomic with respect to the loop
    (no other task sees the index between the commit and the event).
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.path)
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = self._connect()
            self._load()
        except sqlite3.Error as e:  # e.g. "file is not a database"
            self._release()
            raise StoreError(f"cannot open {self.path}: {e}") from e
        except BaseException:
            self._release()
            raise

    # -- opening -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; `_transaction` issues BEGIN/COMMIT.
        # check_same_thread=False: the loop thread is the only user, but the store may be
        # opened before the loop starts or closed from a shutdown hook on another thread.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                log.warning("%s: WAL is not available here (journal mode %s)", self.path, mode)
            conn.execute("PRAGMA synchronous=NORMAL")  # see the module docstring
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer zonemesh "
                    f"(schema {found}, this version knows {SCHEMA_VERSION})"
                )
            conn.executescript(_SCHEMA)
            if found < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _load(self) -> None:
        conn = self._require_conn()
        row = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        self._revision = int(row[0]) if row else 0
        self._values = dict(conn.execute('SELECT name, value FROM "values"'))
        rows = conn.execute(
            "SELECT type, mesh, name, version, document, creation_time, modification_time "
            "FROM resources"
        )
        loaded = skipped = 0
        # The Dataplanes of one service list the same outbounds: each list validated once.
        outbound_lists = OutboundListMemo()
        for type_name, mesh, name, version, document, created, modified in rows:
            key = ResourceKey(type_name, mesh, name)
            try:
                resource = _decode(key, version, document, created, modified, outbound_lists)
            except Exception as e:  # one unreadable row must not keep the control plane down
                skipped += 1
                log.warning(
                    "skipping stored resource %s: cannot read it (%s); the row is kept "
                    "until a resource with the same key is written",
                    key,
                    " ".join(str(e).split()) or type(e).__name__,
                )
                continue
            self._index(resource)
            loaded += 1
        log.info(
            "opened %s: %d resources (%d skipped), revision %d",
            self.path,
            loaded,
            skipped,
            self._revision,
        )

    # -- persistence hooks -------------------------------------------------------------------

    def _persist_put(self, resource: Resource, revision: int) -> None:
        assert resource.creation_time is not None and resource.modification_time is not None
        document = dump_json(resource_to_wire(resource)).decode()
        with self._transaction(str(resource.key)) as conn:
            conn.execute(
                _UPSERT_RESOURCE,
                (
                    resource.type,
                    resource.mesh,
                    resource.name,
                    resource.version,
                    document,
                    resource.creation_time.isoformat(),
                    resource.modification_time.isoformat(),
                ),
            )
            conn.execute(_SET_REVISION, (str(revision),))

    def _persist_delete(self, key: ResourceKey, revision: int) -> None:
        with self._transaction(str(key)) as conn:
            conn.execute(
                "DELETE FROM resources WHERE type = ? AND mesh = ? AND name = ?",
                (key.type, key.mesh, key.name),
            )
            conn.execute(_SET_REVISION, (str(revision),))

    def _persist_value(self, name: str, value: str) -> None:
        with self._transaction(f"value {name!r}") as conn:
            conn.execute(
                'INSERT OR REPLACE INTO "values" (name, value) VALUES (?, ?)', (name, value)
            )

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One committed transaction, or a `StoreError` with nothing written."""
        conn = self._require_conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"writing {what} to {self.path} failed: {e}") from e
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the store at {self.path} is closed")
        return self._conn

    # -- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the database (checkpointing the WAL) and let another process open it."""
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _decode(
    key: ResourceKey,
    version: int,
    document: str,
    created: str,
    modified: str,
    outbound_lists: OutboundListMemo | None = None,
) -> Resource:
    context = outbound_lists.context() if outbound_lists is not None else None
    resource = resource_from_wire(json.loads(document), keep_status=True, context=context)
    if resource.key != key:
        raise ValueError(f"the document describes {resource.key}")
    return resource.with_(
        version=int(version),
        creation_time=datetime.fromisoformat(created),
        modification_time=datetime.fromisoformat(modified),
    )


def _acquire_lock(db_path: Path) -> int:
    """Hold an exclusive lock beside the database; raise a clear error if someone else does.

    The descriptor is not inherited by child processes (Python's default), so an Envoy or a
    helper started by the control plane can never keep the directory locked after it exits.
    """
    lock_path = db_path.with_name(db_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUseError(
            f"data directory {db_path.parent} is in use by another zonemesh control plane "
            f"(pid {holder})"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
