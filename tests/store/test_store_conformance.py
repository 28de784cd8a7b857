"""The rules of `zonemesh.store.base`, checked once against every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_samples import dataplane, mesh, meshservice, mmzs, mmzs_without_status, zone

from zonemesh.resources.base import ResourceKey
from zonemesh.store.base import (
    AlreadyExistsError,
    ConflictError,
    EventKind,
    NotFoundError,
    Store,
)
from zonemesh.store.memory import MemoryStore
from zonemesh.store.postgres import PostgresStore
from zonemesh.store.sqlite import SqliteStore


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "sqlite":
        backend = SqliteStore(tmp_path / "zonemesh.db")
    else:  # a real PostgreSQL (skipped where its binaries are missing)
        server = request.getfixturevalue("postgres_server")
        backend = PostgresStore(server.config(request.getfixturevalue("pg_database")))
    await backend.start()
    yield backend
    await backend.close()


def names(resources: list) -> list[tuple[str, str]]:
    return [(r.mesh, r.name) for r in resources]


# -- create / get / find ----------------------------------------------------------------------


async def test_create_stores_version_1_and_timestamps(store: Store) -> None:
    created = await store.create(mmzs("echo"))

    assert created.version == 1
    assert created.creation_time is not None
    assert created.modification_time == created.creation_time
    fetched = await store.get(ResourceKey("MeshMultiZoneService", "default", "echo"))
    assert fetched == created
    assert fetched.labels == {"team": "payments"}
    assert fetched.spec.ports[0].port == 1027


async def test_find_missing_is_none_and_get_missing_raises(store: Store) -> None:
    key = ResourceKey("MeshService", "default", "nope")
    assert await store.find(key) is None
    with pytest.raises(NotFoundError) as e:
        await store.get(key)
    assert e.value.key == key


async def test_create_twice_is_already_exists_and_keeps_the_first(store: Store) -> None:
    first = await store.create(meshservice("echo", port=1027))

    with pytest.raises(AlreadyExistsError):
        await store.create(meshservice("echo", port=2000))

    assert await store.get(first.key) == first


async def test_same_name_in_other_mesh_or_type_is_a_different_resource(store: Store) -> None:
    await store.create(meshservice("echo", mesh="default"))
    await store.create(meshservice("echo", mesh="other"))
    await store.create(mmzs("echo", mesh="default"))

    assert len(await store.list("MeshService")) == 2
    assert len(await store.list("MeshMultiZoneService")) == 1


# -- list -------------------------------------------------------------------------------------


async def test_list_sorted_by_mesh_then_name_and_filtered_by_mesh(store: Store) -> None:
    for m, n in [("b", "zeta"), ("a", "web"), ("b", "alpha"), ("a", "api"), ("default", "x")]:
        await store.create(meshservice(n, mesh=m))
    await store.create(dataplane("dp-1", mesh="a"))

    assert names(await store.list("MeshService")) == [
        ("a", "api"),
        ("a", "web"),
        ("b", "alpha"),
        ("b", "zeta"),
        ("default", "x"),
    ]
    assert names(await store.list("MeshService", "b")) == [("b", "alpha"), ("b", "zeta")]
    assert await store.list("MeshService", "missing") == []
    assert names(await store.list("Dataplane")) == [("a", "dp-1")]
    assert await store.list("Zone") == []


async def test_list_reflects_later_writes(store: Store) -> None:
    await store.create(meshservice("b"))
    assert names(await store.list("MeshService")) == [("default", "b")]

    await store.create(meshservice("a"))
    assert names(await store.list("MeshService")) == [("default", "a"), ("default", "b")]

    await store.delete(ResourceKey("MeshService", "default", "b"))
    assert names(await store.list("MeshService")) == [("default", "a")]


async def test_listed_list_is_the_callers_own(store: Store) -> None:
    await store.create(meshservice("a"))
    listed = await store.list("MeshService")
    listed.clear()

    assert len(await store.list("MeshService")) == 1


async def test_global_scoped_types_use_empty_mesh(store: Store) -> None:
    await store.create(mesh("other"))
    await store.create(mesh("default"))
    await store.create(zone("z1"))

    assert names(await store.list("Mesh")) == [("", "default"), ("", "other")]
    assert names(await store.list("Mesh", "")) == [("", "default"), ("", "other")]
    got = await store.get(ResourceKey("Mesh", "", "default"))
    assert got.spec.routing.zone_egress is True
    z1 = await store.get(ResourceKey("Zone", "", "z1"))
    assert z1.status.connected is True
    assert z1.status.instance_id == "z1-cp-1"


# -- update -----------------------------------------------------------------------------------


async def test_update_bumps_version_and_modification_time_keeps_creation_time(
    store: Store,
) -> None:
    created = await store.create(meshservice("echo", port=1027))

    changed = meshservice("echo", port=2000).with_(version=created.version)
    updated = await store.update(changed)

    assert updated.version == 2
    assert updated.creation_time == created.creation_time
    assert updated.modification_time > created.modification_time
    assert (await store.get(created.key)).spec.ports[0].port == 2000
    # What the store returned earlier is never changed behind the caller's back.
    assert created.version == 1
    assert created.spec.ports[0].port == 1027

    again = await store.update(updated.with_(labels={"x": "y"}))
    assert again.version == 3
    assert again.modification_time > updated.modification_time
    assert (await store.get(created.key)).labels == {"x": "y"}


async def test_update_with_stale_version_is_conflict_and_changes_nothing(store: Store) -> None:
    created = await store.create(meshservice("echo", port=1027))
    await store.update(created)  # now version 2

    with pytest.raises(ConflictError) as e:
        await store.update(meshservice("echo", port=3000).with_(version=1))
    assert e.value.key == created.key
    with pytest.raises(ConflictError):
        await store.update(meshservice("echo", port=3000))  # version 0: never read

    current = await store.get(created.key)
    assert current.version == 2
    assert current.spec.ports[0].port == 1027


async def test_update_missing_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.update(meshservice("ghost").with_(version=1))
    assert await store.list("MeshService") == []


async def test_status_is_stored_and_updated(store: Store) -> None:
    created = await store.create(mmzs("echo", vip="243.0.0.7"))
    status = (await store.get(created.key)).status
    assert [v.ip for v in status.vips] == ["243.0.0.7"]
    assert [(m.name, m.zone) for m in status.mesh_services] == [("echo", "z1"), ("echo", "z2")]
    assert status.conditions[0].type == "MeshServicesMatched"

    new_status = mmzs("echo", vip="243.0.0.9").status
    await store.update(created.with_(status=new_status))
    assert [v.ip for v in (await store.get(created.key)).status.vips] == ["243.0.0.9"]

    plain = await store.create(mmzs_without_status("plain"))
    assert (await store.get(plain.key)).status is None


# -- delete -----------------------------------------------------------------------------------


async def test_delete_without_version_returns_last_state(store: Store) -> None:
    created = await store.create(dataplane("dp-1"))
    updated = await store.update(created)

    deleted = await store.delete(created.key)

    assert deleted == updated
    assert await store.find(created.key) is None
    assert await store.list("Dataplane") == []


async def test_delete_with_version_checks_it(store: Store) -> None:
    created = await store.create(dataplane("dp-1"))
    await store.update(created)

    with pytest.raises(ConflictError):
        await store.delete(created.key, version=1)
    assert await store.find(created.key) is not None

    await store.delete(created.key, version=2)
    assert await store.find(created.key) is None


async def test_delete_missing_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.delete(ResourceKey("Dataplane", "default", "nope"))


async def test_recreate_after_delete_starts_again_at_version_1(store: Store) -> None:
    created = await store.create(meshservice("echo"))
    await store.update(created)
    await store.delete(created.key)

    again = await store.create(meshservice("echo"))
    assert again.version == 1


# -- events -----------------------------------------------------------------------------------


async def test_every_write_publishes_one_event_in_order(store: Store) -> None:
    sub = store.subscribe()
    created = await store.create(mmzs("echo"))
    other = await store.create(mesh("default"))
    updated = await store.update(created)
    deleted = await store.delete(other.key)

    events = sub.drain()
    assert [(e.kind, e.key) for e in events] == [
        (EventKind.CREATED, created.key),
        (EventKind.CREATED, other.key),
        (EventKind.UPDATED, created.key),
        (EventKind.DELETED, other.key),
    ]
    assert [e.resource for e in events] == [created, other, updated, deleted]
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))  # strictly increasing
    sub.close()


async def test_failed_writes_and_values_publish_nothing(store: Store) -> None:
    created = await store.create(meshservice("echo"))
    sub = store.subscribe()

    with pytest.raises(AlreadyExistsError):
        await store.create(meshservice("echo"))
    with pytest.raises(ConflictError):
        await store.update(created.with_(version=5))
    with pytest.raises(NotFoundError):
        await store.delete(ResourceKey("MeshService", "default", "nope"))
    await store.set_value("ipam", "241.0.0.5")

    assert sub.drain() == []
    updated = await store.update(created)
    [event] = sub.drain()
    assert event.resource == updated


async def test_subscribe_then_list_misses_nothing_and_repeats_nothing(store: Store) -> None:
    await store.create(meshservice("before"))

    sub = store.subscribe()
    snapshot = await store.list("MeshService")
    await store.create(meshservice("after"))

    assert names(snapshot) == [("default", "before")]
    assert [(e.kind, e.resource.name) for e in sub.drain()] == [(EventKind.CREATED, "after")]


async def test_events_reach_every_subscriber_until_it_closes(store: Store) -> None:
    first, second = store.subscribe(), store.subscribe()
    await store.create(meshservice("a"))
    second.close()
    await store.create(meshservice("b"))

    assert [e.resource.name for e in first.drain()] == ["a", "b"]
    assert [e.resource.name for e in second.drain()] == ["a"]


async def test_subscription_is_async_iterable(store: Store) -> None:
    sub = store.subscribe()
    await store.create(meshservice("a"))
    await store.create(meshservice("b"))

    seen = []
    async for event in sub:
        seen.append(event.resource.name)
        if len(seen) == 2:
            break
    assert seen == ["a", "b"]


# -- values -----------------------------------------------------------------------------------


async def test_values_round_trip_and_overwrite(store: Store) -> None:
    assert await store.get_value("ipam.meshservice") is None

    await store.set_value("ipam.meshservice", "241.0.0.1")
    await store.set_value("other", "x")
    await store.set_value("ipam.meshservice", "241.0.0.2")

    assert await store.get_value("ipam.meshservice") == "241.0.0.2"
    assert await store.get_value("other") == "x"
