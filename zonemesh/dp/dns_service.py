"""What `dp run` adds for a transparently proxied Dataplane: its resolver, fed by its Envoy.

`TransparentDns.for_resource` is None for every other proxy (and with `--dns-port 0`), so
`dp run` calls it unconditionally; `start` after Envoy started, `stop` before Envoy drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from zonemesh.dp.dns import DnsResolver
from zonemesh.dp.dns_source import DnsTableSource
from zonemesh.resources.base import Resource
from zonemesh.resources.types.dataplane import DataplaneSpec

log = logging.getLogger("zonemesh.dp.dns")


class TransparentDns:
    def __init__(self, resource: Resource, port: int) -> None:
        self.source = DnsTableSource(resource.mesh or "default", resource.name)
        self.resolver = DnsResolver(self.source.current, port=port)
        self._poll: asyncio.Task[None] | None = None

    @classmethod
    def for_resource(cls, resource: Resource, port: int) -> TransparentDns | None:
        spec = resource.spec
        if not port or not isinstance(spec, DataplaneSpec):
            return None
        tp = spec.networking.transparent_proxying
        if tp is None or not tp.outbound_enabled:
            return None
        return cls(resource, port)

    async def start(self) -> None:
        """Listen at once (other names resolve from the start, forwarded); mesh names
        resolve once the first table arrived, usually within a second of Envoy's first
        configuration. Not waited for: readiness reports must not be held up by it."""
        await self.resolver.start()
        self._poll = asyncio.create_task(self.source.run())

    async def stop(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        await self.resolver.stop()
