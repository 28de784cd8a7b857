"""The data plane's DNS resolver (127.0.0.1:15053, UDP and TCP): mesh names from the table,
everything else to the host's resolvers, unchanged.

Why a resolver inside `dp run` and not Envoy's DNS filter configured over xDS: Kuma's own
end state is the same (an embedded proxy in kuma-dp on 15053, the CoreDNS + Envoy filter pair
removed), and the filter has three costs here. UDP listener filters have no in-place update,
so every table change would replace the listener and drain it, with nothing guaranteeing the
queries in flight. It answers only A, AAAA and SRV and forwards through its own c-ares client,
so "every other name and type goes to the host's resolver unchanged" would not hold. And a
name unknown to the table gets no TCP fallback. Here the table still comes over the one ADS
stream (the CP serves it from the proxy's own Envoy, see `translate.transparent`), and this
module answers from it:

- a mesh name: A -> its VIPs; AAAA and every other type -> NOERROR with no answer (no IPv6
  VIPs exist), never a timeout; authoritative, TTL 30 s;
- anything else (other names, several questions, other opcodes): the query's bytes go to the
  nameservers of /etc/resolv.conf in order (UDP; TCP when the app asked over TCP), and the
  answer comes back as it is; no server answering -> SERVFAIL;
- malformed queries get FORMERR when they have a header to answer, else are dropped; a query
  over 4 KiB is dropped; forwarding is bounded in concurrency, so a flood costs a SERVFAIL
  per excess query and never blocks the answers from the table.

Its own queries to the upstream servers must not be redirected back to it: the redirect rules
of `zonemesh install transparent-proxy` let the data plane's traffic through (see
`zonemesh.tproxy`), and a query that comes back anyway is recognised and refused (SERVFAIL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from zonemesh.cpdp.dns_table import DnsTable

log = logging.getLogger("zonemesh.dp.dns")

DEFAULT_PORT = 15053  # Kuma's
LISTEN_ADDRESS = "127.0.0.1"  # where REDIRECT sends locally generated packets
MAX_QUERY = 4096  # bytes; a bigger query is not a real one
MAX_FORWARDS = 256  # queries waiting on an upstream server at once
MAX_TCP_CLIENTS = 64
TCP_IDLE_S = 10.0
PORT_PICKS = 16  # with port 0: UDP ports tried until TCP binds the same one
UPSTREAM_TIMEOUT_S = 2.0  # per server; the app's resolver itself waits 5 s
DNS_PORT = 53
RESOLV_CONF = Path("/etc/resolv.conf")
_HEADER = struct.Struct("!HHHHHH")
_FLAG_QR = 0x8000
_OPCODE_MASK = 0x7800
_FLAG_RD = 0x0100


def resolv_conf_servers(path: Path = RESOLV_CONF) -> list[str]:
    """The `nameserver` lines, as glibc reads them (127.0.0.1 when there is none)."""
    try:
        text = path.read_text()
    except OSError:
        text = ""
    servers = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in servers:
            servers.append(parts[1].split("%")[0])
    return servers[:3] or ["127.0.0.1"]


@dataclass
class DnsStats:
    """What the resolver did, for logs and tests."""

    answered: int = 0  # from the table
    forwarded: int = 0
    servfail: int = 0
    formerr: int = 0
    dropped: int = 0  # too big, or no header to answer
    loops: int = 0
    overloaded: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


def _error_reply(query: bytes, rcode: int) -> bytes | None:
    """A bare reply (same id, opcode and RD, no sections) to a query we cannot parse or
    answer; None when the query has no complete header."""
    if len(query) < _HEADER.size:
        return None
    qid, flags = struct.unpack_from("!HH", query)
    if flags & _FLAG_QR:
        return None  # a response, not a query: never answer those (reflection)
    reply_flags = _FLAG_QR | (flags & (_OPCODE_MASK | _FLAG_RD)) | 0x0080 | (rcode & 0xF)
    return _HEADER.pack(qid, reply_flags, 0, 0, 0, 0)


class DnsResolver:
    """UDP and TCP servers on `address:port`, answering from `table()` (None: no table yet,
    so everything is forwarded)."""

    def __init__(
        self,
        table: Callable[[], DnsTable | None],
        *,
        address: str = LISTEN_ADDRESS,
        port: int = DEFAULT_PORT,
        upstreams: list[tuple[str, int]] | None = None,
        upstream_timeout: float = UPSTREAM_TIMEOUT_S,
        max_forwards: int = MAX_FORWARDS,
    ) -> None:
        self._table = table
        self.address = address
        self.port = port
        self.upstreams = (
            upstreams if upstreams is not None else [(s, DNS_PORT) for s in resolv_conf_servers()]
        )
        self.upstream_timeout = upstream_timeout
        self.max_forwards = max_forwards
        self.stats = DnsStats()
        self._forwarding: dict[bytes, int] = {}  # query bytes in flight (loop detection)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp_clients = 0

    # --- lifecycle ---

    async def start(self) -> None:
        """Bind UDP and TCP on one port. With port 0 the kernel picks the UDP port, which a
        TCP socket may already hold: another pick is tried then (a few times)."""
        loop = asyncio.get_running_loop()
        any_port = self.port == 0
        for attempt in range(PORT_PICKS if any_port else 1):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.address, 0 if any_port else self.port)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.address, port)
            except OSError:
                transport.close()
                if not any_port or attempt == PORT_PICKS - 1:
                    raise
                continue
            self._udp, self.port = transport, port
            break
        log.info(
            "DNS resolver on %s:%d (udp, tcp); other names go to %s",
            self.address,
            self.port,
            ", ".join(f"{h}:{p}" for h, p in self.upstreams),
        )

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- answering ---

    def local_answer(self, query: bytes, max_size: int) -> bytes | None:
        """The reply from the table or an error reply, or None: forward the query.

        Raises _Drop for what gets no answer at all."""
        if len(query) > MAX_QUERY:
            self._count("dropped", "too big")
            raise _Drop
        try:
            message = dns.message.from_wire(query)
        except dns.exception.DNSException:
            reply = _error_reply(query, dns.rcode.FORMERR)
            if reply is None:
                self._count("dropped", "no header")
                raise _Drop from None
            self._count("formerr", "malformed")
            return reply
        if message.flags & dns.flags.QR:
            self._count("dropped", "a response")
            raise _Drop
        table = self._table()
        if (
            table is None
            or message.opcode() != dns.opcode.QUERY
            or len(message.question) != 1
            or message.question[0].rdclass != dns.rdataclass.IN
        ):
            return None
        question = message.question[0]
        name = question.name.to_text(omit_final_dot=True)
        ips = table.lookup(name)
        if ips is None:
            return None
        response = dns.message.make_response(message)
        response.flags |= dns.flags.AA | dns.flags.RA
        if question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            v4 = [ip for ip in ips if ":" not in ip]
            if v4:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, table.ttl, "IN", "A", v4)
                )
        elif question.rdtype == dns.rdatatype.AAAA:
            v6 = [ip for ip in ips if ":" in ip]
            if v6:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, table.ttl, "IN", "AAAA", v6)
                )
        self.stats.answered += 1
        limit = max(max_size, message.payload if message.edns >= 0 else 512)
        return response.to_wire(max_size=limit)

    async def resolve(self, query: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one query (None: send nothing)."""
        try:
            local = self.local_answer(query, 65535 if tcp else 512)
        except _Drop:
            return None
        if local is not None:
            return local
        return await self._forward(query, tcp=tcp)

    async def _forward(self, query: bytes, *, tcp: bool) -> bytes | None:
        if query in self._forwarding:
            # Our own forwarded query came back: the redirect rules do not exempt us.
            if self.stats.loops == 0:
                log.warning(
                    "a forwarded DNS query came back to the resolver: the redirect rules "
                    "must let the data plane's own traffic through (see `zonemesh install "
                    "transparent-proxy --help`); answering SERVFAIL"
                )
            self.stats.loops += 1
            return _error_reply(query, dns.rcode.SERVFAIL)
        if sum(self._forwarding.values()) >= self.max_forwards:
            self._count("overloaded", "too many queries in flight")
            return _error_reply(query, dns.rcode.SERVFAIL)
        self._forwarding[query] = self._forwarding.get(query, 0) + 1
        try:
            for host, port in self.upstreams:
                try:
                    if tcp:
                        reply = await _ask_tcp(host, port, query, self.upstream_timeout)
                    else:
                        reply = await _ask_udp(host, port, query, self.upstream_timeout)
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                    log.debug("upstream %s:%d: %s", host, port, e or type(e).__name__)
                    continue
                if reply is not None:
                    self.stats.forwarded += 1
                    return reply
            self._count("servfail", "no upstream answered")
            return _error_reply(query, dns.rcode.SERVFAIL)
        finally:
            left = self._forwarding[query] - 1
            if left:
                self._forwarding[query] = left
            else:
                del self._forwarding[query]

    def _count(self, what: str, reason: str) -> None:
        setattr(self.stats, what, getattr(self.stats, what) + 1)
        self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1

    # --- transports ---

    def on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            local = self.local_answer(data, 512)
        except _Drop:
            return
        if local is not None:
            self._send(local, addr)
            return
        task = asyncio.ensure_future(self._forward_udp(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self._forward(data, tcp=False)
        if reply is not None:
            self._send(reply, addr)

    def _send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_clients >= MAX_TCP_CLIENTS:
            self._count("dropped", "too many tcp clients")
            writer.close()
            return
        self._tcp_clients += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S)
                (length,) = struct.unpack("!H", header)
                if length > MAX_QUERY:
                    self._count("dropped", "too big")
                    return
                query = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_S)
                reply = await self.resolve(query, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await asyncio.wait_for(writer.drain(), TCP_IDLE_S)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._tcp_clients -= 1
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()


class _Drop(Exception):
    """The query gets no reply."""


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: DnsResolver) -> None:
        self.resolver = resolver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.resolver.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns udp: %s", exc)


class _UpstreamProtocol(asyncio.DatagramProtocol):
    """One query to one server: the first reply with the query's id."""

    def __init__(self, query_id: bytes) -> None:
        self.query_id = query_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:2] == self.query_id and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _ask_udp(host: str, port: int, query: bytes, timeout: float) -> bytes | None:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _UpstreamProtocol(query[:2]), remote_addr=(host, port)
    )
    try:
        transport.sendto(query)
        return await asyncio.wait_for(protocol.reply, timeout)
    finally:
        transport.close()


async def _ask_tcp(host: str, port: int, query: bytes, timeout: float) -> bytes | None:
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(struct.pack("!H", len(query)) + query)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(length)
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), timeout)
