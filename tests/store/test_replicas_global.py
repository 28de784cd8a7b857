"""A zone CP given two global instances (`--global-address grpcs://g1,g2`) on one PostgreSQL:
when the one it syncs with is SIGKILLed it connects to the other by itself and keeps syncing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from postgres_server import PostgresServer
from replicas_helpers import is_leader
from support.processes import CpProcess, wait_for

pytestmark = pytest.mark.timeout(180)


def synced_with(zone: CpProcess) -> str | None:
    """The global instance id the zone's KDS client is connected to, if any."""
    try:
        status = zone.api("GET", "/").json()["status"].get("global", "")
    except Exception:
        return None
    match = re.search(r"^connected to .*\(global instance (\w+)\)", status)
    return match.group(1) if match else None


def test_a_zone_moves_to_the_other_global_instance(
    tmp_path: Path, pg_database: str, postgres_server: PostgresServer
) -> None:
    env = {**postgres_server.env(pg_database), "KUMA_MODE": "global"}
    g1 = CpProcess(tmp_path, "--mode", "global", name="g1", store="postgres", env=env)
    g2 = CpProcess(tmp_path, "--mode", "global", name="g2", store="postgres", env=env)
    zone: CpProcess | None = None
    try:
        g1.start()
        g2.start()
        assert is_leader(g1) and not is_leader(g2)
        assert g1.ca_file.read_bytes() == g2.ca_file.read_bytes()
        ids = {g.name: g.api("GET", "/").json()["instanceId"] for g in (g1, g2)}
        token = g1.issue_token("zone", {"zone": "zone1", "validFor": "1h"})
        zone = CpProcess(
            tmp_path,
            *("--mode", "zone", "--zone", "zone1"),
            *("--global-address", f"grpcs://127.0.0.1:{g1.kds_port},127.0.0.1:{g2.kds_port}"),
            name="zone1",
            env={
                "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE": str(g1.ca_file),
                "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_INLINE": token,
            },
        )
        zone.start()
        first = wait_for(lambda: synced_with(zone), timeout=30, message="zone never synced")
        (victim, survivor) = (g1, g2) if first == ids["g1"] else (g2, g1)
        victim.kill()
        moved = wait_for(
            lambda: (s := synced_with(zone)) == ids[survivor.name] and s,
            timeout=60,
            interval=0.2,
            message="the zone did not move to the other global instance",
        )
        assert moved == ids[survivor.name]
        # And keeps syncing: a Mesh created on the surviving global reaches the zone.
        mesh = {"type": "Mesh", "name": "after-failover"}
        assert survivor.as_admin("PUT", "/meshes/after-failover", json=mesh).status_code == 201
        wait_for(
            lambda: zone.api("GET", "/meshes/after-failover").status_code == 200,
            timeout=30,
            message="a Mesh from the surviving global never reached the zone",
        )
    finally:
        if zone is not None:
            zone.kill()
        g2.kill()
        g1.kill()
