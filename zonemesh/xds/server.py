"""The ADS gRPC service: moves bytes between streams and their protocol sessions.

Each stream: its dataplane token is verified before anything else (`DpAuthenticator`), then
the first request identifies, authorizes and registers the proxy (`ProxyRegistry.connect`),
a reader task feeds requests to the session, and the stream's own coroutine writes whatever
the session says is due whenever a request or a new snapshot wakes it. Responses are built
when the stream can take them (never queued), so a slow proxy holds at most one pending
response per type; a write that does not complete within `send_timeout_s` (a client that
does not read: `watch_writes`), or too many unacknowledged Delta responses, closes that
stream only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError, Message

from zonemesh.xds.auth import AuthError
from zonemesh.xds.cache import Snapshot, SnapshotCache
from zonemesh.xds.metrics import XdsMetrics
from zonemesh.xds.protocol import (
    DEFAULT_MAX_RESOURCE_NAMES,
    DEFAULT_MAX_UNACKED,
    DeltaSession,
    ProtocolError,
    RequestInfo,
    RequestKind,
    SotwSession,
)
from zonemesh.xds.registry import Connection, ProxyRegistry, RegistrationError

log = logging.getLogger("zonemesh.xds")

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
DEFAULT_SEND_TIMEOUT_S = 30.0
_MAX_UNKNOWN_TYPES_LOGGED = 64  # clients choose type URLs: do not remember unboundedly many

M = TypeVar("M", bound=Message)


class _Malformed:
    """Stands in for a request that did not decode, so the stream can say so."""

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(message: type[M]) -> Callable[[bytes], M | _Malformed]:
    def decode(data: bytes) -> M | _Malformed:
        try:
            return message.FromString(data)
        except (DecodeError, ValueError) as e:
            return _Malformed(str(e) or "could not decode")

    return decode


def _as_is(payload: bytes) -> bytes:
    return payload


class _StreamControl:
    """Wake-ups and the end reason of one stream, shared by its reader and writer (and the
    service's write watchdog, which reads `writing_since`)."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.status: tuple[grpc.StatusCode, str] | None = None
        self.ended = False
        self.writing_since = 0.0  # monotonic start of the write in progress; 0: none
        self.stalled = False
        self._task = asyncio.current_task()  # the stream's handler: it does the writes

    def stall(self, message: str) -> None:
        """The write in progress took too long: end the stream with `message`."""
        self.stalled = True
        self.close(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        if self._task is not None:
            self._task.cancel()

    def take_stall(self) -> bool:
        """After a cancelled write: whether the watchdog did it (then the cancellation is
        consumed, and the stream ends with the watchdog's status)."""
        if not self.stalled or self._task is None:
            return False
        self._task.uncancel()
        return True

    def close(self, code: grpc.StatusCode, message: str) -> None:
        if self.status is None:
            self.status = (code, message)
        self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.wake.set()


Session = SotwSession | DeltaSession


class AdsService:
    def __init__(
        self,
        *,
        cache: SnapshotCache,
        registry: ProxyRegistry,
        metrics: XdsMetrics,
        control_plane_id: str = "",
        max_resource_names: int = DEFAULT_MAX_RESOURCE_NAMES,
        max_unacked: int = DEFAULT_MAX_UNACKED,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    ) -> None:
        self.cache = cache
        self.registry = registry
        self.metrics = metrics
        self.control_plane_id = control_plane_id
        self.max_resource_names = max_resource_names
        self.max_unacked = max_unacked
        self.send_timeout_s = send_timeout_s
        self._unknown_types_logged: set[str] = set()
        self._streams: set[_StreamControl] = set()

    async def watch_writes(self) -> None:
        """Ends the streams whose write has not completed within `send_timeout_s` (a client
        that does not read). One pass over the streams every quarter of the timeout, rather
        than a timer armed and cancelled around every response written: a stalled stream
        ends between 1 and 1.25 timeouts after its write began."""
        while True:
            await asyncio.sleep(self.send_timeout_s / 4)
            now = time.monotonic()
            for control in list(self._streams):
                since = control.writing_since
                if since and now - since > self.send_timeout_s and not control.stalled:
                    control.stall(
                        f"a response was not taken within {self.send_timeout_s:g}s; "
                        "the client is not reading"
                    )

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_sotw,
                    request_deserializer=_lenient(discovery_pb2.DiscoveryRequest),
                    response_serializer=_as_is,
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_delta,
                    request_deserializer=_lenient(discovery_pb2.DeltaDiscoveryRequest),
                    response_serializer=_as_is,
                ),
            },
        )

    async def stream_sotw(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve(
            requests,
            context,
            lambda: SotwSession(
                control_plane=self.control_plane_id, max_names=self.max_resource_names
            ),
        )

    async def stream_delta(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve(
            requests,
            context,
            lambda: DeltaSession(
                control_plane=self.control_plane_id,
                max_names=self.max_resource_names,
                max_unacked=self.max_unacked,
            ),
        )

    async def _serve(
        self, requests: AsyncIterator[Any], context: Any, new_session: Callable[[], Session]
    ) -> None:
        peer = context.peer() or ""
        try:
            credential = self.registry.auth.authenticate(
                context.invocation_metadata(), interface="xds", peer=peer
            )
        except AuthError as e:
            await context.abort(e.code, e.message)
            return
        iterator = requests.__aiter__()
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            return
        if isinstance(first, _Malformed):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"malformed discovery request: {first.error}"
            )
        control = _StreamControl()
        node = first.node if first.HasField("node") else None
        try:
            conn = await self.registry.connect(
                node, control.close, credential=credential, peer=peer
            )
        except AuthError as e:
            await context.abort(e.code, e.message)
            return
        except RegistrationError as e:
            log.warning("refused stream of node %r: %s", node.id if node else "", e.message)
            await context.abort(e.code, e.message)
            return
        session = new_session()

        def on_snapshot(snapshot: Snapshot, changed: frozenset[str]) -> None:
            session.set_snapshot(snapshot, changed)
            control.wake.set()

        stop_watching = self.cache.watch(conn.key, on_snapshot)
        existing = self.cache.get(conn.key)
        if existing is not None:
            session.set_snapshot(existing)
        self.metrics.streams_active.inc()
        reader = asyncio.create_task(self._read(first, iterator, session, conn, control))
        self._streams.add(control)
        try:
            await self._write(context, session, conn, control)
        finally:
            self._streams.discard(control)
            reader.cancel()
            stop_watching()
            self.registry.disconnect(conn)
            self.metrics.streams_active.dec()
        if control.status is not None:
            await context.abort(*control.status)

    async def _read(
        self,
        first: Any,
        iterator: AsyncIterator[Any],
        session: Session,
        conn: Connection,
        control: _StreamControl,
    ) -> None:
        request = first
        try:
            while True:
                if isinstance(request, _Malformed):
                    raise ProtocolError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"malformed discovery request: {request.error}",
                    )
                self._account(conn, session.on_request(request))
                if session.has_pending():
                    control.wake.set()
                try:
                    request = await anext(iterator)
                except StopAsyncIteration:
                    break
            control.end()
        except ProtocolError as e:
            log.warning("proxy %s: %s", conn.key, e.message)
            control.close(e.code, e.message)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the transport went away
            log.debug("proxy %s: stream read ended: %s", conn.key, e)
            control.end()

    async def _write(
        self, context: Any, session: Session, conn: Connection, control: _StreamControl
    ) -> None:
        while True:
            await control.wake.wait()
            control.wake.clear()
            if control.status is not None or control.ended:
                return
            try:
                responses = session.pending()
            except ProtocolError as e:
                log.warning("proxy %s: closing its stream: %s", conn.key, e.message)
                control.close(e.code, e.message)
                return
            for out in responses:
                control.writing_since = time.monotonic()  # for `watch_writes`
                try:
                    await context.write(out.payload)
                except asyncio.CancelledError:
                    if not control.take_stall():
                        raise
                    assert control.status is not None
                    log.warning("proxy %s: closing its stream: %s", conn.key, control.status[1])
                    return
                except Exception as e:
                    log.debug("proxy %s: write failed: %s", conn.key, e)
                    return
                finally:
                    control.writing_since = 0.0
                conn.record.responses_sent += 1
                self.metrics.sent(out.type_url).inc()
                log.debug(
                    "proxy %s: sent %s nonce=%s version=%s resources=%d removed=%d",
                    conn.key,
                    out.type_url.rsplit(".", 1)[-1],
                    out.nonce,
                    out.version,
                    out.resources,
                    out.removed,
                )

    def _account(self, conn: Connection, info: RequestInfo) -> None:
        kind = info.kind
        conn.record.requests += 1
        if kind is RequestKind.UNKNOWN_TYPE:
            logged = self._unknown_types_logged
            if info.type_url not in logged and len(logged) < _MAX_UNKNOWN_TYPES_LOGGED:
                logged.add(info.type_url)
                log.warning("ignoring requests for unsupported type %r", info.type_url)
            return
        if kind is RequestKind.STALE:
            log.debug(
                "proxy %s: ignoring stale nonce %s for %s", conn.key, info.nonce, info.type_url
            )
            return
        nack = kind is RequestKind.NACK
        self.metrics.received(info.type_url, "NACK" if nack else "ACK").inc()
        record = conn.record
        if nack:
            self.registry.record_nack(conn, info.error)
            log.warning(
                "proxy %s rejected %s version %s: %s",
                conn.key,
                info.type_url.rsplit(".", 1)[-1],
                info.version,
                info.error,
            )
        elif kind is RequestKind.ACK:
            record.acks += 1
            if info.sent_at is not None:
                self.metrics.delivery.observe(max(0.0, time.monotonic() - info.sent_at))
