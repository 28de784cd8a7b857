"""Several instances on one real PostgreSQL: events between them, faults, and refusals.

Each "instance" is a `PostgresStore` of its own (its own pool and LISTEN connection), as two
`cp run` processes would have; they share one database made for the test.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from postgres_server import PostgresServer
from pydantic import SecretStr
from store_samples import mesh, meshservice, mmzs

from zonemesh.config import PostgresTlsConfig
from zonemesh.resources.base import Resource
from zonemesh.store.base import (
    AlreadyExistsError,
    ConflictError,
    EventKind,
    ResourceEvent,
    StoreError,
    StoreUnavailableError,
    Subscription,
)
from zonemesh.store.postgres import PostgresStore
from zonemesh.store.postgres_connection import SchemaError
from zonemesh.tls.certs import cert_pem, new_ca


async def wait_until(predicate: Callable[[], object], timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


class Collector:
    """Everything a subscription has delivered so far."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.events: list[ResourceEvent] = []

    def poll(self) -> list[ResourceEvent]:
        self.events.extend(self.sub.drain())
        return self.events

    async def wait_for(self, count: int, timeout: float = 10) -> list[ResourceEvent]:
        await wait_until(lambda: len(self.poll()) >= count, timeout, f"{count} events")
        return self.events


@pytest.fixture
async def instances(
    postgres_server: PostgresServer, pg_database: str
) -> AsyncIterator[Callable[..., PostgresStore]]:
    """Make started instances on the test's database; all closed at the end."""
    opened: list[PostgresStore] = []

    async def make(name: str, **config: object) -> PostgresStore:
        store = PostgresStore(postgres_server.config(pg_database, **config), name=name)
        await store.start()
        opened.append(store)
        return store

    yield make  # type: ignore[misc]
    for store in opened:
        await store.close()


def signature(events: list[ResourceEvent]) -> list[tuple[EventKind, str, int, int]]:
    return [(e.kind, str(e.key), e.resource.version, e.revision) for e in events]


async def test_writes_on_one_instance_reach_the_other_in_order_and_once(instances) -> None:
    a, b = await instances("a"), await instances("b")
    on_a, on_b = Collector(a.subscribe()), Collector(b.subscribe())

    created = await a.create(mmzs("echo"))
    other = await b.create(mesh("default"))  # B writes too: both logs interleave
    updated = await a.update(created.with_(labels={"team": "core"}))
    deleted = await a.delete(other.key)

    expected = [
        (EventKind.CREATED, "MeshMultiZoneService/default/echo", 1, 1),
        (EventKind.CREATED, "Mesh/default", 1, 2),
        (EventKind.UPDATED, "MeshMultiZoneService/default/echo", 2, 3),
        (EventKind.DELETED, "Mesh/default", 1, 4),
    ]
    assert signature(await on_b.wait_for(4)) == expected
    assert signature(await on_a.wait_for(4)) == expected
    # The notifications of A's own writes come back to A too; they must not repeat events.
    await asyncio.sleep(1.5)  # past a heartbeat
    assert signature(on_a.poll()) == expected
    assert signature(on_b.poll()) == expected
    assert [e.resource for e in on_b.events] == [created, other, updated, deleted]
    assert await b.get(created.key) == updated
    assert await b.find(other.key) is None
    assert a.problem is None and b.problem is None


async def test_two_instances_racing_on_one_resource_get_exactly_one_conflict(instances) -> None:
    a, b = await instances("a"), await instances("b")
    for round_ in range(10):
        base = await a.create(meshservice(f"svc-{round_}"))
        await wait_until(lambda: b.revision == a.revision, what="B sees it")
        from_a = base.with_(labels={"by": "a"})
        from_b = (await b.get(base.key)).with_(labels={"by": "b"})

        results = await asyncio.gather(a.update(from_a), b.update(from_b), return_exceptions=True)

        conflicts = [r for r in results if isinstance(r, ConflictError)]
        stored = [r for r in results if isinstance(r, Resource)]
        assert len(conflicts) == 1 and len(stored) == 1, results
        assert stored[0].version == 2
        await wait_until(lambda: b.revision == a.revision, what="both copies hold the winner")
        assert await a.get(base.key) == await b.get(base.key) == stored[0]

    racing = await asyncio.gather(
        a.create(meshservice("both")), b.create(meshservice("both")), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in racing) == ["AlreadyExistsError", "Resource"]


