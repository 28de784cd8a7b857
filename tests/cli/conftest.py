"""A fresh API server per test (in a thread), for the client commands to talk to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_helpers import ThreadedCp


@pytest.fixture
def cp() -> Iterator[ThreadedCp]:
    server = ThreadedCp()
    server.start()
    yield server
    server.stop()
