"""Rough timings of the store backends: create, update and list 1000 MeshServices; for
SQLite and PostgreSQL also write and read latency (p50/p99), and for PostgreSQL how long a
write on one instance takes to reach another's subscribers (p50/p99).

Run: `.venv/bin/python benchmarks/store_bench.py [COUNT]`. Resources are validated before the
clock starts, so the numbers are the store's own cost (for SQLite: a committed transaction
per write, plus the JSON encoding of the document). PostgreSQL: the server the
`KUMA_STORE_POSTGRES_*` variables name (a migrated database) when KUMA_STORE_TYPE=postgres,
else a throwaway one started like the tests start theirs (Debian's postgresql package; fsync
off, so writes cost what a server with a fast disk would charge). Both PostgreSQL instances
run in this one process and share its event loop, as two tasks, not two machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from zonemesh.config import PostgresConfig, load_config
from zonemesh.resources.base import Resource
from zonemesh.resources.codec import resource_from_wire
from zonemesh.store.base import Store
from zonemesh.store.memory import MemoryStore
from zonemesh.store.postgres import PostgresStore
from zonemesh.store.sqlite import SqliteStore


def meshservices(count: int) -> list[Resource]:
    return [
        resource_from_wire(
            {
                "type": "MeshService",
                "mesh": f"mesh-{i % 4}",
                "name": f"svc-{i:05d}",
                "labels": {"kuma.io/display-name": f"svc-{i:05d}", "kuma.io/zone": "z1"},
                "spec": {
                    "selector": {"dataplaneTags": {"kuma.io/service": f"svc-{i:05d}"}},
                    "ports": [{"port": 8080, "targetPort": 28080, "appProtocol": "http"}],
                    "state": "Available",
                },
            }
        )
        for i in range(count)
    ]


async def timed(label: str, count: int, action: Callable[[], Awaitable[object]]) -> None:
    start = time.perf_counter()
    await action()
    elapsed = time.perf_counter() - start
    print(f"  {label:<22} {elapsed * 1000:9.1f} ms total {elapsed * 1e6 / count:9.1f} µs each")


async def bench(name: str, store: Store, resources: list[Resource]) -> None:
    count = len(resources)
    print(f"{name} ({count} MeshServices)")
    stored: list[Resource] = []

    async def create_all() -> None:
        for r in resources:
            stored.append(await store.create(r))

    async def update_all() -> None:
        for r in stored:
            await store.update(r.with_(labels={**r.labels, "rev": "2"}))

    async def list_all(times: int) -> None:
        for _ in range(times):
            await store.list("MeshService")

    await timed("create", count, create_all)
    await timed("update", count, update_all)
    await timed("list all (x100)", 100, lambda: list_all(100))
    await timed("list one mesh (x100)", 100, lambda: _list_mesh(store, 100))
    await store.close()


async def _list_mesh(store: Store, times: int) -> None:
    for _ in range(times):
        await store.list("MeshService", "mesh-1")


def percentiles(label: str, seconds: list[float]) -> None:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"  {label:<22} p50 {statistics.median(ordered) * 1e6:8.0f} µs   "
        f"p99 {p99 * 1e6:8.0f} µs   ({len(ordered)} samples)"
    )


async def latencies(store: Store, resources: list[Resource]) -> None:
    """One write (update) and one read (get) at a time, each timed on its own."""
    stored = [await store.create(r) for r in resources]
    writes, reads = [], []
    for r in stored:
        start = time.perf_counter()
        await store.update(r.with_(labels={**r.labels, "rev": "2"}))
        writes.append(time.perf_counter() - start)
    for r in stored:
        start = time.perf_counter()
        await store.get(r.key)
        reads.append(time.perf_counter() - start)
    percentiles("write (update)", writes)
    percentiles("read (get)", reads)
    await store.close()


async def propagation(config: PostgresConfig, resources: list[Resource]) -> None:
    """A write begun on instance A -> its event published on instance B (the write itself,
    commit, NOTIFY, B's read of the change log). B often has it before A's call returns."""
    a = PostgresStore(config, name="bench-a")
    b = PostgresStore(config, name="bench-b")
    await a.start()
    await b.start()
    sub = b.subscribe()
    delays = []
    try:
        for r in resources:
            begun = time.perf_counter()
            stored = await a.create(r.with_(name=r.name + "-prop"))
            while (await asyncio.wait_for(sub.get(), 10)).key != stored.key:
                pass
            delays.append(time.perf_counter() - begun)
    finally:
        sub.close()
        await a.close()
        await b.close()
    percentiles("write on A -> B event", delays)


@contextlib.contextmanager
def postgres_database() -> Iterator[PostgresConfig]:
    if os.environ.get("KUMA_STORE_TYPE") == "postgres":
        yield load_config().store.postgres
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "store"))
    from postgres_server import PostgresServer, find_bindir  # the tests' throwaway server

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries: apt-get install postgresql")
    server = PostgresServer(bindir)
    try:
        server.init()
        server.start()
        server.prepare()
        yield server.config(server.new_database(), connection_timeout=5)
    finally:
        server.destroy()


async def main(count: int) -> None:
    resources = meshservices(count)
    await bench("memory", MemoryStore(), resources)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "zonemesh.db"
        await bench("sqlite", SqliteStore(db), resources)
        start = time.perf_counter()
        reopened = SqliteStore(db)
        elapsed = time.perf_counter() - start
        print(f"  {'reopen (load all)':<22} {elapsed * 1000:9.1f} ms")
        await reopened.close()
        await latencies(SqliteStore(Path(tmp) / "latency.db"), resources)
    with postgres_database() as config:
        store = PostgresStore(config, name="bench")
        await store.start()
        await bench("postgres", store, resources)
        start = time.perf_counter()
        reopened_pg = PostgresStore(config, name="bench")
        await reopened_pg.start()
        elapsed = time.perf_counter() - start
        print(f"  {'reopen (load all)':<22} {elapsed * 1000:9.1f} ms")
        await reopened_pg.close()
        latency_store = PostgresStore(config, name="bench")
        await latency_store.start()
        await latencies(latency_store, [r.with_(name=r.name + "-lat") for r in resources])
        await propagation(config, resources)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
