"""A remote zone blackholed under load: how fast its traffic stops, and what it costs.

    sudo .venv/bin/python benchmarks/zone_blackhole.py [--rate 50] [--before 3] [--after 12]
                                                        [--json]

Topology (zonemesh.demo.topology, real CPs and Envoys): global and three zone CPs; one echo
instance in zone1 and one in zone2, none in zone3; a client sidecar in zone3, which therefore
sends every request to the other two zones (equally). After `--before` seconds of load, zone1's
ingress is blackholed with iptables (`DROP`: packets vanish, no RST, its CP stays connected),
and the load goes on for `--after` seconds. HTTP and TCP (both MMZS ports) are loaded at once,
open loop (`--rate` requests per second each, every request on a new connection, a 10 s
client timeout, so that a hung request is seen as slow, not hidden by a sequential client).

Everything runs in a network namespace of its own (`zmtest-<pid>-bh`, loopback only), which
this script creates, enters (re-running itself under `ip netns exec`) and deletes; it needs
root, `ip netns` and `iptables`, and says so (exit 2) when they are missing. Namespaces left by
an earlier run whose process is gone are removed first.

Figures, per protocol:
- `last_sent_to_blackhole_s`: from the blackhole to the last request the client's Envoy sent
  to zone1's ingress: the last rise of that host's `rq_total` (HTTP) or `cx_total` (TCP, one
  connection per request; a connection that never connects has no request), polled every
  50 ms (health-check connections are not counted there);
- `unhealthy_after_s`: until that host failed its health check (Envoy's `/clusters`);
- `failed`: requests without an answer (within the client timeout) sent after the blackhole,
  and `failed_after_detection`: those sent once the host was unhealthy (should be 0);
- `slowest_s`: the longest request sent after the blackhole (a request caught on the dead
  path is reset when the health check fails, and HTTP retries it on zone2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INSIDE_ENV = "ZONEMESH_BLACKHOLE_NETNS"
NETNS_PREFIX = "zmtest-"
NETNS_SUFFIX = "-bh"
CLIENT_TIMEOUT_S = 10.0
POLL_S = 0.05
UNAVAILABLE = 2  # exit status: this machine cannot run it (not root, no ip netns/iptables)


# --- the namespace -------------------------------------------------------------------------


def prerequisites() -> str | None:
    """Why this cannot run here; None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"{NETNS_PREFIX}{os.getpid()}-probe"
    try:
        subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        return f"`ip netns add` is not allowed here: {e.stderr.decode().strip()}"
    try:
        listed = subprocess.run(
            ["ip", "netns", "exec", probe, "iptables", "-L", "INPUT", "-n"], capture_output=True
        )
        if listed.returncode != 0:
            return f"iptables does not work in a namespace: {listed.stderr.decode().strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_namespace(name: str) -> None:
    """Kill what still runs in our namespace (we started it), then delete the namespace."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def sweep_leftovers() -> list[str]:
    """Namespaces of earlier runs whose process is gone (a crash, a SIGKILL)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    pattern = re.compile(rf"^{NETNS_PREFIX}(\d+)-\w+")
    swept = []
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        match = pattern.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _drop_namespace(name)
            swept.append(name)
    return swept


def run_in_namespace(args: list[str]) -> int:
    name = f"{NETNS_PREFIX}{os.getpid()}{NETNS_SUFFIX}"
    sweep_leftovers()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        env = {**os.environ, INSIDE_ENV: name}
        command = ["ip", "netns", "exec", name, sys.executable, __file__, *args]
        return subprocess.run(command, env=env).returncode
    finally:
        _drop_namespace(name)


# --- inside: the measurement ---------------------------------------------------------------


@dataclass
class Result:
    sent: float
    done: float
    ok: bool
    zone: str = ""
    error: str = ""


def get(url: str) -> tuple[int, bytes]:
    """One HTTP/1.1 GET on a new connection, by hand: a load generator that costs little
    CPU, so that it does not compete with the proxies it measures (2 cores)."""
    host, _, rest = url.removeprefix("http://").partition(":")
    port = int(rest.split("/", 1)[0])
    with socket.create_connection((host, port), timeout=CLIENT_TIMEOUT_S) as conn:
        conn.settimeout(CLIENT_TIMEOUT_S)
        conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        raise ValueError("no answer")
    return int(head.split(b" ", 2)[1]), body


