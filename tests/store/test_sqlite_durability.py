"""What the SQLite store promises beyond the interface: state outlives the process."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from store_samples import dataplane, mesh, meshservice, meshservice_doc, mmzs, zone

from zonemesh.resources.base import ResourceKey
from zonemesh.store.base import EventKind, StoreError
from zonemesh.store.sqlite import DataDirInUseError, SqliteStore

HERE = Path(__file__).parent
TYPES = ("Mesh", "Zone", "Dataplane", "MeshService", "MeshMultiZoneService")


async def snapshot(store: SqliteStore) -> dict[str, list]:
    return {t: await store.list(t) for t in TYPES}


async def test_reopen_keeps_resources_versions_status_values_and_revision(tmp_path: Path) -> None:
    db = tmp_path / "zonemesh.db"
    store = SqliteStore(db)
    sub = store.subscribe()
    await store.create(mesh("default"))
    await store.create(zone("z1"))
    await store.create(dataplane("dp-1"))
    service = await store.create(mmzs("echo", vip="243.0.0.4"))
    service = await store.update(service.with_(labels={"team": "core"}))
    service = await store.update(service)
    gone = await store.create(meshservice("gone"))
    await store.delete(gone.key)
    await store.set_value("ipam.mmzs", "243.0.0.4")
    before = await snapshot(store)
    last_revision = sub.drain()[-1].revision
    await store.close()

    reopened = SqliteStore(db)
    try:
        assert await snapshot(reopened) == before  # same versions, timestamps, specs, status
        got = await reopened.get(service.key)
        assert got.version == 3
        assert got.labels == {"team": "core"}
        assert [v.ip for v in got.status.vips] == ["243.0.0.4"]
        assert await reopened.find(gone.key) is None
        assert await reopened.get_value("ipam.mmzs") == "243.0.0.4"

        # A version read before the restart is still the current one.
        sub = reopened.subscribe()
        updated = await reopened.update(service)
        assert updated.version == 4
        assert updated.creation_time == service.creation_time
        [event] = sub.drain()
        assert event.kind is EventKind.UPDATED
        assert event.revision == last_revision + 1
    finally:
        await reopened.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[2])
    from store_samples import meshservice_doc
    from zonemesh.resources.codec import resource_from_wire
    from zonemesh.store.sqlite import SqliteStore

    async def main() -> None:
        store = SqliteStore(Path(sys.argv[1]))
        i = 0
        while True:
            doc = meshservice_doc(f"svc-{i}", port=1000 + i)
            created = await store.create(resource_from_wire(doc))
            doc["status"] = {"vips": [{"ip": f"241.0.{i // 250}.{i % 250 + 1}"}]}
            status = resource_from_wire(doc, keep_status=True).status
            await store.update(created.with_(status=status))
            await store.set_value("cursor", str(i))
            print(f"svc-{i}", flush=True)
            i += 1

    asyncio.run(main())
    """
)


async def test_everything_acknowledged_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "zonemesh.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(HERE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 150:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"the writer exited early: {child.stderr.read()}")
            acknowledged.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)  # while it keeps writing
        child.wait()
        # Lines it printed before dying but that we had not read yet are acknowledged too.
        rest = child.stdout.read()
        acknowledged += [line for line in rest.split("\n")[:-1] if line]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    store = SqliteStore(db)  # the dead writer's lock went with it
    try:
        for i, name in enumerate(acknowledged):
            got = await store.get(ResourceKey("MeshService", "default", name))
            assert got.version == 2, name
            assert got.spec.ports[0].port == 1000 + i
            assert got.labels["kuma.io/display-name"] == name
            assert [v.ip for v in got.status.vips] == [f"241.0.{i // 250}.{i % 250 + 1}"]
        assert int(await store.get_value("cursor")) >= len(acknowledged) - 1
        # Nothing beyond the one write in flight at the kill, and nothing half-written.
        stored = await store.list("MeshService")
        assert len(stored) in (len(acknowledged), len(acknowledged) + 1)
        assert {r.name for r in stored} >= set(acknowledged)

        sub = store.subscribe()
        await store.create(meshservice("after-crash"))
        assert sub.drain()[0].revision > 2 * len(acknowledged)  # revision kept increasing
    finally:
        await store.close()


