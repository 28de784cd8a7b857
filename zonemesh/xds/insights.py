"""What this zone CP knows of its proxies, written down as DataplaneInsight, ZoneIngressInsight
and ZoneEgressInsight resources (`resources.types.insight`), which KDS carries up to global.

Why resources: global has no xDS stream to any proxy, so `inspect` there can only show what
the zones report, and KDS already carries zone-owned types up (with the zone's name suffix,
so a copy's insight has the same name as the copy's Dataplane). They also outlive a restart
of the zone CP: `inspect` shows a proxy's last connection even before it reconnects.

What is written, and when: a proxy's state (online, readiness, connect and disconnect times,
the CP instance holding its stream, its last NACK) soon after it changes (`QUIET_S`); its
counters (responses sent, ACKs, NACKs) at most every `COUNTER_FLUSH_S`. Nothing is written
while nothing changes. An insight whose proxy resource is gone is deleted.

At start, an insight of this zone still saying online but written by another instance is
marked offline (that instance is gone: this CP just started). With several instances of one
zone on one database (their health is not shared yet), an instance starting would also mark
offline the proxies of the others until they next report; only `inspect` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.origin import stamp_origin
from zonemesh.resources.proxy_types import PROXY_TYPE_OF
from zonemesh.resources.registry import INSIGHT_OF
from zonemesh.resources.types.insight import ProxyInsightSpec
from zonemesh.runtime.insights import ProxyInsight
from zonemesh.store.base import AlreadyExistsError, ConflictError, EventKind, NotFoundError

if TYPE_CHECKING:
    from zonemesh.runtime.kernel import Runtime
    from zonemesh.store.base import Subscription
    from zonemesh.xds.registry import ProxyRegistry

log = logging.getLogger("zonemesh.xds")

QUIET_S = 0.1  # a burst of connects is written in one round
COUNTER_FLUSH_S = 10.0  # Kuma's KUMA_XDS_SERVER_DATAPLANE_STATUS_FLUSH_INTERVAL
WRITE_ATTEMPTS = 5


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def insight_key(proxy: ResourceKey) -> ResourceKey:
    """The insight of a Dataplane / ZoneIngress / ZoneEgress: same mesh, same name."""
    return ResourceKey(INSIGHT_OF[proxy.type].name, proxy.mesh, proxy.name)


def spec_of(insight: ProxyInsight, instance_id: str) -> ProxyInsightSpec:
    return ProxyInsightSpec(
        online=insight.online,
        ready=insight.ready,
        not_ready_inbounds=list(insight.not_ready_inbounds),
        last_connected=iso(insight.last_connected),
        last_disconnected=iso(insight.last_disconnected),
        control_plane_instance_id=instance_id,
        envoy_version=insight.envoy_version or None,
        responses_sent=insight.responses_sent,
        acks=insight.acks,
        nacks=insight.nacks,
        last_nack=insight.last_nack,
    )


PROXY_OF = {insight.name: proxy for proxy, insight in INSIGHT_OF.items()}


def stored_insight(resource: Resource) -> ProxyInsight | None:
    """An insight resource (possibly synced from a zone) as the API's `ProxyInsight`."""
    spec = resource.spec
    proxy_type = PROXY_OF.get(resource.type)
    if not isinstance(spec, ProxyInsightSpec) or proxy_type is None:
        return None
    return ProxyInsight(
        key=ResourceKey(proxy_type, resource.mesh, resource.name),
        proxy_type=PROXY_TYPE_OF[proxy_type].value,
        online=spec.online,
        last_connected=parse_iso(spec.last_connected),
        last_disconnected=parse_iso(spec.last_disconnected),
        responses_sent=spec.responses_sent,
        acks=spec.acks,
        nacks=spec.nacks,
        last_nack=spec.last_nack,
        ready=spec.ready,
        not_ready_inbounds=tuple(spec.not_ready_inbounds),
        envoy_version=spec.envoy_version or "",
    )


_State = tuple[Any, ...]
_Counters = tuple[int, int, int]


def _state_of(insight: ProxyInsight) -> _State:
    """What is written as soon as it changes (the counters wait for the flush)."""
    return (
        insight.online,
        insight.ready,
        insight.not_ready_inbounds,
        insight.last_connected,
        insight.last_disconnected,
        insight.envoy_version,
        insight.last_nack,
    )


def _counters_of(insight: ProxyInsight) -> _Counters:
    return (insight.responses_sent, insight.acks, insight.nacks)


