"""Defaults per mode, and what each mode computes (global: only the defaults)."""

from __future__ import annotations

import asyncio

from state_helpers import dataplane, eventually, make_runtime, mmzs, mmzs_key, ms_key, put

from zonemesh.resources import labels
from zonemesh.resources.base import ResourceKey
from zonemesh.store.memory import MemoryStore

DEFAULT_GENERATORS = [
    "local-universal-mesh-service",
    "synced-mesh-multi-zone-service",
    "synced-universal-mesh-service",
]


async def test_standalone_creates_defaults_once(start_state):
    store = MemoryStore()
    rt = make_runtime(store)
    await start_state(rt)
    mesh = await store.get(ResourceKey("Mesh", "", "default"))
    assert mesh.labels[labels.ORIGIN] == "zone"
    gens = await store.list("HostnameGenerator")
    assert [g.name for g in gens] == DEFAULT_GENERATORS

    # A user's change to a default survives a restart; nothing is duplicated.
    edited = gens[0].spec.model_copy(update={"template": "{{ .Name }}.custom.local"})
    await store.update(gens[0].with_(spec=edited))
    await start_state(make_runtime(store))
    gens = await store.list("HostnameGenerator")
    assert [g.name for g in gens] == DEFAULT_GENERATORS
    assert gens[0].spec.template == "{{ .Name }}.custom.local"
    assert len(await store.list("Mesh")) == 1


async def test_federated_zone_creates_no_defaults(start_state):
    rt = make_runtime(federated=True)
    await start_state(rt)
    await put(rt, dataplane("echo-a"))

    async def generated():
        assert await rt.store.find(ms_key("echo")) is not None

    await eventually(generated)
    assert await rt.store.list("Mesh") == []
    assert await rt.store.list("HostnameGenerator") == []


async def test_global_only_creates_defaults(start_state):
    rt = make_runtime(mode="global")
    state = await start_state(rt)
    mesh = await rt.store.get(ResourceKey("Mesh", "", "default"))
    assert mesh.labels[labels.ORIGIN] == "global"
    assert len(await rt.store.list("HostnameGenerator")) == 3

    await put(rt, dataplane("echo-a"))
    await put(rt, mmzs("echo", {"kuma.io/display-name": "echo"}))
    # Nothing reacts on global: give a running loop every chance, then check nothing happened.
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)
    assert state.passes == 0
    assert await rt.store.find(ms_key("echo")) is None
    assert (await rt.store.get(mmzs_key("echo"))).status is None


async def test_meshservices_disabled_in_mesh(start_state):
    rt = make_runtime()
    await start_state(rt)
    await put(rt, dataplane("echo-a"))

    async def exists(present: bool):
        assert (await rt.store.find(ms_key("echo")) is not None) is present

    await eventually(lambda: exists(True))
    await put(rt, {"type": "Mesh", "name": "default", "meshServices": {"mode": "Disabled"}})
    await eventually(lambda: exists(False))