@dataclass
class OpenLoad:
    """A request every 1/rate s on a pool of threads, whatever the earlier ones are doing."""

    url: str
    rate: float
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self) -> None:
        sent = time.monotonic()
        ok, zone, error = False, "", ""
        try:
            status, body = get(self.url)
            if status == 200:
                ok, zone = True, str(json.loads(body).get("zone", ""))
            else:
                error = f"HTTP {status}"
        except (OSError, ValueError) as e:  # any failure is a failed request
            error = type(e).__name__
        with self._lock:
            self.results.append(Result(sent, time.monotonic(), ok, zone, error))

    def run(self) -> None:
        interval = 1.0 / self.rate
        with ThreadPoolExecutor(max_workers=int(self.rate * CLIENT_TIMEOUT_S) + 8) as pool:
            next_at = time.monotonic()
            while not self._stop.is_set():
                pool.submit(self._one)
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()


def host_stats(admin_url: str, cluster: str, address: str, counter: str) -> tuple[int, bool] | None:
    """(`counter`, healthy) of one host of one cluster, from Envoy's admin `/clusters`."""
    import httpx

    try:
        doc = httpx.get(f"{admin_url}/clusters", params={"format": "json"}, timeout=1).json()
    except (httpx.HTTPError, ValueError):
        return None
    for status in doc.get("cluster_statuses", []):
        if status.get("name") != cluster:
            continue
        for host in status.get("host_statuses", []):
            sock = host.get("address", {}).get("socket_address", {})
            if f"{sock.get('address')}:{sock.get('port_value')}" != address:
                continue
            stats = {s.get("name"): int(s.get("value", 0)) for s in host.get("stats", [])}
            health = host.get("health_status", {})
            flags = [k for k, v in health.items() if k != "eds_health_status" and v is True]
            healthy = health.get("eds_health_status", "HEALTHY") == "HEALTHY" and not flags
            return stats.get(counter, 0), healthy
    return None


COUNTERS = (
    "upstream_rq_total",
    "upstream_rq_retry",
    "upstream_rq_retry_overflow",
    "upstream_rq_503",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_destroy_with_active_rq",
    "http2.keepalive_timeout",
    "health_check.failure",
    "outlier_detection.ejections_enforced_total",
)


def envoy_counters(admin_url: str, clusters: dict[str, str]) -> dict[str, dict[str, int]]:
    """A few of the client cluster's counters, to explain the figures."""
    import httpx

    text = httpx.get(f"{admin_url}/stats", timeout=2).text
    values = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    out: dict[str, dict[str, int]] = {}
    for protocol, cluster in clusters.items():
        out[protocol] = {
            name: int(values.get(f"cluster.{cluster}.{name}", "0"))
            for name in COUNTERS
            if values.get(f"cluster.{cluster}.{name}", "0").isdigit()
        }
    return out