class InsightWriter:
    """Keeps this zone's insight resources in line with the registry (module docstring)."""

    name = "xds-insights"

    def __init__(
        self,
        runtime: Runtime,
        registry: ProxyRegistry,
        *,
        quiet_s: float = QUIET_S,
        counter_flush_s: float = COUNTER_FLUSH_S,
    ) -> None:
        self.runtime = runtime
        self.registry = registry
        self.quiet_s = quiet_s
        self.counter_flush_s = counter_flush_s
        self.writes = 0
        # proxy -> (state, full spec, when) of what was last written
        self._written: dict[ResourceKey, tuple[_State, _Counters, float]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._unsubscribe: Any = None

    async def start(self) -> None:
        await self._mark_stale_offline()
        self._unsubscribe = self.registry.on_change(self._wake.set)
        self._subscription = self.runtime.store.subscribe()
        self._watcher = asyncio.create_task(self._watch(self._subscription), name=self.name)
        self._task = asyncio.create_task(self._loop(), name=f"{self.name}-flush")

    async def stop(self) -> None:
        """After the xDS server closed its streams: their offline state is written too."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in (self._task, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._watcher = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        with contextlib.suppress(Exception):
            await self.flush(force_counters=True)

    async def _loop(self) -> None:
        """After a burst, the proxies whose state changed; every `counter_flush_s`, all of
        them (their counters). A burst visits only its own proxies, so a connect storm
        costs each flush what the storm brought, not the size of the zone."""
        last_full = time.monotonic()
        while True:
            wait = max(0.0, self.counter_flush_s - (time.monotonic() - last_full))
            with contextlib.suppress(TimeoutError):  # not wait_for: see runtime.debounce
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.quiet_s)
            full = time.monotonic() - last_full >= self.counter_flush_s
            if full:
                last_full = time.monotonic()
            try:
                await self.flush(only_changed=not full)
            except Exception:
                log.exception("writing proxy insights failed; retrying on the next change")

    async def _watch(self, subscription: Subscription) -> None:
        """A deleted proxy takes its insight with it."""
        async for event in subscription:
            if event.kind is EventKind.DELETED and event.key.type in INSIGHT_OF:
                self._written.pop(event.key, None)
                await self._delete(insight_key(event.key))

    async def flush(self, *, force_counters: bool = False, only_changed: bool = False) -> int:
        """Write what changed (of the proxies the registry reports changed, with
        `only_changed`); returns how many insights were written."""
        now = time.monotonic()
        written = 0
        changed = self.registry.take_changed()
        for insight in self.registry.insights(
            ordered=False, keys=changed if only_changed else None
        ):
            # Compared as plain tuples of the insight's fields (the spec is a function of
            # them): a flush runs after every burst of connects, over every proxy, and
            # building and comparing a spec model for each would make a connect storm
            # quadratic in CPU.
            state, counters = _state_of(insight), _counters_of(insight)
            last = self._written.get(insight.key)
            if last is not None:
                last_state, last_counters, last_at = last
                if last_state == state:
                    if last_counters == counters:
                        continue
                    if not force_counters and now - last_at < self.counter_flush_s:
                        continue
            if await self._write(insight.key, spec_of(insight, self.runtime.instance_id)):
                written += 1
            self._written[insight.key] = (state, counters, now)
        return written

    async def _write(self, proxy: ResourceKey, spec: ProxyInsightSpec) -> bool:
        store = self.runtime.store
        key = insight_key(proxy)
        for _ in range(WRITE_ATTEMPTS):
            if await store.find(proxy) is None:
                return False  # deleted meanwhile: no insight of it
            existing = await store.find(key)
            try:
                if existing is None:
                    resource = Resource(type=key.type, name=key.name, mesh=key.mesh, spec=spec)
                    zone = self.runtime.zone
                    await store.create(stamp_origin(resource, is_global=False, zone=zone))
                elif existing.spec != spec:
                    await store.update(existing.with_(spec=spec))
                else:
                    return False
                self.writes += 1
                return True
            except (ConflictError, AlreadyExistsError, NotFoundError):
                continue
        log.warning("%s: gave up writing after %d conflicting writes", key, WRITE_ATTEMPTS)
        return False

    async def _delete(self, key: ResourceKey) -> None:
        with contextlib.suppress(NotFoundError):
            await self.runtime.store.delete(key)

    async def delete(self, proxy: ResourceKey) -> None:
        """The lifecycle deleted `proxy`: its insight goes too (also if no event arrives)."""
        self._written.pop(proxy, None)
        await self._delete(insight_key(proxy))

    async def _mark_stale_offline(self) -> None:
        """Insights of this zone that another (gone) instance left online: offline now."""
        store, zone = self.runtime.store, self.runtime.zone
        now = iso(datetime.now(UTC))
        for rtype in INSIGHT_OF.values():
            for resource in await store.list(rtype.name):
                spec = resource.spec
                if not isinstance(spec, ProxyInsightSpec) or not spec.online:
                    continue
                if resource.labels.get(labels.ORIGIN) != labels.ORIGIN_ZONE:
                    continue
                if resource.labels.get(labels.ZONE, zone) != zone:
                    continue
                if spec.control_plane_instance_id == self.runtime.instance_id:
                    continue
                offline = spec.model_copy(update={"online": False, "last_disconnected": now})
                with contextlib.suppress(ConflictError, NotFoundError):
                    await store.update(resource.with_(spec=offline))
                    log.info(
                        "%s: marked offline (its control plane instance is gone)", resource.key
                    )
