"""`zonemesh install/uninstall transparent-proxy` in a real network namespace of the lab:
the rules iptables holds, and where real connections and DNS datagrams end up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.netlab import requires_lab

from zonemesh.lab.netns import NetLab

pytestmark = [requires_lab(), pytest.mark.timeout(90)]

ZONEMESH = str(Path(sys.executable).parent / "zonemesh")
PROBE = str(Path(__file__).with_name("redirect_probe.py"))
NOWHERE = "10.213.99.200"  # routed out of the namespace, nobody there
NAMESERVER = "10.213.99.53"


@pytest.fixture
def lab() -> Iterator[NetLab]:
    with NetLab() as lab:
        lab.add_segment("s", 99)
        lab.add_namespace("w", "s", 10, resolver=NAMESERVER)
        yield lab


def zonemesh(
    lab: NetLab, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return lab.run("w", [ZONEMESH, *args], env=env or dict(os.environ), timeout=30)


def nat(lab: NetLab) -> str:
    """The nat table's rules (no counters, no comments lines)."""
    out = lab.run("w", ["iptables-save", "-t", "nat"]).stdout
    lines = [line for line in out.splitlines() if line and not line.startswith("#")]
    return re.sub(r"\[\d+:\d+\]", "[-]", "\n".join(lines))


class Catcher:
    def __init__(self, lab: NetLab, proto: str, port: int) -> None:
        self.proc = subprocess.Popen(
            lab.namespaces["w"].exec_args([sys.executable, PROBE, "catch", proto, str(port)]),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def catchers(lab: NetLab) -> Iterator[None]:
    started = [Catcher(lab, "tcp", 15001), Catcher(lab, "udp", 15053), Catcher(lab, "tcp", 15053)]
    try:
        yield
    finally:
        for catcher in started:
            catcher.close()


def dial(lab: NetLab, proto: str, host: str, port: int, *, as_: list[str] | None = None) -> str:
    command = [*(as_ or []), sys.executable, PROBE, "dial", proto, host, str(port)]
    return lab.run("w", command, timeout=10).stdout.strip()


DP_GROUP = ["setpriv", "--groups", "5678", "--"]
NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--"]


def test_app_tcp_is_redirected_and_the_data_plane_group_is_not(lab: NetLab, catchers: None) -> None:
    assert dial(lab, "tcp", NOWHERE, 80).startswith("not caught")  # before: nothing
    result = zonemesh(lab, "install", "transparent-proxy", "--exclude-outbound-ports", "8080")
    assert result.returncode == 0, result.stderr
    assert "installed" in result.stdout
    assert dial(lab, "tcp", NOWHERE, 80) == f"caught {NOWHERE}:80"
    assert dial(lab, "tcp", "243.0.0.1", 1027) == "caught 243.0.0.1:1027"  # a VIP
    assert dial(lab, "tcp", NOWHERE, 80, as_=DP_GROUP).startswith("not caught")
    assert dial(lab, "tcp", NOWHERE, 8080).startswith("not caught")  # excluded port
    # DNS is left alone without --redirect-dns.
    assert dial(lab, "udp", NAMESERVER, 53).startswith("not caught")


def test_kuma_dp_user_is_let_through_and_everyone_else_redirected(
    lab: NetLab, catchers: None
) -> None:
    result = zonemesh(lab, "install", "transparent-proxy", "--kuma-dp-user", "nobody")
    assert result.returncode == 0, result.stderr
    assert dial(lab, "tcp", NOWHERE, 80, as_=NOBODY).startswith("not caught")
    assert dial(lab, "tcp", NOWHERE, 80) == f"caught {NOWHERE}:80"


def test_redirect_dns_sends_udp_and_tcp_53_of_the_nameserver_to_the_resolver(
    lab: NetLab, catchers: None
) -> None:
    result = zonemesh(lab, "install", "transparent-proxy", "--redirect-dns")
    assert result.returncode == 0, result.stderr
    assert dial(lab, "udp", NAMESERVER, 53) == "caught udp"
    assert dial(lab, "tcp", NAMESERVER, 53) == f"caught {NAMESERVER}:53"
    # The data plane's own queries (its resolver forwarding) go out untouched.
    assert dial(lab, "udp", NAMESERVER, 53, as_=DP_GROUP).startswith("not caught")


def test_install_is_idempotent_and_uninstall_restores_the_table(lab: NetLab) -> None:
    before = nat(lab)
    assert zonemesh(lab, "install", "transparent-proxy", "--redirect-dns").returncode == 0
    once = nat(lab)
    again = zonemesh(lab, "install", "transparent-proxy", "--redirect-dns")
    assert again.returncode == 0 and "reinstalled" in again.stdout
    assert nat(lab) == once  # replaced, not duplicated
    assert len(re.findall(r"-j ZONEMESH_OUTPUT", once)) == 1
    assert "ZONEMESH_OUTPUT" in once and "REDIRECT --to-ports 15001" in once
    result = zonemesh(lab, "uninstall", "transparent-proxy")
    assert result.returncode == 0 and "uninstalled" in result.stdout
    assert nat(lab) == before
    result = zonemesh(lab, "uninstall", "transparent-proxy")
    assert result.returncode == 0 and "no transparent proxy installed" in result.stdout


@pytest.mark.parametrize(
    ("setup", "named"),
    [
        (["iptables", "-t", "nat", "-N", "KUMA_MESH_OUTBOUND"], "Kuma"),
        (["iptables", "-t", "nat", "-N", "ISTIO_OUTPUT"], "Istio"),
        (
            [
                "iptables",
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                "15001",
            ],
            "a REDIRECT rule not installed by zonemesh",
        ),
    ],
    ids=["kuma", "istio", "redirect"],
)
def test_rules_of_another_tool_are_refused_naming_them(
    lab: NetLab, setup: list[str], named: str
) -> None:
    assert lab.run("w", setup).returncode == 0
    before = nat(lab)
    result = zonemesh(lab, "install", "transparent-proxy")
    assert result.returncode == 1
    assert "refusing to install" in result.stderr and named in result.stderr
    assert nat(lab) == before  # nothing changed


def test_dry_run_prints_the_rules_and_changes_nothing(lab: NetLab) -> None:
    before = nat(lab)
    result = zonemesh(lab, "install", "transparent-proxy", "--dry-run", "--redirect-dns")
    assert result.returncode == 0, result.stderr
    assert "-A ZONEMESH_OUTPUT" in result.stdout and f"-d {NAMESERVER}/32" in result.stdout
    assert nat(lab) == before


def test_without_root_it_says_so(lab: NetLab) -> None:
    result = lab.run("w", [*NOBODY, ZONEMESH, "install", "transparent-proxy"], env=dict(os.environ))
    assert result.returncode == 1
    assert "needs root" in result.stderr


def test_without_iptables_it_says_so(lab: NetLab, tmp_path: Path) -> None:
    result = zonemesh(
        lab, "install", "transparent-proxy", env={**os.environ, "PATH": str(tmp_path)}
    )
    assert result.returncode == 1
    assert "iptables-save and iptables-restore are needed" in result.stderr


def test_bad_flags_are_refused(lab: NetLab) -> None:
    result = zonemesh(lab, "install", "transparent-proxy", "--exclude-outbound-ports", "22,x")
    assert result.returncode == 2 and "'x' is not a port" in result.stderr
    result = zonemesh(
        lab, "install", "transparent-proxy", "--redirect-dns", "--redirect-all-dns-traffic"
    )
    assert result.returncode == 2 and "exclude each other" in result.stderr
