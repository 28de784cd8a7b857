"""Which instance of a zone (or of global) does what must run once: the leader.

With a memory or SQLite store there is one instance, always the leader. On PostgreSQL every
instance campaigns for a session-level advisory lock held on a dedicated connection. A lock,
not a lease row, because PostgreSQL itself releases it the moment the holder's session ends:
a SIGKILLed process's socket is closed by its kernel and the backend exits at once; a host
that vanishes is noticed by TCP keepalives and `tcp_user_timeout` (see
`postgres_connection`). No clocks to compare, nothing to expire, no row to clean up. The
holder pings its connection every `check_s` and steps down when the ping fails, so it stops
acting as leader within about `check_s` of losing the lock; a follower asks for the lock every
`check_s`, so a dead leader is replaced within `check_s` plus the time its session takes to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg

from zonemesh.config import PostgresConfig
from zonemesh.store.base import StoreUnavailableError
from zonemesh.store.postgres_connection import connect, explain

log = logging.getLogger("zonemesh.leader")

Callback = Callable[[bool], Awaitable[None]]


class Leadership:
    """`is_leader`, an event set while leading, and callbacks run on every change (in
    registration order on gaining, in reverse on losing, so dependents stop first).

    This base class is the sole instance's: the leader from the start, for good (memory and
    SQLite stores, in-process tests)."""

    def __init__(self, *, leading: bool = True) -> None:
        self._leading = leading
        self.leading = asyncio.Event()
        if leading:
            self.leading.set()
        self._callbacks: list[Callback] = []
        self.changes = 0  # how many times leadership was gained or lost

    @property
    def is_leader(self) -> bool:
        return self._leading

    def on_change(self, callback: Callback) -> None:
        self._callbacks.append(callback)

    def describe(self) -> str:
        return "leader" if self._leading else "follower"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def _set(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        self.changes += 1
        if leading:
            self.leading.set()
        else:
            self.leading.clear()
        log.info("this instance is now the %s", self.describe())
        callbacks = self._callbacks if leading else list(reversed(self._callbacks))
        for callback in callbacks:
            try:
                await callback(leading)
            except Exception:
                log.exception("reacting to leadership %s failed", "gained" if leading else "lost")


class PostgresLeadership(Leadership):
    """Campaigns for `pg_try_advisory_lock(hashtext(<lock name>))` on its own connection."""

    def __init__(
        self,
        config: PostgresConfig,
        lock_name: str,
        *,
        application_name: str = "zonemesh-cp leader",
        check_s: float = 0.5,
    ) -> None:
        super().__init__(leading=False)
        self._config = config
        self.lock_name = lock_name
        self._application_name = application_name
        self.check_s = check_s
        self._conn: psycopg.AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.problem: str | None = None

    async def start(self) -> None:
        """One attempt inline (so a lone first instance leads before its components start,
        and their start checks can stop `cp run`), then campaign in the background."""
        with contextlib.suppress(StoreUnavailableError, psycopg.Error, TimeoutError):
            await self._attempt()
        self._task = asyncio.create_task(self._campaign(), name="leader-election")

    async def stop(self) -> None:
        if self._task is not None:
            # Bounded: a campaign stuck on a dead connection must not hold up the shutdown.
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=self._timeout)
            self._task = None
        await self._set(False)  # components stop while the lock is still held ...
        await self._drop_connection()  # ... then the lock goes with the session

    async def _campaign(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            try:
                if self.is_leader:
                    await self._ping()
                else:
                    await self._attempt()
            except (StoreUnavailableError, psycopg.Error, TimeoutError) as e:
                self.problem = explain(e) if isinstance(e, psycopg.Error) else str(e)
                if self.is_leader:
                    log.warning("lost the leader lock's connection: %s", self.problem)
                await self._drop_connection()
                await self._set(False)

    async def _attempt(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = await asyncio.wait_for(
                connect(self._config, self._application_name), timeout=self._timeout
            )
        cur = await asyncio.wait_for(
            self._conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.lock_name,)),
            timeout=self._timeout,
        )
        row = await cur.fetchone()
        self.problem = None
        if row is not None and row[0]:
            await self._set(True)

    async def _ping(self) -> None:
        assert self._conn is not None
        await asyncio.wait_for(self._conn.execute("SELECT 1"), timeout=self._timeout)

    @property
    def _timeout(self) -> float:
        return max(2.0, float(self._config.connection_timeout))

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=self._timeout)
