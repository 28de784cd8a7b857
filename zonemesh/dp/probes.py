"""Readiness of the apps behind a Dataplane's inbounds, probed from the data plane.

TCP inbounds are ready when a connection opens; HTTP inbounds when a GET answers below 500.
The CP learns the result (see `zonemesh.dp.readiness`), so an instance whose app is down
leaves EDS while its sidecar stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import httpx

from zonemesh.resources.types.dataplane import DataplaneSpec

HTTP_PROTOCOLS = frozenset({"http", "http2", "grpc"})


@dataclass(frozen=True)
class InboundProbe:
    inbound_port: int  # what the CP knows the inbound by
    address: str  # the app
    port: int
    http: bool

    async def ready(self, timeout: float = 1.0) -> bool:
        if self.http:
            return await self._http_ready(timeout)
        return await self._tcp_ready(timeout)

    async def _tcp_ready(self, timeout: float) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.address, self.port), timeout
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _http_ready(self, timeout: float) -> bool:
        host = f"[{self.address}]" if ":" in self.address else self.address
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                response = await client.get(f"http://{host}:{self.port}/")
        except httpx.HTTPError:
            return False
        return response.status_code < 500


def probes_for(spec: DataplaneSpec) -> list[InboundProbe]:
    networking = spec.networking
    return [
        InboundProbe(
            inbound_port=inbound.port,
            address=inbound.service_address or networking.address,
            port=inbound.effective_service_port,
            http=inbound.protocol in HTTP_PROTOCOLS,
        )
        for inbound in networking.inbound
        if not inbound.ignored
    ]


async def not_ready_ports(probes: list[InboundProbe]) -> tuple[int, ...]:
    results = await asyncio.gather(*(p.ready() for p in probes))
    return tuple(sorted(p.inbound_port for p, ok in zip(probes, results, strict=True) if not ok))
