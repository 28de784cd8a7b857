"""The demo's scenario on a `TwoZoneMesh`: start, local preference, failover, failback.

Each phase is measured from the requests two background loads (one per zone's client, on the
`echo` MMZS outbound) keep sending for the whole scenario, so what the summary says is what a
caller of the service saw. The scenario runs on the calling thread, which must be the one that
lives as long as the mesh's children (the kernel kills them with the thread that started them).
Everything it does is also written to `<run_dir>/demo-events.log` and `<run_dir>/summary.json`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from zonemesh.demo.phases import FAIL, PASS, Phase, PhaseRunner
from zonemesh.demo.processes import ProcessError
from zonemesh.demo.topology import ZONES, TwoZoneMesh
from zonemesh.demo.traffic import Answer, Load, wait_first_answers

# Targets of the issue: failover and failback fail their phase when they miss theirs, the
# failed requests fail the `total` row; the start time is reported against its target.
READY_TARGET_S = 15.0
FAILOVER_TARGET_S = 2.0
FAILBACK_TARGET_S = 2.0
MAX_FAILED_FRACTION = 0.01

# How long each phase lasts: long enough to be seen, short enough for CI.
LOCAL_PREFERENCE_S = 5.0
OUTAGE_S = 6.0  # zone1 stays down this long after its last instance stopped
AFTER_FAILBACK_S = 5.0  # traffic kept running once answers are back in zone1
SETTLE_WAIT_S = 10.0  # how long to wait for answers to move before calling it failed
LOAD_INTERVAL_S = 0.05  # 20 requests per second per client
SETTLED_STREAK = 10  # answers in a row from the expected zone that count as "all"


def _counts(answers: list[Answer]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for answer in answers:
        counts[answer.zone if answer.ok else "failed"] += 1
    return counts


def _wait_settled(load: Load, since: float, zone: str, deadline: float) -> float | None:
    """When `zone` alone began answering `load` (a streak), waiting until `deadline`."""
    while (settled := load.settled_at(since, zone, tail=SETTLED_STREAK)) is None:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return settled


def _zone2_disturbed(answers: list[Answer]) -> list[str]:
    """zone2's client must keep being answered by zone2 while zone1 fails and comes back."""
    if answers and all(a.ok and a.zone == "zone2" for a in answers):
        return []
    return [f"client-zone2 disturbed: {_describe(answers)}"]


def _describe(answers: list[Answer]) -> str:
    counts = _counts(answers)
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no answers"