def measure(rate: float, before_s: float, after_s: float, run_dir: Path) -> dict[str, Any]:
    from zonemesh.demo.topology import TwoZoneMesh

    mesh = TwoZoneMesh(
        run_dir,
        zones=("zone1", "zone2", "zone3"),
        instances={"zone1": 1, "zone2": 1, "zone3": 0},
        log_level="warning",
    )
    figures: dict[str, Any] = {"rate_per_s": rate, "before_s": before_s, "after_s": after_s}
    with mesh:
        target = mesh.ingress_endpoint("zone1")
        address, port = target.rsplit(":", 1)
        admin = mesh.clients["zone3"].admin_url
        protocols = {"http": False, "tcp": True}
        clusters = {p: mesh.cluster_name(tcp) for p, tcp in protocols.items()}
        loads = {p: OpenLoad(mesh.client_url("zone3", tcp), rate) for p, tcp in protocols.items()}
        threads = [threading.Thread(target=load.run, daemon=True) for load in loads.values()]
        for thread in threads:
            thread.start()
        time.sleep(before_s)
        rule = ["INPUT", "-p", "tcp", "-d", address, "--dport", port, "-j", "DROP"]
        blackholed = time.monotonic()
        subprocess.run(["iptables", "-I", *rule], check=True)
        last_sent: dict[str, float | None] = dict.fromkeys(protocols)
        unhealthy: dict[str, float | None] = dict.fromkeys(protocols)
        seen: dict[str, int | None] = dict.fromkeys(protocols)
        try:
            while time.monotonic() < blackholed + after_s:
                now = time.monotonic()
                for protocol, cluster in clusters.items():
                    counter = "cx_total" if protocols[protocol] else "rq_total"
                    stats = host_stats(admin, cluster, target, counter)
                    if stats is None:
                        continue
                    total, healthy = stats
                    if seen[protocol] is not None and total > (seen[protocol] or 0):
                        last_sent[protocol] = now
                    seen[protocol] = total
                    if not healthy and unhealthy[protocol] is None:
                        unhealthy[protocol] = now
                time.sleep(POLL_S)
        finally:
            for load in loads.values():
                load.stop()
            for thread in threads:
                thread.join(timeout=CLIENT_TIMEOUT_S + 5)
            subprocess.run(["iptables", "-D", *rule], capture_output=True)
        figures["envoy"] = envoy_counters(admin, clusters)
        for protocol, load in loads.items():
            after = [r for r in load.results if r.sent >= blackholed]
            before = [r for r in load.results if r.sent < blackholed]
            detected = unhealthy[protocol]
            failed = [r for r in after if not r.ok]
            zones: dict[str, int] = {}
            for r in after:
                key = r.zone if r.ok else "failed"
                zones[key] = zones.get(key, 0) + 1
            figures[protocol] = {
                "requests_before": len(before),
                "failed_before": sum(1 for r in before if not r.ok),
                "requests_after": len(after),
                "answers_after": zones,
                "unhealthy_after_s": None if detected is None else round(detected - blackholed, 2),
                "last_sent_to_blackhole_s": round(
                    (last_sent[protocol] or blackholed) - blackholed, 2
                ),
                "failed": len(failed),
                "failed_after_detection": sum(
                    1 for r in failed if detected is not None and r.sent >= detected
                ),
                "slowest_s": round(max((r.done - r.sent for r in after), default=0.0), 2),
                "errors": sorted({r.error for r in [*before, *after] if not r.ok}),
            }
    return figures


def print_table(figures: dict[str, Any]) -> None:
    rows = [
        ("last request sent to the blackholed zone (s after)", "last_sent_to_blackhole_s"),
        ("its ingress marked unhealthy (s after)", "unhealthy_after_s"),
        ("requests sent after the blackhole", "requests_after"),
        ("  failed", "failed"),
        ("  failed once it was unhealthy", "failed_after_detection"),
        ("  slowest (s)", "slowest_s"),
        ("answers after the blackhole", "answers_after"),
    ]
    print(
        f"zone1's ingress blackholed under {figures['rate_per_s']:g} req/s per protocol "
        f"(client in zone3, no local instance; zone2 serves too)"
    )
    width = max(len(label) for label, _ in rows)
    print(f"{'':{width}}   {'HTTP':>22}   {'TCP':>22}")
    for label, key in rows:
        http, tcp = figures["http"][key], figures["tcp"][key]
        print(f"{label:{width}}   {json.dumps(http):>22}   {json.dumps(tcp):>22}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s per protocol")
    parser.add_argument("--before", type=float, default=3.0, help="load before the blackhole")
    parser.add_argument("--after", type=float, default=12.0, help="load after it")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    parser.add_argument("--run-dir", help="logs (default: a new temporary directory)")
    args, _ = parser.parse_known_args()
    if os.environ.get(INSIDE_ENV) is None:
        problem = prerequisites()
        if problem is not None:
            print(f"zone_blackhole: cannot run here: {problem}", file=sys.stderr)
            return UNAVAILABLE
        return run_in_namespace(sys.argv[1:])
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="zonemesh-blackhole-"))
    figures = measure(args.rate, args.before, args.after, run_dir)
    figures["run_dir"] = str(run_dir)
    print_table(figures)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
