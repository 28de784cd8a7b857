"""VIPs under two leaders at once, on a real PostgreSQL: two instances whose allocators run
together (the old leader lost its lock on a cut connection and has not noticed yet) never
hand one VIP to two MeshServices, and a MeshService both allocate for gets one VIP from both.
The claims of deleted MeshServices are freed, by the database's clock, after their grace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from postgres_server import PostgresServer

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.state.ipam import CLAIM_GRACE_S, VipAllocator
from zonemesh.store.postgres import PostgresStore

pytestmark = pytest.mark.timeout(60)

CIDR = "241.0.0.0/24"
VALUE = "ipam.meshservice"


def mesh_service(name: str) -> Resource:
    return resource_from_wire(
        {
            "type": "MeshService",
            "mesh": "default",
            "name": name,
            "spec": {
                "selector": {"dataplaneTags": {"kuma.io/service": name}},
                "ports": [{"port": 8080, "targetPort": 8080, "appProtocol": "http"}],
            },
        }
    )


@pytest.fixture
async def stores(
    pg_database: str, postgres_server: PostgresServer
) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    a = PostgresStore(postgres_server.config(pg_database), name="a")
    b = PostgresStore(postgres_server.config(pg_database), name="b")
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_two_allocators_at_once_never_hand_out_one_vip_twice(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = stores
    # Two leaders, each with its own (stale) view: both start from the same persisted cursor,
    # each sees new MeshServices the other does not, and both see `shared`.
    on_a = [mesh_service(f"a-{i}") for i in range(20)] + [mesh_service("shared")]
    on_b = [mesh_service(f"b-{i}") for i in range(20)] + [mesh_service("shared")]
    allocator_a, allocator_b = VipAllocator(CIDR, a, VALUE), VipAllocator(CIDR, b, VALUE)
    await asyncio.gather(allocator_a.load(), allocator_b.load())

    first, second = await asyncio.gather(allocator_a.assign(on_a), allocator_b.assign(on_b))

    owners: dict[str, list[ResourceKey]] = {}
    for allocation in (first, second):
        for key, ip in allocation.vips.items():
            assert ip is not None, key
            if key not in owners.get(ip, []):
                owners.setdefault(ip, []).append(key)
    duplicates = {ip: keys for ip, keys in owners.items() if len(keys) > 1}
    assert not duplicates, duplicates
    shared = ResourceKey("MeshService", "default", "shared")
    assert first.vips[shared] == second.vips[shared]
    assert len(owners) == 41

    # Later passes (each allocator's view complete now) keep every VIP where it was.
    everything = [*on_a, *(s for s in on_b if s.name != "shared")]
    again_a, again_b = await asyncio.gather(
        allocator_a.assign(everything), allocator_b.assign(everything)
    )
    before = {**first.vips, **second.vips}
    assert again_a.vips == before and again_b.vips == before


async def test_a_deleted_resources_claim_is_freed_after_its_grace_only(
    stores: tuple[PostgresStore, PostgresStore],
    pg_database: str,
    postgres_server: PostgresServer,
) -> None:
    a, _ = stores
    kept = await a.create(mesh_service("kept"))
    assert await a.claim_vip(CIDR, "241.0.0.1", kept.key) == "241.0.0.1"
    gone = ResourceKey("MeshService", "default", "gone")  # claimed, never written
    assert await a.claim_vip(CIDR, "241.0.0.2", gone) == "241.0.0.2"
    other = ResourceKey("MeshService", "default", "other")
    assert await a.claim_vip(CIDR, "241.0.0.2", other) is None  # held
    assert await a.claim_vip(CIDR, "241.0.0.3", kept.key) == "241.0.0.1"  # one per resource

    assert await a.release_stale_vips(CIDR, CLAIM_GRACE_S) == 0  # too young to be freed
    postgres_server.execute(
        pg_database, "UPDATE vip_claims SET claimed_at = now() - interval '1 hour'"
    )
    assert await a.release_stale_vips(CIDR, CLAIM_GRACE_S) == 1
    assert await a.claim_vip(CIDR, "241.0.0.2", other) == "241.0.0.2"
    assert await a.claim_vip(CIDR, "241.0.0.1", other) == "241.0.0.2"
