"""Leader-only work whose start fails (the database is not back for the store's pool yet when
the leader lock is) is retried for as long as the instance leads, and what a failed start set
up is undone: a leader never sits there without the work it was elected for."""

from __future__ import annotations

import asyncio

import pytest

from zonemesh.cp.leader_only import LeaderOnly
from zonemesh.runtime.leadership import Leadership
from zonemesh.store.base import StoreUnavailableError

pytestmark = pytest.mark.timeout(30)


class FlakyStart:
    """Fails its first `failures` starts (across instances) after setting something up."""

    name = "flaky"
    attempts = 0
    running: set[int] = set()

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.ident = FlakyStart.attempts

    async def start(self) -> None:
        FlakyStart.attempts += 1
        FlakyStart.running.add(self.ident)
        if FlakyStart.attempts <= self.failures:
            raise StoreUnavailableError("reading value 'ipam.meshservice' failed: no connection")

    async def stop(self) -> None:
        FlakyStart.running.discard(self.ident)


class Switchable(Leadership):
    async def switch(self, leading: bool) -> None:
        await self._set(leading)


async def test_a_failed_start_is_undone_and_retried_while_leading() -> None:
    FlakyStart.attempts, FlakyStart.running = 0, set()
    leadership = Switchable(leading=True)
    component = LeaderOnly(
        leadership, "flaky", lambda: FlakyStart(failures=3), retry_min_s=0.01, retry_max_s=0.05
    )
    await component.start()
    assert component.current is None  # the first start failed ...
    for _ in range(500):
        if component.current is not None:
            break
        await asyncio.sleep(0.01)
    assert component.current is not None  # ... and a later one took over
    assert FlakyStart.attempts == 4 and component.failed_starts == 3
    assert FlakyStart.running == {component.current.ident}  # the failed ones were stopped
    await leadership.switch(False)
    assert component.current is None and FlakyStart.running == set()
    await component.stop()


async def test_losing_leadership_stops_the_retries() -> None:
    FlakyStart.attempts, FlakyStart.running = 0, set()
    leadership = Switchable(leading=True)
    component = LeaderOnly(
        leadership, "flaky", lambda: FlakyStart(failures=10**6), retry_min_s=0.01, retry_max_s=0.01
    )
    await component.start()
    await asyncio.sleep(0.1)
    await leadership.switch(False)
    tried = FlakyStart.attempts
    await asyncio.sleep(0.1)
    assert FlakyStart.attempts == tried and component.current is None
    assert FlakyStart.running == set()
    await component.stop()
