"""`zonemesh demo`: the two-zone mesh on loopback, a scenario on it, and a verdict.

The command drives everything from the main thread (children die with the thread that
started them) and routes every way out - the end of the scenario, Ctrl-C, SIGTERM, an error -
through `TwoZoneMesh.stop()`, so no Envoy outlives it. Exit codes: 0 every phase passed,
1 one did not, 130 Ctrl-C, 143 SIGTERM (with `--keep`, ending the kept mesh with Ctrl-C or
SIGTERM exits with the scenario's code: that is how `--keep` is meant to end).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from zonemesh.demo.processes import ZONEMESH, ProcessError
from zonemesh.demo.topology import HTTP_MMZS, ZONES, TwoZoneMesh, new_run_dir

# rich and the scenario are imported where used: every `zonemesh` process imports this
# module (the CLI registers the command), and most of them never run the demo.

# Every child inherits it: whoever looks for leftovers of a run (the tests) can find them all,
# Envoys included, in /proc/<pid>/environ.
RUN_MARKER = "ZONEMESH_DEMO_RUN_DIR"
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM
EXIT_SIGHUP = 128 + signal.SIGHUP


class Output:
    """Plain lines (CI, pipes) or a rich console (a terminal)."""

    def __init__(self, plain: bool) -> None:
        from rich.console import Console

        self.plain = plain
        self.console: Console | None = None if plain else Console(highlight=False)

    def line(self, text: str, style: str = "") -> None:
        if self.console is None:
            click.echo(text)
        else:
            self.console.print(text, style=style or None, markup=False, soft_wrap=True)

    def try_line(self, text: str, style: str = "") -> None:
        """`line`, for teardown: a closed terminal or pipe must not stop it."""
        with contextlib.suppress(OSError, ValueError):
            self.line(text, style)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP (the terminal went away) end the demo like Ctrl-C does."""
    raise SystemExit(128 + signum)


def _zonemesh_word() -> str:
    """`zonemesh` when that is the one on PATH, else the full path of ours."""
    return "zonemesh" if shutil.which("zonemesh") == ZONEMESH else ZONEMESH


def explore_lines(mesh: TwoZoneMesh) -> list[str]:
    """The commands that show the running mesh from outside."""
    zm = _zonemesh_word()
    zone1, glob = mesh.cps["zone1"].url, mesh.cps["global"].url
    lines = ["The mesh keeps running; explore it (Ctrl-C or SIGTERM stops everything):"]
    for zone in ZONES:
        lines.append(
            f"  curl -s -H 'Accept: text/plain' {mesh.client_url(zone)}"
            f"    # client-{zone} -> {HTTP_MMZS} MMZS, port 1027"
        )
    lines += [
        f"  {zm} get meshmultizoneservices --cp {zone1}",
        f"  {zm} get meshservices --cp {zone1}",
        f"  {zm} inspect dataplanes --cp {zone1}",
        f"  {zm} inspect zones --cp {glob}",
        f"  {zm} inspect zoneingresses --cp {zone1}",
        f"  curl -s '{mesh.clients['zone1'].admin_url}/clusters'    # client-zone1's Envoy admin",
        f"  zone CPs: {', '.join(f'{z} {mesh.cps[z].url}' for z in ZONES)}; global {glob}",
        f"  curl -s --cacert {mesh.cps['zone1'].ca_file} {mesh.cps['zone1'].https_url}/"
        "    # the HTTPS API, verified with zone1's CA",
        f"  logs: {mesh.run_dir}/*.log   addresses: {mesh.run_dir}/topology.json",
        f"  dataplane tokens (one per proxy, from its zone CP): {mesh.tokens_dir}/*.token",
    ]
    return lines


def tls_lines(mesh: TwoZoneMesh) -> list[str]:
    """Where the CAs are: xDS and KDS ran over TLS with each CP's generated certificate."""
    if not mesh.cps:
        return []
    cas = ", ".join(f"{name} {cp.ca_file}" for name, cp in mesh.cps.items())
    return [f"TLS: xDS and KDS served over TLS; CA files: {cas}"]


