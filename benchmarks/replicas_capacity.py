"""How many proxies two `cp run` instances of a zone carry compared with one, on one PostgreSQL.

For each fleet size N, twice (one instance; two instances with the proxies split evenly, half
dialling `a,b` and half `b,a`), on a fresh database:
- connect: N simulated Envoys (`tests/support/ads_client.py`: real gRPC ADS over TLS, SotW,
  node metadata and dataplane token as `dp run` gives Envoy) start at once; the time until
  every one holds its full config (its `ping` cluster with both endpoints);
- change: a third `ping` endpoint is applied through the API; the time until each proxy has
  it (p50, p99 over the proxies);
- the control planes' CPU seconds over both phases (from /proc), summed over instances.

A setup "carries" N when every proxy was configured within CONNECT_BUDGET_S and the change
reached 99% of them within CHANGE_BUDGET_S. Printed: one row per (N, setup), then the largest
N each setup carried. The simulated proxies run in this process, on the same cores as the
control planes (say so when quoting the figure: on a 2-core host the ratio is bounded by the
cores, not by the instances).

Run: `PYTHONPATH=$PWD .venv/bin/python benchmarks/replicas_capacity.py [--sizes 100,200,400]
[--max-minutes 10]`. PostgreSQL: a throwaway server from Debian's postgresql package, as the
tests start it. Bounded: sizes are tried in order until one setup fails both budgets or the
time is up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "store")]

from postgres_server import PostgresServer, find_bindir  # noqa: E402
from support.ads_client import ProxyFleet, SimulatedProxy  # noqa: E402
from support.processes import CpProcess, wait_for  # noqa: E402
from support.tokens import issue_dataplane_token  # noqa: E402

CONNECT_BUDGET_S = 30.0
CHANGE_BUDGET_S = 2.0
SERVICE_PORT = 8080
INBOUND_PORT = 20080
PING = {"ping-1": "127.0.22.1", "ping-2": "127.0.22.2"}
NEW_PING = ("ping-3", "127.0.22.3")


def member(index: int) -> dict[str, Any]:
    """A proxy of service `fleet` calling `ping` (each on a loopback address of its own)."""
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": f"fleet-{index:05d}",
        "networking": {
            "address": f"127.{30 + index // 62500}.{(index // 250) % 250}.{index % 250 + 1}",
            "inbound": [
                {
                    "port": INBOUND_PORT,
                    "servicePort": SERVICE_PORT,
                    "tags": {"kuma.io/service": "fleet", "kuma.io/protocol": "http"},
                }
            ],
            "outbound": [
                {
                    "address": "127.0.0.1",
                    "port": 30001,
                    "backendRef": {"kind": "MeshService", "name": "ping", "port": SERVICE_PORT},
                }
            ],
        },
    }


def ping(name: str, address: str) -> dict[str, Any]:
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": name,
        "networking": {
            "address": address,
            "inbound": [
                {
                    "port": INBOUND_PORT,
                    "servicePort": SERVICE_PORT,
                    "tags": {"kuma.io/service": "ping", "kuma.io/protocol": "http"},
                }
            ],
        },
    }


def ping_count(proxy: SimulatedProxy) -> int:
    return sum(len(v) for v in proxy.clusters.values())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    size: int
    instances: int
    connect_s: float | None  # None: not every proxy was configured within the budget
    change_p50_s: float | None
    change_p99_s: float | None
    cpu_s: float
    # p50 of the change on the instance it was written to, and on the other (two instances)
    change_p50_by_instance: tuple[float, ...] = ()

    @property
    def carried(self) -> bool:
        return (
            self.connect_s is not None
            and self.connect_s <= CONNECT_BUDGET_S
            and self.change_p99_s is not None
            and self.change_p99_s <= CHANGE_BUDGET_S
        )


def one_run(server: PostgresServer, workdir: Path, size: int, instances: int) -> Row:
    env = server.env(server.new_database())
    cps = [
        CpProcess(workdir, name=f"n{size}-i{instances}-{n}", store="postgres", env=env)
        for n in range(instances)
    ]
    fleet: ProxyFleet | None = None
    try:
        for cp in cps:
            cp.start()
        lead = cps[0]
        for name, address in PING.items():
            lead.api("PUT", f"/meshes/default/dataplanes/{name}", json=ping(name, address))
        token = issue_dataplane_token(lead.url, tags={"kuma.io/service": ["fleet"]})
        targets = [f"127.0.0.1:{cp.xds_port}" for cp in cps]
        proxies = []
        for i in range(size):
            order = targets[i % len(targets) :] + targets[: i % len(targets)]
            proxies.append(
                SimulatedProxy(member(i), token, "grpcs://" + ",".join(order), lead.ca_file)
            )
        cpu_before = sum(cpu_seconds(cp.proc.pid) for cp in cps if cp.proc)
        started = time.monotonic()
        fleet = ProxyFleet(proxies)
        fleet.__enter__()
        connect_s: float | None = None
        try:
            wait_for(
                lambda: all(ping_count(p) >= len(PING) for p in proxies) or fleet.errors(),
                timeout=CONNECT_BUDGET_S,
                interval=0.05,
            )
            if not fleet.errors():
                connect_s = time.monotonic() - started
        except AssertionError:
            pass
        change_p50 = change_p99 = None
        by_instance: tuple[float, ...] = ()
        if connect_s is not None:
            seen_before = [len(p.eds_updates) for p in proxies]
            name, address = NEW_PING
            changed = time.monotonic()
            lead.api("PUT", f"/meshes/default/dataplanes/{name}", json=ping(name, address))
            with contextlib.suppress(AssertionError):  # the stragglers count as infinite
                wait_for(
                    lambda: all(ping_count(p) > len(PING) for p in proxies),
                    timeout=CHANGE_BUDGET_S * 5,
                    interval=0.02,
                )
            delays = []
            by_target: dict[str, list[float]] = {t: [] for t in targets}
            for proxy, seen in zip(proxies, seen_before, strict=True):
                got = [u.at for u in proxy.eds_updates[seen:] if len(u.endpoints) > len(PING)]
                delays.append(got[0] - changed if got else float("inf"))
                if proxy.connected_to in by_target:
                    by_target[proxy.connected_to].append(delays[-1])
            by_instance = tuple(
                statistics.median(v) if v else float("inf") for v in by_target.values()
            )
            delays.sort()
            change_p50 = statistics.median(delays)
            change_p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        cpu = sum(cpu_seconds(cp.proc.pid) for cp in cps if cp.proc) - cpu_before
        return Row(size, instances, connect_s, change_p50, change_p99, cpu, by_instance)
    finally:
        if fleet is not None:
            fleet.close()
        for cp in reversed(cps):
            cp.kill()


def show(value: float | None, unit: float = 1.0, fmt: str = "{:8.2f}") -> str:
    if value is None or value == float("inf"):
        return f"{'-':>8}"
    return fmt.format(value * unit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,200,400", help="fleet sizes, in order")
    parser.add_argument("--max-minutes", type=float, default=10.0)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    bindir = find_bindir()
    if bindir is None:
        print("no PostgreSQL server binaries: apt-get install postgresql", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.max_minutes * 60
    server = PostgresServer(bindir)
    rows: list[Row] = []
    print(
        f"{os.cpu_count()} CPUs; budgets: connect {CONNECT_BUDGET_S:.0f} s, change p99 "
        f"{CHANGE_BUDGET_S:.1f} s"
    )
    print(
        f"{'proxies':>8} {'CPs':>4} {'connect s':>10} {'change p50 ms':>14} "
        f"{'change p99 ms':>14} {'CP cpu s':>9} carried  p50 ms per instance (written, other)"
    )
    try:
        server.init()
        server.start()
        server.prepare()
        with tempfile.TemporaryDirectory() as tmp:
            for size in sizes:
                failed = 0
                for instances in (1, 2):
                    if time.monotonic() > deadline:
                        break
                    row = one_run(server, Path(tmp), size, instances)
                    rows.append(row)
                    failed += not row.carried
                    print(
                        f"{row.size:>8} {row.instances:>4} {show(row.connect_s):>10} "
                        f"{show(row.change_p50_s, 1000, '{:8.0f}'):>14} "
                        f"{show(row.change_p99_s, 1000, '{:8.0f}'):>14} {row.cpu_s:>9.1f} "
                        f"{'yes' if row.carried else 'no':>7}  "
                        + " / ".join(
                            show(v, 1000, "{:.0f}").strip() for v in row.change_p50_by_instance
                        ),
                        flush=True,
                    )
                if failed == 2 or time.monotonic() > deadline:
                    break
    finally:
        server.destroy()
    for instances in (1, 2):
        carried = [r.size for r in rows if r.instances == instances and r.carried]
        print(
            f"largest fleet carried by {instances} instance{'s' if instances > 1 else ''}: "
            f"{max(carried) if carried else 'none'} (of {sizes[: len(rows) // 2 or 1]})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