async def test_a_killed_listen_connection_resyncs_what_was_written_meanwhile(
    postgres_server: PostgresServer, pg_database: str, instances
) -> None:
    a = await instances("a")
    role = postgres_server.add_member_role()
    b = await instances("b", user=role)
    on_b = Collector(b.subscribe())
    before = await a.create(meshservice("before"))
    await on_b.wait_for(1)

    # B's LISTEN connection dies and B cannot log in again for now: it misses the NOTIFYs.
    postgres_server.allow_login(role, False)
    assert postgres_server.terminate_listener(pg_database, "b") == 1
    await wait_until(lambda: b.problem is not None, what="B notices the loss")
    written = [await a.create(meshservice(f"svc-{i}")) for i in range(5)]
    changed = await a.update(before.with_(labels={"x": "y"}))
    await a.delete(written[0].key)
    await asyncio.sleep(1.0)
    assert len(on_b.poll()) == 1, "nothing can reach B while it is disconnected"
    assert "not permitted to log in" in (b.problem or "")

    postgres_server.allow_login(role, True)
    await wait_until(lambda: b.problem is None, what="B reconnects by itself")
    events = await on_b.wait_for(8)

    assert [(e.kind, e.resource.name) for e in events[1:]] == [
        *[(EventKind.CREATED, f"svc-{i}") for i in range(5)],
        (EventKind.UPDATED, "before"),
        (EventKind.DELETED, "svc-0"),
    ]
    assert [e.revision for e in events] == list(range(1, 9))
    assert await b.get(before.key) == changed
    assert [r.name for r in await b.list("MeshService")] == [
        "before",
        *[f"svc-{i}" for i in (1, 2, 3, 4)],
    ]


async def test_an_instance_behind_the_pruned_change_log_reloads_and_publishes_the_difference(
    postgres_server: PostgresServer, pg_database: str
) -> None:
    role = postgres_server.add_member_role()
    a = PostgresStore(postgres_server.config(pg_database), name="a", events_kept=10)
    b = PostgresStore(postgres_server.config(pg_database, user=role), name="b", events_kept=10)
    await a.start()
    await b.start()
    try:
        on_b = Collector(b.subscribe())
        kept = await a.create(meshservice("kept"))
        gone = await a.create(meshservice("gone"))
        await on_b.wait_for(2)
        postgres_server.allow_login(role, False)
        postgres_server.terminate_listener(pg_database, "b")
        await wait_until(lambda: b.problem is not None)

        await a.delete(gone.key)
        for i in range(30):  # far past the 10 events the log keeps
            kept = await a.update(kept.with_(labels={"round": str(i)}))
        new = await a.create(meshservice("new"))
        postgres_server.allow_login(role, True)
        await wait_until(lambda: b.problem is None and b.revision == a.revision)

        changes = {(e.kind, e.resource.name) for e in on_b.poll()[2:]}
        assert len(on_b.events) == 5
        assert changes == {
            (EventKind.UPDATED, "kept"),
            (EventKind.CREATED, "new"),
            (EventKind.DELETED, "gone"),
        }
        assert await b.list("MeshService") == await a.list("MeshService") == [kept, new]
    finally:
        await a.close()
        await b.close()