def keep_running(mesh: TwoZoneMesh, out: Output) -> None:
    """Until Ctrl-C or SIGTERM; says so once if a process exits on its own meanwhile."""
    reported: set[str] = set()
    try:
        while True:
            for name, proc in mesh.group.procs.items():
                if proc.proc is not None and not proc.running and name not in reported:
                    reported.add(name)
                    out.line(
                        f"{name} exited with code {proc.returncode} (log {proc.log_path})",
                        "yellow",
                    )
            time.sleep(1.0)
    except (KeyboardInterrupt, SystemExit):
        out.try_line("stopping every process")


def choose_mesh(
    mode: str,
    run_dir: Path,
    log_level: str,
    scenario: str = "failover",
    gateway: str = "builtin",
) -> tuple[Any, str]:
    """The mesh to run and the line saying which mode it is and why.

    `auto` is the network lab (every workload in its own namespace, clients calling the MMZS
    by name through the transparent proxy: the seed's way) where it can be built (root,
    namespaces, iptables, curl), else loopback. The `dr` scenario runs on loopback only."""
    if scenario == "dr":
        if mode == "netns":
            raise click.UsageError("--scenario dr runs on loopback only (--mode loopback|auto)")
        from zonemesh.demo.dr_topology import DrMesh

        dr = DrMesh(run_dir, log_level=log_level, gateway=gateway)
        return dr, dr.mode_line()
    if mode != "loopback":
        from zonemesh.lab.mesh import LabMesh, unavailable_reason

        reason = unavailable_reason()
        if reason is None:
            mesh = LabMesh(run_dir, log_level=log_level)
            return mesh, mesh.mode_line()
        if mode == "netns":
            raise click.UsageError(f"--mode netns: {reason}")
        loopback = TwoZoneMesh(run_dir, log_level=log_level)
        return loopback, f"{loopback.mode_line()}; netns mode unavailable: {reason}"
    loopback = TwoZoneMesh(run_dir, log_level=log_level)
    return loopback, loopback.mode_line()


def run_demo(
    mesh: TwoZoneMesh, out: Output, keep: bool, mode_line: str = "", scenario_name: str = "failover"
) -> int:
    """The scenario, its summary, `--keep`, and teardown on every path; the exit code."""
    from rich.live import Live

    from zonemesh.demo.dr_scenario import DrScenario
    from zonemesh.demo.live import (
        DrLiveView,
        LiveView,
        plain_printer,
        plain_summary,
        rich_summary,
        rich_targets,
    )
    from zonemesh.demo.scenario import Scenario

    on_phase = plain_printer(click.echo) if out.plain else None
    scenario: Scenario | DrScenario
    view: LiveView | DrLiveView
    if scenario_name == "dr":
        scenario = DrScenario(mesh, on_phase=on_phase)
        view = DrLiveView(scenario)
    else:
        scenario = Scenario(mesh, on_phase=on_phase)
        view = LiveView(scenario)
    out.line(f"zonemesh demo: run directory {mesh.run_dir}", "bold")
    if mode_line:
        out.line(mode_line)
    code = 1
    interrupted = ""
    mesh.group.__enter__()  # SIGTERM -> SystemExit(143) from here on, children stopped on exit
    try:
        if out.console is None:
            scenario.run()
        else:
            with Live(view, console=out.console, refresh_per_second=4):
                scenario.run()
        if out.console is None:
            for line in plain_summary(scenario):
                out.line(line)
            if isinstance(scenario, DrScenario):
                for line in scenario.target_lines():
                    out.line(line)
        else:
            out.console.print(rich_summary(scenario))
            if isinstance(scenario, DrScenario):
                out.console.print(rich_targets(scenario))
        code = 0 if scenario.passed else 1
        for line in tls_lines(mesh):
            out.line(line)
        if keep and scenario.phases["ready"].seconds is not None and mesh.group.running():
            lines = mesh.explore_lines() if hasattr(mesh, "explore_lines") else explore_lines(mesh)
            for line in lines:
                out.line(line)
            keep_running(mesh, out)
    except ProcessError as e:  # a process that died where the scenario could not tell
        out.line(f"demo failed: {e}", "bold red")
        code = 1
    except KeyboardInterrupt:
        code, interrupted = EXIT_SIGINT, "Ctrl-C"
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else EXIT_SIGTERM
        interrupted = {EXIT_SIGHUP: "SIGHUP"}.get(code, "SIGTERM")
    finally:
        # Neither a second Ctrl-C nor a hang-up may cut the teardown short (the group
        # ignores SIGTERM while it stops its children).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            if interrupted:
                out.try_line(f"interrupted ({interrupted}): stopping every process", "yellow")
            scenario.stop_loads()
        finally:
            started = [p for p in mesh.group.procs.values() if p.proc is not None]
            mesh.stop()
        left = mesh.group.pids()
        if left:
            out.try_line(f"processes left behind: {left}", "bold red")
            code = code or 1
        else:
            out.try_line(f"stopped {len(started)} processes; none left behind")
    return code


