"""Assemble and run a control plane: open the store, start components, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from zonemesh.config import CpConfig
from zonemesh.cp.leader_only import LeaderOnly
from zonemesh.runtime.kernel import Component, Runtime
from zonemesh.runtime.leadership import Leadership, PostgresLeadership
from zonemesh.store.base import Store
from zonemesh.tls.material import ServerTls, load_server_tls
from zonemesh.tls.shared_ca import share_generated_ca, shares_ca
from zonemesh.xds.engine import gc_policy

log = logging.getLogger("zonemesh.cp")


def open_store(config: CpConfig) -> Store:
    if config.store.type == "memory":
        from zonemesh.store.memory import MemoryStore

        return MemoryStore()
    if config.store.type == "postgres":
        from zonemesh.store.postgres import PostgresStore

        # Connected by `ControlPlane.start` (`Store.start`), which refuses an unknown schema.
        return PostgresStore(
            config.store.postgres, name=f"zonemesh-cp-{config.zone_name or 'global'}"
        )
    from zonemesh.store.sqlite import SqliteStore

    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(config.data_dir / "zonemesh.db")


def open_leadership(config: CpConfig) -> Leadership:
    """Instances sharing PostgreSQL elect a leader per zone (or global); otherwise this one is."""
    if config.store.type != "postgres":
        return Leadership()
    who = f"zone/{config.zone_name}" if not config.is_global else "global"
    return PostgresLeadership(
        config.store.postgres,
        f"zonemesh-leader/{who}",
        application_name=f"zonemesh-cp-{config.zone_name or 'global'} leader",
    )


class TokenComponent:
    """Keys and revocation lists loaded before anything verifies a token."""

    name = "tokens"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def start(self) -> None:
        await self.runtime.tokens.start()

    async def stop(self) -> None:
        await self.runtime.tokens.stop()


def build_components(runtime: Runtime) -> list[Component]:
    """In start order; stopped in reverse. The API comes last so /ready means ready."""
    from zonemesh.api.admin_token import AdminTokenBootstrap
    from zonemesh.api.server import ApiServer
    from zonemesh.state.component import ComputedState

    leadership = runtime.leadership
    components: list[Component] = [
        TokenComponent(runtime),
        AdminTokenBootstrap(runtime),
        # Defaults, mesh CAs, generated MeshServices, VIPs, statuses: written by one instance.
        LeaderOnly(leadership, ComputedState.name, lambda: ComputedState(runtime)),
    ]
    if not runtime.config.is_global:
        from zonemesh.xds.component import XdsServer

        components.append(XdsServer(runtime))
    if runtime.config.is_global:
        from zonemesh.federation.server import KdsServer

        components.append(KdsServer(runtime))
    elif runtime.config.federated_zone:
        from zonemesh.federation.client import KdsClient

        # One KDS connection per zone: the leader's.
        components.append(LeaderOnly(leadership, KdsClient.name, lambda: KdsClient(runtime)))
    if runtime.config.store.type == "postgres":
        from zonemesh.state.shared_health import SharedHealth

        # After xDS: stopped first, so a shutdown's closing streams are not published.
        components.append(SharedHealth(runtime))
    components.append(ApiServer(runtime))
    return components


def needs_tls(config: CpConfig) -> bool:
    return not config.general.tls.plaintext_grpc or config.api_server.https.enabled


def load_tls(config: CpConfig) -> tuple[ServerTls | None, ServerTls | None]:
    """(what xDS/KDS serve, what the HTTPS API serves); raises TlsMaterialError.

    One certificate for all three, as Kuma's `general.tls*` is. gRPC is plaintext only when
    asked for (and the config allows that only on loopback); the API's HTTP port is there
    either way."""
    plaintext = config.general.tls.plaintext_grpc
    https = config.api_server.https.enabled
    if plaintext and not https:
        log.warning("serving xDS and KDS in plaintext (--grpc-plaintext); HTTPS API off")
        return None, None
    material = load_server_tls(config)
    if material.ca_file is not None:
        log.info(
            "TLS: serving a certificate for %s signed by the CA in %s "
            "(give that file to clients: dp run --ca-cert-file, "
            "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE)",
            ", ".join(material.names),
            material.ca_file,
        )
    else:
        log.info("TLS: serving %s (for %s)", material.cert_file, ", ".join(material.names))
    if plaintext:
        log.warning("serving xDS and KDS in plaintext (--grpc-plaintext), on loopback only")
    return (None if plaintext else material), (material if https else None)


class ControlPlane:
    def __init__(self, config: CpConfig) -> None:
        # Instances sharing PostgreSQL load TLS once the database gave them its CA (`start`).
        self._tls_deferred = shares_ca(config) and needs_tls(config)
        server_tls, api_tls = (None, None) if self._tls_deferred else load_tls(config)
        self.runtime = Runtime(
            config=config,
            store=open_store(config),
            server_tls=server_tls,
            api_tls=api_tls,
            leadership=open_leadership(config),
        )
        self.components = build_components(self.runtime)
        self._started: list[Component] = []

    async def start(self) -> None:
        cfg = self.runtime.config
        log.info(
            "starting control plane mode=%s zone=%s store=%s instance=%s",
            cfg.mode,
            cfg.zone_name or "-",
            cfg.store.type,
            self.runtime.instance_id,
        )
        await self.runtime.store.start()
        if self._tls_deferred:
            await share_generated_ca(cfg, self.runtime.store)
            self.runtime.server_tls, self.runtime.api_tls = load_tls(cfg)
        await self.runtime.leadership.start()
        self.runtime.status["leadership"] = self.runtime.leadership.describe()
        self.runtime.leadership.on_change(self._leadership_changed)
        for component in self.components:
            await component.start()
            self._started.append(component)

    async def stop(self) -> None:
        # Step down first: the leader-only work stops while this instance's proxies are
        # still connected (so it writes no "disconnected" state as its streams close), and
        # another instance takes over at once instead of after this one is gone.
        try:
            await self.runtime.leadership.stop()
        except Exception:
            log.exception("stepping down failed")
        while self._started:
            component = self._started.pop()
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        await self.runtime.store.close()
        log.info("control plane stopped")

    async def _leadership_changed(self, leading: bool) -> None:
        self.runtime.status["leadership"] = self.runtime.leadership.describe()

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            gc_policy.apply()  # a process of its own, start-up done (see the module)
            await stop.wait()
        finally:
            await self.stop()
