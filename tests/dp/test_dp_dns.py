"""`dp run`'s resolver over real UDP and TCP sockets on loopback: mesh names from the table,
other names through a real upstream DNS server, and hostile input that never stalls it."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from support.processes import free_port

from zonemesh.cpdp.dns_table import DnsTable
from zonemesh.dp.dns import DnsResolver
from zonemesh.lab.upstream_dns import Upstream, serve

pytestmark = pytest.mark.timeout(60)

MESH = {"echo.mzsvc.mesh.local": "243.0.0.1", "echo.svc.zone2.mesh.local": "241.0.0.7"}


def free_udp_port() -> int:
    """Free for TCP and UDP alike (the resolver binds both), never handed out twice."""
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


class Tables:
    """What the resolver reads (swapped whole, as the table source does)."""

    def __init__(self) -> None:
        self.table: DnsTable | None = DnsTable.from_pairs(MESH.items())

    def current(self) -> DnsTable | None:
        return self.table


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    port = free_udp_port()
    log = tmp_path / "upstream.log"
    task = asyncio.create_task(serve("127.0.0.1", port, Upstream({"db.lab.test": "10.9.9.9"}, log)))
    await asyncio.sleep(0.1)
    yield port, log
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def resolver(upstream: tuple[int, Path]) -> AsyncIterator[tuple[DnsResolver, Tables]]:
    tables = Tables()
    r = DnsResolver(tables.current, port=0, upstreams=[("127.0.0.1", upstream[0])])
    await r.start()
    yield r, tables
    await r.stop()


async def ask(
    r: DnsResolver, name: str, rdtype: str = "A", *, tcp: bool = False
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(query, "127.0.0.1", port=r.port, timeout=3)
    return await dns.asyncquery.udp(query, "127.0.0.1", port=r.port, timeout=3)


def addresses(reply: dns.message.Message) -> list[str]:
    return [item.address for rrset in reply.answer for item in rrset]


async def udp_raw(port: int, data: bytes, timeout: float = 0.5) -> bytes | None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, data)
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
        except TimeoutError:
            return None


async def test_mesh_names_resolve_to_their_vip_over_udp_and_tcp(resolver) -> None:
    r, _ = resolver
    for tcp in (False, True):
        reply = await ask(r, "echo.mzsvc.mesh.local", tcp=tcp)
        assert reply.rcode() == dns.rcode.NOERROR
        assert addresses(reply) == ["243.0.0.1"]
        assert reply.flags & dns.flags.AA
        assert reply.answer[0].ttl == 30
    assert addresses(await ask(r, "ECHO.Svc.Zone2.Mesh.Local.")) == ["241.0.0.7"]


@pytest.mark.parametrize("rdtype", ["AAAA", "TXT", "MX", "SRV", "HTTPS"])
async def test_other_types_of_a_mesh_name_get_an_empty_answer_at_once(resolver, rdtype) -> None:
    r, _ = resolver
    started = time.monotonic()
    reply = await ask(r, "echo.mzsvc.mesh.local", rdtype)
    assert time.monotonic() - started < 0.5
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []


async def test_other_names_go_to_the_upstream_unchanged(resolver, upstream) -> None:
    r, _ = resolver
    _, log = upstream
    assert addresses(await ask(r, "db.lab.test")) == ["10.9.9.9"]
    assert addresses(await ask(r, "db.lab.test", tcp=True)) == ["10.9.9.9"]
    missing = await ask(r, "nowhere.lab.test")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    await ask(r, "echo.mzsvc.mesh.local")
    asked = log.read_text().splitlines()
    assert "db.lab.test A" in asked and "nowhere.lab.test A" in asked
    assert not [line for line in asked if "mesh.local" in line]  # mesh names stay local


async def test_a_new_table_is_answered_from_at_once(resolver) -> None:
    r, tables = resolver
    tables.table = DnsTable.from_pairs([("echo.mzsvc.mesh.local", "243.0.0.9")])
    assert addresses(await ask(r, "echo.mzsvc.mesh.local")) == ["243.0.0.9"]
    tables.table = DnsTable.from_pairs([])
    gone = await ask(r, "echo.mzsvc.mesh.local")  # no longer the mesh's: forwarded
    assert gone.rcode() == dns.rcode.NXDOMAIN


async def test_malformed_queries_get_formerr_or_nothing_and_the_resolver_goes_on(resolver) -> None:
    r, _ = resolver
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    reply = await udp_raw(r.port, header + b"\x3fbroken-label-runs-past-the-end")
    assert reply is not None
    assert reply[:2] == b"\x12\x34"
    assert reply[3] & 0x0F == dns.rcode.FORMERR
    assert await udp_raw(r.port, b"\x00\x01\x02") is None  # no header to answer
    response_bit = struct.pack("!HHHHHH", 7, 0x8180, 0, 0, 0, 0)
    assert await udp_raw(r.port, response_bit) is None  # never answer a response
    assert await udp_raw(r.port, header + b"x" * 10_000) is None  # huge: dropped
    assert addresses(await ask(r, "echo.mzsvc.mesh.local")) == ["243.0.0.1"]
    assert r.stats.formerr == 1 and r.stats.dropped == 3


async def test_a_huge_tcp_query_closes_that_connection_only(resolver) -> None:
    r, _ = resolver
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.write(struct.pack("!H", 60_000) + b"x" * 1000)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed without an answer
    writer.close()
    assert addresses(await ask(r, "echo.mzsvc.mesh.local", tcp=True)) == ["243.0.0.1"]


async def test_a_flood_to_a_silent_upstream_never_delays_mesh_answers(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # receives, never answers
    silent.bind(("127.0.0.1", 0))
    tables = Tables()
    r = DnsResolver(
        tables.current,
        port=0,
        upstreams=[silent.getsockname()],
        upstream_timeout=2.0,
        max_forwards=32,
    )
    await r.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
            for i in range(2000):
                flood.sendto(
                    dns.message.make_query(f"x{i}.example", "A").to_wire(), ("127.0.0.1", r.port)
                )
            await asyncio.sleep(0.2)
            started = time.monotonic()
            reply = await ask(r, "echo.mzsvc.mesh.local")
            # not held behind the flood's forwards, which wait the upstream's 2 s
            assert time.monotonic() - started < 1.5
            assert addresses(reply) == ["243.0.0.1"]
        # The excess (what the kernel did not drop first) was answered SERVFAIL at once.
        assert r.stats.overloaded > 100
        assert sum(r._forwarding.values()) <= 32
    finally:
        await r.stop()
        silent.close()


async def test_no_upstream_answering_is_servfail_within_the_timeout() -> None:
    closed = free_udp_port()  # nothing listens there
    r = DnsResolver(lambda: None, port=0, upstreams=[("127.0.0.1", closed)], upstream_timeout=0.5)
    await r.start()
    try:
        started = time.monotonic()
        reply = await ask(r, "db.lab.test")
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert time.monotonic() - started < 2
    finally:
        await r.stop()


async def test_its_own_query_coming_back_is_refused_not_looped() -> None:
    port = free_udp_port()
    r = DnsResolver(lambda: None, port=port, upstreams=[("127.0.0.1", port)], upstream_timeout=1)
    await r.start()
    try:
        reply = await ask(r, "db.lab.test")
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert r.stats.loops >= 1
    finally:
        await r.stop()
