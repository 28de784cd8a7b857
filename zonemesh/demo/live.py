"""How the demo shows its scenario: a rich live view on a terminal, plain lines otherwise.

The live view is a renderable that reads the scenario's state each time rich refreshes it
(on rich's own thread), so the scenario never waits for the screen. Plain mode prints one
line per phase and the summary, with no escape codes, for CI logs and pipes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from zonemesh.demo.dr_scenario import DrScenario
from zonemesh.demo.phases import FAIL, PASS, PENDING, RUNNING, SKIPPED, Phase, PhaseRunner
from zonemesh.demo.scenario import Scenario
from zonemesh.demo.topology import ZONES

EVENTS_SHOWN = 8
STYLES = {PASS: "bold green", FAIL: "bold red", SKIPPED: "yellow", RUNNING: "bold cyan"}
SUMMARY_COLUMNS = ("phase", "result", "seconds", "requests", "failed", "why")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _head(s: PhaseRunner) -> Text:
    """Run directory, the current phase and the time so far (processes while starting)."""
    current = s.current
    head = Text.assemble(
        ("run directory ", "dim"),
        (str(s.mesh.run_dir), "bold"),
        "\n",
        ("phase ", "dim"),
        (current.title if current else ("finished" if s.finished else "starting"), "bold cyan"),
        (f"   {s.phases['total'].seconds if s.finished else s.elapsed():5.1f} s", "dim"),
    )
    if current is not None and current.key == "ready":
        head.append(f"\nprocesses running {len(s.mesh.group.running())}", "dim")
    return head


def _phase_grid(s: PhaseRunner, *, counts: bool) -> Table:
    """The phases so far (not `total`): title, status, seconds and, with `counts`, requests."""
    phases = Table.grid(padding=(0, 2))
    for phase in s.phases.values():
        if phase.key == "total":
            continue
        status = phase.status if phase.status != PENDING else "…"
        cells = [
            Text(phase.title),
            Text(status, style=STYLES.get(phase.status, "dim")),
            Text(_seconds(phase.seconds) + " s" if phase.seconds is not None else ""),
        ]
        if counts:
            cells.append(
                Text(f"{phase.requests} req, {phase.failures} failed" if phase.requests else "")
            )
        phases.add_row(*cells)
    return phases


def _latest_events(s: PhaseRunner) -> list[Text]:
    """One line per event, cut to the width: the phases above say the rest."""
    return [
        Text.assemble((f"{at:6.1f}s ", "dim"), text, no_wrap=True, overflow="ellipsis")
        for at, text in list(s.events)[-EVENTS_SHOWN:]
    ]


def summary_rows(scenario: Scenario | DrScenario) -> list[tuple[str, ...]]:
    """The summary as text cells, one row per phase and a `total` row."""
    return [
        (p.key, p.status, _seconds(p.seconds), str(p.requests), str(p.failures), p.reason)
        for p in scenario.phases.values()
    ]


def plain_summary(scenario: Scenario | DrScenario) -> list[str]:
    """Fixed-width lines: `phase result seconds requests failed why`, then `result: ...`."""
    rows = [SUMMARY_COLUMNS, *summary_rows(scenario)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(SUMMARY_COLUMNS) - 1)]
    lines = [f"summary (run directory {scenario.mesh.run_dir})"]
    for row in rows:
        cells = [
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  " + "  ".join([*cells, row[-1]]))
    lines.append(f"result: {PASS if scenario.passed else FAIL}")
    return lines


def plain_phase_line(phase: Phase) -> str:
    return f"{phase.key}: {phase.status} {_seconds(phase.seconds)} s - {phase.reason}"


def rich_summary(scenario: Scenario | DrScenario) -> Table:
    verdict = "[bold green]PASS" if scenario.passed else "[bold red]FAIL"
    table = Table(title=f"zonemesh demo: {verdict}", title_justify="left", expand=False)
    for name in SUMMARY_COLUMNS:
        table.add_column(
            name, justify="right" if name in ("seconds", "requests", "failed") else "left"
        )
    for row in summary_rows(scenario):
        cells: list[RenderableType] = list(row)
        cells[1] = Text(row[1], style=STYLES.get(row[1], ""))
        table.add_row(*cells)
    return table


class LiveView:
    """What `rich.live.Live` redraws ~4 times a second: run directory, phase, answers per
    zone in the last second for each client, the phases so far and the latest events."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def __rich__(self) -> RenderableType:
        s = self.scenario
        head = _head(s)

        answers = Table(title="answers in the last second", title_justify="left")
        answers.add_column("client")
        for zone in ZONES:
            answers.add_column(f"from {zone}", justify="right")
        answers.add_column("failed", justify="right")
        answers.add_column("so far", justify="right")
        for zone in ZONES:
            recent, total = s.per_second(zone), s.totals(zone)
            cells: list[RenderableType] = [f"client-{zone}"]
            for answering in ZONES:
                count = recent.get(answering, 0)
                style = "green" if answering == zone else "yellow"
                cells.append(Text(str(count), style=style if count else "dim"))
            failed = recent.get("failed", 0)
            cells.append(Text(str(failed), style="bold red" if failed else "dim"))
            cells.append(
                Text(
                    f"{sum(total.values())} ({total.get('failed', 0)} failed)",
                    style="dim",
                )
            )
            answers.add_row(*cells)

        phases = _phase_grid(s, counts=False)
        events = _latest_events(s)
        return Panel(
            Group(head, Text(), answers, Text(), phases, Text(), *events),
            title="zonemesh demo",
            title_align="left",
        )


