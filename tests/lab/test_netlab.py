"""The network lab itself: sealed from the host, partitions that really drop, and nothing
left behind - also when the process that built it is SIGKILLed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.netlab import requires_lab

from zonemesh.lab.netns import NetLab, sweep

pytestmark = [requires_lab(), pytest.mark.timeout(60)]

PROBE = str(Path(__file__).parent.parent / "tproxy" / "redirect_probe.py")


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def reach(lab: NetLab, src: str, dst: str) -> bool:
    """Can `src` open a TCP connection to a listener in `dst`?"""
    address = lab.namespaces[dst].address
    listener = subprocess.Popen(
        lab.namespaces[dst].exec_args([sys.executable, PROBE, "catch", "tcp", "7000"]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        answer = lab.run(src, [sys.executable, PROBE, "dial", "tcp", address, "7000"]).stdout
        return answer.startswith("caught")
    finally:
        listener.kill()
        listener.wait()


def test_the_lab_has_no_interface_in_the_host_namespace_and_goes_away() -> None:
    links, before = host_links(), namespaces()
    with NetLab() as lab:
        lab.add_segment("zone1", 1)
        lab.add_segment("zone2", 2)
        lab.add_namespace("a", "zone1", 11)
        lab.add_namespace("b", "zone2", 11)
        assert host_links() == links  # not one veth, bridge or anything else out here
        created = namespaces() - before
        assert len(created) == 3 and all(n.startswith(f"zmlab{os.getpid()}-") for n in created)
        # The only way out of a member is its veth to the router, which has no other.
        routes = lab.run("a", ["ip", "route"]).stdout
        assert "default via 10.213.1.1 dev eth0" in routes
        router_links = subprocess.run(
            ["ip", "-n", lab.router, "-o", "link"], capture_output=True, text=True
        ).stdout
        peers = re.findall(r"link-netns (\S+)", router_links)
        assert sorted(peers) == sorted(ns.name for ns in lab.namespaces.values())
        for ns in lab.namespaces.values():
            member = lab.run(ns.role, ["ip", "-o", "link"]).stdout
            assert re.findall(r"link-netns (\S+)", member) == [lab.router]
        assert reach(lab, "a", "b")
    assert namespaces() == before
    assert not any(Path("/etc/netns").glob(f"zmlab{os.getpid()}-*"))


def test_a_partition_drops_between_two_zones_until_healed() -> None:
    with NetLab() as lab:
        lab.add_segment("zone1", 1)
        lab.add_segment("zone2", 2)
        lab.add_segment("global", 0)
        lab.add_namespace("a", "zone1", 11)
        lab.add_namespace("b", "zone2", 11)
        lab.add_namespace("g", "global", 2)
        lab.partition("zone1", "zone2")
        assert not reach(lab, "a", "b")
        assert not reach(lab, "b", "a")
        assert reach(lab, "a", "g") and reach(lab, "b", "g")  # only that pair is cut
        lab.heal("zone1", "zone2")
        assert reach(lab, "a", "b")


def test_a_sigkilled_lab_is_swept_with_what_ran_inside() -> None:
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from zonemesh.lab.netns import NetLab
        lab = NetLab()
        lab.add_segment("s", 5)
        ns = lab.add_namespace("w", "s", 10)
        sleeper = subprocess.Popen(ns.exec_args(["sleep", "300"]), start_new_session=True)
        print(ns.name, sleeper.pid, flush=True)
        time.sleep(300)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    name, sleeper = child.stdout.readline().split()
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert name in namespaces()  # left behind, and the sleeper still runs inside
    os.kill(int(sleeper), 0)
    removed = sweep()
    assert name in removed and f"zmlab{child.pid}-router" in removed
    assert not {n for n in namespaces() if n.startswith(f"zmlab{child.pid}-")}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(int(sleeper), 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{sleeper}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    else:
        pytest.fail(f"process {sleeper} still runs after the sweep")
