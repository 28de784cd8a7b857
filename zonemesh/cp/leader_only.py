"""Running a component only while this instance leads (composition, so it lives in `cp`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from zonemesh.runtime.kernel import Component
from zonemesh.runtime.leadership import Leadership


class LeaderOnly:
    """Runs a component only while this instance leads: a fresh one from `make` on every gain
    (no component needs to be restartable), stopped on losing. `current` is the one running."""

    def __init__(self, leadership: Leadership, name: str, make: Callable[[], Component]) -> None:
        self.leadership = leadership
        self.name = f"{name} (leader only)"
        self._make = make
        self.current: Component | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.leadership.on_change(self._changed)
        if self.leadership.is_leader:
            await self._changed(True)

    async def stop(self) -> None:
        await self._changed(False)

    async def _changed(self, leading: bool) -> None:
        async with self._lock:
            if leading and self.current is None:
                component = self._make()
                await component.start()
                self.current = component
            elif not leading and self.current is not None:
                component, self.current = self.current, None
                await component.stop()
