"""Fixtures for federation tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from federation_helpers import Federation


@pytest.fixture
async def federation() -> AsyncIterator[Federation]:
    """A global (started by the test) and zones; all stopped at teardown, also on failure."""
    fed = Federation(grace_s=1.0)
    try:
        yield fed
    finally:
        await fed.close()
