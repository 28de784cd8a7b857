"""When to act on a burst of changes: `quiet_s` after the last, but no later than `max_s`
after the first. One rule, used by computed state (`state.component`) and by the xDS
generation scheduler, so that both coalesce bursts the same way."""

from __future__ import annotations

import asyncio
import contextlib
import time


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

    @property
    def pending(self) -> bool:
        return self._first is not None


class DebouncedSignal:
    """A `Debouncer` with an event loop side: `mark()` from callbacks, `await wait_due()` in
    the one consumer task. Other wake-ups (`poke()`) end the wait early without a change."""

    def __init__(self, quiet_s: float, max_s: float) -> None:
        self.debouncer = Debouncer(quiet_s, max_s)
        self._wake = asyncio.Event()

    def mark(self) -> None:
        self.debouncer.change(time.monotonic())
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    def due(self) -> bool:
        """True (and reset) when a marked burst is over."""
        due_in = self.debouncer.due_in(time.monotonic())
        if due_in is not None and due_in <= 0:
            self.debouncer.reset()
            return True
        return False

    async def wait(self) -> None:
        """Until the burst is due or something pokes; returns at once if already due."""
        self._wake.clear()
        timeout = self.debouncer.due_in(time.monotonic())
        if timeout is not None and timeout <= 0:
            return
        # `asyncio.timeout`, not `wait_for`: on Python 3.11, `wait_for` loses a cancellation
        # that arrives as the event is set (the CP's stop sets it as proxies disconnect, then
        # cancels this task, which then waited forever and hung the shutdown).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def wait_due(self) -> None:
        """Until a marked burst is over (then reset)."""
        while not self.due():
            await self.wait()