def plain_printer(echo: Callable[[str], None]) -> Callable[[Phase], None]:
    """An `on_phase` callback that prints one plain line per finished phase."""

    def on_phase(phase: Phase) -> None:
        echo(plain_phase_line(phase))

    return on_phase


class DrLiveView:
    """The disaster-recovery scenario's live view: per gateway, the answers of the last second
    by answering zone and whether the global load balancer sends to it; failures; phases;
    the latest events."""

    def __init__(self, scenario: DrScenario) -> None:
        self.scenario = scenario

    def __rich__(self) -> RenderableType:
        s = self.scenario
        head = _head(s)
        table = Table(
            title="external clients -> global load balancer: answers in the last second",
            title_justify="left",
        )
        for name in ("served by", *(f"from {z}" for z in ZONES), "so far", "load balancer"):
            table.add_column(
                name, justify="left" if name in ("served by", "load balancer") else "right"
            )
        recent = s.per_gateway(since=time.monotonic() - 1.0)
        totals = s.per_gateway()
        health = s.lb_health()
        for gateway in ZONES:
            cells: list[RenderableType] = [f"gateway-{gateway}"]
            for answering in ZONES:
                count = recent.get(gateway, Counter()).get(answering, 0)
                style = "green" if answering == gateway else "yellow"
                cells.append(Text(str(count), style=style if count else "dim"))
            cells.append(Text(str(sum(totals.get(gateway, Counter()).values())), style="dim"))
            state = health.get(gateway)
            cells.append(
                Text("-", style="dim")
                if state is None
                else Text("sends", style="green")
                if state
                else Text("OUT", style="bold red")
            )
            table.add_row(*cells)
        failed_now = sum(recent.get("failed", Counter()).values())
        failed_total = sum(totals.get("failed", Counter()).values())
        table.add_row(
            "failed",
            Text(str(failed_now), style="bold red" if failed_now else "dim"),
            "",
            Text(str(failed_total), style="bold red" if failed_total else "dim"),
            "",
        )
        phases = _phase_grid(s, counts=True)
        events = _latest_events(s)
        return Panel(
            Group(head, Text(), table, Text(), phases, Text(), *events),
            title="zonemesh demo: disaster recovery",
            title_align="left",
        )


def rich_targets(scenario: DrScenario) -> Table:
    table = Table(title="targets", title_justify="left", expand=False)
    for name in ("result", "target", "measured"):
        table.add_column(name)
    for target in scenario.targets:
        table.add_row(
            Text(target.status, style=STYLES.get(target.status, "")), target.name, target.measured
        )
    return table
