"""A control plane's PostgreSQL connection cut in the middle of a write (`cp run` on a real
PostgreSQL): the API answers 503 naming the database, nothing is half-written, `/ready` says
not-ready while the database is away, and the next write works once it is back, without a
restart.

The write is held open deterministically: a second session holds `resource_events` locked,
so the control plane's write transaction has taken its revision and inserted the resource
but waits to log its change. Then that backend is terminated (`pg_terminate_backend`), or
the whole server is stopped and started again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from postgres_server import PostgresServer
from replicas_helpers import dataplane, vip_of
from support.processes import CpProcess, wait_for

pytestmark = pytest.mark.timeout(180)

BLOCKED_WRITE = (
    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
    "AND query LIKE '%%INSERT INTO resource_events%%'"
)


@contextmanager
def change_log_locked(server: PostgresServer, db: str) -> Iterator[psycopg.Connection]:
    """Until the block ends, every write waits before logging its change (in its transaction)."""
    conn = server.admin(db)
    try:
        conn.execute("BEGIN")
        conn.execute("LOCK TABLE resource_events IN EXCLUSIVE MODE")
        yield conn
    finally:
        with contextlib.suppress(psycopg.Error):  # the server may have gone with it
            conn.execute("ROLLBACK")
        conn.close()


class PendingPut:
    """A PUT in a thread of its own: it blocks until its write fails or commits."""

    def __init__(self, cp: CpProcess, path: str, doc: dict[str, object]) -> None:
        self.response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._put, args=(cp, path, doc))
        self._thread.start()

    def _put(self, cp: CpProcess, path: str, doc: dict[str, object]) -> None:
        self.response = httpx.put(f"{cp.url}{path}", json=doc, timeout=60)

    def result(self) -> httpx.Response:
        self._thread.join(timeout=60)
        assert self.response is not None, "the PUT never answered"
        return self.response


def blocked_backend(server: PostgresServer, db: str) -> int | None:
    with server.admin() as conn:
        rows = conn.execute(BLOCKED_WRITE, (db,)).fetchall()  # type: ignore[arg-type]
    return int(rows[0][0]) if len(rows) == 1 else None


def assert_nothing_half_written(server: PostgresServer, db: str, name: str) -> None:
    """No resource row, no change-log row, and the revision counter without a gap."""
    assert server.execute(db, f"SELECT 1 FROM resources WHERE name = '{name}'") == []
    assert server.execute(db, f"SELECT 1 FROM resource_events WHERE name = '{name}'") == []
    [(revision, logged)] = server.execute(
        db,
        "SELECT (SELECT revision FROM store_revision), "
        "(SELECT coalesce(max(revision), 0) FROM resource_events)",
    )
    assert revision == logged


def assert_names_the_database(response: httpx.Response, server: PostgresServer, db: str) -> None:
    assert response.status_code == 503, response.text
    assert "Traceback" not in response.text
    detail = response.json()["detail"]
    assert f'PostgreSQL at 127.0.0.1:{server.port} (database "{db}"' in detail, detail
    assert "Mesh" in detail and "cut" in detail, detail  # what was being written


@pytest.fixture
def cp(tmp_path: Path, pg_database: str, postgres_server: PostgresServer) -> Iterator[CpProcess]:
    env = postgres_server.env(pg_database)
    process = CpProcess(tmp_path, "--grpc-plaintext", name="cp", store="postgres", env=env)
    try:
        process.start()
        yield process
    finally:
        process.kill()


MESH = {"type": "Mesh", "name": "cut"}
DATAPLANE = dataplane("after", "after")


def test_a_write_whose_connection_is_terminated_answers_503_and_the_next_one_works(
    cp: CpProcess, pg_database: str, postgres_server: PostgresServer
) -> None:
    with change_log_locked(postgres_server, pg_database):
        pending = PendingPut(cp, "/meshes/cut", MESH)
        pid = wait_for(
            lambda: blocked_backend(postgres_server, pg_database),
            timeout=20,
            message="the write never reached the locked change log",
        )
        postgres_server.execute(pg_database, f"SELECT pg_terminate_backend({pid})")
        response = pending.result()
    assert_names_the_database(response, postgres_server, pg_database)
    assert "terminating connection" in response.json()["detail"]
    assert_nothing_half_written(postgres_server, pg_database, "cut")
    assert cp.api("GET", "/meshes/cut").status_code == 404  # nor in the instance's copy

    # The database never went away: the instance stays ready, and the next write works on a
    # fresh connection (the pool dropped the dead one).
    assert cp.api("GET", "/ready").status_code == 200
    assert cp.api("PUT", "/meshes/cut", json=MESH).status_code == 201
    assert postgres_server.execute(pg_database, "SELECT 1 FROM resources WHERE name = 'cut'")
    assert "Traceback" not in cp.log.read_text()


def test_a_write_cut_by_a_database_restart_answers_503_and_the_instance_recovers_alone(
    cp: CpProcess, pg_database: str, postgres_server: PostgresServer
) -> None:
    try:
        with change_log_locked(postgres_server, pg_database):
            pending = PendingPut(cp, "/meshes/cut", MESH)
            wait_for(
                lambda: blocked_backend(postgres_server, pg_database),
                timeout=20,
                message="the write never reached the locked change log",
            )
            postgres_server.stop()  # fast shutdown: every session ends, mid-transaction too
        response = pending.result()
        assert_names_the_database(response, postgres_server, pg_database)

        ready = wait_for(
            lambda: (r := cp.api("GET", "/ready")).status_code == 503 and r,
            timeout=20,
            message="/ready never said not-ready while the database was down",
        )
        assert f"127.0.0.1:{postgres_server.port}" in ready.json()["detail"]
        assert cp.api("GET", "/meshes/default").status_code == 200  # reads keep being served
        again = cp.api("PUT", "/meshes/cut", json=MESH)
        assert again.status_code == 503 and "Traceback" not in again.text
    finally:
        if not postgres_server.running:
            postgres_server.start()

    wait_for(
        lambda: cp.api("GET", "/ready").status_code == 200,
        timeout=30,
        message="/ready never recovered after the database came back",
    )
    assert_nothing_half_written(postgres_server, pg_database, "cut")
    assert cp.api("GET", "/meshes/cut").status_code == 404
    assert cp.api("PUT", "/meshes/cut", json=MESH).status_code == 201
    wait_for(lambda: cp.api("GET", "/meshes/cut").status_code == 200, timeout=10)
    # The leader-only work resumed too (it may have failed to start while the pool was still
    # reconnecting): a new Dataplane's service gets its MeshService and a VIP.
    assert cp.api("PUT", "/meshes/default/dataplanes/after", json=DATAPLANE).status_code == 201
    wait_for(
        lambda: vip_of(cp, "after"),
        timeout=20,
        message="computed state did not resume after the database came back",
    )
    assert "Traceback" not in cp.log.read_text()
