#!/usr/bin/env python
"""xDS fan-out benchmark: zonemesh against a replay floor, in the same run, same proxies.

1. A multi-zone mesh (global, the zone under test `bench`, a remote `zone2`) is set up through
   the APIs (fanout_topology.py); N simulated Envoys (fanout_fleet.py, separate processes)
   connect to `bench`. Measured: first full config, CP CPU and memory per proxy, then every
   change kind (address, new instance, removal, new service, MMZS selector, a zone's ingress
   lost) `--reps` times, then a reconnect storm (the `bench` CP process restarted).
   The proxies record every resource zonemesh served them, after each step.
2. The replay floor (floor_ads.py) serves those same bytes and pushes each recorded change,
   computing nothing; the same proxies measure the same figures against it.
3. Each figure is printed with its ratio to the floor and the issue's target (see
   benchmarks/README.md). `--compare-to 1000` (the default above 1000 proxies) also runs
   1000 proxies and prints how the per-proxy figures grow.

Timestamps are CLOCK_MONOTONIC, shared by all processes on the host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fanout_topology as topo
from fanout_procs import HERE, Child, FloorProcess, Mesh, cpu_seconds, rss_bytes
from floor_ads import Capture

# The targets: zonemesh over the floor (ratio), and 5000 over 1000 per proxy.
TARGETS = {
    "first_config_all_s": 2.0,
    "first_config_cpu_per_proxy_ms": 2.0,
    "memory_per_proxy_kb": 1.5,
    "change_p99_ms": 2.0,
    "change_cpu_per_proxy_us": 2.0,
    "storm_all_s": 2.0,
}
SCALE_TARGET = 1.25
SETTLE_S = 0.5  # after a change reached everyone: its ACKs belong to it
QUIET_WINDOW_S = 0.25  # the CP's CPU is sampled over this ...
QUIET_RATE = 0.1  # ... until it uses at most this share of a core (idle), ...
QUIET_MAX_S = 15.0  # ... or this long has passed; that idle rate is subtracted from a change


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def inverse(watch: topo.WatchSpec) -> topo.WatchSpec:
    """The watch for undoing a change: what was added goes, what went is back."""
    return topo.WatchSpec(watch.present[0] if watch.present else "", watch.absent, watch.present)


class ZonemeshTarget:
    name = "zonemesh"

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    @property
    def pid(self) -> int:
        return self.mesh.bench.pid

    @property
    def xds_target(self) -> str:
        return self.mesh.bench.xds_target

    async def change(self, writes: tuple[topo.Write, ...], step: int) -> None:
        await self.mesh.apply(writes)

    async def restart(self, step: int) -> None:
        await self.mesh.bench.stop()
        await self.mesh.bench.start()


class FloorTarget:
    name = "floor"

    def __init__(self, floor: FloorProcess) -> None:
        self.floor = floor

    @property
    def pid(self) -> int:
        return self.floor.pid

    @property
    def xds_target(self) -> str:
        return self.floor.xds_target

    async def change(self, writes: tuple[topo.Write, ...], step: int) -> None:
        await self.floor.step(step)

    async def restart(self, step: int) -> None:
        await self.floor.stop()
        await self.floor.start(at_step=step)


class Fleet:
    """The simulated-proxy processes, as one."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children

    @classmethod
    async def start(cls, args: argparse.Namespace, target: str, capture_dir: Path | None) -> Fleet:
        procs = max(1, min(args.client_procs, args.proxies))
        children = []
        try:
            for p in range(procs):
                argv = [
                    sys.executable,
                    str(HERE / "fanout_fleet.py"),
                    *("--target", target, "--mode", args.mode),
                    *("--indices", ",".join(map(str, range(p, args.proxies, procs)))),
                    *("--channels", str(max(1, args.channels // procs))),
                    *("--services", str(args.services), "--endpoints", str(args.endpoints)),
                ]
                if capture_dir is not None:
                    argv += ["--capture", str(capture_dir / f"capture-{p}.jsonl")]
                child = await Child.start(f"client{p}", *argv)
                children.append(child)
                await child.expect("hello", 30)
        except BaseException:
            for child in children:
                await child.close()
            raise
        return cls(children)

    async def ask(self, cmd: dict[str, Any], event: str, timeout: float) -> list[dict[str, Any]]:
        for child in self.children:
            await child.send(cmd)
        return [await c.expect(event, timeout) for c in self.children]

    async def close(self) -> None:
        for child in self.children:
            await child.close()


def merge_reasons(reports: list[dict[str, Any]]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for r in reports:
        for reason, count in r["reset_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    return reasons


async def measure(
    args: argparse.Namespace, target: ZonemeshTarget | FloorTarget, capture_dir: Path | None
) -> dict[str, Any]:
    """First config, every change kind, the storm: the same steps against either target."""
    n = args.proxies
    out: dict[str, Any] = {"target": target.name}
    fleet = await Fleet.start(args, target.xds_target, capture_dir)
    try:
        await asyncio.sleep(0.5)
        pid = target.pid
        rss_before, cpu_before = rss_bytes(pid), cpu_seconds(pid)
        t_connect = time.monotonic()
        reports = await fleet.ask(
            {"op": "connect", "timeout": args.timeout}, "configured", args.timeout + 30
        )
        cpu_first = cpu_seconds(pid) - cpu_before
        times = [t - t_connect for r in reports for t in r["times"].values()]
        out["configured"] = len(times)
        out["first_config_p50_s"] = percentile(times, 50)
        out["first_config_all_s"] = max(times) if len(times) == n else float("inf")
        out["first_config_cpu_per_proxy_ms"] = cpu_first / n * 1000
        out["connect_resets"] = sum(r["resets"] for r in reports)
        out["connect_reset_reasons"] = merge_reasons(reports)
        out["client_errors"] = [e for r in reports for e in r["errors"]]
        await asyncio.sleep(1.0)  # ACKs and connect-time pushes settle
        out["memory_per_proxy_kb"] = (rss_bytes(pid) - rss_before) / n / 1024
        if len(times) < n:
            out["error"] = f"only {len(times)}/{n} proxies configured within {args.timeout:g}s"
            return out
        await fleet.ask({"op": "snapshot", "step": 0}, "snapshot", 60)

        step = 0
        changes: dict[str, list[dict[str, Any]]] = {}
        for kind in args.changes:
            for rep in range(args.reps):
                ch = topo.change(kind, rep, args.services, args.endpoints)
                for writes, watch, measured in (
                    (ch.writes, ch.watch, True),
                    (ch.revert, inverse(ch.watch), False),
                ):
                    step += 1
                    result = await one_change(args, fleet, target, writes, watch, step)
                    await fleet.ask({"op": "snapshot", "step": step}, "snapshot", 60)
                    if measured:
                        changes.setdefault(kind, []).append(result)
                    elif result["reached"] < n:
                        out["error"] = f"{kind} #{rep}: undoing it reached {result['reached']}/{n}"
                        out["changes"] = changes
                        return out
        out["changes"] = changes
        out["storm"] = await storm(args, fleet, target, step)
        return out
    finally:
        await fleet.close()


async def quiet_rate(pid: int) -> float:
    """Wait until the CP is idle (the previous step's work, KDS included, is done) and return
    its idle CPU rate, so that a change is charged only for its own work."""
    deadline = time.monotonic() + QUIET_MAX_S
    while True:
        before = cpu_seconds(pid)
        await asyncio.sleep(QUIET_WINDOW_S)
        rate = (cpu_seconds(pid) - before) / QUIET_WINDOW_S
        if rate <= QUIET_RATE or time.monotonic() > deadline:
            return rate


async def one_change(
    args: argparse.Namespace,
    fleet: Fleet,
    target: ZonemeshTarget | FloorTarget,
    writes: tuple[topo.Write, ...],
    watch: topo.WatchSpec,
    step: int,
) -> dict[str, Any]:
    pid = target.pid
    for child in fleet.children:
        await child.send({"op": "watch", "id": str(step), "timeout": args.timeout, **watch.wire()})
    for child in fleet.children:
        await child.expect("watching", 30)
    idle_rate = await quiet_rate(pid)
    cpu_before = cpu_seconds(pid)
    t0 = time.monotonic()
    await target.change(writes, step)
    watched = [await c.expect("watched", args.timeout + 30) for c in fleet.children]
    await asyncio.sleep(SETTLE_S)
    cpu = cpu_seconds(pid) - cpu_before - idle_rate * (time.monotonic() - t0)
    latencies = [max(0.0, t - t0) * 1000 for w in watched for t in w["times"].values()]
    return {
        "reached": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "cpu_s": max(0.0, cpu),
    }


async def storm(
    args: argparse.Namespace, fleet: Fleet, target: ZonemeshTarget | FloorTarget, step: int
) -> dict[str, Any]:
    """The CP process restarts: every stream drops; once it serves again, all N proxies
    reconnect at once (held until then, so that their back-off does not spread them out)."""
    n = args.proxies
    await fleet.ask({"op": "storm"}, "storming", 30)
    t0 = time.monotonic()
    await target.restart(step)
    t_ready = time.monotonic()
    await asyncio.sleep(0.5)  # every stream has seen the restart
    released = await fleet.ask({"op": "release"}, "released", 30)
    t_release = time.monotonic()
    cpu_before = cpu_seconds(target.pid)
    reports = await fleet.ask(
        {"op": "storm-wait", "timeout": args.timeout}, "stormed", args.timeout + 30
    )
    cpu = cpu_seconds(target.pid) - cpu_before
    times = [t for r in reports for t in r["times"].values()]
    return {
        "configured": len(times),
        "unconfigured": n - len(times),
        "restart_s": t_ready - t0,
        "all_s": (max(times) - t_release) if len(times) == n else float("inf"),
        "p50_s": percentile([t - t_release for t in times], 50),
        "cpu_per_proxy_ms": cpu / n * 1000,
        # Streams that failed or ended after the proxies reconnected (not the restart's drop).
        "resets": sum(r["resets"] for r in reports) - sum(c["resets"] for c in released),
        "reset_reasons": merge_reasons(reports),
    }


async def run_size(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "proxies": args.proxies,
        "services": args.services,
        "endpoints": args.endpoints,
        "mode": args.mode,
        "reps": args.reps,
        "host": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start",
    }
    with tempfile.TemporaryDirectory(prefix="zonemesh-fanout-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        mesh = Mesh(workdir)
        floor: FloorProcess | None = None
        try:
            await mesh.start()
            t = time.monotonic()
            await mesh.apply(topo.setup_writes(args.services, args.endpoints))
            await mesh.wait_ready(args.services, 120)
            result["setup_s"] = time.monotonic() - t
            result["zonemesh"] = await measure(args, ZonemeshTarget(mesh), workdir)
            if "error" in result["zonemesh"]:
                return result
            await mesh.close()  # the floor runs alone, as zonemesh did
            captures = sorted(workdir.glob("capture-*.jsonl"))
            floor = FloorProcess(captures)
            await floor.start()
            replayed = workdir / "replayed"
            replayed.mkdir(exist_ok=True)
            result["floor"] = await measure(args, FloorTarget(floor), replayed)
            result["replay_check"] = compare_captures(captures, sorted(replayed.glob("*.jsonl")))
            return result
        except Exception as e:
            result["error"] = f"{type(e).__name__}: {e}{mesh.bench.log_tail()}"
            return result
        finally:
            if floor is not None:
                await floor.close()
            await mesh.close()


def held_at(paths: list[Path], steps: list[int]) -> dict[int, dict[str, Any]]:
    """What each proxy held after each of `steps`, from capture files."""
    capture = Capture.load([str(p) for p in paths])
    held: dict[str, dict[str, dict[str, str]]] = {}
    out: dict[int, dict[str, Any]] = {}
    for step in range(max(steps) + 1):
        for node, diffs in capture.steps.get(step, {}).items():
            for type_url, set_, removed in diffs:
                current = held.setdefault(node, {}).setdefault(type_url, {})
                current.update(set_)
                for name in removed:
                    current.pop(name, None)
        if step in steps:
            out[step] = json.loads(json.dumps(held))  # a deep copy
    return out


def compare_captures(zonemesh: list[Path], floor: list[Path]) -> dict[str, Any]:
    """Did the proxies hold the same bytes from the floor as from zonemesh? After the first
    config and after the last change step (the replay's claim, checked)."""
    last = max(Capture.load([str(p) for p in zonemesh]).steps, default=0)
    z, f = held_at(zonemesh, [0, last]), held_at(floor, [0, last])
    differing = {
        step: sorted(n for n in z[step].keys() | f[step].keys() if z[step].get(n) != f[step].get(n))
        for step in (0, last)
    }
    return {
        "identical": not any(differing.values()),
        "steps": [0, last],
        "differing_proxies": {str(k): len(v) for k, v in differing.items()},
        "example": next((v[0] for v in differing.values() if v), ""),
    }


# --------------------------------------------------------------------------- figures


Row = tuple[str, str, float, float, float | None]  # name, unit, zonemesh, floor, target


def figures(r: dict[str, Any]) -> list[Row]:
    """Every compared figure, zonemesh's and the floor's, with its target ratio (or None)."""
    z, f = r["zonemesh"], r["floor"]
    n = r["proxies"]

    def both(name: str, unit: str, pick: Any, target: float | None = None) -> Row:
        return (name, unit, pick(z), pick(f), target)

    rows = [
        both("first config, all proxies", "s", lambda s: s["first_config_all_s"], 2.0),
        both("first config, p50", "s", lambda s: s["first_config_p50_s"]),
        both(
            "CP CPU per proxy, first config",
            "ms",
            lambda s: s["first_config_cpu_per_proxy_ms"],
            TARGETS["first_config_cpu_per_proxy_ms"],
        ),
        both(
            "CP memory per connected proxy",
            "KB",
            lambda s: s["memory_per_proxy_kb"],
            TARGETS["memory_per_proxy_kb"],
        ),
    ]

    def over_reps(side: dict[str, Any], kind: str, key: str, how: Any) -> float:
        reps = side.get("changes", {}).get(kind, [])
        return float(how([c[key] for c in reps])) if reps else float("nan")

    for kind in z.get("changes", {}):
        rows.append(
            both(
                f"{kind}: p50", "ms", lambda s, k=kind: over_reps(s, k, "p50_ms", statistics.median)
            )
        )
        rows.append(
            both(
                f"{kind}: p99 (worst rep)",
                "ms",
                lambda s, k=kind: over_reps(s, k, "p99_ms", max),
                TARGETS["change_p99_ms"],
            )
        )
        rows.append(
            both(
                f"{kind}: CP CPU per proxy",
                "us",
                lambda s, k=kind: over_reps(s, k, "cpu_s", statistics.mean) / n * 1e6,
                TARGETS["change_cpu_per_proxy_us"],
            )
        )
    if "storm" in z and "storm" in f:
        rows.append(both("storm: all reconfigured", "s", lambda s: s["storm"]["all_s"], 2.0))
        rows.append(both("storm: p50 reconfigured", "s", lambda s: s["storm"]["p50_s"]))
        rows.append(both("storm: CP CPU per proxy", "ms", lambda s: s["storm"]["cpu_per_proxy_ms"]))
        rows.append(both("CP restart until ready", "s", lambda s: s["storm"]["restart_s"]))
    return rows


def ratio(a: float, b: float) -> float:
    return a / b if b and b == b and b != float("inf") else float("nan")


def print_table(r: dict[str, Any]) -> list[dict[str, Any]]:
    print(
        f"xDS fan-out: {r['proxies']} proxies ({r['mode']}), {r['services']} services x "
        f"{r['endpoints']} endpoints, {r['reps']} reps per change kind; host: {r['host']}"
    )
    if "setup_s" in r:
        print(f"  setup (3 CPs, {r['services'] * r['endpoints']} instances): {r['setup_s']:.1f} s")
    table: list[dict[str, Any]] = []
    for side in ("zonemesh", "floor"):
        s = r.get(side)
        if s is None:
            continue
        reached = {k: min(c["reached"] for c in cs) for k, cs in s.get("changes", {}).items()}
        print(
            f"  {side}: configured {s['configured']}/{r['proxies']}, connect resets "
            f"{s['connect_resets']}, every change reached min {min(reached.values(), default=0)}"
            f"/{r['proxies']}"
        )
        if "storm" in s:
            st = s["storm"]
            print(
                f"  {side} storm: {st['configured']}/{r['proxies']} configured again, "
                f"{st['unconfigured']} left unconfigured, {st['resets']} streams reset "
                "after they reconnected"
            )
        for reason, count in s.get("connect_reset_reasons", {}).items():
            print(f"    connect reset {count} x {reason}")
        if "storm" in s:
            for reason, count in s["storm"]["reset_reasons"].items():
                print(f"    storm: stream ended {count} x {reason}")
        for error in s.get("client_errors", []):
            print(f"    client error: {error}")
        if s.get("error"):
            print(f"  {side} ERROR: {s['error']}")
    if "replay_check" in r:
        check = r["replay_check"]
        verdict = "identical" if check["identical"] else f"DIFFERENT {check['differing_proxies']}"
        print(
            f"  floor replay: proxies held zonemesh's bytes after steps {check['steps']}: {verdict}"
        )
    if r.get("error"):
        print(f"  ERROR: {r['error']}")
    if "zonemesh" not in r or "floor" not in r:
        return table
    rows = figures(r)
    width = max(len(row[0]) for row in rows)
    print(f"  {'figure':<{width}}  {'zonemesh':>12}  {'floor':>12}  {'ratio':>7}  target")
    for name, unit, zv, fv, target in rows:
        q = ratio(zv, fv)
        ok = None if target is None else (q == q and q <= target)
        verdict = "" if ok is None else ("✓" if ok else "✗")
        if target is not None and q != q:
            verdict = "? (floor figure 0: below the clock tick; run more proxies)"
        target_text = "" if target is None else f"<= {target:g}x {verdict}"
        print(
            f"  {name:<{width}}  {zv:>9.1f} {unit:<2}  {fv:>9.1f} {unit:<2}  {q:>6.2f}x  {target_text}"
        )
        table.append(
            {"figure": name, "unit": unit, "zonemesh": zv, "floor": fv, "ratio": q}
            | {"target": target, "met": ok}
        )
    return table


def per_proxy(r: dict[str, Any]) -> dict[str, float]:
    """zonemesh's figures divided by the proxies, to see how cost grows with them."""
    z, n = r["zonemesh"], r["proxies"]
    cpu = [statistics.mean(c["cpu_s"] for c in cs) for cs in z.get("changes", {}).values()]
    return {
        "first config time per proxy (ms)": z["first_config_all_s"] / n * 1000,
        "CP CPU per proxy, first config (ms)": z["first_config_cpu_per_proxy_ms"],
        "CP CPU per proxy per change (us)": statistics.mean(cpu) / n * 1e6 if cpu else math.nan,
        "CP memory per proxy (KB)": z["memory_per_proxy_kb"],
    }


def print_scale(small: dict[str, Any], big: dict[str, Any]) -> list[dict[str, Any]]:
    a, b = per_proxy(small), per_proxy(big)
    print(f"zonemesh per proxy: {big['proxies']} vs {small['proxies']} proxies ({big['mode']})")
    out = []
    width = max(len(k) for k in a)
    for key in a:
        q = ratio(b[key], a[key])
        verdict = "✓" if q == q and q <= SCALE_TARGET else "✗"
        print(
            f"  {key:<{width}}  {a[key]:>9.2f}  {b[key]:>9.2f}  {q:>6.2f}x  <= {SCALE_TARGET}x {verdict}"
        )
        out.append(
            {"figure": key, "small": a[key], "big": b[key], "ratio": q, "met": q <= SCALE_TARGET}
        )
    return out


def complete(r: dict[str, Any]) -> bool:
    """Every proxy configured, every change reached every proxy, the storm reconfigured all,
    and the floor served the proxies the bytes zonemesh had (else the ratios compare apples
    with pears)."""
    if "error" in r or "zonemesh" not in r or "floor" not in r:
        return False
    if not r.get("replay_check", {}).get("identical"):
        return False
    n = r["proxies"]
    for side in (r["zonemesh"], r["floor"]):
        if (
            "error" in side
            or side["configured"] != n
            or side.get("storm", {}).get("configured") != n
        ):
            return False
        if any(c["reached"] != n for cs in side.get("changes", {}).values() for c in cs):
            return False
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--proxies", type=int, default=1000)
    parser.add_argument("-m", "--services", type=int, default=100)
    parser.add_argument("-e", "--endpoints", type=int, default=10, help="per service")
    parser.add_argument("--mode", choices=["sotw", "delta"], default="delta")
    parser.add_argument("--reps", type=int, default=3, help="per change kind")
    parser.add_argument(
        "--changes",
        default=",".join(topo.CHANGE_KINDS),
        help=f"comma-separated change kinds (default all: {','.join(topo.CHANGE_KINDS)})",
    )
    parser.add_argument("--channels", type=int, default=10, help="gRPC connections in total")
    parser.add_argument("--client-procs", type=int, default=2, help="simulated-proxy processes")
    parser.add_argument("--timeout", type=float, default=120.0, help="per phase, seconds")
    parser.add_argument(
        "--compare-to",
        type=int,
        default=None,
        help="also run this many proxies and compare per-proxy figures "
        "(default: 1000 when --proxies is larger)",
    )
    parser.add_argument(
        "--baseline",
        default="",
        help="instead of --compare-to: an earlier --json output at fewer proxies to compare with",
    )
    parser.add_argument("--workdir", default="", help="keep logs and captures here")
    parser.add_argument("--smoke", action="store_true", help="20 proxies, 5 x 2, 1 rep per kind")
    parser.add_argument(
        "--json", action="store_true", help="also print the result as one JSON line"
    )
    args = parser.parse_args(argv)
    args.changes = [c for c in args.changes.split(",") if c]
    for kind in args.changes:
        if kind not in topo.CHANGE_KINDS:
            parser.error(f"--changes: unknown kind {kind!r}; one of {', '.join(topo.CHANGE_KINDS)}")
    if args.smoke:
        args.proxies, args.services, args.endpoints, args.reps = 20, 5, 2, 1
        args.channels, args.client_procs = 2, 1
        args.timeout = min(args.timeout, 60.0)
    if args.compare_to is None and args.proxies > 1000 and not args.baseline:
        args.compare_to = 1000
    return args


def baseline_run(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """The run at fewer proxies from an earlier `--json` output (its last line), same mode."""
    summary = json.loads(Path(path).read_text().strip().splitlines()[-1])
    for run in summary["runs"]:
        if run["mode"] == args.mode and run["proxies"] < args.proxies and run["complete"]:
            return dict(run)
    raise SystemExit(f"--baseline {path}: no complete {args.mode} run with fewer proxies")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = [asyncio.run(run_size(args))]
    if args.compare_to:
        small = argparse.Namespace(**{**vars(args), "proxies": args.compare_to})
        results.insert(0, asyncio.run(run_size(small)))
    summary: dict[str, Any] = {"runs": []}
    for r in results:
        r["table"] = print_table(r)
        r["complete"] = complete(r)
        summary["runs"].append(r)
    if args.baseline:
        results.insert(0, baseline_run(args.baseline, args))
    if len(results) == 2 and all(r["complete"] for r in results):
        summary["scale"] = print_scale(results[0], results[1])
    ok = all(r["complete"] for r in results)
    summary["complete"] = ok
    summary["targets_met"] = (
        ok
        and all(row["met"] is not False for r in results for row in r["table"])
        and all(row["met"] for row in summary.get("scale", []))
    )
    print(f"complete: {ok}; every target met: {summary['targets_met']}")
    if args.json:
        print(json.dumps(summary, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
