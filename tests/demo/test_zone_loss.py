"""A lost zone, as the DR demo makes one: every process group of the zone SIGKILLed at once,
grandchildren (a `dp run`'s Envoy) included, and each process startable again afterwards."""

from __future__ import annotations

import time
from pathlib import Path

from zonemesh.demo.processes import ProcessGroup

# A parent that leaves a child of its own running, as `dp run` does with its Envoy.
WITH_CHILD = ["/bin/sh", "-c", "sleep 60 & sleep 60; wait"]


def pgid_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])


def test_kill_takes_every_named_process_group_and_leaves_the_rest(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path) as group:
        for name in ("cp-zone1", "gateway-zone1-dp", "cp-zone2"):
            group.add(name, [], program=WITH_CHILD)
            group.start(name)
        group.wait_until(
            "every child's own children started",
            lambda: all(
                sum(1 for pid in group.pids() if pgid_of(pid) == group[n].pid) == 3
                for n in group.procs
            ),
        )
        survivor = group["cp-zone2"].pid

        group.kill("cp-zone1", "gateway-zone1-dp")

        assert group["cp-zone1"].returncode == -9
        assert group["gateway-zone1-dp"].returncode == -9
        assert group.running() == ["cp-zone2"]
        # Only cp-zone2's group is left: the killed groups' children die with them (a moment
        # later: they are not our children, nobody waits for them).
        group.wait_until(
            "only cp-zone2's processes left",
            lambda: {pgid_of(pid) for pid in group.pids()} == {survivor},
            timeout=10,
        )

        group.start("cp-zone1")  # comes back on the same command line
        assert group["cp-zone1"].running and group["cp-zone1"].starts == 2
    deadline = time.monotonic() + 10
    while group.pids() and time.monotonic() < deadline:  # killed stragglers, a moment later
        time.sleep(0.05)
    assert not group.pids()
