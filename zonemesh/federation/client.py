"""A federated zone's side of KDS: dial global, keep the stream up, sync both ways.

The zone uploads only what it owns (types flagged `zone_to_global`, not labelled
`kuma.io/origin: global`), so nothing global sent is ever echoed back, and stores what global
sends with `kuma.io/origin: global`. Losing global never deletes anything: the zone keeps
serving with what it has and converges on the snapshot exchanged at the next connection.

The zone presents its zone token (`zone_token`) on every stream. A token global refuses
(UNAUTHENTICATED, PERMISSION_DENIED) or a zone name taken by another control plane
(ALREADY_EXISTS) is an ERROR in the log and in `GET /` status, yet the zone keeps retrying
with backoff: the fix (a new token in the file, which is re-read on every attempt; the other
control plane stopped) needs no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from zonemesh import __version__
from zonemesh.config import ConfigError, check_zone_kds_auth
from zonemesh.federation import dial, mapping
from zonemesh.federation.mapping import Entry
from zonemesh.federation.proto import kds_pb2 as pb
from zonemesh.federation.proto import kds_pb2_grpc as pb_grpc
from zonemesh.federation.protocol import (
    CHANNEL_OPTIONS,
    HANDSHAKE_TIMEOUT_S,
    PROTOCOL,
    PROTOCOL_VERSION,
)
from zonemesh.federation.sync import Inbox, InboxPolicy, Outbox, Rejected
from zonemesh.federation.zone_token import METADATA_KEY, ZoneTokenError, read_zone_token
from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey, ResourceType
from zonemesh.resources.ownership import is_synced
from zonemesh.resources.registry import ALL_TYPES, by_kind
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import Store
from zonemesh.tls.address import AddressError, GrpcAddress
from zonemesh.tls.trust import ClientCa, StartCheckError

log = logging.getLogger("zonemesh.kds")

UP_TYPES = tuple(t for t in ALL_TYPES if t.sync.zone_to_global)
DOWN_TYPES = tuple(t for t in ALL_TYPES if t.sync.global_to_zones or t.sync.zone_to_zones)
BACKOFF_START_S = 0.1
BACKOFF_CAP_S = 5.0
STATUS_KEY = "global"
REJECTED_KEY = "global_rejected"


# Answers that need an operator (a token to fix, a duplicate zone to stop): logged as ERROR.
OPERATOR_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


class SyncRefused(Exception):
    """Global (or whatever answered) refused or does not speak KDS: retry later. `severe`
    when retrying alone will not fix it."""

    def __init__(self, message: str, *, severe: bool = False) -> None:
        super().__init__(message)
        self.severe = severe


class ZoneInboxPolicy(InboxPolicy):
    """What a zone accepts from global: everything global sends down, labelled origin global."""

    peer = "global"

    def __init__(self, store: Store) -> None:
        self.store = store

    def accepts_type(self, rtype: ResourceType) -> bool:
        return rtype.sync.global_to_zones or rtype.sync.zone_to_zones

    def to_local(self, resource: Resource) -> Resource:
        if not is_synced(resource):
            raise Rejected("resources from global must be labelled kuma.io/origin: global")
        return resource

    def local_key(self, key: ResourceKey) -> ResourceKey | None:
        return key

    def owns(self, existing: Resource) -> bool:
        return is_synced(existing)

    def may_replace(self, existing: Resource) -> bool:
        # A zone that was standalone before may hold its own Mesh, MMZS...: global's win.
        return by_kind(existing.type).global_owned

    async def owned(self) -> list[Resource]:
        return [r for t in DOWN_TYPES for r in await self.store.list(t.name) if self.owns(r)]


def describe_status(
    code: grpc.StatusCode, details: str, *, lost: bool = False, token_setting: str = ""
) -> str:
    """Why a call to global failed (or a stream ended), in words an operator can act on."""
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        fix = f"; fix {token_setting}" if token_setting else ""
        return f"global refused this zone's token: {code.name}: {details}{fix}"
    if lost:
        return f"lost the stream: {code.name}: {details}"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return "not a zonemesh global control plane (it does not serve KDS)"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"does not answer: {details}"
    return f"refused: {code.name}: {details}"


def describe_rpc_error(
    error: grpc.aio.AioRpcError, *, lost: bool = False, token_setting: str = ""
) -> str:
    return describe_status(
        error.code(), error.details() or "", lost=lost, token_setting=token_setting
    )


@dataclass
class KdsClient:
    """Keeps a federated zone connected to global, retrying with capped exponential backoff."""

    runtime: Runtime
    name: str = "kds-client"
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    attempts: int = 0  # since the last successful handshake
    last_error: str = ""
    inbox: Inbox | None = None
    outbox: Outbox | None = None
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False
    _rejected: dict[ResourceKey, str] = field(default_factory=dict)
    _target: GrpcAddress | None = None
    _ca: ClientCa | None = None

    @property
    def address(self) -> str:
        return self.runtime.config.multizone.zone.global_address

    @property
    def _token_setting(self) -> str:
        auth = self.runtime.config.multizone.zone.kds_auth
        if auth.type == "none":
            return ""
        return auth.setting + (" (the file is re-read on every attempt)" if auth.token_path else "")

    async def start(self) -> None:
        """The start check first: grpcs:// without a usable CA, a CA that does not verify
        global, or TLS on one side only raise StartCheckError (`cp run` exits naming it);
        a global that does not answer yet is waited for with the backoff."""
        # A zone without a usable token stops here, at start, naming the setting; later
        # read failures (a file being replaced) are retried like any other.
        try:
            check_zone_kds_auth(self.runtime.config)
        except ConfigError as e:
            raise ZoneTokenError(str(e)) from None
        read_zone_token(self.runtime.config.multizone.zone.kds_auth)
        self.runtime.views["kds"] = self  # e.g. for readiness: `connected`, `inbox.snapshot_done`
        self._set_status(f"connecting to {self.address}")
        try:
            self._target = dial.global_address(self.runtime.config)
        except AddressError as e:
            self._target = None
            self.last_error = str(e)
        else:
            self._ca = dial.root_ca(self.runtime.config, self._target)
            result = await dial.start_check(self._target, self._ca)
            if not result.ok:
                log.warning("KDS: global %s does not answer yet: %s", self.address, result.detail)
        self._task = asyncio.create_task(self._run_forever())

    async def stop(self) -> None:
        self._stopping = True
        task = self._task
        # gRPC can turn a cancellation that races a failing call into an RpcError; cancel
        # until the task is really gone (the loop also checks `_stopping`).
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and task.done() and not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()
        self._set_status(f"stopped (was syncing with {self.address})")

    def _set_status(self, text: str) -> None:
        self.runtime.status[STATUS_KEY] = text

    async def _run_forever(self) -> None:
        delay = BACKOFF_START_S
        target = self._target
        if target is None:
            log.error("%s: not syncing with global", self.last_error)
            self._set_status(f"not syncing: {self.last_error}")
            return
        while True:
            self.attempts += 1
            self._set_status(
                f"connecting to {self.address} (attempt {self.attempts})"
                + (f": {self.last_error}" if self.last_error else "")
            )
            severe = False
            try:
                await self._session(target)
                reason = "global closed the stream"
            except grpc.aio.AioRpcError as e:
                reason = describe_rpc_error(
                    e, lost=self.connected.is_set(), token_setting=self._token_setting
                )
                severe = e.code() in OPERATOR_CODES
            except SyncRefused as e:
                reason, severe = str(e), e.severe
            except ZoneTokenError as e:
                reason, severe = str(e), True
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("KDS stream to %s failed", self.address)
                reason = f"{type(e).__name__}: {e}"
            if self._stopping:
                return
            if not self.connected.is_set():
                reason = await self._mismatch(target) or reason
            severe = severe or reason.startswith(dial.ADDRESS_OPTION)
            self.last_error = reason
            target = target.rotated()  # several global instances: the next is tried first
            if self.connected.is_set():  # it worked for a while: start the backoff over
                self.connected.clear()
                self.attempts = 0
                delay = BACKOFF_START_S
                log.log(
                    logging.ERROR if severe else logging.WARNING,
                    "KDS: %s: %s; reconnecting in %.1fs",
                    self.address,
                    reason,
                    delay,
                )
            else:
                log.log(
                    logging.ERROR if severe else logging.WARNING,
                    "KDS: attempt %d to %s failed: %s; retrying in %.1fs",
                    self.attempts,
                    self.address,
                    reason,
                    delay,
                )
            self._set_status(
                f"connecting to {self.address} (attempt {self.attempts + 1}): {reason}"
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP_S)

    async def _mismatch(self, target: GrpcAddress) -> str | None:
        """After a failed attempt: the start check's verdict, if global now answers with the
        wrong certificate or protocol (said plainly instead of as a handshake error)."""
        try:
            await dial.start_check(target, self._ca)
        except StartCheckError as e:
            return str(e)
        return None

    async def _session(self, target: GrpcAddress) -> None:
        """One stream, from handshake to its end."""
        runtime = self.runtime
        token = read_zone_token(runtime.config.multizone.zone.kds_auth)
        # Per-call metadata, not channel credentials: it travels on whatever channel is open.
        metadata = ((METADATA_KEY, token),) if token is not None else None
        async with dial.open_global_channel(target, self._ca, CHANNEL_OPTIONS) as channel:
            call = pb_grpc.KDSStub(channel).Sync(metadata=metadata)
            await call.write(
                pb.ZoneMessage(
                    hello=pb.Hello(
                        protocol=PROTOCOL,
                        protocol_version=PROTOCOL_VERSION,
                        zone=runtime.zone,
                        instance_id=runtime.instance_id,
                        cp_version=__version__,
                    )
                )
            )
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                    first = await call.read()
            except TimeoutError:
                call.cancel()
                raise SyncRefused(
                    f"no answer within {HANDSHAKE_TIMEOUT_S:g}s: "
                    "is it a zonemesh global control plane?"
                ) from None
            if first is grpc.aio.EOF:
                code = await call.code()
                details = await call.details()
                raise SyncRefused(
                    describe_status(code, details or "", token_setting=self._token_setting),
                    severe=code in OPERATOR_CODES,
                )
            welcome = first.welcome if first.WhichOneof("message") == "welcome" else None
            if welcome is None or welcome.protocol != PROTOCOL:
                call.cancel()
                raise SyncRefused("not a zonemesh global control plane (no KDS Welcome)")
            if welcome.protocol_version != PROTOCOL_VERSION:
                call.cancel()
                raise SyncRefused(
                    f"global speaks {PROTOCOL} version {welcome.protocol_version}, "
                    f"this zone speaks {PROTOCOL_VERSION}"
                )
            await self._stream(call, welcome)

    async def _stream(self, call: grpc.aio.StreamStreamCall, welcome: pb.Welcome) -> None:
        write_lock = asyncio.Lock()

        async def write(message: pb.ZoneMessage) -> None:
            async with write_lock:
                await call.write(message)

        async def send_changes(changes: pb.Changes) -> None:
            for upsert in changes.upserts:
                self._rejected.pop(ResourceKey(upsert.type, upsert.mesh, upsert.name), None)
            for delete in changes.deletes:
                self._rejected.pop(ResourceKey(delete.type, delete.mesh, delete.name), None)
            await write(pb.ZoneMessage(changes=changes))

        self.inbox = Inbox(self.runtime.store, ZoneInboxPolicy(self.runtime.store))
        self.outbox = Outbox(self.runtime.store, UP_TYPES, self._entry_for, send_changes)
        self.connected.set()
        self.attempts = 0
        self.last_error = ""
        self._set_status(f"connected to {self.address} (global instance {welcome.instance_id})")
        log.info(
            'KDS: connected to %s as zone "%s" (global instance %s, zonemesh %s)',
            self.address,
            self.runtime.zone,
            welcome.instance_id,
            welcome.cp_version or "?",
        )
        sending = asyncio.create_task(self.outbox.run())
        receiving = asyncio.create_task(self._receive(call, write))
        try:
            done, _ = await asyncio.wait({sending, receiving}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (sending, receiving):
                task.cancel()
            await asyncio.gather(sending, receiving, return_exceptions=True)
            call.cancel()

    async def _receive(
        self,
        call: grpc.aio.StreamStreamCall,
        write: Callable[[pb.ZoneMessage], Awaitable[None]],
    ) -> None:
        assert self.inbox is not None
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                code = await call.code()
                if code != grpc.StatusCode.OK:
                    details = await call.details()
                    raise SyncRefused(
                        describe_status(
                            code, details or "", lost=True, token_setting=self._token_setting
                        ),
                        severe=code in OPERATOR_CODES,
                    )
                return
            kind = message.WhichOneof("message")
            if kind == "changes":
                rejected = await self.inbox.apply(message.changes)
                await write(
                    pb.ZoneMessage(ack=pb.Ack(batch=message.changes.batch, rejected=rejected))
                )
                if message.changes.snapshot_complete:
                    stats = self.inbox.stats
                    log.info(
                        "KDS: global's snapshot applied (%d written, %d unchanged, %d refused)",
                        stats.applied,
                        stats.unchanged,
                        stats.rejected,
                    )
            elif kind == "ack":
                self._note_rejections(message.ack.rejected)
            else:
                log.warning("KDS: unexpected message from global (%s): ignored", kind or "empty")

    def _note_rejections(self, rejected: list[pb.Rejection]) -> None:
        for rejection in rejected:
            key = ResourceKey(rejection.ref.type, rejection.ref.mesh, rejection.ref.name)
            self._rejected[key] = rejection.reason
            log.warning("KDS: global refused %s: %s", key, rejection.reason)
        if self._rejected:
            shown = "; ".join(f"{k}: {r}" for k, r in sorted(self._rejected.items())[:5])
            more = len(self._rejected) - 5
            self.runtime.status[REJECTED_KEY] = (
                f"{len(self._rejected)} refused by global: {shown}"
                + (f" (and {more} more)" if more > 0 else "")
            )
        else:
            self.runtime.status.pop(REJECTED_KEY, None)

    def _entry_for(self, resource: Resource) -> Entry | None:
        rtype = by_kind(resource.type)
        if not rtype.sync.zone_to_global:
            return None
        if is_synced(resource):
            return None  # came from global: never echoed back
        zone = resource.labels.get(labels.ZONE)
        if zone and zone != self.runtime.zone:
            return None
        return mapping.entry(resource)

    @property
    def rejected(self) -> dict[ResourceKey, str]:
        return dict(self._rejected)
