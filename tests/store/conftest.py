"""A real PostgreSQL for the store tests, started once per session (skipped without it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from postgres_server import PostgresServer, find_bindir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (initdb under /usr/lib/postgresql/*/bin or on "
            "PATH): install Debian's postgresql package (scripts/test.sh does, with apt-get)"
        )
    server = PostgresServer(bindir)
    try:
        server.init()
        server.start()
        server.prepare()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A migrated database for one test; the server is running again afterwards."""
    yield postgres_server.new_database()
    if not postgres_server.running:
        postgres_server.start()
