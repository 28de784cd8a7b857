"""Fixtures for computed-state tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from zonemesh.runtime.kernel import Runtime
from zonemesh.state.component import ComputedState


@pytest.fixture
async def start_state() -> AsyncIterator[Callable[[Runtime], Awaitable[ComputedState]]]:
    """Start ComputedState components; every one started is stopped at teardown."""
    started: list[ComputedState] = []

    async def start(runtime: Runtime) -> ComputedState:
        state = ComputedState(runtime)
        await state.start()
        started.append(state)
        return state

    yield start
    for state in reversed(started):
        await state.stop()
