"""Debounced pushes: a burst of changes becomes one generation pass."""

from __future__ import annotations

import asyncio

import pytest
from test_xds_harness import eventually, mesh_service_doc, running_xds

from zonemesh.envoy_types import CLUSTER
from zonemesh.resources.base import ResourceKey
from zonemesh.runtime.debounce import DebouncedSignal, Debouncer


def test_push_waits_for_quiet_but_not_longer_than_the_maximum() -> None:
    d = Debouncer(quiet_s=0.1, max_s=1.0)
    assert d.due_in(0.0) is None  # nothing changed
    d.change(0.0)
    assert d.due_in(0.0) == 0.1
    d.change(0.05)
    assert abs(d.due_in(0.05) - 0.1) < 1e-9  # a new change restarts the quiet period
    for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        d.change(t)  # a steady trickle ...
    assert abs(d.due_in(0.95) - 0.05) < 1e-9  # ... is still pushed 1 s after the first
    d.reset()
    assert d.due_in(2.0) is None


async def test_a_burst_of_changes_is_one_generation_pass() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_sotw("dp-1")
        key = ResourceKey("Dataplane", "default", "dp-1")
        await eventually(lambda: h.server.generations >= 1, "initial pass")
        passes = h.server.generations
        for i in range(50):  # no await yields to the server between these writes
            await h.apply(mesh_service_doc(f"svc-{i}"))
        update = await c.recv_type(CLUSTER)
        assert len(update.resources) == 51  # all 50 services and the local cluster at once
        assert h.server.generations == passes + 1
        assert h.server.cache.get(key) is not None


async def test_a_signal_wait_cancelled_as_it_is_woken_ends_cancelled() -> None:
    """The CP's stop wakes the scheduler (proxies disconnect) and cancels it in the same
    breath: a cancellation the task accepted must end it, or the stop waits for that task
    forever (`asyncio.wait_for` on Python 3.11 lost it one loop step after the wake-up)."""
    for steps in range(4):  # loop steps between the wake-up and the cancellation
        signal = DebouncedSignal(quiet_s=10.0, max_s=10.0)
        signal.mark()  # a burst pending: the wait has a deadline
        task = asyncio.create_task(signal.wait())
        for _ in range(3):
            await asyncio.sleep(0)  # until it waits on the event
        signal.poke()
        for _ in range(steps):
            await asyncio.sleep(0)
        if task.cancel():  # still running: the cancellation must end it
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            assert task.done() and not task.cancelled()
