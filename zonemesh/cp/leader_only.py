"""Running a component only while this instance leads (composition, so it lives in `cp`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from zonemesh.runtime.kernel import Component
from zonemesh.runtime.leadership import Leadership
from zonemesh.store.base import StoreError

log = logging.getLogger("zonemesh.leader")


class LeaderOnly:
    """Runs a component only while this instance leads: a fresh one from `make` on every gain
    (no component needs to be restartable), stopped on losing. `current` is the one running.

    A start that fails (typically: leadership came back with the database before the store's
    pool could reconnect) is undone with `stop` and tried again with a fresh component, with
    backoff, for as long as this instance leads: a leader must not sit there without the work
    it was elected for. Only a store error is retried while the process starts: anything
    else then (a zone without its KDS token, a wrong CA) is a configuration error, and `cp
    run` must stop at once naming it rather than retry it forever."""

    def __init__(
        self,
        leadership: Leadership,
        name: str,
        make: Callable[[], Component],
        *,
        retry_min_s: float = 0.5,
        retry_max_s: float = 5.0,
    ) -> None:
        self.leadership = leadership
        self.name = f"{name} (leader only)"
        self._make = make
        self.current: Component | None = None
        self.failed_starts = 0
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._lock = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.leadership.on_change(self._changed)
        if self.leadership.is_leader:
            await self._changed(True, starting=True)

    async def stop(self) -> None:
        await self._changed(False)

    async def _changed(self, leading: bool, *, starting: bool = False) -> None:
        if not leading:
            self._cancel_retry()
        async with self._lock:
            if leading and self.current is None:
                if not await self._start_one(raise_unexpected=starting):
                    self._schedule_retry()
            elif not leading and self.current is not None:
                component, self.current = self.current, None
                await component.stop()

    async def _start_one(self, *, raise_unexpected: bool = False) -> bool:
        """Start a fresh component; on failure undo what it started, and re-raise an error
        other than the store's when `raise_unexpected`. Hold `_lock`."""
        component = self._make()
        try:
            await component.start()
        except asyncio.CancelledError:  # stepping down (or shutting down) mid-start
            with contextlib.suppress(Exception):
                await component.stop()
            raise
        except Exception as e:
            self.failed_starts += 1
            if raise_unexpected and not isinstance(e, StoreError):
                with contextlib.suppress(Exception):
                    await component.stop()
                raise
            if isinstance(e, StoreError):  # expected while the database is away: no traceback
                log.warning("starting %s failed (retrying while leading): %s", self.name, e)
            else:
                log.exception("starting %s failed (retrying while leading)", self.name)
            with contextlib.suppress(Exception):
                await component.stop()
            return False
        self.current = component
        return True

    def _schedule_retry(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_forever(), name=f"retry {self.name}")

    def _cancel_retry(self) -> None:
        retry, self._retry = self._retry, None
        if retry is not None and retry is not asyncio.current_task():
            retry.cancel()

    async def _retry_forever(self) -> None:
        delay = self._retry_min_s
        while self.leadership.is_leader:
            await asyncio.sleep(delay)
            async with self._lock:
                if not self.leadership.is_leader or self.current is not None:
                    return
                if await self._start_one():
                    log.info("%s started after %d failed attempts", self.name, self.failed_starts)
                    return
            delay = min(delay * 2, self._retry_max_s)
