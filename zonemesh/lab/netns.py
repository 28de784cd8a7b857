"""A network lab made of Linux network namespaces, sealed from the host.

Every namespace is created by the lab and wired only to other lab namespaces: each member
gets one veth whose other end sits in the lab's router namespace, on the bridge of its
segment (a zone). Both ends of a pair are created directly in their namespaces
(`ip -n ROUTER link add … peer … netns MEMBER`), so no interface ever exists in the host's
namespace, nothing routes, NATs or bridges to it, and no packet can leave. Addresses are the
lab's own (`LAB_NET`), meaningful only inside it.

The router forwards between segments; `partition(a, b)` drops what it would forward between
two segments (iptables in the router namespace), `heal` takes that back.

Names are `<prefix><creator pid>-<role>`: `sweep()` removes what a lab of a dead process left
(a SIGKILLed test run) - it kills the processes still inside those namespaces (by PID, from
`ip netns pids`) and deletes the namespaces and their /etc/netns files. `close()` does the
same for this lab, and is safe to call after a failure half-way through `add_*`.

Processes run inside with `ip netns exec` (which also bind-mounts the namespace's
/etc/netns/<name>/resolv.conf over /etc/resolv.conf for them).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "zmlab"
LAB_NET = ipaddress.ip_network("10.213.0.0/16")
NETNS_ETC = Path("/etc/netns")
COMMAND_TIMEOUT_S = 20
IP = shutil.which("ip") or "/usr/sbin/ip"  # a full path: some launchers exec without PATH


class LabError(RuntimeError):
    """The lab could not be built or used; the message says which command failed."""


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here (None: it can): root, `ip`, and namespaces."""
    if not os.path.exists("/proc/self/ns/net"):
        return "network namespaces are not supported on this system"
    if os.geteuid() != 0:
        return "the network lab needs root (it creates network namespaces)"
    if shutil.which("ip") is None:
        return "the network lab needs `ip` (iproute2)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
    except LabError as e:
        return f"cannot create a network namespace: {e}"
    with contextlib.suppress(LabError):
        _ip("netns", "del", probe)
    return None


def _run(args: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT_S) -> str:
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LabError(f"{' '.join(args)}: {e}") from None
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(args)}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _ip(*args: str) -> str:
    return _run(["ip", *args])


def _namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_namespace(name: str) -> None:
    """Kill what runs inside (SIGKILL, by PID), then delete the namespace and its files."""
    for _ in range(3):
        pids = [int(p) for p in _run(["ip", "netns", "pids", name], check=False).split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    _run(["ip", "netns", "del", name], check=False)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def sweep(prefix: str = PREFIX) -> list[str]:
    """Remove the namespaces of labs whose creating process is gone; their names."""
    removed = []
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)-")
    for name in _namespaces():
        match = pattern.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _remove_namespace(name)
            removed.append(name)
    return removed


@dataclass
class Namespace:
    role: str
    name: str
    segment: str
    address: str  # on its veth, inside the segment's subnet
    gateway: str

    def exec_args(self, args: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self.name, *args]


@dataclass
class _Segment:
    name: str
    bridge: str
    network: ipaddress.IPv4Network
    gateway: str


@dataclass
class NetLab:
    """A router namespace, a bridge per segment in it, and member namespaces."""

    prefix: str = PREFIX
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    segments: dict[str, _Segment] = field(default_factory=dict)
    router: str = ""
    _created: list[str] = field(default_factory=list)
    _links: int = 0

    def __post_init__(self) -> None:
        self.tag = f"{self.prefix}{os.getpid()}"

    def _name(self, role: str) -> str:
        return f"{self.tag}-{role}"

    # --- building ---

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_netns(self, role: str) -> str:
        name = self._name(role)
        if name in _namespaces():
            _remove_namespace(name)  # a leftover of an earlier lab of this very process
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def add_router(self) -> str:
        self.router = self._add_netns("router")
        _run(["ip", "netns", "exec", self.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        return self.router

    def add_segment(self, name: str, index: int) -> None:
        """A bridge in the router namespace for 10.213.<index>.0/24; the router is .1."""
        if not self.router:
            self.add_router()
        network = ipaddress.ip_network(f"{LAB_NET.network_address + (index << 8)}/24")
        assert network.subnet_of(LAB_NET)  # type: ignore[arg-type]
        gateway = str(network.network_address + 1)
        bridge = f"br{index}"
        _ip("-n", self.router, "link", "add", bridge, "type", "bridge")
        _ip("-n", self.router, "addr", "add", f"{gateway}/24", "dev", bridge)
        _ip("-n", self.router, "link", "set", bridge, "up")
        self.segments[name] = _Segment(name, bridge, network, gateway)  # type: ignore[arg-type]

    def add_namespace(
        self, role: str, segment: str, host: int, resolver: str | None = None
    ) -> Namespace:
        """A member namespace at 10.213.<segment>.<host>, routed through the router;
        `resolver` becomes its resolv.conf's nameserver."""
        seg = self.segments[segment]
        name = self._add_netns(role)
        self._links += 1
        outside = f"v{self._links}"
        _ip(
            "-n", self.router, "link", "add", outside, "type", "veth", "peer", "eth0", "netns", name
        )
        _ip("-n", self.router, "link", "set", outside, "master", seg.bridge, "up")
        address = str(seg.network.network_address + host)
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        # A default route: a VIP (241/8, 243/8) must be routable for connect() to reach the
        # redirect rules; it stays inside the lab (the router has no other way out).
        _ip("-n", name, "route", "add", "default", "via", seg.gateway)
        etc = NETNS_ETC / name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {resolver or seg.gateway}\n")
        ns = Namespace(role, name, segment, address, seg.gateway)
        self.namespaces[role] = ns
        return ns

    # --- partitions ---

    def _drop_rules(self, a: str, b: str) -> list[list[str]]:
        one, two = self.segments[a].bridge, self.segments[b].bridge
        return [["-i", one, "-o", two, "-j", "DROP"], ["-i", two, "-o", one, "-j", "DROP"]]

    def partition(self, a: str, b: str) -> None:
        """Drop everything the router would forward between segments `a` and `b`."""
        for rule in self._drop_rules(a, b):
            _run(["ip", "netns", "exec", self.router, "iptables", "-I", "FORWARD", *rule])

    def heal(self, a: str, b: str) -> None:
        for rule in self._drop_rules(a, b):
            _run(
                ["ip", "netns", "exec", self.router, "iptables", "-D", "FORWARD", *rule],
                check=False,
            )

    # --- running things inside ---

    def run(
        self,
        role: str,
        args: Sequence[str],
        *,
        timeout: float = COMMAND_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `args` in the namespace and wait (bounded); the completed process."""
        try:
            return subprocess.run(
                self.namespaces[role].exec_args(args),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=dict(env) if env is not None else None,
            )
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            return subprocess.CompletedProcess(e.cmd, 124, out, f"timed out after {timeout}s")

    # --- tearing down ---

    def close(self) -> None:
        """Every namespace this lab created is gone afterwards, with what ran inside."""
        for name in reversed(self._created):
            _remove_namespace(name)
        self._created.clear()
        self.namespaces.clear()
        self.segments.clear()
        self.router = ""


__all__ = ["LAB_NET", "LabError", "Namespace", "NetLab", "sweep", "unavailable_reason"]
