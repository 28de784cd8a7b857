"""Where `dp run`'s resolver gets its table: from its own Envoy, which the control plane
configures with it (the `_zonemesh:dns` listener on an abstract unix socket, see
`translate.transparent`). Polled once a second with `If-None-Match`, so an unchanged table
costs a 304; a change reaches the resolver within about a second of the CP pushing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from zonemesh.cpdp.dns_table import DnsTable, DnsTableError, decode
from zonemesh.cpdp.names import DNS_TABLE_PATH, dns_table_socket

log = logging.getLogger("zonemesh.dp.dns")

POLL_INTERVAL_S = 1.0
REQUEST_TIMEOUT_S = 2.0
MAX_BODY = 64 << 20


class DnsTableSource:
    """The latest table this proxy's Envoy serves (None until the first one arrived)."""

    def __init__(self, mesh: str, name: str, *, interval: float = POLL_INTERVAL_S) -> None:
        self.socket_path = dns_table_socket(mesh, name)
        self.interval = interval
        self.table: DnsTable | None = None
        self.first = asyncio.Event()
        self._etag = ""

    def current(self) -> DnsTable | None:
        return self.table

    async def run(self) -> None:
        """Poll until cancelled; errors (Envoy not up yet, no listener yet) are retried."""
        failures = 0
        while True:
            try:
                await asyncio.wait_for(self.poll_once(), REQUEST_TIMEOUT_S)
                failures = 0
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
                failures += 1
                if failures == 30:
                    log.warning("no DNS table from Envoy for 30 s: %s", e or type(e).__name__)
                else:
                    log.debug("DNS table not fetched: %s", e or type(e).__name__)
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> bool:
        """Fetch once; True if the table changed."""
        status, headers, body = await _get(self.socket_path, DNS_TABLE_PATH, self._etag)
        if status == 304:
            return False
        if status != 200:
            raise ValueError(f"HTTP {status}")
        try:
            table = decode(body)
        except DnsTableError as e:
            log.warning("the DNS table served by Envoy is unusable: %s", e)
            return False
        changed = self.table is None or table.records != self.table.records
        self.table = table
        self._etag = headers.get("etag", "")
        if changed:
            log.info("DNS table: %d mesh names", len(table))
        self.first.set()
        return changed


async def _get(path: str, target: str, etag: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET over the unix socket (`@name`: abstract), read to the end."""
    address = "\0" + path[1:] if path.startswith("@") else path
    reader, writer = await asyncio.open_unix_connection(address, limit=MAX_BODY)
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: dns\r\nConnection: close\r\n"
        if etag:
            request += f"If-None-Match: {etag}\r\n"
        writer.write((request + "\r\n").encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            raise ValueError(f"table of {length} bytes")
        body = await reader.readexactly(length) if length else b""
        return status, headers, body
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
