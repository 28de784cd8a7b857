"""Proxy health shared through a real PostgreSQL: what one instance sees of its proxies
reaches the other (the leader's computed state and its xDS read the merged view), a dead
instance's proxies count as disconnected after the grace, and leadership moves between two
campaigners on one database when the holder's session ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from postgres_server import PostgresServer

from zonemesh.config import CpConfig
from zonemesh.resources.base import ResourceKey
from zonemesh.runtime.kernel import Runtime
from zonemesh.runtime.leadership import PostgresLeadership
from zonemesh.state.shared_health import SharedHealth
from zonemesh.store.postgres import PostgresStore

pytestmark = pytest.mark.timeout(60)

KEY = ResourceKey("Dataplane", "default", "echo-1")
PORT = 20080


async def eventually(check: object, what: str, deadline_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not check():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def runtimes(
    pg_database: str, postgres_server: PostgresServer
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    config = CpConfig.model_validate({"mode": "zone", "store": {"type": "memory"}})
    stores = [PostgresStore(postgres_server.config(pg_database), name=n) for n in ("a", "b")]
    for store in stores:
        await store.start()
    try:
        yield Runtime(config=config, store=stores[0]), Runtime(config=config, store=stores[1])
    finally:
        for store in stores:
            await store.close()


async def test_a_proxy_seen_by_one_instance_is_seen_by_the_other(
    runtimes: tuple[Runtime, Runtime],
) -> None:
    a, b = runtimes
    shared = [
        SharedHealth(rt, heartbeat_s=0.3, poll_s=0.1, grace_s=1.5, moving_grace_s=1.0)
        for rt in (a, b)
    ]
    for s in shared:
        await s.start()
    try:
        # The proxy's stream is on b and its app is down: a (say, the leader) knows.
        b.health.set_connected(KEY, True)
        b.health.set_readiness(KEY, (PORT,))
        await eventually(lambda: a.health.known(KEY), "a never heard of b's proxy")
        assert not a.health.is_healthy(KEY, PORT)
        b.health.set_readiness(KEY, ())
        await eventually(lambda: a.health.is_healthy(KEY, PORT), "readiness did not reach a")

        # The stream moves to a; b notices its old stream closed only afterwards (as with a
        # half-open connection): never unhealthy on either side.
        a.health.set_connected(KEY, True)
        await asyncio.sleep(0.5)
        b.health.set_connected(KEY, False)
        for _ in range(10):
            assert a.health.is_healthy(KEY, PORT) and b.health.is_healthy(KEY, PORT)
            await asyncio.sleep(0.05)
        # And back to b the other way round: a's stream closes first, b has the proxy only
        # 0.4 s later (a reconnection); within the moving grace neither side sees a gap.
        b.health.set_connected(KEY, False)
        await asyncio.sleep(0.3)
        a.health.set_connected(KEY, False)
        for _ in range(8):
            assert a.health.is_healthy(KEY, PORT) and b.health.is_healthy(KEY, PORT)
            await asyncio.sleep(0.05)
        b.health.set_connected(KEY, True)
        for _ in range(30):  # past the grace: b has it
            assert a.health.is_healthy(KEY, PORT) and b.health.is_healthy(KEY, PORT)
            await asyncio.sleep(0.05)
        b.health.set_connected(KEY, False)  # now it is gone from both
        assert b.health.is_healthy(KEY)  # for the moving grace ...
        await eventually(lambda: not b.health.is_healthy(KEY), "b still thinks it is connected")
        await eventually(lambda: not a.health.is_healthy(KEY), "a still thinks it is connected")
    finally:
        for s in shared:
            await s.stop()


async def test_a_dead_instance_s_proxies_are_disconnected_after_the_grace(
    runtimes: tuple[Runtime, Runtime],
) -> None:
    a, b = runtimes
    on_a = SharedHealth(a, heartbeat_s=0.3, poll_s=0.1, grace_s=1.0)
    on_b = SharedHealth(b, heartbeat_s=0.3, poll_s=0.1, grace_s=1.0)
    await on_a.start()
    await on_b.start()
    try:
        b.health.set_connected(KEY, True)
        await eventually(lambda: a.health.known(KEY) and a.health.is_healthy(KEY), "a sees it")
        await on_b.stop()  # b dies: its heartbeat stops, its last view says "connected"
        await asyncio.sleep(0.5)
        assert a.health.is_healthy(KEY), "dropped before the grace"
        await eventually(lambda: not a.health.is_healthy(KEY), "not disconnected after grace", 5)
        assert a.health.known(KEY)  # disconnected, not forgotten (forgotten = healthy)
    finally:
        await on_a.stop()


async def test_the_lock_moves_when_the_leader_s_session_ends(
    pg_database: str, postgres_server: PostgresServer
) -> None:
    config = postgres_server.config(pg_database)
    first = PostgresLeadership(config, "zonemesh-leader/test", check_s=0.1)
    second = PostgresLeadership(config, "zonemesh-leader/test", check_s=0.1)
    other_zone = PostgresLeadership(config, "zonemesh-leader/other", check_s=0.1)
    seen: list[bool] = []

    async def record(leading: bool) -> None:
        seen.append(leading)

    second.on_change(record)
    await first.start()
    await second.start()
    await other_zone.start()
    try:
        assert first.is_leader and not second.is_leader
        assert other_zone.is_leader  # one leader per zone, not per database
        await asyncio.sleep(0.3)
        assert not second.is_leader
        # The leader's backend is terminated (as when its process dies): the other leads,
        # and the one that lost its session steps down instead of acting as a second leader.
        terminate = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'zonemesh-cp leader' "
            "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objid = (hashtext('zonemesh-leader/test')::bigint & 4294967295))"
        )
        # From a thread: the event loop keeps running the campaigns meanwhile.
        terminated = await asyncio.to_thread(postgres_server.execute, pg_database, terminate)
        assert terminated == [(True,)], "the leader's session was not found"
        await eventually(lambda: second.is_leader, "no new leader")
        await eventually(lambda: not first.is_leader, "the old leader did not step down")
        assert seen == [True]
        await second.stop()
        await eventually(lambda: first.is_leader, "the lock did not come back")
    finally:
        for leadership in (first, second, other_zone):
            await leadership.stop()
