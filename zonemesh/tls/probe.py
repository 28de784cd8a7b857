"""The start check a client runs before it settles into waiting for its control plane.

A client given the wrong CA, or TLS where the server speaks plaintext (or the reverse),
would otherwise retry forever with nothing but handshake errors deep in a log. So before
the usual wait, each address is probed once per attempt, with the stdlib only:

- `grpcs://`: a TLS handshake verifying the server against the CA and the host dialled.
  A verification failure is final. Any other handshake failure is looked at again in
  plaintext (below): a server that answers HTTP/2 there serves plaintext gRPC.
- `grpc://`: the HTTP/2 client preface and an empty SETTINGS frame. A SETTINGS frame back
  means plaintext gRPC; a TLS record (alert) back, or a closed connection that then
  completes a TLS handshake, means TLS.

Refused, unreachable, unresolvable or silent (nothing within the timeout) is not a verdict:
the server may still be starting, so the caller keeps its backoff. A TLS server may answer
late (a loaded machine): every read waits up to `timeout`, and silence is never taken for
plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from dataclasses import dataclass

from zonemesh.tls.address import Endpoint, GrpcAddress
from zonemesh.tls.trust import ClientCa, StartCheckError

DEFAULT_TIMEOUT_S = 5.0
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_FRAME_HEADER = 9
_SETTINGS = 0x04
_TLS_RECORD_TYPES = (0x15, 0x16)  # alert, handshake


@dataclass(frozen=True)
class Peer:
    """Who is dialled and how the user names the CA option, for messages."""

    what: str = "the control plane"  # e.g. "the global control plane"
    ca_option: str = "--ca-cert-file"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    endpoint: Endpoint | None = None  # the first endpoint that answered as expected
    detail: str = ""  # why nothing answered yet (when not ok)


async def check_address(
    address: GrpcAddress,
    ca: ClientCa | None,
    peer: Peer = Peer(),
    timeout: float = DEFAULT_TIMEOUT_S,
) -> ProbeResult:
    """OK at the first endpoint that answers as expected; StartCheckError on a mismatch at
    any endpoint tried; not ok (retry later) when none answers yet."""
    if address.tls and ca is None:
        raise StartCheckError(f"{address}: grpcs:// needs {peer.ca_option}")
    details = []
    for endpoint in address.endpoints:
        problem = await _check_endpoint(endpoint, address.tls, ca, peer, timeout)
        if problem is None:
            return ProbeResult(ok=True, endpoint=endpoint)
        details.append(f"{endpoint}: {problem}")
    return ProbeResult(ok=False, detail="; ".join(details))


async def _check_endpoint(
    endpoint: Endpoint, tls: bool, ca: ClientCa | None, peer: Peer, timeout: float
) -> str | None:
    """None when it answers as expected; a reason when it does not answer (yet)."""
    if tls:
        assert ca is not None
        return await _check_tls(endpoint, ca, peer, timeout)
    return await _check_plaintext(endpoint, peer, timeout)


async def _connect(
    endpoint: Endpoint, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(endpoint.host, endpoint.port)
    except TimeoutError:
        return f"no TCP connection within {timeout:g}s"
    except OSError as e:
        return os.strerror(e.errno) if e.errno else str(e) or type(e).__name__


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def _check_tls(endpoint: Endpoint, ca: ClientCa, peer: Peer, timeout: float) -> str | None:
    connected = await _connect(endpoint, timeout)
    if isinstance(connected, str):
        return connected
    _, writer = connected
    try:
        # Our own timeout, not `ssl_handshake_timeout`: asyncio reports that one as an
        # aborted connection, which must not read as a handshake failure.
        async with asyncio.timeout(timeout):
            await writer.start_tls(ca.ssl_context(), server_hostname=endpoint.host)
    except ssl.SSLCertVerificationError as e:
        raise StartCheckError(
            f"the CA in {ca.path} does not verify {peer.what}'s certificate at {endpoint}: "
            f"{e.verify_message or e.reason or e}"
        ) from None
    except TimeoutError:
        return f"no TLS answer within {timeout:g}s"
    except (ssl.SSLError, OSError) as e:
        failure = _ssl_reason(e)
    else:
        return None
    finally:
        await _close(writer)
    if await _answers_http2(endpoint, timeout):
        raise StartCheckError(
            f"{peer.what} at {endpoint} serves plaintext gRPC; use grpc://{endpoint} "
            f"(or serve TLS there)"
        )
    if failure in ("EOF", "connection reset"):
        return f"closed the connection during the TLS handshake ({failure})"
    raise StartCheckError(f"the TLS handshake with {peer.what} at {endpoint} failed: {failure}")


def _ssl_reason(error: Exception) -> str:
    if isinstance(error, ssl.SSLEOFError | ConnectionResetError | BrokenPipeError):
        return "EOF" if isinstance(error, ssl.SSLEOFError) else "connection reset"
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    return str(error) or type(error).__name__


async def _answers_http2(endpoint: Endpoint, timeout: float) -> bool:
    connected = await _connect(endpoint, timeout)
    if isinstance(connected, str):
        return False
    reader, writer = connected
    try:
        first = await _first_bytes(reader, writer, timeout)
    finally:
        await _close(writer)
    return _is_settings(first)


async def _first_bytes(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
) -> bytes | None:
    """What the server answers to the HTTP/2 preface: b"" on close, None on silence."""
    try:
        writer.write(_PREFACE + _EMPTY_SETTINGS)
        async with asyncio.timeout(timeout):
            await writer.drain()
            data = b""
            while len(data) < _FRAME_HEADER:
                chunk = await reader.read(_FRAME_HEADER - len(data))
                if not chunk:
                    break
                data += chunk
            return data
    except TimeoutError:
        return None
    except OSError:
        return b""


def _is_settings(data: bytes | None) -> bool:
    return data is not None and len(data) >= _FRAME_HEADER and data[3] == _SETTINGS


def _is_tls_record(data: bytes | None) -> bool:
    return data is not None and len(data) >= 3 and data[0] in _TLS_RECORD_TYPES and data[1] == 3


async def _check_plaintext(endpoint: Endpoint, peer: Peer, timeout: float) -> str | None:
    connected = await _connect(endpoint, timeout)
    if isinstance(connected, str):
        return connected
    reader, writer = connected
    try:
        first = await _first_bytes(reader, writer, timeout)
    finally:
        await _close(writer)
    if _is_settings(first):
        return None
    tls_server = _is_tls_record(first) or await _completes_tls_handshake(endpoint, timeout)
    if tls_server:
        raise StartCheckError(
            f"{peer.what} at {endpoint} serves TLS; use grpcs://{endpoint} with {peer.ca_option}"
        )
    if first is None:
        return f"no answer to the HTTP/2 preface within {timeout:g}s"
    if not first:
        return "closed the connection without answering"
    raise StartCheckError(
        f"{endpoint} does not answer as a gRPC server (neither plaintext HTTP/2 nor TLS)"
    )


async def _completes_tls_handshake(endpoint: Endpoint, timeout: float) -> bool:
    """Does it speak TLS at all? No verification: this only tells the protocol apart."""
    connected = await _connect(endpoint, timeout)
    if isinstance(connected, str):
        return False
    _, writer = connected
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        async with asyncio.timeout(timeout):
            await writer.start_tls(context, server_hostname=None)
    except (ssl.SSLError, OSError, TimeoutError):
        return False
    else:
        return True
    finally:
        await _close(writer)