@click.command("demo")
@click.option(
    "--ci",
    is_flag=True,
    help="Plain output, no live view (the default when stdout is not a terminal).",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the mesh running after the scenario and print how to explore it.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for every process's log (default: a fresh temporary directory).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning"]),
    help="Log level of the processes (their logs go to the run directory).",
)
@click.option(
    "--mode",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "netns", "loopback"]),
    help="netns: every workload in its own network namespace, clients calling "
    "echo.mzsvc.mesh.local through the transparent proxy (needs root); loopback: "
    "everything on 127.x with declared outbounds; auto: netns where possible.",
)
@click.option(
    "--scenario",
    default="failover",
    show_default=True,
    type=click.Choice(["failover", "dr"]),
    help="failover: zone1's instances stop and come back, seen by a client sidecar per zone; "
    "dr: the disaster-recovery walkthrough, external clients through a global load balancer "
    "to an edge gateway per zone, zone1's instances failing, then zone1 lost whole and back.",
)
@click.option(
    "--gateway",
    default="builtin",
    show_default=True,
    type=click.Choice(["builtin", "delegated"]),
    help="With --scenario dr: builtin (MeshGateway + MeshHTTPRoute /echo, Envoy as the gateway) "
    "or delegated (a Dataplane with gateway type DELEGATED whose MMZS outbound listens where the "
    "gateway would; no path routing).",
)
def demo_cmd(
    ci: bool,
    keep: bool,
    run_dir: Path | None,
    log_level: str,
    mode: str,
    scenario: str,
    gateway: str,
) -> None:
    """Run a two-zone mesh with real Envoy and show MMZS failover.

    \b
    Starts a global CP, two zone CPs, a zone ingress per zone, echo instances (two in
    zone1, one in zone2) with sidecars and a client sidecar per zone, on free loopback
    ports; applies the `echo` MeshMultiZoneService (port 1027); then shows local
    preference, failover to zone2 when zone1's instances stop, and failback when they
    return. Exits 0 only if every phase passed; no process outlives it.

    \b
    Example:
      zonemesh demo            # live view on a terminal
      zonemesh demo --ci       # plain summary
      zonemesh demo --keep     # keep the mesh running afterwards, to explore it
      zonemesh demo --mode loopback   # no root: everything on 127.x
      zonemesh demo --scenario dr     # gateways, a global load balancer, zone1 lost
    The first lines say which mode ran.
    """
    previous = {sig: signal.signal(sig, _raise_exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        run_dir = run_dir if run_dir is not None else new_run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        os.environ[RUN_MARKER] = str(run_dir.resolve())
        mesh, mode_line = choose_mesh(mode, run_dir, log_level, scenario, gateway)
        code = run_demo(mesh, Output(ci or not sys.stdout.isatty()), keep, mode_line, scenario)
    except KeyboardInterrupt:  # before the mesh existed: nothing to stop
        code = EXIT_SIGINT
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else EXIT_SIGTERM
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(code)
