"""Every mesh has a CA: created with the mesh on global or a standalone zone, never replaced,
not created by a federated zone (which receives it from global)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from mtls_helpers import eventually, make_runtime

from zonemesh.cp.runtime import Runtime
from zonemesh.mtls import CA_SECRET_NAME, MeshCA, decode_ca_bundle
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.registry import MESH, SECRET
from zonemesh.resources.types.mesh import MeshSpec
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.state.component import ComputedState
from zonemesh.store.memory import MemoryStore
from zonemesh.store.sqlite import SqliteStore
from zonemesh.translate.state import load_mesh_cas

pytestmark = pytest.mark.timeout(30)

Start = Callable[[Runtime], Awaitable[ComputedState]]


@pytest.fixture
async def start_state() -> AsyncIterator[Start]:
    started: list[ComputedState] = []

    async def start(runtime: Runtime) -> ComputedState:
        state = ComputedState(runtime)
        await state.start()
        started.append(state)
        return state

    yield start
    for state in reversed(started):
        await state.stop()


def ca_key(mesh: str) -> ResourceKey:
    return ResourceKey(SECRET.name, mesh, CA_SECRET_NAME)


async def stored_ca(runtime: Runtime, mesh: str) -> MeshCA | None:
    secret = await runtime.store.find(ca_key(mesh))
    if secret is None:
        return None
    assert isinstance(secret.spec, SecretSpec)
    return decode_ca_bundle(mesh, secret.spec.value)


async def create_mesh(runtime: Runtime, name: str) -> Resource:
    return await runtime.store.create(Resource(type=MESH.name, name=name, mesh="", spec=MeshSpec()))


@pytest.mark.parametrize("mode", ["zone", "global"])
async def test_default_mesh_has_a_ca_as_soon_as_the_cp_started(
    mode: str, start_state: Start
) -> None:
    runtime = make_runtime(mode=mode)
    await start_state(runtime)
    ca = await stored_ca(runtime, "default")  # no waiting: it exists when start() returns
    assert ca is not None
    assert ca.certificate.extensions.get_extension_for_class  # a real certificate
    secret = await runtime.store.get(ca_key("default"))
    expected_origin = "global" if mode == "global" else "zone"
    assert secret.labels["kuma.io/origin"] == expected_origin
    assert secret.labels["kuma.io/mesh"] == "default"
    # The state the xDS server builds sees it.
    assert (await load_mesh_cas(runtime.store))["default"].fingerprint == ca.fingerprint


@pytest.mark.parametrize("mode", ["zone", "global"])
async def test_a_new_mesh_gets_its_own_ca_promptly(mode: str, start_state: Start) -> None:
    runtime = make_runtime(mode=mode)
    await start_state(runtime)
    await create_mesh(runtime, "payments")

    async def created() -> MeshCA | None:
        return await stored_ca(runtime, "payments")

    ca = await eventually(created, "the CA of mesh payments")
    default_ca = await stored_ca(runtime, "default")
    assert default_ca is not None and ca.fingerprint != default_ca.fingerprint
    assert "payments" in ca.certificate.subject.rfc4514_string()


async def test_a_federated_zone_creates_no_ca(start_state: Start) -> None:
    runtime = make_runtime(federated=True)
    await create_mesh(runtime, "default")  # as if synced from global, without its CA yet
    state = await start_state(runtime)
    # Elsewhere the CA exists when start() returns; here it is global's to create.
    assert await runtime.store.list(SECRET.name) == []
    await create_mesh(runtime, "payments")
    await state.recompute()  # a full zone pass ran after the new mesh
    assert await runtime.store.list(SECRET.name) == []


async def test_ca_is_never_replaced_but_is_recreated_if_deleted(start_state: Start) -> None:
    runtime = make_runtime()
    state = await start_state(runtime)
    original = await runtime.store.get(ca_key("default"))

    # Changes to meshes and other secrets leave it alone.
    await create_mesh(runtime, "other")
    await eventually(lambda: stored_ca(runtime, "other"), "the CA of mesh other")
    await state.cas.reconcile()
    assert (await runtime.store.get(ca_key("default"))).version == original.version

    # Deleted by hand while the mesh exists: a new one takes its place.
    await runtime.store.delete(original.key)

    async def recreated() -> Resource | None:
        return await runtime.store.find(ca_key("default"))

    replacement = await eventually(recreated, "a new CA for mesh default")
    assert replacement.spec != original.spec


async def test_ca_goes_with_its_mesh(start_state: Start) -> None:
    runtime = make_runtime(mode="global")
    await start_state(runtime)
    mesh = await create_mesh(runtime, "temp")
    await eventually(lambda: stored_ca(runtime, "temp"), "the CA of mesh temp")
    # As the API deletes a mesh: its contents first, then the mesh.
    await runtime.store.delete(ca_key("temp"))
    await runtime.store.delete(mesh.key)

    async def gone() -> bool:
        return await runtime.store.find(ca_key("temp")) is None and (
            await runtime.store.find(ca_key("default")) is not None
        )

    await eventually(gone, "mesh temp has no CA left")


async def test_a_ca_applied_before_start_is_kept(start_state: Start) -> None:
    """Bring your own CA: a `ca-builtin` Secret that already exists is used, not replaced."""
    from zonemesh.state.ca import ca_secret_resource

    store = MemoryStore()
    runtime = make_runtime(store)
    await create_mesh(runtime, "default")
    mine = ca_secret_resource("default").with_(labels={})
    await store.create(mine)
    await start_state(runtime)
    kept = await store.get(ca_key("default"))
    assert kept.version == 1 and kept.spec == mine.spec


async def test_ca_survives_a_restart(tmp_path: Path, start_state: Start) -> None:
    db = tmp_path / "zonemesh.db"
    store = SqliteStore(db)
    try:
        first = make_runtime(store)
        state = await start_state(first)
        before = await first.store.get(ca_key("default"))
        await state.stop()
    finally:
        await store.close()

    reopened = SqliteStore(db)
    try:
        runtime = make_runtime(reopened)
        state = await start_state(runtime)
        after = await runtime.store.get(ca_key("default"))
        assert after.version == before.version and after.spec == before.spec
        assert base64.b64decode(after.spec.data)  # type: ignore[attr-defined]
        await state.stop()
    finally:
        await reopened.close()
