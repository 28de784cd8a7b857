"""Requests through a client sidecar's outbound, one at a time or as a steady background load.

Each request opens a new connection: through a TCP outbound a kept-alive connection would stay
pinned to one upstream instance, and the point is to see where each request lands.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

REQUEST_TIMEOUT_S = 2.0
FIRST_ANSWER_WAIT_S = REQUEST_TIMEOUT_S + 3.0  # a first request that times out counts too


@dataclass(frozen=True)
class Answer:
    """One request's outcome: who answered (`zone`, `instance`) or why nothing did."""

    at: float  # time.monotonic() when the request was sent
    ok: bool
    zone: str = ""
    instance: str = ""
    error: str = ""
    via: str = ""  # the value of the `via_header` the request asked for (e.g. which gateway)


def new_client(timeout: float = REQUEST_TIMEOUT_S) -> httpx.Client:
    return httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0))


def ask(client: httpx.Client, url: str, via_header: str | None = None) -> Answer:
    """GET `url` (a client sidecar's outbound or a load balancer in front of `zonemesh
    echo`); `via_header`: a response header to keep in `Answer.via`."""
    at = time.monotonic()
    try:
        response = client.get(url, headers={"Connection": "close"})
    except httpx.HTTPError as e:
        return Answer(at, False, error=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    via = response.headers.get(via_header, "") if via_header else ""
    if response.status_code != 200:
        error = f"HTTP {response.status_code}: {response.text[:120]}"
        return Answer(at, False, error=error, via=via)
    try:
        body = response.json()
        return Answer(at, True, zone=str(body["zone"]), instance=str(body["instance"]), via=via)
    except (ValueError, KeyError, TypeError):
        return Answer(at, False, error=f"not an echo answer: {response.text[:120]!r}", via=via)


def ask_many(url: str, count: int) -> list[Answer]:
    with new_client() as client:
        return [ask(client, url) for _ in range(count)]


@dataclass
class Load:
    """Requests to `url` every `interval` seconds on a background thread, all recorded."""

    url: str
    interval: float = 0.05
    via_header: str | None = None
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, name=f"load {self.url}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=REQUEST_TIMEOUT_S + 5)
        return list(self.answers)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        with new_client() as client:
            while not self._stop.is_set():
                self.answers.append(ask(client, self.url, self.via_header))
                self._stop.wait(self.interval)

    def since(self, t: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.at >= t]

    def settled_at(self, t: float, zone: str, *, tail: int = 10) -> float | None:
        """When answers sent after `t` started coming only from `zone` (and kept doing so
        for at least `tail` requests), or None if they have not."""
        answers = self.since(t)
        settled: float | None = None
        streak = 0
        for answer in answers:
            if answer.ok and answer.zone == zone:
                if settled is None:
                    settled = answer.at
                streak += 1
            else:
                settled, streak = None, 0
        return settled if streak >= tail else None


def wait_first_answers(loads: list[Load], timeout: float = FIRST_ANSWER_WAIT_S) -> None:
    """Until every load has its first answer (or `timeout`): a thread's first request pays
    for starting up, and a phase measured from a cold start would count that as its own."""
    deadline = time.monotonic() + timeout
    while any(not load.answers for load in loads) and time.monotonic() < deadline:
        time.sleep(0.02)


def summary(answers: list[Answer]) -> dict[str, int]:
    """Answers per zone, plus `failed`."""
    counts: Counter[str] = Counter()
    for answer in answers:
        counts[answer.zone if answer.ok else "failed"] += 1
    return dict(counts)
