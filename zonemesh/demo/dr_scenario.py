"""The disaster-recovery scenario on a `DrMesh`: the seed's walkthrough, phase by phase.

External clients send through the global load balancer for the whole run; every phase is
judged from what they saw (which gateway served each request, from which zone's echo):

1. steady state: both gateways serve, each answered by its own zone;
2. zone1's echo instances fail: gateway-zone1 serves from zone2 through the MMZS and the load
   balancer changes nothing; then they come back and gateway-zone1 answers from zone1 again;
3. zone1 is lost: its CP, ingress, gateway, apps and sidecars SIGKILLed at once; the load
   balancer stops sending to gateway-zone1; failed requests are counted;
4. zone1 comes back (its CP with its state, then its proxies): traffic returns to it.

Targets: every phase passes; after the zone loss no request sent later than
`NO_FAILURE_AFTER_S` fails; at most `MAX_FAILED_FRACTION` of all requests fail. The scenario
runs on the calling thread (the one the mesh's children die with); it writes
`<run_dir>/demo-events.log` and `<run_dir>/summary.json`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from zonemesh.demo.lb_watch import HealthWatch
from zonemesh.demo.phases import FAIL, PASS, RUNNING, Phase, PhaseRunner, first_line
from zonemesh.demo.processes import ProcessError
from zonemesh.demo.traffic import Answer, Load, wait_first_answers

READY_TARGET_S = 30.0
NO_FAILURE_AFTER_S = 2.0
MAX_FAILED_FRACTION = 0.01

STEADY_S = 5.0
INSTANCES_DOWN_S = 5.0  # held after gateway-zone1 answers from zone2 only
ZONE_LOST_S = 6.0  # held after the kill
AFTER_RETURN_S = 5.0  # held after gateway-zone1 serves again
SETTLE_WAIT_S = 15.0
LOAD_INTERVAL_S = 0.05  # 20 requests/s per external client
EXTERNAL_CLIENTS = 2
SETTLED_STREAK = 10
HEALTH_POLL_S = 0.25

LOST, OTHER = "zone1", "zone2"  # the zone that fails, and the one that carries on


@dataclass(frozen=True)
class Target:
    """One line of the targets block: what was promised, what was measured, the verdict."""

    name: str
    status: str
    measured: str


def _settled(answers: list[Answer], good: Callable[[Answer], bool], tail: int) -> float | None:
    """When the answers began being `good` for good (a streak of at least `tail`)."""
    settled: float | None = None
    streak = 0
    for answer in answers:
        if good(answer):
            settled = answer.at if settled is None else settled
            streak += 1
        else:
            settled, streak = None, 0
    return settled if streak >= tail else None


class DrScenario(PhaseRunner):
    """Runs the phases; keeps what the live view reads (current phase, events, answers)."""

    def __init__(
        self,
        mesh: Any,
        *,
        on_phase: Callable[[Phase], None] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        phases = [
            Phase("ready", "start and ready"),
            Phase("steady", "steady state: each gateway answered by its zone"),
            Phase("instances-fail", "zone1's echo fails: served from zone2"),
            Phase("zone-lost", "zone1 lost: the LB sends to zone2 only"),
            Phase("zone-back", "zone1 back: traffic returns"),
            Phase("total", "every request of the scenario"),
        ]
        super().__init__(mesh, phases, on_phase=on_phase, on_event=on_event)
        self.targets: list[Target] = []
        self._lost: tuple[int, float | None] = (0, None)  # failed after the kill, the last
        self.loads: list[Load] = []
        self.health: HealthWatch | None = None

    # --- what the live view reads --------------------------------------------------------

    def answers(self) -> list[Answer]:
        """Every answer so far, in the order sent."""
        return sorted((a for load in self.loads for a in list(load.answers)), key=lambda a: a.at)

    def per_gateway(self, since: float | None = None) -> dict[str, Counter[str]]:
        """Per serving gateway's zone (`failed` for failures): answers per answering zone."""
        out: dict[str, Counter[str]] = {}
        for answer in self.answers():
            if since is not None and answer.at < since:
                continue
            key = "failed" if not answer.ok else self.mesh.gateway_zone(answer)
            out.setdefault(key, Counter())[answer.zone if answer.ok else "failed"] += 1
        return out

    def lb_health(self) -> dict[str, bool]:
        return dict(self.health.latest) if self.health else {}

    def lb_changed(self, zone: str, healthy: bool, since: float) -> float | None:
        """When the load balancer was first seen to start (`healthy`) or stop sending to
        `zone`'s gateway after `since` (polled every `HEALTH_POLL_S`)."""
        changes = list(self.health.changes) if self.health else []
        return next(
            (at for at, z, h in changes if z == zone and h == healthy and at >= since), None
        )

    @property
    def passed(self) -> bool:
        return self.phases_passed and all(t.status == PASS for t in self.targets)

    # --- running ---------------------------------------------------------------------------

    def run(self) -> bool:
        self.t0 = time.monotonic()
        try:
            if self._ready():
                self._start_loads()
                steps = (self._steady, self._instances_fail, self._zone_lost, self._zone_back)
                for step in steps:
                    if not step():
                        break  # what follows builds on this phase's end state
        except ProcessError as e:
            first = first_line(e)
            self.event(f"a process failed: {first}", details=str(e))
            if self.current is not None and self.current.status == RUNNING:
                self._end(self.current, False, first)
        finally:
            self.stop_loads()
            self._total()
            self._finish()
        return self.passed

    def stop_loads(self) -> None:
        for load in self.loads:
            load.stop()
        if self.health is not None:
            self.health.stop()

    def _window(self, phase: Phase, start: float, end: float) -> list[Answer]:
        """The answers sent in [start, end), counted into `phase`; failures are logged."""
        window = [a for a in self.answers() if start <= a.at < end]
        phase.requests = len(window)
        phase.failures = sum(1 for a in window if not a.ok)
        for error, count in Counter(a.error[:100] for a in window if not a.ok).most_common(3):
            self.event(f"{count} failed: {error}")
        return window

    def _wait(
        self,
        since: float,
        subset: Callable[[Answer], bool],
        good: Callable[[Answer], bool],
        deadline: float,
    ) -> float | None:
        """When the answers of `subset` sent after `since` became `good` for good (a streak),
        waiting until `deadline`."""
        while True:
            answers = [a for a in self.answers() if a.at >= since and subset(a)]
            settled = _settled(answers, good, SETTLED_STREAK)
            if settled is not None or time.monotonic() > deadline:
                return settled
            time.sleep(0.05)

    def _via(self, zone: str) -> Callable[[Answer], bool]:
        """Answers served by `zone`'s gateway, and failures (which break a streak)."""
        return lambda a: not a.ok or self.mesh.gateway_zone(a) == zone

    @staticmethod
    def _from(zone: str) -> Callable[[Answer], bool]:
        return lambda a: a.ok and a.zone == zone

    @staticmethod
    def _everything(answer: Answer) -> bool:
        return True

    def _hold(self, since: float, seconds: float) -> float:
        time.sleep(max(0.0, since + seconds - time.monotonic()))
        return time.monotonic()

    def _served_from_elsewhere(self, window: list[Answer], zone: str) -> list[str]:
        """`zone`'s gateway must answer from its own zone's echo only."""
        wrong = sum(
            1 for a in window if a.ok and self.mesh.gateway_zone(a) == zone and a.zone != zone
        )
        return [f"gateway-{zone} answered {wrong} requests from elsewhere"] if wrong else []

    def _describe(self, answers: list[Answer]) -> str:
        parts = []
        for gateway, counts in sorted(self._by_gateway(answers).items()):
            inner = ", ".join(f"{z} {n}" for z, n in sorted(counts.items()))
            parts.append(
                f"gateway-{gateway}: {inner}" if gateway != "failed" else f"failed {inner}"
            )
        return "; ".join(parts) or "no answers"

    def _by_gateway(self, answers: list[Answer]) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for a in answers:
            key = self.mesh.gateway_zone(a) if a.ok else "failed"
            out.setdefault(key or "unknown", Counter())[a.zone if a.ok else "failed"] += 1
        return {k: v for k, v in out.items()}

    # --- the phases ------------------------------------------------------------------------

    def _ready(self) -> bool:
        phase = self._start_mesh(
            "starting a global CP; per zone a CP, a zone ingress, echo instances with sidecars "
            "and an edge gateway; then the global load balancer in front of both gateways"
        )
        if phase is None or phase.seconds is None:
            return False
        over = " - OVER the target" if phase.seconds >= READY_TARGET_S else ""
        return self._end(
            phase,
            True,
            f"{len(self.mesh.group.procs)} processes up, each gateway answered by its own zone, "
            f"the load balancer sends to both, in {phase.seconds:.1f} s "
            f"(target < {READY_TARGET_S:g} s{over})",
        )

    def _start_loads(self) -> None:
        self.health = HealthWatch(self.mesh.lb_health, self.event, poll_s=HEALTH_POLL_S).start()
        for index in range(EXTERNAL_CLIENTS):
            load = self.mesh.load(f"external-{index + 1}", LOAD_INTERVAL_S)
            load.interval = LOAD_INTERVAL_S
            self.loads.append(load.start())
        wait_first_answers(self.loads)
        rate = EXTERNAL_CLIENTS / LOAD_INTERVAL_S
        self.event(
            f"{EXTERNAL_CLIENTS} external clients: ~{rate:.0f} requests/s to {self.mesh.target}"
        )

    def _steady(self) -> bool:
        phase = self._begin("steady")
        start = phase.started_at
        assert start is not None
        end = self._hold(start, STEADY_S)
        phase.seconds = end - start
        window = self._window(phase, start, end)
        problems = []
        by_gateway = self._by_gateway(window)
        for zone in (LOST, OTHER):
            counts = by_gateway.get(zone, Counter())
            if not counts:
                problems.append(f"gateway-{zone} got no request")
            elif set(counts) != {zone}:
                problems.append(f"gateway-{zone} answered by {dict(counts)}")
        if phase.failures:
            problems.append(f"{phase.failures} failed")
        return self._end(phase, not problems, "; ".join(problems) or self._describe(window))

    def _instances_fail(self) -> bool:
        phase = self._begin("instances-fail")
        began = phase.started_at
        assert began is not None
        self.event(f"stopping {LOST}'s echo instances (apps and sidecars)")
        self.mesh.stop_zone_instances(LOST)
        stopped = time.monotonic()
        settled = self._wait(began, self._via(LOST), self._from(OTHER), stopped + SETTLE_WAIT_S)
        problems = []
        if settled is None:
            problems.append(
                f"gateway-{LOST} not answered by {OTHER} only within {SETTLE_WAIT_S:g} s"
            )
            held = time.monotonic()
        else:
            phase.seconds = settled - began
            self.event(
                f"gateway-{LOST} answered by {OTHER} only, {phase.seconds:.2f} s after the stop"
            )
            held = self._hold(settled, INSTANCES_DOWN_S)
        down = [a for a in self.answers() if (settled or held) <= a.at < held]
        via_lost = sum(1 for a in down if a.ok and self.mesh.gateway_zone(a) == LOST)
        if settled is not None and not via_lost:
            problems.append(f"the load balancer stopped sending to gateway-{LOST}")
        if self.lb_health().get(LOST) is False:
            problems.append(f"the load balancer marked gateway-{LOST} unhealthy")
        self.event(f"starting {LOST}'s echo instances again")
        self.mesh.start_zone_instances(LOST)
        ready = time.monotonic()
        back = self._wait(ready, self._via(LOST), self._from(LOST), ready + SETTLE_WAIT_S)
        if back is None:
            problems.append(
                f"gateway-{LOST} not answered by {LOST} again within {SETTLE_WAIT_S:g} s"
            )
        end = time.monotonic()
        window = self._window(phase, began, end)
        problems += self._served_from_elsewhere(window, OTHER)
        reason = (
            f"gateway-{LOST} answered by {OTHER} only {phase.seconds or 0:.2f} s after "
            f"{LOST}'s instances got SIGTERM, the load balancer still sending it "
            f"{via_lost} requests in {held - (settled or held):.1f} s; back to {LOST} "
            f"{(back or ready) - ready:.2f} s after they were ready again; {phase.failures} failed"
        )
        return self._end(phase, not problems, "; ".join(problems) or reason)

    def _zone_lost(self) -> bool:
        phase = self._begin("zone-lost")
        began = phase.started_at
        assert began is not None
        killed_at = time.monotonic()
        killed = self.mesh.kill_zone(LOST)
        self.event(f"SIGKILLed {LOST} at once: {', '.join(killed)}")
        settled = self._wait(
            killed_at,
            self._everything,
            lambda a: a.ok and self.mesh.gateway_zone(a) == OTHER,
            killed_at + SETTLE_WAIT_S,
        )
        end = self._hold(killed_at, ZONE_LOST_S)
        window = self._window(phase, began, end)
        after = [a for a in window if a.at >= killed_at]
        failed = [a for a in after if not a.ok]
        last_failed = max((a.at - killed_at for a in failed), default=None)
        last_lost = max(
            (a.at - killed_at for a in after if a.ok and self.mesh.gateway_zone(a) == LOST),
            default=None,
        )
        problems = []
        if settled is None:
            problems.append(f"not served by gateway-{OTHER} only within {SETTLE_WAIT_S:g} s")
        else:
            phase.seconds = settled - killed_at
        if last_failed is not None and last_failed > NO_FAILURE_AFTER_S:
            problems.append(
                f"a request sent {last_failed:.2f} s after the kill failed "
                f"(target: none after {NO_FAILURE_AFTER_S:g} s)"
            )
        if self.lb_health().get(LOST):
            problems.append(f"the load balancer still counts gateway-{LOST} healthy")
        self._lost = (len(failed), last_failed)
        out_at = self.lb_changed(LOST, False, killed_at)
        reason = (
            f"served by gateway-{OTHER} only from {phase.seconds or 0:.2f} s after the kill "
            f"(last answer through gateway-{LOST}: "
            + ("none" if last_lost is None else f"{last_lost:.2f} s")
            + "; the load balancer took it out "
            + ("-" if out_at is None else f"{out_at - killed_at:.2f} s")
            + f" after the kill); {len(failed)} of {len(after)} failed"
            + ("" if last_failed is None else f", the last sent {last_failed:.2f} s after the kill")
        )
        return self._end(phase, not problems, "; ".join(problems) or reason)

    def _zone_back(self) -> bool:
        phase = self._begin("zone-back")
        began = phase.started_at
        assert began is not None
        self.event(f"starting {LOST} again: its CP (same data directory), then its proxies")
        self.mesh.restore_zone(LOST)
        ready = time.monotonic()
        self.event(f"{LOST} ready again ({ready - began:.2f} s)")
        back = self._wait(ready, self._via(LOST), self._from(LOST), ready + SETTLE_WAIT_S)
        returned = [
            a
            for a in self.answers()
            if a.at >= ready and a.ok and self.mesh.gateway_zone(a) == LOST
        ]
        first = returned[0].at if returned else None
        end = self._hold(back if back is not None else time.monotonic(), AFTER_RETURN_S)
        window = self._window(phase, began, end)
        problems = []
        if first is None or back is None:
            problems.append(f"no traffic through gateway-{LOST} within {SETTLE_WAIT_S:g} s")
        else:
            phase.seconds = first - ready
        # While zone1's proxies start together, its gateway may be configured before its
        # instances are ready, and then fails over to zone2: that is the design, not an
        # error. From the return on, it must answer from its own zone only.
        returned_at = back if back is not None else end
        problems += self._served_from_elsewhere([a for a in window if a.at >= returned_at], LOST)
        before = sum(
            1
            for a in window
            if a.at < returned_at and a.ok and self.mesh.gateway_zone(a) == LOST and a.zone != LOST
        )
        if phase.failures:
            problems.append(f"{phase.failures} requests failed while {LOST} came back")
        in_at = self.lb_changed(LOST, True, began)
        in_text = (
            "" if in_at is None else f", the load balancer sending to it {in_at - began:.2f} s"
        )
        reason = (
            f"gateway-{LOST} served again {phase.seconds or 0:.2f} s after {LOST} was ready "
            f"({ready - began:.2f} s to restart it{in_text} after the restart began); "
            f"{before} answered by {OTHER} through it before; {self._describe(window)}"
        )
        return self._end(phase, not problems, "; ".join(problems) or reason)

    def _total(self) -> None:
        phase = self.phases["total"]
        phase.seconds = self.elapsed()
        answers = self.answers()
        phase.requests = len(answers)
        phase.failures = sum(1 for a in answers if not a.ok)
        self._skip_unfinished()
        fraction = phase.failures / phase.requests if phase.requests else 1.0
        if not phase.requests:
            phase.status, phase.reason = FAIL, "no request was sent"
        else:
            phase.status = PASS if fraction <= MAX_FAILED_FRACTION else FAIL
            phase.reason = (
                f"{fraction:.2%} of requests failed (target <= {MAX_FAILED_FRACTION:.0%})"
            )
        self.targets = self._targets(fraction)

    def _targets(self, fraction: float) -> list[Target]:
        phases = [p for k, p in self.phases.items() if k != "total"]
        lost = self.phases["zone-lost"]
        count, last = self._lost
        if lost.status in (PASS, FAIL):
            ok = last is None or last <= NO_FAILURE_AFTER_S
            measured = f"{count} failed after the kill" + (
                "" if last is None else f", the last sent {last:.2f} s after it"
            )
        else:
            ok, measured = False, "zone loss not run"
        total = self.phases["total"]
        return [
            Target(
                "every phase passes",
                PASS if all(p.passed for p in phases) else FAIL,
                ", ".join(f"{p.key} {p.status}" for p in phases),
            ),
            Target(
                f"zone loss: no failed request after {NO_FAILURE_AFTER_S:g} s",
                PASS if ok else FAIL,
                measured,
            ),
            Target(
                f"at most {MAX_FAILED_FRACTION:.0%} of requests failed",
                total.status if total.requests else FAIL,
                f"{fraction:.2%} ({total.failures} of {total.requests})"
                if total.requests
                else "no request was sent",
            ),
        ]

    def target_lines(self) -> list[str]:
        lines = ["targets"]
        lines += [f"  {t.status:4}  {t.name}: {t.measured}" for t in self.targets]
        return lines

    def summary(self) -> dict[str, object]:
        return {
            "runDir": str(self.mesh.run_dir),
            "scenario": "dr",
            "passed": self.passed,
            "phases": self.phase_rows(),
            "targets": [asdict(t) for t in self.targets],
        }