async def test_postgres_restarted_under_writes_both_instances_recover_and_lose_nothing(
    postgres_server: PostgresServer, pg_database: str, instances
) -> None:
    # A write waits for a connection at most `connection_timeout`; at 1 s (the least) that
    # is shorter than the outage below, so writes during it fail rather than wait it out.
    a, b = await instances("a", connection_timeout=1), await instances("b", connection_timeout=1)
    on_a, on_b = Collector(a.subscribe()), Collector(b.subscribe())
    acknowledged: dict[str, Resource] = {}
    failures: Counter[str] = Counter()
    stop = asyncio.Event()

    async def write_loop(store: PostgresStore, prefix: str) -> None:
        deadline = time.monotonic() + 40
        for i in range(5000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                stored = await store.create(meshservice(f"{prefix}-{i}"))
            except StoreError as e:
                failures[type(e).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            acknowledged[stored.name] = stored
            await asyncio.sleep(0.005)

    writers = [asyncio.create_task(write_loop(a, "a")), asyncio.create_task(write_loop(b, "b"))]
    try:
        await wait_until(lambda: len(acknowledged) >= 40, what="writes before the restart")
        await asyncio.to_thread(postgres_server.stop, True)  # immediate: like a crash
        await wait_until(lambda: a.problem and b.problem, what="both notice")
        await asyncio.sleep(1.0)
        during = len(acknowledged)
        await asyncio.to_thread(postgres_server.start)
        await wait_until(lambda: a.problem is None and b.problem is None, 20, "both recover")
        await wait_until(lambda: len(acknowledged) >= during + 40, 20, "writes after")
    finally:
        stop.set()
        await asyncio.gather(*writers)

    assert failures, "the loop ran into the outage"
    [(latest,)] = postgres_server.execute(pg_database, "SELECT revision FROM store_revision")
    await wait_until(lambda: a.revision == b.revision == latest, what="both caught up")
    in_db = {
        name
        for (name,) in postgres_server.execute(
            pg_database, "SELECT name FROM resources WHERE type = 'MeshService'"
        )
    }
    assert set(acknowledged) <= in_db
    for store, seen in ((a, on_a), (b, on_b)):
        names = [e.resource.name for e in seen.poll()]
        assert len(names) == len(set(names)) == len(in_db), "each write published once"
        assert set(names) == in_db
        assert [e.revision for e in seen.events] == sorted(e.revision for e in seen.events)
        for name, resource in acknowledged.items():
            assert await store.find(resource.key) == resource, name


async def test_starting_is_refused_with_the_problem_named(
    postgres_server: PostgresServer, pg_database: str
) -> None:
    wrong = PostgresStore(postgres_server.config(pg_database, password=SecretStr("nope")))
    with pytest.raises(StoreUnavailableError) as e:
        await wrong.start()
    message = str(e.value)
    assert f"127.0.0.1:{postgres_server.port}" in message and 'user "zonemesh"' in message
    assert "password authentication failed" in message and "nope" not in message

    nobody_there = PostgresStore(postgres_server.config(pg_database, port=_closed_port()))
    with pytest.raises(StoreUnavailableError, match="Connection refused"):
        await nobody_there.start()

    empty = postgres_server.new_database(migrated=False)
    with pytest.raises(SchemaError, match="run `zonemesh cp migrate up`"):
        await PostgresStore(postgres_server.config(empty)).start()

    postgres_server.execute(
        pg_database, "INSERT INTO schema_version (version, description) VALUES (7, 'future')"
    )
    with pytest.raises(SchemaError) as e:
        await PostgresStore(postgres_server.config(pg_database)).start()
    assert str(e.value) == (
        "the database schema is version 7, this zonemesh knows up to 2: upgrade zonemesh"
    )


async def test_values_are_shared_between_instances(instances) -> None:
    a, b = await instances("a"), await instances("b")
    await a.set_value("ipam.mmzs", "243.0.0.4")
    assert await b.get_value("ipam.mmzs") == "243.0.0.4"
    await b.set_value("ipam.mmzs", "243.0.0.5")
    assert await a.get_value("ipam.mmzs") == "243.0.0.5"


async def test_writes_fail_clearly_while_the_database_is_down_and_reads_go_on(
    postgres_server: PostgresServer, instances
) -> None:
    a = await instances("a")
    kept = await a.create(meshservice("kept"))
    await asyncio.to_thread(postgres_server.stop)
    try:
        await wait_until(lambda: a.problem is not None)
        assert a.where in (a.problem or "")
        with pytest.raises(StoreError) as e:
            await a.create(meshservice("new"))
        assert a.where in str(e.value)
        assert await a.get(kept.key) == kept  # served from the copy meanwhile
        with pytest.raises(AlreadyExistsError):  # checked by the database once it is back
            await asyncio.to_thread(postgres_server.start)
            await wait_until(lambda: a.problem is None)
            await a.create(meshservice("kept"))
    finally:
        if not postgres_server.running:
            postgres_server.start()


def _closed_port() -> int:
    from postgres_server import free_port

    return free_port()


@pytest.mark.parametrize(
    ("mode", "ca", "outcome"),
    [
        ("disable", None, "plaintext"),
        ("verifyNone", None, "tls"),
        ("verifyCa", "server's", "tls"),
        ("verifyFull", "server's", "tls"),
        ("verifyFull", "another", "certificate verify failed"),
    ],
)
async def test_tls_modes_connect_as_configured(
    postgres_server: PostgresServer, pg_database: str, tmp_path, mode, ca, outcome
) -> None:
    ca_path = postgres_server.ca_file
    if ca == "another":
        ca_path = tmp_path / "other-ca.crt"
        ca_path.write_bytes(cert_pem(new_ca(datetime.now(UTC))[0]))
    tls = PostgresTlsConfig(mode=mode, ca_path=str(ca_path) if ca else "")
    store = PostgresStore(postgres_server.config(pg_database, tls=tls), name=f"tls-{mode}")
    try:
        if outcome == "certificate verify failed":
            with pytest.raises(StoreUnavailableError, match=outcome):
                await store.start()
            return
        await store.start()
        [(ssl,)] = postgres_server.execute(
            pg_database,
            "SELECT ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
            f"WHERE application_name = 'tls-{mode} listener'",
        )
        assert ssl is (outcome == "tls")
        assert (await store.create(meshservice("over-tls"))).version == 1
    finally:
        await store.close()
