"""Every Mesh gets its builtin root CA, and on global every Zone its intermediate of it.

The root runs on global and on a standalone zone. A federated zone never creates CAs: it
receives the root's certificate from global (never its key) and its own intermediate.

The root is one Secret per mesh named `ca-builtin` (see `zonemesh.mtls.ca` for its content),
labelled `zonemesh.io/generated-by: mesh-ca`. It is created when the mesh appears, never
replaced while it exists (a replaced CA would break every certificate in flight), created
again if someone deletes it, and deleted when its mesh is gone (the API removes a mesh's
contents before the mesh; a CA re-created in between is cleaned up here).

On global, for every mesh and every `Zone`, Secret `zone-ca-<zone>` (label
`zonemesh.io/ca-zone: <zone>`) holds an intermediate signed by the root
(`zonemesh.mtls.trust`): created with the Zone, re-issued when it no longer chains to the
root or has lived two thirds of its validity, deleted with the Zone — so a zone removed from
global can sign nothing more once its copy is gone (certificates it already issued stay valid
until they expire: there is no revocation list yet).

Event driven: Mesh, Zone and Secret changes wake a pass after a short quiet period; a pass
also runs every `renew_check_s` so intermediates are re-issued in time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature

from zonemesh.mtls.ca import (
    CA_SECRET_NAME,
    CaBundleError,
    MeshCA,
    create_mesh_ca,
    decode_ca_bundle,
    encode_ca_bundle,
    issue_intermediate,
)
from zonemesh.mtls.trust import ZONE_CA_LABEL, ZONE_CA_PREFIX, zone_ca_name
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.origin import stamp_origin
from zonemesh.resources.registry import MESH, SECRET, ZONE
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import AlreadyExistsError, ConflictError, NotFoundError, Subscription

log = logging.getLogger("zonemesh.state.ca")

GENERATED_BY = "zonemesh.io/generated-by"
GENERATOR = "mesh-ca"
WATCHED_TYPES = frozenset({MESH.name, SECRET.name, ZONE.name})
RENEW_AFTER = 2 / 3  # of an intermediate's lifetime


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


def zone_ca_resource(root: MeshCA, zone: str) -> Resource:
    """A new intermediate of `root` for `zone`, as the Secret that stores it."""
    data = base64.b64encode(encode_ca_bundle(issue_intermediate(root, zone))).decode()
    return Resource(
        type=SECRET.name,
        name=zone_ca_name(zone),
        mesh=root.mesh,
        spec=SecretSpec(data=data),
        labels={GENERATED_BY: GENERATOR, ZONE_CA_LABEL: zone},
    )


def _usable_intermediate(secret: Resource, root: MeshCA, now: datetime) -> bool:
    """Chains to `root` and has not yet lived `RENEW_AFTER` of its validity."""
    spec = secret.spec
    if not isinstance(spec, SecretSpec):
        return False
    try:
        ca = decode_ca_bundle(secret.mesh, spec.value)
        ca.certificate.verify_directly_issued_by(root.certificate)
    except (CaBundleError, InvalidSignature, ValueError, TypeError):
        return False
    start, end = ca.certificate.not_valid_before_utc, ca.not_after
    return now < start + (end - start) * RENEW_AFTER


def _root_of(secret: Resource) -> MeshCA | None:
    spec = secret.spec
    if not isinstance(spec, SecretSpec):
        return None
    try:
        return decode_ca_bundle(secret.mesh, spec.value)
    except (CaBundleError, ValueError):
        return None


class MeshCaManager:
    """Keeps one CA Secret per Mesh; see the module docstring. Not for a federated zone."""

    name = "mesh-ca"

    def __init__(
        self,
        runtime: Runtime,
        *,
        quiet_s: float = 0.03,
        retry_s: float = 1.0,
        renew_check_s: float = 3600.0,
    ) -> None:
        self.runtime = runtime
        self.quiet_s = quiet_s
        self.retry_s = retry_s
        self.renew_check_s = renew_check_s
        self.passes = 0
        self._subscription: Subscription | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._renew_check: asyncio.TimerHandle | None = None

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
        self._schedule_renew_check()

    def _schedule_renew_check(self) -> None:
        """A pass every `renew_check_s`, so intermediates are re-issued with no event."""

        def due() -> None:
            self._wake.set()
            self._schedule_renew_check()

        self._renew_check = asyncio.get_running_loop().call_later(self.renew_check_s, due)

    async def stop(self) -> None:
        if self._renew_check is not None:
            self._renew_check.cancel()
            self._renew_check = None
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
        if config.is_global:
            await self._reconcile_zone_cas(meshes, created, deleted)
        self.passes += 1
        return created, deleted

    async def _reconcile_zone_cas(
        self, meshes: set[str], created: list[Resource], deleted: list[Resource]
    ) -> None:
        """One intermediate per (mesh, Zone), valid and chaining to the mesh's root."""
        store = self.runtime.store
        zones = {z.name for z in await store.list(ZONE.name)}
        secrets = await store.list(SECRET.name)
        roots = {s.mesh: _root_of(s) for s in secrets if s.name == CA_SECRET_NAME}
        current = {
            (s.mesh, s.labels[ZONE_CA_LABEL]): s
            for s in secrets
            if s.name.startswith(ZONE_CA_PREFIX) and ZONE_CA_LABEL in s.labels
        }
        now = datetime.now(UTC)
        for mesh in sorted(meshes):
            root = roots.get(mesh)
            if root is None:
                continue  # a root without its key (never on global) or not there yet
            for zone in sorted(zones):
                secret = current.get((mesh, zone))
                if secret is not None and _usable_intermediate(secret, root, now):
                    continue
                resource = stamp_origin(zone_ca_resource(root, zone), is_global=True, zone="")
                try:
                    if secret is None:
                        created.append(await store.create(resource))
                        log.info("created the intermediate CA of zone %s in mesh %s", zone, mesh)
                    else:
                        created.append(await store.update(resource.with_(version=secret.version)))
                        log.info("re-issued the intermediate CA of zone %s in mesh %s", zone, mesh)
                except (AlreadyExistsError, ConflictError, NotFoundError):
                    self._wake.set()  # raced with another writer: look again
        for (mesh, zone), secret in sorted(current.items()):
            if (zone in zones and mesh in meshes) or secret.labels.get(GENERATED_BY) != GENERATOR:
                continue
            with contextlib.suppress(NotFoundError, ConflictError):
                deleted.append(await store.delete(secret.key, secret.version))
                log.info("deleted the intermediate CA of zone %s in mesh %s", zone, mesh)

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
