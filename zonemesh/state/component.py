"""The computed-state component: keeps generated MeshServices and statuses up to date.

Event driven: a pass runs after store changes to its inputs and after instance-health changes,
never on a timer. Bursts are coalesced (everything queued is drained and a short quiet period
awaited) so a thousand registrations cost a few passes, not a thousand. Events caused by the
pass's own writes are recognised and ignored, so a pass does not trigger another.

On global only the defaults and each mesh's CA are created: status and generation are per
zone. Mesh CAs (`state.ca.MeshCaManager`) are kept on global and on a standalone zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from zonemesh.resources.base import ResourceKey
from zonemesh.resources.registry import DATAPLANE
from zonemesh.runtime.debounce import DebouncedSignal
from zonemesh.runtime.kernel import Runtime
from zonemesh.state.ca import MeshCaManager
from zonemesh.state.defaults import ensure_defaults
from zonemesh.state.meshservices import index_inputs
from zonemesh.state.reconcile import INPUT_TYPES, PassResult, Reconciler, WriteRecord
from zonemesh.store.base import EventKind, ResourceEvent, Subscription

log = logging.getLogger("zonemesh.state")


class ComputedState:
    name = "computed-state"

    def __init__(
        self,
        runtime: Runtime,
        *,
        quiet_s: float = 0.03,
        max_delay_s: float = 0.5,
        retry_s: float = 1.0,
    ) -> None:
        self.runtime = runtime
        self.quiet_s = quiet_s  # a burst is over after this much silence ...
        self.max_delay_s = max_delay_s  # ... or after this long, whichever comes first
        self.retry_s = retry_s  # after a failed pass
        self.passes = 0
        self.last_result: PassResult | None = None
        self._own_writes: set[WriteRecord] = set()
        # What the last event of each Dataplane carried of the pass's inputs (`_is_input`).
        self._dataplane_inputs: dict[ResourceKey, tuple[Any, ...]] = {}
        self._reconciler = Reconciler(runtime, self._own_writes.add)
        self._subscription: Subscription | None = None
        self._signal = DebouncedSignal(quiet_s, max_delay_s)  # the xDS server's rule too
        self._tasks: list[asyncio.Task[None]] = []
        self._retry: asyncio.TimerHandle | None = None
        self.cas = MeshCaManager(runtime)  # does nothing on a federated zone

    async def start(self) -> None:
        config = self.runtime.config
        if config.is_global:
            await ensure_defaults(self.runtime.store, config)
            await self.cas.start()
            return
        # Subscribe before the first read, so no change falls between the two.
        self._subscription = self.runtime.store.subscribe()
        health_seen = self.runtime.health.version  # likewise for health changes
        for created in await ensure_defaults(self.runtime.store, config):
            self._own_writes.add((EventKind.CREATED, created.key, created.version))
        await self.cas.start()  # the default mesh's CA exists before any proxy connects
        await self._reconciler.load()
        with contextlib.suppress(Exception):  # logged in _pass, retried by timer
            await self._pass()
        self._tasks = [
            asyncio.create_task(self._pump_events(self._subscription), name="state-events"),
            asyncio.create_task(self._pump_health(health_seen), name="state-health"),
            asyncio.create_task(self._loop(), name="state-loop"),
        ]

    async def stop(self) -> None:
        await self.cas.stop()
        if self._retry is not None:
            self._retry.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    async def recompute(self) -> PassResult:
        """Run one pass now (also what the event loop does)."""
        return await self._pass()

    async def _pass(self) -> PassResult:
        try:
            result = await self._reconciler.run_once()
        except Exception:
            log.exception("computing state failed; retrying in %.1fs", self.retry_s)
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(self.retry_s, self._signal.mark)
            raise
        self.passes += 1
        self.last_result = result
        if result.writes:
            log.debug(
                "pass %d: %d created, %d updated, %d deleted",
                self.passes,
                result.created,
                result.updated,
                result.deleted,
            )
        for note in result.skipped:
            log.debug("pass %d: left for the next pass: %s", self.passes, note)
        return result

    async def _loop(self) -> None:
        while True:
            await self._signal.wait_due()
            with contextlib.suppress(Exception):  # logged in _pass, retried by timer
                await self._pass()

    async def _pump_events(self, subscription: Subscription) -> None:
        while True:
            batch = [await subscription.get(), *subscription.drain()]
            relevant = [e for e in batch if self._is_input(e)]
            if relevant:
                self._signal.mark()

    async def _pump_health(self, seen: int) -> None:
        health = self.runtime.health
        while True:
            seen = await health.wait_newer(seen)
            self._signal.mark()

    def _is_input(self, event: ResourceEvent) -> bool:
        if event.resource.type not in INPUT_TYPES:
            return False
        record = (event.kind, event.key, event.resource.version)
        if record in self._own_writes:
            self._own_writes.discard(record)
            return False
        if event.resource.type == DATAPLANE.name:
            return self._dataplane_inputs_changed(event)
        return True

    def _dataplane_inputs_changed(self, event: ResourceEvent) -> bool:
        """A Dataplane that moved to another address (or changed its outbounds) changes no
        MeshService, status or VIP: no pass over the zone for it. The pass reads the store
        itself, so skipping an event never loses a change of what it does read."""
        key = event.key
        if event.kind is EventKind.DELETED:
            self._dataplane_inputs.pop(key, None)
            return True
        inputs = index_inputs(event.resource)
        if self._dataplane_inputs.get(key) == inputs:
            return False
        self._dataplane_inputs[key] = inputs
        return True
