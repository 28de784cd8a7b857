"""Deregistration of proxies that registered themselves (Kuma's Universal lifecycle).

Only resources created from a proxy's node metadata (`registry.REGISTERED_LABEL`) are ever
deleted here; a Dataplane applied through the API stays until the API deletes it.

- Graceful stop: `dp run` reports `stopping` before it drains (`xds.readiness`). When that
  stream ends, the resource is deleted `xds.dataplaneDeregistrationDelay` later
  (`KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY`, 10 s as in Kuma) unless the proxy connected
  again meanwhile (a restart with the same name keeps it).
- Ungraceful end (the stream is gone and no stop was reported: a crash, a kill, a lost
  host): the resource stays — the proxy may come back, and `inspect` shows it Offline — until
  it has been offline for `runtime.universal.dataplaneCleanupAge`
  (`KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE`, 72 h as in Kuma). "Offline since" comes
  from its insight (`xds.insights`), which outlives a restart of this CP, so a proxy that
  never returns after a CP restart is collected too.

A CP shutting down closes every stream without deleting anything: the proxies reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from zonemesh.config import parse_duration
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.ownership import is_local
from zonemesh.resources.registry import DATAPLANE, ZONE_EGRESS, ZONE_INGRESS
from zonemesh.resources.types.insight import ProxyInsightSpec
from zonemesh.store.base import ConflictError, NotFoundError
from zonemesh.xds.insights import insight_key, parse_iso
from zonemesh.xds.registry import ProxyEventKind, is_registered_from_metadata

if TYPE_CHECKING:
    from zonemesh.runtime.kernel import Runtime
    from zonemesh.xds.insights import InsightWriter
    from zonemesh.xds.registry import ProxyEvent, ProxyRegistry

log = logging.getLogger("zonemesh.xds")

PROXY_TYPES = (DATAPLANE.name, ZONE_INGRESS.name, ZONE_EGRESS.name)
MIN_SWEEP_S = 0.5
MAX_SWEEP_S = 60.0


class DataplaneLifecycle:
    name = "xds-lifecycle"

    def __init__(self, runtime: Runtime, registry: ProxyRegistry, insights: InsightWriter) -> None:
        self.runtime = runtime
        self.registry = registry
        self.insights = insights
        xds = runtime.config.xds
        self.deregistration_delay_s = parse_duration(
            xds.dataplane_deregistration_delay
        ).total_seconds()
        cleanup = runtime.config.runtime.universal.dataplane_cleanup_age
        self.cleanup_age_s = parse_duration(cleanup).total_seconds()
        self.sweep_s = min(max(self.cleanup_age_s / 4, MIN_SWEEP_S), MAX_SWEEP_S)
        self.deleted = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None

    async def start(self) -> None:
        self._unsubscribe = self.registry.subscribe(self._on_proxy_event)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name=self.name)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = [*self._pending, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pending.clear()
        self._sweeper = None

    # --- graceful stop -------------------------------------------------------------------

    def _on_proxy_event(self, event: ProxyEvent) -> None:
        if event.kind is ProxyEventKind.DISCONNECTED and event.stopping:
            task = asyncio.ensure_future(self._deregister_later(event.key))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _deregister_later(self, key: ResourceKey) -> None:
        await asyncio.sleep(self.deregistration_delay_s)
        if self.registry.connection(key) is not None:
            log.info("%s connected again: not deregistered", key)
            return
        await self._delete(key, "it stopped gracefully")

    # --- ungraceful end --------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("collecting offline proxies failed; retrying")

    async def sweep(self) -> int:
        """Delete the registered proxies offline for longer than the cleanup age."""
        store = self.runtime.store
        now = datetime.now(UTC)
        collected = 0
        for type_name in PROXY_TYPES:
            for resource in await store.list(type_name):
                if not self._collectable(resource):
                    continue
                insight = await store.find(insight_key(resource.key))
                spec = insight.spec if insight is not None else None
                if not isinstance(spec, ProxyInsightSpec) or spec.online:
                    continue  # no evidence it is gone (or another instance holds it)
                since = parse_iso(spec.last_disconnected)
                if since is None or (now - since).total_seconds() < self.cleanup_age_s:
                    continue
                if self.registry.connection(resource.key) is not None:
                    continue
                gone_for = int((now - since).total_seconds())
                if await self._delete(resource.key, f"offline for {gone_for}s"):
                    collected += 1
        return collected

    def _collectable(self, resource: Resource) -> bool:
        return (
            is_registered_from_metadata(resource)
            and is_local(resource, self.runtime.zone)
            and self.registry.connection(resource.key) is None
        )

    # --- deleting --------------------------------------------------------------------------

    async def _delete(self, key: ResourceKey, why: str) -> bool:
        store = self.runtime.store
        existing = await store.find(key)
        if existing is None or not is_registered_from_metadata(existing):
            return False
        try:
            await store.delete(key, version=existing.version)
        except (ConflictError, NotFoundError):
            return False  # re-registered or deleted meanwhile
        self.deleted += 1
        log.info("deregistered %s: %s", key, why)
        await self.insights.delete(key)
        self.registry.forget(key)
        return True
