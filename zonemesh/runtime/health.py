"""Which Dataplanes are healthy right now: fed by the xDS server, read by computed state.

An instance registered over xDS is healthy while its ADS stream lives and its readiness
(reported by `zonemesh dp run`) is ready. An instance applied through the API, of which
nothing is known, is healthy.

Several control-plane instances sharing PostgreSQL each see only their own proxies' streams;
`state.shared_health` publishes this instance's view and feeds the others' back here with
`set_remote`. Readers get the merged view: a proxy connected to any live instance is connected
(its health as that instance sees it), so a stream moving between instances does not flap.
There, a stream that closes also counts as connected for `moving_grace_s` (0 = off, the sole
instance's behaviour): long enough for the proxy to reconnect to another instance and for
that instance to say so, so the move never shows as a disconnection anywhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from zonemesh.resources.base import ResourceKey


class HealthFacts(Protocol):
    """What the rule reads: the live `ProxyHealth`, or translation's frozen copy of it."""

    @property
    def connected(self) -> bool: ...
    @property
    def ready(self) -> bool: ...
    @property
    def not_ready_inbounds(self) -> tuple[int, ...]: ...


def is_healthy(health: HealthFacts | None, inbound_port: int | None = None) -> bool:
    """The health rule, in one place: nothing known (applied through the API) is healthy; else
    the proxy must be connected, and ready — or, asked about one inbound, that inbound's app
    must not be reported down."""
    if health is None:
        return True
    if not health.connected:
        return False
    if inbound_port is not None:
        return inbound_port not in health.not_ready_inbounds
    return health.ready


@dataclass
class ProxyHealth:
    connected: bool = False
    ready: bool = True
    not_ready_inbounds: tuple[int, ...] = ()  # inbound ports whose app is down


class InstanceHealth:
    def __init__(self) -> None:
        self._proxies: dict[ResourceKey, ProxyHealth] = {}  # what this instance sees
        self._remote: dict[ResourceKey, ProxyHealth] = {}  # what the other instances see
        self._waiters: set[asyncio.Future[None]] = set()
        self.version = 0  # bumps on every change; consumers compare to skip work
        self.local_version = 0  # bumps on changes to this instance's own view
        self.moving_grace_s = 0.0
        self._moving: dict[ResourceKey, asyncio.TimerHandle] = {}  # closed, within the grace

    def local(self) -> dict[ResourceKey, ProxyHealth]:
        """This instance's own view, for publishing to the others."""
        return {key: self._own(key, h) for key, h in self._proxies.items()}

    def _own(self, key: ResourceKey, health: ProxyHealth) -> ProxyHealth:
        if key in self._moving:
            return ProxyHealth(True, health.ready, health.not_ready_inbounds)
        return health

    def set_remote(self, merged: dict[ResourceKey, ProxyHealth]) -> None:
        """The other instances' merged view (replaces the previous one)."""
        if merged != self._remote:
            self._remote = dict(merged)
            self._notify(local=False)

    def set_connected(self, key: ResourceKey, connected: bool) -> None:
        health = self._proxies.setdefault(key, ProxyHealth())
        if health.connected != connected:
            moving = self._moving.pop(key, None)
            if moving is not None:
                moving.cancel()
            elif not connected and self.moving_grace_s > 0:
                self._start_grace(key)
            health.connected = connected
            self._notify()

    def _start_grace(self, key: ResourceKey) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        def over() -> None:
            if self._moving.pop(key, None) is not None:
                self._notify()

        self._moving[key] = loop.call_later(self.moving_grace_s, over)

    def set_readiness(self, key: ResourceKey, not_ready_inbounds: tuple[int, ...]) -> None:
        health = self._proxies.setdefault(key, ProxyHealth())
        ready = not not_ready_inbounds
        if (health.ready, health.not_ready_inbounds) != (ready, not_ready_inbounds):
            health.ready, health.not_ready_inbounds = ready, not_ready_inbounds
            self._notify()

    def forget(self, key: ResourceKey) -> None:
        moving = self._moving.pop(key, None)
        if moving is not None:
            moving.cancel()
        if self._proxies.pop(key, None) is not None:
            self._notify()

    def known(self, key: ResourceKey) -> bool:
        return key in self._proxies or key in self._remote

    def get(self, key: ResourceKey) -> ProxyHealth | None:
        mine, theirs = self._proxies.get(key), self._remote.get(key)
        if mine is not None:
            mine = self._own(key, mine)
        if mine is not None and (mine.connected or theirs is None or not theirs.connected):
            return mine
        return theirs

    def is_healthy(self, key: ResourceKey, inbound_port: int | None = None) -> bool:
        return is_healthy(self.get(key), inbound_port)

    async def wait_newer(self, seen: int) -> int:
        """Wait until `version` is past `seen`; returns it. Nothing is cleared, so any number
        of consumers can wait without taking a change from one another."""
        while self.version <= seen:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
        return self.version

    def _notify(self, local: bool = True) -> None:
        if local:
            self.local_version += 1
        self.version += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
