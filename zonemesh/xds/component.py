"""`XdsServer`: the control-plane component serving ADS, and the `XdsView` the API reads.

Wiring: store events and health changes mark the state dirty; after `debounce_quiet_s` of
quiet (or `debounce_max_s` after the first change) one `MeshState` is built and every
connected proxy is regenerated, in batches that yield to the event loop. Each proxy's output
becomes a `Snapshot` in the cache, which wakes only the streams whose resources changed.
A newly connected proxy is generated at once, without waiting for the debounce.

Authentication (`xds.auth`): every RPC on this port needs a dataplane token unless
`dpServer.authn.dpProxy.type` is `none`. The server listens for revocations and ends every
stream whose token was revoked.

Certificates: the server never holds a workload's key. It serves the workload CA
(`xds.ca_service`: data planes send CSRs) whose certificates live `cert_validity`, else
`config.xds.cert_validity` (env `ZONEMESH_CERT_VALIDITY`: `24h`, `90m`, `3s` or seconds); the
data plane renews them and hands them to its Envoy over a local SDS socket.

Interface used by tests, the data-plane tests and benchmarks:
`XdsServer(runtime, generator=None, *, cert_validity=None)`, `await start()`,
`.port` (the bound port, useful with `--xds-port 0`), `.registry` (`ProxyRegistry`:
`subscribe`, `set_readiness`), `.cache`, `.ca`, `.trust`, `insights()`, `config_dump(key)`,
`await stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

import grpc

from zonemesh.auth.tokens import TokenKind
from zonemesh.config import parse_duration
from zonemesh.mtls.trust import MeshTrust
from zonemesh.resources.base import ResourceKey
from zonemesh.resources.proxy_types import ProxyType
from zonemesh.resources.registry import (
    DATAPLANE,
    MESH,
    MESH_GATEWAY,
    MESH_HTTP_ROUTE,
    MESH_LOAD_BALANCING_STRATEGY,
    MESH_MULTI_ZONE_SERVICE,
    MESH_SERVICE,
    SECRET,
    ZONE_EGRESS,
    ZONE_INGRESS,
)
from zonemesh.runtime.insights import ProxyInsight
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import Subscription
from zonemesh.tls.serving import add_grpc_port, scheme
from zonemesh.translate.default import default_generator
from zonemesh.translate.generator import Generator, Proxy, ProxyResources
from zonemesh.translate.state import MeshState, build_mesh_state
from zonemesh.xds.auth import DpAuthenticator
from zonemesh.xds.ca_service import CertificateAuthority
from zonemesh.xds.cache import ResourceInterner, Snapshot, SnapshotCache
from zonemesh.xds.insights import InsightWriter
from zonemesh.xds.lifecycle import DataplaneLifecycle
from zonemesh.xds.metrics import XdsMetrics
from zonemesh.xds.protocol import DEFAULT_MAX_RESOURCE_NAMES, DEFAULT_MAX_UNACKED
from zonemesh.xds.readiness import readiness_handler
from zonemesh.xds.registry import ProxyEvent, ProxyEventKind, ProxyRegistry
from zonemesh.xds.server import DEFAULT_SEND_TIMEOUT_S, AdsService

log = logging.getLogger("zonemesh.xds")

# Store types the generators read; changes to other types do not trigger a push.
STATE_TYPES = frozenset(
    t.name
    for t in (
        MESH,
        DATAPLANE,
        ZONE_INGRESS,
        ZONE_EGRESS,
        MESH_SERVICE,
        MESH_MULTI_ZONE_SERVICE,
        MESH_LOAD_BALANCING_STRATEGY,
        MESH_GATEWAY,
        SECRET,  # a gateway listener's certificate (the state reads only those)
        MESH_HTTP_ROUTE,
    )
)
BATCH_SIZE = 32  # proxies generated between two yields to the event loop
STOP_GRACE_S = 1.0
# A connecting proxy is served at once from a state at most this old (see
# `_state_for_new_proxies`); the debounced full pass follows with a fresh one.
NEW_PROXY_STATE_AGE_S = 0.25


class Debouncer:
    """When to push: `quiet_s` after the last change, but no later than `max_s` after the first."""

    def __init__(self, quiet_s: float, max_s: float) -> None:
        self.quiet_s, self.max_s = quiet_s, max_s
        self._first: float | None = None
        self._last = 0.0

    def change(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    def due_in(self, now: float) -> float | None:
        """Seconds until the push is due (<= 0: now); None when nothing changed."""
        if self._first is None:
            return None
        return min(self._last + self.quiet_s, self._first + self.max_s) - now

    def reset(self) -> None:
        self._first = None


class XdsServer:
    name = "xds"

    def __init__(
        self,
        runtime: Runtime,
        generator: Generator | None = None,
        *,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
        max_unacked: int = DEFAULT_MAX_UNACKED,
        max_resource_names: int = DEFAULT_MAX_RESOURCE_NAMES,
        cert_validity: timedelta | None = None,
    ) -> None:
        """`cert_validity`: of the certificates the CA signs; else `config.xds.cert_validity`
        (`ZONEMESH_CERT_VALIDITY`, 24 h)."""
        self.runtime = runtime
        self.generator: Generator = generator or default_generator()
        self.cache = SnapshotCache()
        self.interner = ResourceInterner()
        self.auth = DpAuthenticator(runtime)
        self.registry = ProxyRegistry(runtime, self.auth)
        self.insight_writer = InsightWriter(runtime, self.registry)
        self.lifecycle = DataplaneLifecycle(runtime, self.registry, self.insight_writer)
        self.trust = MeshTrust(runtime.store, runtime.zone, federated=runtime.config.federated_zone)
        self.ca = CertificateAuthority(
            runtime,
            self.auth,
            self.trust,
            cert_validity or parse_duration(runtime.config.xds.cert_validity),
        )
        self.metrics = XdsMetrics(runtime.metrics)
        self.service = AdsService(
            cache=self.cache,
            registry=self.registry,
            metrics=self.metrics,
            control_plane_id=f"zonemesh/{runtime.instance_id}",
            max_resource_names=max_resource_names,
            max_unacked=max_unacked,
            send_timeout_s=send_timeout_s,
        )
        self.port = 0
        self.generations = 0  # full regeneration passes done (tests, benchmarks)
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Subscription | None = None
        self._unsubscribe_registry: Any = None
        self._trigger = asyncio.Event()
        self._state: MeshState | None = None
        self._state_version = 0
        self._state_stale = True
        self._state_built_at = 0.0
        cfg = runtime.config.xds
        self._debounce = Debouncer(cfg.debounce_quiet_s, cfg.debounce_max_s)
        self._new_keys: set[ResourceKey] = set()
        self._unsubscribe_revocations: Any = None

    # --- Component ----------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.runtime.config
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
        )
        server.add_generic_rpc_handlers(
            (self.service.rpc_handler(), readiness_handler(self), self.ca.rpc_handler())
        )
        self.auth.warn_if_disabled()
        address = f"{cfg.address}:{cfg.xds.port}"
        try:
            self.port = add_grpc_port(server, address, self.runtime.server_tls)
        except RuntimeError as e:
            raise OSError(f"xDS server cannot listen on {address}: {e}") from None
        if not self.port:
            raise OSError(f"xDS server cannot listen on {address}")
        self._trigger = asyncio.Event()
        self._subscription = self.runtime.store.subscribe()
        self._unsubscribe_registry = self.registry.subscribe(self._on_proxy_event)
        self._unsubscribe_revocations = self.runtime.tokens.on_revocation(self._on_revocation)
        await self.insight_writer.start()
        await self.lifecycle.start()
        await server.start()
        self._server = server
        self._tasks = [
            asyncio.create_task(self._watch_store(self._subscription), name="xds-store-events"),
            asyncio.create_task(self._watch_health(), name="xds-health"),
            asyncio.create_task(self._run(), name="xds-updater"),
        ]
        self.runtime.views["xds"] = self
        log.info(
            "xDS server listening on %s://%s:%d",
            scheme(self.runtime.server_tls),
            cfg.address,
            self.port,
        )

    async def stop(self) -> None:
        if self._unsubscribe_revocations is not None:
            self._unsubscribe_revocations()
            self._unsubscribe_revocations = None
        if self.runtime.views.get("xds") is self:
            del self.runtime.views["xds"]
        await self.lifecycle.stop()  # before the streams close: a shutdown deletes nothing
        if self._server is not None:
            self.registry.close_all(grpc.StatusCode.UNAVAILABLE, "control plane is shutting down")
            await self._server.stop(STOP_GRACE_S)
            self._server = None
        await self.insight_writer.stop()  # writes the streams' end
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self._unsubscribe_registry is not None:
            self._unsubscribe_registry()
            self._unsubscribe_registry = None

    # --- XdsView ------------------------------------------------------------------------

    def insights(self) -> list[ProxyInsight]:
        return self.registry.insights()

    def config_dump(self, key: ResourceKey) -> dict[str, list[dict[str, Any]]] | None:
        """What the proxy is served; for a known proxy not connected, what it would get."""
        snapshot = self.cache.get(key)
        if snapshot is None and self._state is not None:
            resource = self._state.proxy_resource(key)
            if resource is None:
                return None
            snapshot = self._generate(self._state, self._proxy(key, resource))
        return snapshot.to_json() if snapshot is not None else None

    # --- triggers -----------------------------------------------------------------------

    def _mark_dirty(self) -> None:
        self._debounce.change(time.monotonic())
        self._state_stale = True
        self._trigger.set()

    def _on_revocation(self, kind: TokenKind, mesh: str, revoked: frozenset[str]) -> None:
        """Kuma checks tokens only when a stream starts (kumahq/kuma#3379): here a revoked
        token ends its streams at once."""
        if kind is TokenKind.DATAPLANE and revoked:
            closed = self.registry.close_revoked(mesh, revoked)
            if closed:
                log.info("closed %d xDS stream(s) of revoked tokens in mesh %s", closed, mesh)

    def _on_proxy_event(self, event: ProxyEvent) -> None:
        if event.kind is ProxyEventKind.CONNECTED:
            self._new_keys.add(event.key)
        else:
            self._new_keys.discard(event.key)
            if self.registry.connection(event.key) is None:
                self.cache.remove(event.key)
        self._mark_dirty()  # health changed with it

    async def _watch_store(self, subscription: Subscription) -> None:
        async for event in subscription:
            if event.resource.type in STATE_TYPES:
                self._mark_dirty()

    async def _watch_health(self) -> None:
        seen = self.runtime.health.version
        while True:
            seen = await self.runtime.health.wait_newer(seen)
            self._mark_dirty()

    # --- generation ---------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            timeout: float | None = None
            try:
                if self._new_keys:
                    await self._serve_new_proxies()
                    continue
                timeout = self._debounce.due_in(time.monotonic())
                if timeout is not None and timeout <= 0:
                    self._debounce.reset()
                    await self._regenerate_all()
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("xDS generation pass failed; retrying on the next change")
            self._trigger.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._trigger.wait(), timeout)

    async def _current_state(self) -> MeshState:
        if self._state is None or self._state_stale:
            self._state_stale = False
            self._state_built_at = time.monotonic()
            self._state_version += 1
            self._state = await build_mesh_state(
                self.runtime.store,
                self.runtime.health,
                version=self._state_version,
                zone=self.runtime.zone,
            )
            self.interner.new_round()
        return self._state

    async def _state_for_new_proxies(self) -> MeshState:
        """The current state, rebuilt only if it is older than `NEW_PROXY_STATE_AGE_S`.

        During a connect storm every registration changes the store; rebuilding the state
        for each handful of new proxies would cost more than generating for them. A proxy
        served from a slightly older state is regenerated by the debounced full pass its
        connection already scheduled."""
        state = self._state
        age = time.monotonic() - self._state_built_at
        if state is None or (self._state_stale and age >= NEW_PROXY_STATE_AGE_S):
            state = await self._current_state()
        return state

    async def _serve_new_proxies(self) -> MeshState:
        keys, self._new_keys = self._new_keys, set()
        state = await self._state_for_new_proxies()
        await self._generate_for(state, sorted(keys), from_store=True)
        return state

    async def _regenerate_all(self) -> None:
        state = await self._current_state()
        await self._generate_for(
            state, sorted(c.key for c in self.registry.connections()), serve_new=True
        )
        self.generations += 1

    async def _generate_for(
        self,
        state: MeshState,
        keys: list[ResourceKey],
        *,
        serve_new: bool = False,
        from_store: bool = False,
    ) -> None:
        """`serve_new` (full passes): proxies that connect meanwhile are served between two
        batches, not after the pass; the rest of the pass then uses the newer state.
        `from_store` (new proxies): a proxy registered after `state` was built is read from
        the store."""
        for i, key in enumerate(keys):
            if i and i % BATCH_SIZE == 0:
                await asyncio.sleep(0)  # let streams write and requests arrive
                if serve_new and self._new_keys:
                    state = await self._serve_new_proxies()
            conn = self.registry.connection(key)
            if conn is None:
                continue
            resource = state.proxy_resource(key)
            if resource is None and from_store:
                resource = await self.runtime.store.find(key)
            if resource is None:
                snapshot = Snapshot.of({})  # its resource was deleted: serve nothing
            else:
                snapshot = self._generate(state, self._proxy(key, resource, conn.node_id))
            if snapshot is not None:
                self.cache.set(key, snapshot)

    def _proxy(self, key: ResourceKey, resource: Any, node_id: str = "") -> Proxy:
        kind = {
            ZONE_INGRESS.name: ProxyType.INGRESS,
            ZONE_EGRESS.name: ProxyType.EGRESS,
        }.get(key.type, ProxyType.DATAPLANE)
        return Proxy(key=key, proxy_type=kind, resource=resource, node_id=node_id)

    def _generate(self, state: MeshState, proxy: Proxy) -> Snapshot | None:
        started = time.perf_counter()
        try:
            resources: ProxyResources = self.generator.generate(state, proxy)
            snapshot = self.interner.snapshot(resources)
        except Exception:
            log.exception(
                "generating resources for %s failed; keeping its previous ones", proxy.key
            )
            return None
        finally:
            self.metrics.generation.observe(time.perf_counter() - started)
        return snapshot
