"""The start check against servers that misbehave in ways a real CP cannot be made to:
TLS that answers late, a server that never answers, one that speaks neither protocol."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tls_helpers import Pki, make_pki

from zonemesh.tls.address import parse_grpc_address
from zonemesh.tls.probe import check_address
from zonemesh.tls.trust import StartCheckError, load_client_ca

DELAY_S = 1.5


class LoopbackServer:
    """A TCP server on 127.0.0.1 handing each connection to `handle` in a thread."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            self.handle(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.closing.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", dns=("localhost",), ips=("127.0.0.1",))


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def start(handle: Callable[[socket.socket], None]) -> LoopbackServer:
        servers.append(LoopbackServer(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def late_tls(pki: Pki) -> Callable[[socket.socket], None]:
    """TLS, but the server starts its handshake only after DELAY_S (a loaded machine)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    context.set_alpn_protocols(["h2"])

    def handle(conn: socket.socket) -> None:
        time.sleep(DELAY_S)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    return handle


async def test_tls_that_answers_late_is_still_told_apart(serve, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    server = serve(late_tls(pki))
    ca = load_client_ca(pki.ca_file, "--ca-cert-file")
    started = time.monotonic()
    result = await check_address(parse_grpc_address(f"grpcs://127.0.0.1:{server.port}"), ca)
    assert result.ok and time.monotonic() - started >= DELAY_S
    with pytest.raises(StartCheckError, match="serves TLS; use grpcs://"):
        await check_address(parse_grpc_address(f"grpc://127.0.0.1:{server.port}"), None)


async def test_silence_is_no_verdict_but_a_reason_to_wait(serve, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda conn: time.sleep(3))
    ca = load_client_ca(pki.ca_file, "--ca-cert-file")
    tls = await check_address(
        parse_grpc_address(f"grpcs://127.0.0.1:{server.port}"), ca, timeout=0.5
    )
    assert not tls.ok and "no TLS answer within 0.5s" in tls.detail
    plain = await check_address(
        parse_grpc_address(f"grpc://127.0.0.1:{server.port}"), None, timeout=0.5
    )
    assert not plain.ok and "no answer to the HTTP/2 preface within 0.5s" in plain.detail


async def test_a_server_speaking_neither_protocol_is_named(serve) -> None:  # type: ignore[no-untyped-def]
    def http1(conn: socket.socket) -> None:
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    server = serve(http1)
    with pytest.raises(StartCheckError, match="does not answer as a gRPC server"):
        await check_address(parse_grpc_address(f"grpc://127.0.0.1:{server.port}"), None)


def test_a_ca_file_holding_no_ca_is_refused(pki: Pki) -> None:
    with pytest.raises(StartCheckError, match="holds no CA certificate"):
        load_client_ca(pki.cert_file, "--ca-cert-file")
