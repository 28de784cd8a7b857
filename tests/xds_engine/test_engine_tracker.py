"""The engine's mesh state follows the store and health from events alone, and the local
instances it derives by patching the previous state's index are those a full rebuild finds."""

from __future__ import annotations

import random
from typing import Any

from zonemesh.resources.base import ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.types.meshservice import (
    DataplaneProxies,
    MeshServiceSpec,
    MeshServiceStatus,
)
from zonemesh.runtime.health import InstanceHealth
from zonemesh.store.memory import MemoryStore
from zonemesh.translate.endpoints import local_instances
from zonemesh.translate.state import MeshState
from zonemesh.xds.engine.tracker import MeshStateTracker

SERVICES = ("svc-a", "svc-b", "svc-c")


def dataplane(name: str, service: str, address: str, state: str | None = None) -> dict[str, Any]:
    inbound: dict[str, Any] = {
        "port": 20080,
        "servicePort": 8080,
        "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"},
    }
    if state:
        inbound["state"] = state
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": name,
        "networking": {"address": address, "inbound": [inbound]},
    }


def mesh_service(name: str) -> dict[str, Any]:
    return {
        "type": "MeshService",
        "mesh": "default",
        "name": name,
        "labels": {"kuma.io/display-name": name},
        "spec": {
            "selector": {"dataplaneTags": {"kuma.io/service": name}},
            "ports": [{"port": 8080, "appProtocol": "http"}],
        },
    }


def instances(state: MeshState) -> dict[str, tuple[tuple[str, int], ...]]:
    out = {}
    for ms in state.mesh_services.values():
        spec = ms.spec
        assert isinstance(spec, MeshServiceSpec)
        out[ms.name] = local_instances(state, ms, spec.ports[0])
    return out


def rebuilt(state: MeshState) -> MeshState:
    """The same inputs in a state of its own (fresh caches: a full index build)."""
    return MeshState(
        version=1,
        zone=state.zone,
        meshes=state.meshes,
        dataplanes=state.dataplanes,
        mesh_services=state.mesh_services,
        mesh_multi_zone_services=state.mesh_multi_zone_services,
        zone_ingresses=state.zone_ingresses,
        zone_egresses=state.zone_egresses,
        mesh_load_balancing_strategies=state.mesh_load_balancing_strategies,
        health=state.health,
    )


async def test_patched_local_instances_match_a_full_rebuild_over_random_changes() -> None:
    store, health = MemoryStore(), InstanceHealth()
    subscription = store.subscribe()
    for name in SERVICES:
        await store.create(resource_from_wire(mesh_service(name)))
    tracker = MeshStateTracker(store, health, "zone-1")
    await tracker.load()
    subscription.drain()  # what load read
    rng = random.Random(11)
    names = [f"dp-{i}" for i in range(12)]
    patched_states = 0
    for step in range(150):
        name = rng.choice(names)
        key = ResourceKey("Dataplane", "default", name)
        existing = await store.find(key)
        action = rng.random()
        if action < 0.5:
            doc = dataplane(
                name,
                rng.choice(SERVICES),
                f"127.0.6.{rng.randrange(1, 30)}",
                state=rng.choice([None, None, "NotReady", "Ignored"]),
            )
            resource = resource_from_wire(doc)
            if existing is None:
                await store.create(resource)
            else:
                await store.update(resource.with_(version=existing.version))
        elif action < 0.65 and existing is not None:
            await store.delete(key)
        elif action < 0.85:
            health.set_connected(key, rng.random() < 0.7)
        else:
            health.set_readiness(key, (20080,) if rng.random() < 0.5 else ())
        for event in subscription.drain():
            tracker.apply(event)
        if step % rng.choice((1, 2, 3)) == 0:
            state = tracker.state()
            patched_states += state.changed_since_previous is not None
            assert instances(state) == instances(rebuilt(state)), f"step {step}"
    assert patched_states > 50  # most states were patched, not rebuilt


async def test_the_state_follows_store_events_without_reading_the_store_again() -> None:
    store, health = MemoryStore(), InstanceHealth()
    subscription = store.subscribe()
    tracker = MeshStateTracker(store, health, "zone-1")
    await tracker.load()
    await store.create(resource_from_wire(mesh_service("svc-a")))
    await store.create(resource_from_wire(dataplane("dp-1", "svc-a", "127.0.6.1")))
    for event in subscription.drain():
        tracker.apply(event)
    state = tracker.state()
    assert tracker.state() is state  # nothing changed: the same state
    assert instances(state) == {"svc-a": (("127.0.6.1", 20080),)}
    changes = tracker.take_changes()
    assert changes.structural  # a MeshService was created
    assert ResourceKey("Dataplane", "default", "dp-1") in changes.proxies

    health.set_connected(ResourceKey("Dataplane", "default", "dp-1"), True)
    assert instances(tracker.state()) == {"svc-a": (("127.0.6.1", 20080),)}
    tracker.take_changes()
    health.set_connected(ResourceKey("Dataplane", "default", "dp-1"), False)  # stream gone
    later = tracker.state()
    assert later is not state and instances(later) == {"svc-a": ()}
    changes = tracker.take_changes()
    assert not changes.structural
    assert changes.proxies == {ResourceKey("Dataplane", "default", "dp-1")}


async def test_a_meshservice_whose_instance_counts_alone_changed_is_not_structural() -> None:
    store, health = MemoryStore(), InstanceHealth()
    subscription = store.subscribe()
    tracker = MeshStateTracker(store, health, "zone-1")
    await tracker.load()

    async def write(status: MeshServiceStatus, **labels: str) -> None:
        """As computed state writes a MeshService: its status (and here its labels)."""
        current = await store.find(ResourceKey("MeshService", "default", "svc-a"))
        resource = resource_from_wire(mesh_service("svc-a"))
        resource = resource.with_(status=status, labels={**resource.labels, **labels})
        if current is None:
            await store.create(resource)
        else:
            await store.update(resource.with_(version=current.version))
        for event in subscription.drain():
            tracker.apply(event)

    def counts(n: int) -> MeshServiceStatus:
        return MeshServiceStatus(
            dataplane_proxies=DataplaneProxies(connected=n, healthy=n, total=n)
        )

    await write(counts(3))
    assert tracker.take_changes().structural  # created
    await write(counts(4))
    assert not tracker.take_changes().structural  # the counts: nothing generated reads them
    assert tracker.state().mesh_services[
        ResourceKey("MeshService", "default", "svc-a")
    ].status == counts(4)
    await write(counts(4), team="x")
    assert tracker.take_changes().structural  # labels select services: structural
