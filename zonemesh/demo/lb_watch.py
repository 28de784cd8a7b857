"""The global load balancer's view of the gateways, polled on a thread of its own.

Its own module because it is its own concern: the DR scenario judges from it, the live view
shows it, and neither should wait on the load balancer's admin API to do so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class HealthWatch:
    """Polls `read` (zone -> the load balancer sends to its gateway) every `poll_s` seconds,
    so the live view reads it without waiting and every change becomes an event with its time."""

    def __init__(
        self,
        read: Callable[[], dict[str, bool]],
        on_change: Callable[[str], None],
        *,
        poll_s: float,
    ) -> None:
        self.read = read
        self.on_change = on_change
        self.poll_s = poll_s
        self.latest: dict[str, bool] = {}
        self.changes: list[tuple[float, str, bool]] = []  # (monotonic time, zone, sends to it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HealthWatch:
        self._thread = threading.Thread(target=self._run, name="lb health", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.read()
            for zone, healthy in sorted(now.items()):
                if self.latest.get(zone) != healthy:
                    self.changes.append((time.monotonic(), zone, healthy))
                    state = "sends to" if healthy else "stopped sending to"
                    self.on_change(f"global load balancer {state} gateway-{zone}")
            self.latest = now
            self._stop.wait(self.poll_s)