async def test_second_opener_in_this_process_gets_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "zonemesh.db"
    first = SqliteStore(db)
    await first.create(mesh("default"))
    try:
        with pytest.raises(DataDirInUseError) as e:
            SqliteStore(db)
        assert str(e.value) == (
            f"data directory {tmp_path} is in use by another zonemesh control plane "
            f"(pid {os.getpid()})"
        )
        # The failed opener left the holder alone.
        await first.create(mesh("other"))
    finally:
        await first.close()

    second = SqliteStore(db)  # close() released the lock
    try:
        assert [r.name for r in await second.list("Mesh")] == ["default", "other"]
    finally:
        await second.close()


async def test_second_process_gets_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "zonemesh.db"
    first = SqliteStore(db)
    try:
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys\n"
                "from pathlib import Path\n"
                "from zonemesh.store.sqlite import SqliteStore\n"
                "try:\n"
                "    SqliteStore(Path(sys.argv[1]))\n"
                "except Exception as e:\n"
                "    print(e)\n"
                "    sys.exit(3)\n",
                str(db),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        await first.close()
    assert probe.returncode == 3, probe.stderr
    assert probe.stdout.strip() == (
        f"data directory {tmp_path} is in use by another zonemesh control plane (pid {os.getpid()})"
    )


async def test_unreadable_rows_are_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "zonemesh.db"
    store = SqliteStore(db)
    good = await store.create(meshservice("good"))
    await store.create(meshservice("bad-json"))
    await store.create(meshservice("from-newer"))
    await store.close()

    newer = meshservice_doc("from-newer")
    newer["spec"]["futureField"] = {"enabled": True}
    future_type = {"type": "MeshFutureThing", "mesh": "default", "name": "x", "spec": {}}
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE resources SET document = '{not json' WHERE name = 'bad-json'")
        conn.execute(
            "UPDATE resources SET document = ? WHERE name = 'from-newer'", (json.dumps(newer),)
        )
        conn.execute(
            "INSERT INTO resources VALUES ('MeshFutureThing', 'default', 'x', 1, ?, ?, ?)",
            (json.dumps(future_type), "2030-01-01T00:00:00+00:00", "2030-01-01T00:00:00+00:00"),
        )
    conn.close()

    caplog.set_level(logging.WARNING, logger="zonemesh.store")
    reopened = SqliteStore(db)
    try:
        assert await reopened.list("MeshService") == [good]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        for key in ("MeshService/default/bad-json", "MeshService/default/from-newer"):
            assert any(key in w for w in warnings), (key, warnings)
        assert any("MeshFutureThing/default/x" in w for w in warnings), warnings
        assert any("futureField" in w for w in warnings), warnings

        # The key of a skipped row can be written again, and then reads back after a restart.
        replaced = await reopened.create(meshservice("bad-json", port=4000))
        assert replaced.version == 1
    finally:
        await reopened.close()

    again = SqliteStore(db)
    try:
        got = await again.get(ResourceKey("MeshService", "default", "bad-json"))
        assert got.spec.ports[0].port == 4000
    finally:
        await again.close()


async def test_database_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "zonemesh.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=99")
    conn.close()

    with pytest.raises(StoreError, match="newer zonemesh"):
        SqliteStore(db)
    # The refusal released the lock: the next attempt fails the same way, not "in use".
    with pytest.raises(StoreError, match="newer zonemesh"):
        SqliteStore(db)


async def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path: Path) -> None:
    db = tmp_path / "zonemesh.db"
    db.write_text("these are not the pages you are looking for\n" * 200)

    with pytest.raises(StoreError, match=f"cannot open {db}"):
        SqliteStore(db)


async def test_writes_after_close_fail_clearly(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "zonemesh.db")
    await store.close()
    await store.close()  # closing twice is harmless

    with pytest.raises(StoreError, match="closed"):
        await store.create(mesh("default"))
    with pytest.raises(StoreError, match="closed"):
        await store.set_value("k", "v")
