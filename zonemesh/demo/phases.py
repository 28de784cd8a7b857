"""The phase machinery both demo scenarios run on: a summary row per phase, the event log,
starting and ending a phase, marking what did not finish, and `summary.json`.

One home for it so the failover and the disaster-recovery scenarios report, log and skip in
the same way; each scenario keeps only its own phases and verdicts.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from zonemesh.demo.processes import ProcessError

PENDING, RUNNING, PASS, FAIL, SKIPPED = "pending", "running", "PASS", "FAIL", "SKIP"


@dataclass
class Phase:
    """One row of the summary. `seconds` is the phase's figure: time to ready, the local
    preference window, seconds to fail over, seconds to fail back, the whole scenario."""

    key: str
    title: str
    status: str = PENDING
    seconds: float | None = None
    requests: int = 0
    failures: int = 0
    reason: str = ""
    started_at: float | None = field(default=None, repr=False)
    ended_at: float | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        return self.status == PASS


def first_line(error: Exception) -> str:
    """What a one-line event says of `error` (its message's first line, else its type)."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class PhaseRunner:
    """Runs phases on `mesh` (which has a `run_dir`, `start()` and a `group`), keeping what a
    live view reads from another thread: the current phase, recent events, `finished`."""

    def __init__(
        self,
        mesh: Any,
        phases: list[Phase],
        *,
        on_phase: Callable[[Phase], None] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.mesh = mesh
        self.on_phase = on_phase
        self.on_event = on_event
        self.phases = {phase.key: phase for phase in phases}
        self.current: Phase | None = None
        self.t0 = time.monotonic()
        self.events: deque[tuple[float, str]] = deque(maxlen=200)
        self.finished = False
        self._log_lock = threading.Lock()
        self._log_path = mesh.run_dir / "demo-events.log"

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @property
    def phases_passed(self) -> bool:
        return all(p.passed for p in self.phases.values())

    def event(self, text: str, *, details: str = "") -> None:
        """Show `text` (one line) and log it, with `details` in the log only."""
        at = self.elapsed()
        self.events.append((at, text))
        with self._log_lock, self._log_path.open("a") as log:
            log.write(f"{at:7.2f}s {text}\n" + (f"{details}\n" if details else ""))
        if self.on_event:
            self.on_event(text)

    def _begin(self, key: str) -> Phase:
        phase = self.phases[key]
        phase.status, phase.started_at = RUNNING, time.monotonic()
        self.current = phase
        self.event(f"phase: {phase.title}")
        return phase

    def _end(self, phase: Phase, ok: bool, reason: str) -> bool:
        phase.status = PASS if ok else FAIL
        phase.reason = reason
        phase.ended_at = time.monotonic()
        self.event(f"{phase.title}: {phase.status} ({reason})")
        if self.on_phase:
            self.on_phase(phase)
        return ok

    def _start_mesh(self, announce: str) -> Phase | None:
        """Begins the `ready` phase and starts the mesh, timing it into the phase. None when a
        process did not come up: the phase has then failed, saying which."""
        phase = self._begin("ready")
        self.event(announce)
        try:
            self.mesh.start()
        except ProcessError as e:
            phase.seconds = time.monotonic() - phase.started_at  # type: ignore[operator]
            first = first_line(e)
            self.event(f"start failed: {first}", details=str(e))
            self._end(phase, False, f"did not start: {first}")
            return None
        phase.seconds = time.monotonic() - phase.started_at  # type: ignore[operator]
        return phase

    def _skip_unfinished(self) -> None:
        """Every phase but `total` still running was interrupted; one still pending not run."""
        for p in self.phases.values():
            if p.key == "total":
                continue
            if p.status == RUNNING:
                p.status, p.reason = SKIPPED, "interrupted"
            elif p.status == PENDING:
                p.status, p.reason = SKIPPED, "not run"

    def _finish(self) -> None:
        self.current = None
        self.finished = True
        self._write_summary()

    def phase_rows(self) -> list[dict[str, object]]:
        """The phases as `summary.json` lists them (without their monotonic clock times)."""
        return [
            {k: v for k, v in asdict(p).items() if k not in ("started_at", "ended_at")}
            for p in self.phases.values()
        ]

    def summary(self) -> dict[str, object]:
        raise NotImplementedError

    def _write_summary(self) -> None:
        (self.mesh.run_dir / "summary.json").write_text(json.dumps(self.summary(), indent=2))
