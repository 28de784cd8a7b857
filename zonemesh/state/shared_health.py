"""Proxy health shared by the instances of one zone on one PostgreSQL database.

Each instance writes what it sees of its own proxies (ADS stream up, readiness) to the internal
value `proxy-health/<instance id>`, with a heartbeat, whenever that changes and at least every
`heartbeat_s`; each reads the others' every `poll_s` and hands the merge to `InstanceHealth`
(`set_remote`), which the leader's computed state and every instance's xDS read.

An instance whose heartbeat is older than `grace_s` is dead: its proxies count as disconnected
(not forgotten, which would make them "applied through the API", hence healthy) unless another
instance has them. The grace also covers a clean shutdown: this component stops before the xDS
server ends its streams, so the last published view says "connected" while the proxies move
to another instance, and nothing flaps. Heartbeats compare wall clocks: keep the hosts' clocks
within a few seconds of each other (NTP), far below the grace.

A stream that closes counts as connected for `moving_grace_s` more (`InstanceHealth`), so a
proxy that moves from a live instance to another is never seen disconnected in between; a
proxy that really went away is disconnected that much later than with a single instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Protocol

from zonemesh.resources.base import ResourceKey
from zonemesh.runtime.health import ProxyHealth
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import StoreError

log = logging.getLogger("zonemesh.health")

PREFIX = "proxy-health/"


class ValueLister(Protocol):
    async def list_values(self, prefix: str) -> dict[str, str]: ...

    async def set_value(self, name: str, value: str) -> None: ...


def encode(proxies: dict[ResourceKey, ProxyHealth], at: float) -> str:
    rows = [
        [k.type, k.mesh, k.name, h.connected, h.ready, list(h.not_ready_inbounds)]
        for k, h in sorted(proxies.items(), key=lambda kv: (kv[0].type, kv[0].mesh, kv[0].name))
    ]
    return json.dumps({"at": at, "proxies": rows})


def merge(
    values: dict[str, str], own_name: str, now: float, grace_s: float
) -> dict[ResourceKey, ProxyHealth]:
    """The other instances' views as one: connected anywhere alive wins."""
    merged: dict[ResourceKey, ProxyHealth] = {}
    for name, text in values.items():
        if name == own_name:
            continue
        try:
            value = json.loads(text)
            alive = now - float(value["at"]) <= grace_s
            rows = value["proxies"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable proxy health %s", name)
            continue
        for type_name, mesh, proxy, connected, ready, ports in rows:
            key = ResourceKey(type_name, mesh, proxy)
            health = ProxyHealth(bool(connected and alive), bool(ready), tuple(ports))
            seen = merged.get(key)
            if seen is None or (health.connected and not seen.connected):
                merged[key] = health
    return merged


class SharedHealth:
    name = "shared-health"

    def __init__(
        self,
        runtime: Runtime,
        *,
        heartbeat_s: float = 2.0,
        poll_s: float = 0.5,
        grace_s: float = 10.0,
        moving_grace_s: float = 3.0,
    ) -> None:
        self.runtime = runtime
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.own_name = PREFIX + runtime.instance_id
        # A closed stream counts as connected this long: the proxy's reconnection to another
        # instance is published (heartbeat loop) and read (poll) well within it.
        runtime.health.moving_grace_s = moving_grace_s
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def _store(self) -> ValueLister:
        return self.runtime.store  # type: ignore[return-value]

    async def start(self) -> None:
        with contextlib.suppress(StoreError):
            await self._read_once()
        self._tasks = [
            asyncio.create_task(self._publish_forever(), name="health-publish"),
            asyncio.create_task(self._read_forever(), name="health-read"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _publish_forever(self) -> None:
        health = self.runtime.health
        published = -1
        while True:
            seen = health.local_version
            try:
                await self._store.set_value(self.own_name, encode(health.local(), time.time()))
                published = seen
            except StoreError as e:
                log.warning("publishing proxy health failed (retrying): %s", e)
            deadline = time.monotonic() + (self.heartbeat_s if published == seen else 1.0)
            while health.local_version == seen and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        health.wait_newer(health.version), deadline - time.monotonic()
                    )

    async def _read_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self._read_once()
            except StoreError as e:
                log.warning("reading the other instances' proxy health failed: %s", e)

    async def _read_once(self) -> None:
        values = await self._store.list_values(PREFIX)
        self.runtime.health.set_remote(merge(values, self.own_name, time.time(), self.grace_s))
