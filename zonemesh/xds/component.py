"""`XdsServer`: the control-plane component serving ADS, and the `XdsView` the API reads.

Wiring: this component is the gRPC side. What to generate, when and for whom is the
`GenerationScheduler`'s (`zonemesh.xds.engine.scheduler`): store events and health changes keep
its mesh state up to date; after `debounce_quiet_s` of quiet (or `debounce_max_s` after the
first change) it recomputes what the changes affect. Each proxy's output becomes a
`Snapshot` in the cache, which wakes only the streams whose resources changed. A newly
connected proxy is generated at once from the current state, without waiting for the debounce.

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
from datetime import timedelta
from typing import Any

import grpc

from zonemesh.auth.tokens import TokenKind
from zonemesh.config import parse_duration
from zonemesh.mtls.trust import MeshTrust
from zonemesh.resources.base import ResourceKey
from zonemesh.runtime.insights import ProxyInsight
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import Subscription
from zonemesh.tls.serving import add_grpc_port, scheme
from zonemesh.translate.default import default_generator
from zonemesh.translate.generator import Generator
from zonemesh.xds.auth import DpAuthenticator
from zonemesh.xds.ca_service import CertificateAuthority
from zonemesh.xds.cache import SnapshotCache
from zonemesh.xds.engine.scheduler import GenerationScheduler
from zonemesh.xds.insights import InsightWriter
from zonemesh.xds.lifecycle import DataplaneLifecycle
from zonemesh.xds.metrics import XdsMetrics
from zonemesh.xds.protocol import DEFAULT_MAX_RESOURCE_NAMES, DEFAULT_MAX_UNACKED
from zonemesh.xds.readiness import readiness_handler
from zonemesh.xds.registry import ProxyEvent, ProxyEventKind, ProxyRegistry
from zonemesh.xds.server import DEFAULT_SEND_TIMEOUT_S, AdsService

log = logging.getLogger("zonemesh.xds")

STOP_GRACE_S = 1.0


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
        self.cache = SnapshotCache()
        cfg = runtime.config.xds
        self.scheduler = GenerationScheduler(
            store=runtime.store,
            health=runtime.health,
            zone=runtime.zone,
            generator=generator or default_generator(),
            cache=self.cache,
            connected=self._node_id,
            connected_keys=lambda: [c.key for c in self.registry.connections()],
            quiet_s=cfg.debounce_quiet_s,
            max_s=cfg.debounce_max_s,
            observe=lambda seconds: self.metrics.generation.observe(seconds),
        )
        self.auth = DpAuthenticator(runtime)
        self.registry = ProxyRegistry(runtime, self.auth, self.scheduler.outbounds)
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
        self.interner = self.scheduler.interner
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Subscription | None = None
        self._unsubscribe_registry: Any = None
        self._unsubscribe_revocations: Any = None

    @property
    def generator(self) -> Generator:
        return self.scheduler.generator

    @generator.setter
    def generator(self, generator: Generator) -> None:
        """Tests wrap the CP's generator after construction."""
        self.scheduler.use_generator(generator)

    @property
    def generations(self) -> int:
        """Debounced generation rounds done (tests, benchmarks)."""
        return self.scheduler.generations

    def _node_id(self, key: ResourceKey) -> str | None:
        conn = self.registry.connection(key)
        return conn.node_id if conn is not None else None

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
        self._subscription = self.runtime.store.subscribe()
        await self.scheduler.load()  # after subscribing: no change falls in between
        self._unsubscribe_registry = self.registry.subscribe(self._on_proxy_event)
        self._unsubscribe_revocations = self.runtime.tokens.on_revocation(self._on_revocation)
        await self.insight_writer.start()
        await self.lifecycle.start()
        await server.start()
        self._server = server
        self._tasks = [
            asyncio.create_task(
                self.scheduler.watch_store(self._subscription), name="xds-store-events"
            ),
            asyncio.create_task(self.scheduler.watch_health(), name="xds-health"),
            asyncio.create_task(self.scheduler.run(), name="xds-updater"),
            asyncio.create_task(self.service.watch_writes(), name="xds-write-watchdog"),
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
        snapshot = self.cache.get(key) or self.scheduler.snapshot_for(key)
        return snapshot.to_json() if snapshot is not None else None

    # --- triggers -----------------------------------------------------------------------

    def _on_revocation(self, kind: TokenKind, mesh: str, revoked: frozenset[str]) -> None:
        """Kuma checks tokens only when a stream starts (kumahq/kuma#3379): here a revoked
        token ends its streams at once."""
        if kind is TokenKind.DATAPLANE and revoked:
            closed = self.registry.close_revoked(mesh, revoked)
            if closed:
                log.info("closed %d xDS stream(s) of revoked tokens in mesh %s", closed, mesh)

    def _on_proxy_event(self, event: ProxyEvent) -> None:
        if event.kind is ProxyEventKind.CONNECTED:
            self.scheduler.proxy_connected(event.key)
        else:
            self.scheduler.proxy_disconnected(event.key)
