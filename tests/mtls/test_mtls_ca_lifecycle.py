"""Every mesh has a root CA: created with the mesh on global or a standalone zone, never
replaced, not created by a federated zone (which receives it from global). On global every
Zone gets its intermediate of each mesh's root, which goes with the Zone."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from mtls_helpers import eventually, make_runtime

from zonemesh.mtls import CA_SECRET_NAME, MeshCA, decode_ca_bundle
from zonemesh.mtls.trust import MeshTrust, zone_ca_key
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.registry import MESH, SECRET
from zonemesh.resources.types.mesh import MeshSpec
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.resources.types.zone import ZoneSpec
from zonemesh.runtime.kernel import Runtime
from zonemesh.state.component import ComputedState
from zonemesh.store.memory import MemoryStore
from zonemesh.store.sqlite import SqliteStore

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
    # What the CA of the xDS port trusts and signs with.
    trust = MeshTrust(runtime.store, runtime.zone)
    assert await trust.root_fingerprint("default") == ca.fingerprint
    if mode == "zone":  # standalone: signs with the root itself
        assert (await trust.signer("default")).ca.fingerprint == ca.fingerprint


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


async def test_every_zone_gets_an_intermediate_of_every_mesh_and_loses_it_with_the_zone(
    start_state: Start,
) -> None:
    runtime = make_runtime(mode="global")
    await start_state(runtime)
    await create_mesh(runtime, "payments")
    zone = await runtime.store.create(
        Resource(type="Zone", name="zone-1", mesh="", spec=ZoneSpec())
    )

    async def intermediates() -> dict[str, MeshCA] | None:
        found = {}
        for mesh in ("default", "payments"):
            secret = await runtime.store.find(zone_ca_key(mesh, "zone-1"))
            if secret is None:
                return None
            found[mesh] = decode_ca_bundle(mesh, secret.spec.value)  # type: ignore[attr-defined]
        return found

    cas = await eventually(intermediates, "zone-1's intermediates of both meshes")
    for mesh, ca in cas.items():
        root = await stored_ca(runtime, mesh)
        assert root is not None
        ca.certificate.verify_directly_issued_by(root.certificate)
        secret = await runtime.store.get(zone_ca_key(mesh, "zone-1"))
        assert secret.labels["zonemesh.io/ca-zone"] == "zone-1"
    # A zone CP holding it signs with it; trusts the root.
    zone_trust = MeshTrust(runtime.store, "zone-1")
    signer = await zone_trust.signer("default")
    assert signer.ca.fingerprint == cas["default"].fingerprint
    assert signer.root.fingerprint == (await stored_ca(runtime, "default")).fingerprint  # type: ignore[union-attr]

    await runtime.store.delete(zone.key)

    async def withdrawn() -> bool:
        found = [
            await runtime.store.find(zone_ca_key(m, "zone-1")) for m in ("default", "payments")
        ]
        return found == [None, None]

    await eventually(withdrawn, "zone-1's intermediates deleted with the Zone")


async def test_an_intermediate_not_from_the_current_root_is_reissued(start_state: Start) -> None:
    from zonemesh.mtls import create_mesh_ca, encode_ca_bundle, issue_intermediate

    runtime = make_runtime(mode="global")
    state = await start_state(runtime)
    await runtime.store.create(Resource(type="Zone", name="zone-1", mesh="", spec=ZoneSpec()))
    key = zone_ca_key("default", "zone-1")
    first = await eventually(lambda: runtime.store.find(key), "zone-1's intermediate")
    stranger = issue_intermediate(create_mesh_ca("default"), "zone-1")
    await runtime.store.update(
        first.with_(spec=SecretSpec(data=base64.b64encode(encode_ca_bundle(stranger)).decode()))
    )
    # Never used: a CP of zone-1 holding the root's key (global's store) signs with the root.
    root = await stored_ca(runtime, "default")
    assert root is not None
    signer = await MeshTrust(runtime.store, "zone-1").signer("default")
    assert signer.ca.fingerprint == root.fingerprint
    await state.cas.reconcile()
    fixed = await runtime.store.get(key)
    ca = decode_ca_bundle("default", fixed.spec.value)  # type: ignore[attr-defined]
    ca.certificate.verify_directly_issued_by(root.certificate)


async def test_a_federated_zone_never_signs_with_the_root_even_holding_its_key() -> None:
    from zonemesh.mtls.trust import NoAuthority
    from zonemesh.state.ca import ca_secret_resource

    store = MemoryStore()
    await store.create(ca_secret_resource("default"))  # a root that came with its key
    with pytest.raises(NoAuthority, match="zone z1 has no intermediate from global"):
        await MeshTrust(store, "z1", federated=True).signer("default")
    assert (await MeshTrust(store, "z1").signer("default")).ca.is_root  # standalone: it may
