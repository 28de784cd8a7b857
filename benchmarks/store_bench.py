"""Rough timings of the store backends: create, update and list 1000 MeshServices.

Run: `.venv/bin/python benchmarks/store_bench.py [COUNT]`. Resources are validated before the
clock starts, so the numbers are the store's own cost (for SQLite: a committed transaction
per write, plus the JSON encoding of the document).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from zonemesh.resources.base import Resource
from zonemesh.resources.codec import resource_from_wire
from zonemesh.store.base import Store
from zonemesh.store.memory import MemoryStore
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


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
