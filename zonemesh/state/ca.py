"""Every Mesh gets its builtin CA: created with the mesh, kept while the mesh exists.

Runs on global and on a standalone zone. A federated zone never creates CAs: it receives them
from global with the rest of the mesh (the Secret type syncs down), and issues certificates
from the synced CA, so every zone of a mesh trusts the same root.

The CA is one Secret per mesh named `ca-builtin` (see `zonemesh.mtls.ca` for its content),
labelled `zonemesh.io/generated-by: mesh-ca`. It is created when the mesh appears, never
replaced while it exists (a replaced CA would break every certificate in flight), created
again if someone deletes it, and deleted when its mesh is gone (the API removes a mesh's
contents before the mesh; a CA re-created in between is cleaned up here).

Event driven: Mesh and Secret changes wake a pass after a short quiet period.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging

from zonemesh.cp.runtime import Runtime
from zonemesh.mtls.ca import CA_SECRET_NAME, create_mesh_ca, encode_ca_bundle
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.origin import stamp_origin
from zonemesh.resources.registry import MESH, SECRET
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.store.base import AlreadyExistsError, ConflictError, NotFoundError, Subscription

log = logging.getLogger("zonemesh.state.ca")

GENERATED_BY = "zonemesh.io/generated-by"
GENERATOR = "mesh-ca"
WATCHED_TYPES = frozenset({MESH.name, SECRET.name})


def ca_secret_key(mesh: str) -> ResourceKey:
    return ResourceKey(SECRET.name, mesh, CA_SECRET_NAME)


def ca_secret_resource(mesh: str) -> Resource:
    """A new CA for `mesh`, as the Secret that stores it (not yet stamped or stored)."""
    data = base64.b64encode(encode_ca_bundle(create_mesh_ca(mesh))).decode()
    return Resource(
        type=SECRET.name,
        name=CA_SECRET_NAME,
        mesh=mesh,
        spec=SecretSpec(data=data),
        labels={GENERATED_BY: GENERATOR},
    )


class MeshCaManager:
    """Keeps one CA Secret per Mesh; see the module docstring. Not for a federated zone."""

    name = "mesh-ca"

    def __init__(self, runtime: Runtime, *, quiet_s: float = 0.03, retry_s: float = 1.0) -> None:
        self.runtime = runtime
        self.quiet_s = quiet_s
        self.retry_s = retry_s
        self.passes = 0
        self._subscription: Subscription | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.runtime.config.federated_zone:
            return
        # Subscribe before the first pass, so no mesh created meanwhile is missed.
        self._subscription = self.runtime.store.subscribe()
        self._wake = asyncio.Event()
        try:
            await self.reconcile()
        except Exception:
            log.exception("creating mesh CAs failed; retrying in %.1fs", self.retry_s)
            self._wake.set()
        self._pump = asyncio.create_task(self._pump_events(self._subscription), name="ca-events")
        self._task = asyncio.create_task(self._loop(), name="ca-loop")

    async def stop(self) -> None:
        for task in (self._pump, self._task):
            if task is not None:
                task.cancel()
        for task in (self._pump, self._task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._pump = self._task = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    async def reconcile(self) -> tuple[list[Resource], list[Resource]]:
        """One pass: create missing CAs, delete those of meshes gone; returns (created, deleted)."""
        store = self.runtime.store
        config = self.runtime.config
        meshes = {m.name for m in await store.list(MESH.name)}
        existing = {s.mesh: s for s in await store.list(SECRET.name) if s.name == CA_SECRET_NAME}
        created: list[Resource] = []
        deleted: list[Resource] = []
        for mesh in sorted(meshes - existing.keys()):
            resource = stamp_origin(
                ca_secret_resource(mesh), is_global=config.is_global, zone=config.zone_name
            )
            try:
                created.append(await store.create(resource))
            except AlreadyExistsError:
                continue  # written concurrently (e.g. a CA applied through the API): it stands
            log.info("created the CA of mesh %s", mesh)
        for mesh, secret in sorted(existing.items()):
            if mesh in meshes or secret.labels.get(GENERATED_BY) != GENERATOR:
                continue
            with contextlib.suppress(NotFoundError, ConflictError):
                deleted.append(await store.delete(secret.key, secret.version))
                log.info("deleted the CA of mesh %s, which no longer exists", mesh)
        self.passes += 1
        return created, deleted

    async def _pump_events(self, subscription: Subscription) -> None:
        while True:
            batch = [await subscription.get(), *subscription.drain()]
            if any(e.resource.type in WATCHED_TYPES for e in batch):
                self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.quiet_s)  # let a burst (a mesh and its contents) settle
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("creating mesh CAs failed; retrying in %.1fs", self.retry_s)
                await asyncio.sleep(self.retry_s)
                self._wake.set()
