"""The lab's stand-in for the host's resolver: a small authoritative DNS server.

It answers A for the names it is given, NXDOMAIN for every other name, over UDP and TCP, and
appends each question it gets to `--log` (one `name type` line), so a test can check what
reached "the host's resolver" and what did not (mesh names must not).

    python -m zonemesh.lab.upstream_dns --address 0.0.0.0 --record db.lab.test=10.213.0.9
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class Upstream:
    def __init__(self, records: dict[str, str], log: Path | None) -> None:
        self.records = {k.rstrip(".").lower(): v for k, v in records.items()}
        self.log = log

    def answer(self, data: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = question.name.to_text(omit_final_dot=True).lower()
            if self.log is not None:
                with self.log.open("a") as log:
                    log.write(f"{name} {dns.rdatatype.to_text(question.rdtype)}\n")
            ip = self.records.get(name)
            if ip is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.A:
                response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", ip))
        return response.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.upstream.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def serve(address: str, port: int, upstream: Upstream) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: _Udp(upstream), local_addr=(address, port))

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))
            reply = upstream.answer(await asyncio.wait_for(reader.readexactly(length), 5))
            if reply is not None:
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(tcp, address, port)
    print(f"upstream DNS on {address}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonemesh.lab.upstream_dns")
    parser.add_argument("--address", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--record", action="append", default=[], help="NAME=IPv4")
    parser.add_argument("--log", type=Path)
    args = parser.parse_args(argv)
    records = dict(r.split("=", 1) for r in args.record)
    asyncio.run(serve(args.address, args.port, Upstream(records, args.log)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