class Scenario(PhaseRunner):
    """Runs the phases on `mesh`, keeping what a live view needs (current phase, recent
    events, per-client answers) readable from another thread."""

    mesh: TwoZoneMesh

    def __init__(
        self,
        mesh: TwoZoneMesh,
        *,
        on_phase: Callable[[Phase], None] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        phases = [
            Phase("ready", "start and ready"),
            Phase("local-preference", "local preference"),
            Phase("failover", "zone1 down: failover to zone2"),
            Phase("failback", "zone1 back: failback"),
            Phase("total", "every request of the scenario"),
        ]
        super().__init__(mesh, phases, on_phase=on_phase, on_event=on_event)
        self.loads: dict[str, Load] = {}

    # --- what the live view reads --------------------------------------------------------

    def per_second(self, zone: str) -> Counter[str]:
        """Answers to `zone`'s client sent during the last second, per answering zone."""
        load = self.loads.get(zone)
        if load is None:
            return Counter()
        since = time.monotonic() - 1.0
        recent = []
        for answer in reversed(load.answers):
            if answer.at < since:
                break
            recent.append(answer)
        return _counts(recent)

    def totals(self, zone: str) -> Counter[str]:
        load = self.loads.get(zone)
        return _counts(list(load.answers)) if load else Counter()

    @property
    def passed(self) -> bool:
        return self.phases_passed

    # --- running ---------------------------------------------------------------------------

    def run(self) -> bool:
        """Every phase in order (all of them once the mesh is up). True if all pass."""
        self.t0 = time.monotonic()
        try:
            if self._ready():
                self._start_loads()
                self._local_preference()
                self._failover()
                self._failback()
        finally:
            self.stop_loads()
            self._total()
            self._finish()
        return self.passed

    def stop_loads(self) -> None:
        for load in self.loads.values():
            load.stop()

    def _window(self, zone: str, start: float, end: float) -> list[Answer]:
        return [a for a in list(self.loads[zone].answers) if start <= a.at < end]

    def _count(self, phase: Phase, start: float, end: float) -> dict[str, list[Answer]]:
        """Requests and failures of both clients sent in [start, end); failures are logged."""
        windows = {zone: self._window(zone, start, end) for zone in ZONES}
        phase.requests = sum(len(w) for w in windows.values())
        phase.failures = sum(1 for w in windows.values() for a in w if not a.ok)
        for zone, answers in windows.items():
            errors = Counter(a.error[:100] for a in answers if not a.ok)
            for error, count in errors.most_common(3):
                self.event(f"client-{zone}: {count} failed: {error}")
        return windows

    def _ready(self) -> bool:
        phase = self._start_mesh(
            "starting a global CP, 2 zone CPs, a zone ingress per zone, echo instances "
            "(2 in zone1, 1 in zone2) with sidecars, a client sidecar per zone"
        )
        if phase is None or phase.seconds is None:
            return False
        # Coming up is what this phase checks; its time is a target, reported (a loaded
        # machine starts slower, and that says nothing about the mesh's behaviour).
        over = " - OVER the target" if phase.seconds >= READY_TARGET_S else ""
        self._end(
            phase,
            True,
            f"{len(self.mesh.group.procs)} processes up, every client answered by its own "
            f"zone in {phase.seconds:.1f} s (target < {READY_TARGET_S:g} s{over})",
        )
        return True

    def _start_loads(self) -> None:
        """Through the mesh's own `load` where it has one (the lab's clients run inside their
        namespaces), else requests to its `client_url` from here."""
        for zone in ZONES:
            make = getattr(self.mesh, "load", None)
            load = make(zone, LOAD_INTERVAL_S) if make else Load(self.mesh.client_url(zone))
            load.interval = LOAD_INTERVAL_S
            self.loads[zone] = load.start()
        wait_first_answers(list(self.loads.values()))
        target = getattr(self.mesh, "target", "echo.mzsvc (port 1027)")
        self.event(f"sending ~20 requests/s from each zone's client to {target}")

    def _local_preference(self) -> bool:
        phase = self._begin("local-preference")
        start = phase.started_at
        assert start is not None
        time.sleep(LOCAL_PREFERENCE_S)
        end = time.monotonic()
        phase.seconds = end - start
        windows = self._count(phase, start, end)
        problems, parts = [], []
        for zone, answers in windows.items():
            own = sum(1 for a in answers if a.ok and a.zone == zone)
            parts.append(f"client-{zone}: {zone} {own}/{len(answers)}")
            if not answers or own != len(answers):
                problems.append(f"client-{zone} got {_describe(answers)}")
        instances = {a.instance for a in windows["zone1"] if a.ok and a.zone == "zone1"}
        parts.append(f"zone1 instances answering: {len(instances)}")
        if len(instances) < len(self.mesh.instances["zone1"]):
            problems.append(f"only {sorted(instances)} of zone1's instances answered")
        return self._end(phase, not problems, "; ".join(problems or parts))

    def _failover(self) -> bool:
        phase = self._begin("failover")
        began = phase.started_at
        assert began is not None
        self.event("stopping zone1's echo instances (apps and sidecars)")
        self.mesh.stop_zone_instances("zone1")
        stopped = time.monotonic()
        self.event(f"zone1's echo instances stopped ({stopped - began:.2f} s after SIGTERM)")
        load = self.loads["zone1"]
        settled = _wait_settled(load, began, "zone2", stopped + SETTLE_WAIT_S)
        if settled is not None:
            self.event(f"client-zone1 answered by zone2 only, from {settled - began:.2f} s on")
        time.sleep(max(0.0, stopped + OUTAGE_S - time.monotonic()))
        end = time.monotonic()
        windows = self._count(phase, began, end)
        settled = load.settled_at(began, "zone2", tail=SETTLED_STREAK)
        problems = []
        if settled is None:
            problems.append(
                f"client-zone1 not answered by zone2 only within {SETTLE_WAIT_S:g} s "
                f"({_describe(windows['zone1'])})"
            )
            reason = ""
        else:
            # From the outage's start: stricter than from the last exit (a stopping sidecar
            # first reports itself not ready, then drains, so answers move before it exits).
            phase.seconds = settled - began
            if phase.seconds > FAILOVER_TARGET_S:
                problems.append(f"took {phase.seconds:.2f} s (target <= {FAILOVER_TARGET_S:g} s)")
            reason = (
                f"client-zone1 answered by zone2 only {phase.seconds:.2f} s after zone1's "
                f"instances got SIGTERM (the last exited after {stopped - began:.2f} s); "
                f"{phase.failures} failed"
            )
        problems += _zone2_disturbed(windows["zone2"])
        return self._end(phase, not problems, "; ".join(problems) or reason)

    def _failback(self) -> bool:
        phase = self._begin("failback")
        began = phase.started_at
        assert began is not None
        self.event("starting zone1's echo instances again")
        try:
            self.mesh.start_zone_instances("zone1")
        except ProcessError as e:
            self._count(phase, began, time.monotonic())
            first = str(e).splitlines()[0]
            self.event(f"zone1 did not start again: {first}", details=str(e))
            return self._end(phase, False, f"zone1 did not start again: {first}")
        ready = time.monotonic()
        self.event(f"zone1 ready again: apps answer, sidecars ready ({ready - began:.2f} s)")
        load = self.loads["zone1"]
        settled_now = _wait_settled(load, began, "zone1", ready + SETTLE_WAIT_S)
        if settled_now is not None:
            self.event(
                f"client-zone1 answered by zone1 again, {max(0.0, settled_now - ready):.2f} s "
                "after ready"
            )
        hold_from = settled_now if settled_now is not None else time.monotonic()
        time.sleep(max(0.0, hold_from + AFTER_FAILBACK_S - time.monotonic()))
        end = time.monotonic()
        windows = self._count(phase, began, end)
        settled = load.settled_at(began, "zone1", tail=SETTLED_STREAK)
        problems = []
        if settled is None:
            problems.append(
                f"client-zone1 not answered by zone1 only within {SETTLE_WAIT_S:g} s of "
                f"zone1 being ready ({_describe(windows['zone1'])})"
            )
            reason = ""
        else:
            phase.seconds = max(0.0, settled - ready)
            if phase.seconds > FAILBACK_TARGET_S:
                problems.append(f"took {phase.seconds:.2f} s (target <= {FAILBACK_TARGET_S:g} s)")
            when = (
                f"{phase.seconds:.2f} s after zone1 was ready again"
                if settled > ready
                else "already when zone1 was reported ready again"
            )
            reason = (
                f"client-zone1 answered by zone1 only {when} ({settled - began:.2f} s after "
                f"the start command); {phase.failures} failed"
            )
        if phase.failures:
            problems.append(f"{phase.failures} requests failed while zone1 came back")
        problems += _zone2_disturbed(windows["zone2"])
        return self._end(phase, not problems, "; ".join(problems) or reason)

    def _total(self) -> None:
        phase = self.phases["total"]
        phase.seconds = self.elapsed()
        phase.requests = sum(len(load.answers) for load in self.loads.values())
        phase.failures = sum(1 for load in self.loads.values() for a in load.answers if not a.ok)
        self._skip_unfinished()
        if not phase.requests:
            phase.status, phase.reason = FAIL, "no request was sent"
            return
        fraction = phase.failures / phase.requests
        phase.status = PASS if fraction < MAX_FAILED_FRACTION else FAIL
        phase.reason = f"{fraction:.2%} of requests failed (target < {MAX_FAILED_FRACTION:.0%})"

    def summary(self) -> dict[str, object]:
        return {
            "runDir": str(self.mesh.run_dir),
            "passed": self.passed,
            "phases": self.phase_rows(),
        }
