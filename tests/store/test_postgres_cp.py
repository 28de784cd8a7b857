"""`zonemesh cp migrate up` and `zonemesh cp run --store postgres` as real processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from postgres_server import PASSWORD, ROLE, PostgresServer, free_port
from support.processes import ZONEMESH, CpProcess, wait_for


def migrate_up(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ZONEMESH, "cp", "migrate", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cp_process(tmp_path: Path, env: dict[str, str], name: str = "cp") -> CpProcess:
    return CpProcess(tmp_path, "--grpc-plaintext", name=name, store="postgres", env=env)


def refused_start(tmp_path: Path, env: dict[str, str]) -> str:
    """Start `cp run`, expect it to exit non-zero by itself; its output."""
    cp = cp_process(tmp_path, env, name="refused")
    cp.start(wait=False)
    assert cp.proc is not None
    try:
        code = cp.proc.wait(timeout=30)
    finally:
        cp.kill()
    output = cp.log.read_text()
    assert code != 0, output
    assert "Traceback" not in output
    return output


def ready(cp: CpProcess) -> tuple[int, str]:
    response = cp.api("GET", "/ready")
    return response.status_code, response.text


def test_migrate_then_run_keeps_state_and_ready_follows_the_database(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    db = postgres_server.new_database(migrated=False)
    env = {**os.environ, **postgres_server.env(db)}

    first = migrate_up(env)
    assert first.returncode == 0, first.stderr
    assert "schema migrated from version 0 to 2" in first.stdout
    again = migrate_up(env)
    assert again.returncode == 0 and "the schema is up to date (version 2)" in again.stdout

    cp = cp_process(tmp_path, env).start()
    try:
        mesh = {"type": "Mesh", "name": "payments"}
        assert cp.api("PUT", "/meshes/payments", json=mesh).status_code == 201
        assert cp.terminate() == 0
        cp.start()
        assert cp.api("GET", "/meshes/payments").status_code == 200
        effective = cp.api("GET", "/config").json()["store"]
        assert effective["type"] == "postgres" and effective["postgres"]["dbName"] == db
        assert effective["postgres"]["password"] == "**********"

        postgres_server.stop()
        _, body = wait_for(
            lambda: (r := ready(cp))[0] == 503 and r, timeout=15, message="/ready says 503"
        )
        assert "the store is not available" in body
        assert f"127.0.0.1:{postgres_server.port}" in body and PASSWORD not in body
        # Meanwhile what it knew is still served; a write fails instead of hanging.
        assert cp.api("GET", "/meshes/payments").status_code == 200
        refused = cp.api("PUT", "/meshes/later", json={"type": "Mesh", "name": "later"})
        assert refused.status_code == 503
        assert f"127.0.0.1:{postgres_server.port}" in refused.json()["detail"]

        postgres_server.start()
        wait_for(lambda: ready(cp)[0] == 200, timeout=20, message="/ready back to 200")
        assert cp.api("PUT", "/meshes/later", json={"type": "Mesh", "name": "later"}).is_success
    finally:
        if not postgres_server.running:
            postgres_server.start()
        assert cp.terminate() == 0
    assert [
        r[0]
        for r in postgres_server.execute(
            db, "SELECT name FROM resources WHERE type = 'Mesh' ORDER BY name"
        )
    ] == [
        "default",
        "later",
        "payments",
    ]


def test_a_newer_schema_is_refused_by_run_and_by_migrate(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    db = postgres_server.new_database()
    postgres_server.execute(
        db, "INSERT INTO schema_version (version, description) VALUES (3, 'from the future')"
    )
    env = {**os.environ, **postgres_server.env(db)}
    expected = "the database schema is version 3, this zonemesh knows up to 2: upgrade zonemesh"

    assert expected in refused_start(tmp_path, env)
    migrated = migrate_up(env)
    assert migrated.returncode != 0 and expected in migrated.stderr


@pytest.mark.parametrize("problem", ["wrong password", "no schema", "nothing listening"])
def test_run_refuses_to_start_naming_the_problem(
    tmp_path: Path, postgres_server: PostgresServer, problem: str
) -> None:
    db = postgres_server.new_database(migrated=problem != "no schema")
    env = {**os.environ, **postgres_server.env(db)}
    port = postgres_server.port
    if problem == "wrong password":
        env["KUMA_STORE_POSTGRES_PASSWORD"] = "not-the-password"
    if problem == "nothing listening":
        port = free_port()
        env["KUMA_STORE_POSTGRES_PORT"] = str(port)

    output = refused_start(tmp_path, env)

    assert f'PostgreSQL at 127.0.0.1:{port} (database "{db}", user "{ROLE}")' in output
    assert "not-the-password" not in output and PASSWORD not in output
    assert {
        "wrong password": f'password authentication failed for user "{ROLE}"',
        "no schema": "has no zonemesh schema: run `zonemesh cp migrate up`",
        "nothing listening": "Connection refused",
    }[problem] in output
