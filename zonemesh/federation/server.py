"""Global's side of KDS: the gRPC service zones dial, one session per connected zone.

Zone state lives here, on global, the only party that sees every zone's connection: the
`Zone` resources' status (connected, since when, counters) and which zones are passed on to
the others (`mapping.pass_on`). Only `enabled: false` withholds a zone: its MeshServices,
ZoneIngresses and ZoneEgresses are deleted from the other zones, as Kuma does. A zone whose CP
is disconnected, even for longer than `multizone.global.zone_offline_grace_s`, is passed on as
it last reported: the CP being gone says nothing about its data path, which the sidecars check
themselves (see `mapping.pass_on` for why; past the grace period global only says so in its
log and status). Global's own copies are never rewritten: `inspect` on global shows what the
zone last reported.

Who may connect: open-source Kuma has no KDS authentication (any process reaching the port
can claim any zone; trust-model.md §2). zonemesh goes beyond it here: before a Hello is acted
on, a session registered or a `Zone` written, the peer's zone token is checked
(`federation.auth`): a refused peer is sent nothing and nothing it sent is kept. A live
session ends when its token is revoked or expires. A zone publishes only resources of its own
zone: one naming another zone is refused (in the Ack), never rewritten. Refusals never name
another control plane's instance or another zone's details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc

from zonemesh import __version__
from zonemesh.auth.refusals import Refusals
from zonemesh.auth.tokens import TokenKind, ZoneToken
from zonemesh.federation import mapping
from zonemesh.federation.auth import KdsAuthenticator, Refused
from zonemesh.federation.mapping import Entry
from zonemesh.federation.proto import kds_pb2 as pb
from zonemesh.federation.proto import kds_pb2_grpc as pb_grpc
from zonemesh.federation.protocol import (
    HANDSHAKE_TIMEOUT_S,
    PROTOCOL,
    PROTOCOL_VERSION,
    SERVER_OPTIONS,
)
from zonemesh.federation.sync import Inbox, InboxPolicy, Outbox, Rejected
from zonemesh.resources import labels
from zonemesh.resources.base import Resource, ResourceKey, ResourceType
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.errors import ValidationError
from zonemesh.resources.origin import stamp_origin
from zonemesh.resources.ownership import is_synced
from zonemesh.resources.registry import ALL_TYPES, GLOBAL_SECRET, SECRET, ZONE, by_kind
from zonemesh.resources.types.zone import ZoneSpec, ZoneStatus
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import AlreadyExistsError, ConflictError, NotFoundError, Store
from zonemesh.tls.serving import add_grpc_port, scheme

log = logging.getLogger("zonemesh.kds")

# Global sends these, in this order (Mesh before what lives in a mesh).
DOWN_TYPES = tuple(t for t in ALL_TYPES if t.sync.global_to_zones or t.sync.zone_to_zones)
UP_TYPES = tuple(t for t in ALL_TYPES if t.sync.zone_to_global)
ACROSS_TYPES = tuple(t for t in ALL_TYPES if t.sync.zone_to_zones)
STATUS_FLUSH_S = 2.0


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class AlreadyConnected(Exception):
    """Says nothing of the connected control plane (its instance id would let a peer pose
    as it), only that the zone is taken."""

    def __init__(self, zone: str) -> None:
        super().__init__(f'zone "{zone}" is already connected from another control plane')


class GlobalInboxPolicy(InboxPolicy):
    """What global accepts from zone `zone`: the types zones own, stored under suffixed names;
    what names another zone is refused (and counted in `refusals` with reason foreign-zone)."""

    def __init__(
        self, store: Store, zone: str, refusals: Refusals | None = None, address: str = ""
    ) -> None:
        self.store = store
        self.zone = zone
        self.peer = f'zone "{zone}"'
        self.refusals = refusals
        self.address = address

    def accepts_type(self, rtype: ResourceType) -> bool:
        return rtype.sync.zone_to_global

    def to_local(self, resource: Resource) -> Resource:
        if is_synced(resource):
            raise Rejected("came from global (kuma.io/origin: global): not sent back")
        try:
            return mapping.to_global_copy(resource, self.zone)
        except mapping.ForeignZone as e:
            if self.refusals is not None:
                self.refusals.record(
                    "kds", "foreign-zone", f"{self.peer} sent {resource.key}: {e}", self.address
                )
            raise Rejected(str(e)) from None
        except ValueError as e:
            raise Rejected(str(e)) from None

    def local_key(self, key: ResourceKey) -> ResourceKey | None:
        return ResourceKey(key.type, key.mesh, mapping.global_name(key.name, self.zone))

    def owns(self, existing: Resource) -> bool:
        return (
            existing.labels.get(labels.ORIGIN) == labels.ORIGIN_ZONE
            and existing.labels.get(labels.ZONE) == self.zone
        )

    async def owned(self) -> list[Resource]:
        return [r for t in UP_TYPES for r in await self.store.list(t.name) if self.owns(r)]


@dataclass
class _ZoneState:
    offline_since: float | None  # monotonic; None while connected
    enabled: bool = True  # passed on to the other zones (`Zone` `enabled`)
    offline_noted: bool = False  # the grace period passed and the log said so
    had_resource: bool = False  # its Zone existed: if it disappears, the zone was deleted
    session: ZoneSession | None = None
    last_flush: float = 0.0


class ZoneTracker:
    """Connected sessions per zone, the `Zone` resources' status, and which zones are enabled
    (passed on to the others)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.grace_s = runtime.config.multizone.global_.zone_offline_grace_s
        self.zones: dict[str, _ZoneState] = {}
        self.closing = False
        self._started = time.monotonic()
        self._writes: set[asyncio.Task[None]] = set()
        self._zone_locks: dict[str, asyncio.Lock] = {}

    # -- startup --------------------------------------------------------------------------

    async def load(self) -> None:
        """Zones known from before this process: the previous process's connections are gone,
        so each is offline (since it last disconnected, if the status says) until it dials."""
        now_wall, now_mono = time.time(), time.monotonic()
        for zone in await self.store.list(ZONE.name):
            status = zone.status if isinstance(zone.status, ZoneStatus) else None
            since = now_mono
            if status is not None and not status.connected:
                gone_at = _parse_iso(status.last_disconnected)
                if gone_at is not None:
                    since = now_mono - max(0.0, now_wall - gone_at)
            self.zones[zone.name] = _ZoneState(
                offline_since=since, enabled=_enabled(zone), had_resource=True
            )
            if status is not None and status.connected:
                await self._write_status(zone.name, connected=False)

    # -- sessions -------------------------------------------------------------------------

    def state(self, zone: str) -> _ZoneState:
        if zone not in self.zones:
            self.zones[zone] = _ZoneState(offline_since=self._started)
        return self.zones[zone]

    def register(self, session: ZoneSession) -> None:
        state = self.state(session.zone)
        current = state.session
        if current is not None:
            if current.instance_id != session.instance_id:
                raise AlreadyConnected(session.zone)
            log.info('zone "%s" reconnected (instance %s)', session.zone, session.instance_id)
            current.replace()
        state.session = session
        state.offline_since = None
        state.offline_noted = False
        self._spawn(
            self._write_status(
                session.zone,
                connected=True,
                instance_id=session.instance_id,
                version=session.cp_version,
            )
        )
        self._publish_status()

    def unregister(self, session: ZoneSession) -> None:
        state = self.state(session.zone)
        if state.session is not session:
            return  # replaced by a newer session of the same control plane
        state.session = None
        state.offline_since = time.monotonic()
        log.info('zone "%s" disconnected', session.zone)
        self._spawn(self._flush_and_disconnect(session))
        self._publish_status()

    def enabled(self, zone: str) -> bool:
        """Passed on to the other zones: not disabled on global (a zone not known yet is)."""
        state = self.zones.get(zone)
        return True if state is None else state.enabled

    def sessions(self) -> list[ZoneSession]:
        return [s.session for s in self.zones.values() if s.session is not None]

    # -- the periodic check ---------------------------------------------------------------

    async def tick(self) -> None:
        now = time.monotonic()
        zones = {z.name: z for z in await self.store.list(ZONE.name)}
        for name, zone in zones.items():
            self.state(name).had_resource = True
            self._set_enabled(name, _enabled(zone))
        for name, state in list(self.zones.items()):
            if state.session is None and state.had_resource and name not in zones:
                if self.runtime.leadership.is_leader:  # deleting what it synced: once
                    await self._forget(name)
            elif state.session is not None:
                if now - state.last_flush >= STATUS_FLUSH_S:
                    await self._flush_counters(state.session)
            elif not state.offline_noted and now - (state.offline_since or now) >= self.grace_s:
                state.offline_noted = True
                log.warning(
                    'zone "%s" has been offline for over %gs: the other zones keep what it '
                    "last reported; their sidecars' health checks of its ingresses decide "
                    "whether it still serves",
                    name,
                    self.grace_s,
                )
                self._publish_status()

    async def _forget(self, zone: str) -> None:
        """The Zone of a disconnected zone was deleted: so is everything it had synced."""
        log.info('zone "%s" was deleted: deleting its resources on global and elsewhere', zone)
        del self.zones[zone]
        policy = GlobalInboxPolicy(self.store, zone)
        for resource in await policy.owned():
            with contextlib.suppress(NotFoundError):
                await self.store.delete(resource.key)
        self._publish_status()

    def _set_enabled(self, zone: str, enabled: bool) -> None:
        state = self.state(zone)
        if state.enabled == enabled:
            return
        state.enabled = enabled
        if enabled:
            log.info('zone "%s" is enabled again: passing on its resources', zone)
        else:
            log.warning(
                'zone "%s" is disabled: its MeshServices and zone proxies are withdrawn from '
                "the other zones",
                zone,
            )
        for session in self.sessions():
            if session.zone != zone:
                session.outbox.recheck(lambda z=zone: self._keys_of(z))
        self._publish_status()

    async def _keys_of(self, zone: str) -> Iterable[ResourceKey]:
        return [
            r.key
            for t in ACROSS_TYPES
            for r in await self.store.list(t.name)
            if r.labels.get(labels.ZONE) == zone and r.labels.get(labels.ORIGIN) == "zone"
        ]

    # -- Zone resource status -------------------------------------------------------------

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        """Wait for pending status writes (at shutdown, before the store closes)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def _flush_and_disconnect(self, session: ZoneSession) -> None:
        await self._flush_counters(session)
        await self._write_status(session.zone, connected=False)

    async def _flush_counters(self, session: ZoneSession) -> None:
        """Add what this session counted since its last flush to the Zone's totals."""
        self.state(session.zone).last_flush = time.monotonic()
        stats = session.inbox.stats
        updates, errors = stats.applied, stats.rejected + session.errors
        added_updates = updates - session.flushed[0]
        added_errors = errors - session.flushed[1]
        if not added_updates and not added_errors:
            return
        session.flushed = (updates, errors)

        def bump(status: ZoneStatus) -> dict[str, object]:
            return {
                "total_updates": status.total_updates + added_updates,
                "total_errors": status.total_errors + added_errors,
            }

        await self._write_status(session.zone, bump=bump)

    async def _write_status(
        self,
        zone: str,
        *,
        connected: bool | None = None,
        instance_id: str | None = None,
        version: str | None = None,
        bump: Callable[[ZoneStatus], dict[str, object]] | None = None,
    ) -> None:
        lock = self._zone_locks.setdefault(zone, asyncio.Lock())
        async with lock:
            for _ in range(20):
                existing = await self.store.find(ResourceKey(ZONE.name, "", zone))
                status = (
                    existing.status
                    if existing is not None and isinstance(existing.status, ZoneStatus)
                    else ZoneStatus()
                )
                update: dict[str, object] = {}
                if connected is True:
                    update.update(
                        connected=True,
                        last_connected=_now_iso(),
                        instance_id=instance_id,
                        version=version,
                    )
                elif connected is False:
                    update.update(connected=False, last_disconnected=_now_iso())
                if bump is not None:
                    update.update(bump(status))
                new_status = status.model_copy(update=update)
                try:
                    if existing is None:
                        resource = stamp_origin(
                            Resource(type=ZONE.name, name=zone, mesh="", spec=ZoneSpec()),
                            is_global=True,
                            zone="",
                        )
                        await self.store.create(resource.with_(status=new_status))
                    else:
                        await self.store.update(existing.with_(status=new_status))
                    self.state(zone).had_resource = True
                    return
                except (ConflictError, AlreadyExistsError, NotFoundError):
                    continue
                except Exception:
                    log.exception('could not write the status of zone "%s"', zone)
                    return

    def _publish_status(self) -> None:
        parts = []
        for name in sorted(self.zones):
            state = self.zones[name]
            word = "online" if state.session is not None else "offline"
            if state.offline_noted:
                word += f" (for over {self.grace_s:g}s)"
            if not state.enabled:
                word += " (disabled)"
            parts.append(f"{name} {word}")
        self.runtime.status["zones"] = ", ".join(parts) or "none"


def _enabled(zone: Resource) -> bool:
    return not isinstance(zone.spec, ZoneSpec) or zone.spec.enabled


class ZoneSession:
    """One connected zone: sends it global's state, applies the zone's state on global."""

    def __init__(
        self,
        tracker: ZoneTracker,
        context: grpc.aio.ServicerContext,
        hello: pb.Hello,
        token: ZoneToken | None = None,
    ) -> None:
        self.tracker = tracker
        self.store = tracker.store
        self.context = context
        self.zone = hello.zone
        self.instance_id = hello.instance_id
        self.cp_version = hello.cp_version
        self.token = token  # None when global's KDS auth is off
        self.peer = context.peer()
        self.errors = 0  # e.g. rejections the zone reported for global's data
        self.flushed = (0, 0)  # (updates, errors) already added to the Zone's totals
        self._ended: tuple[grpc.StatusCode, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        policy = GlobalInboxPolicy(self.store, self.zone, tracker.runtime.refusals, self.peer)
        self.inbox = Inbox(self.store, policy)
        self.outbox = Outbox(self.store, DOWN_TYPES, self._entry_for, self._send_changes)

    def _entry_for(self, resource: Resource) -> Entry | None:
        rtype = by_kind(resource.type)
        if resource.labels.get(labels.ORIGIN) == labels.ORIGIN_ZONE:
            source = resource.labels.get(labels.ZONE, "")
            if not rtype.sync.zone_to_zones or not source or source == self.zone:
                return None
            passed = mapping.pass_on(resource, zone_enabled=self.tracker.enabled(source))
            return mapping.entry(passed) if passed is not None else None
        if not rtype.sync.global_to_zones:
            return None  # e.g. GlobalSecrets: token signing keys never leave global
        if rtype.name in (SECRET.name, GLOBAL_SECRET.name):
            shared = mapping.secret_for_zone(resource, self.zone)
            return mapping.entry(mapping.to_zone(shared)) if shared is not None else None
        return mapping.entry(mapping.to_zone(resource))

    async def _write(self, message: pb.GlobalMessage) -> None:
        async with self._write_lock:
            await self.context.write(message)

    async def _send_changes(self, changes: pb.Changes) -> None:
        await self._write(pb.GlobalMessage(changes=changes))

    def end(self, code: grpc.StatusCode, reason: str) -> None:
        """End this stream from global's side (replaced, or global shutting down)."""
        self._ended = (code, reason)
        if self._task is not None:
            self._task.cancel()

    def replace(self) -> None:
        """The same zone control plane connected again: end this (stale) stream."""
        self.end(grpc.StatusCode.ABORTED, "replaced by a newer stream of the same control plane")

    def refuse(self, reason: str, message: str) -> None:
        """Its token no longer holds (revoked, expired): count it and end the stream."""
        self.tracker.runtime.refusals.record(
            "kds", reason, f'zone "{self.zone}": {message}: stream closed', self.peer
        )
        self.end(grpc.StatusCode.UNAUTHENTICATED, f"zone token: {message}")

    def _expiry_timer(self) -> asyncio.TimerHandle | None:
        if self.token is None:
            return None
        left = (self.token.expires_at - datetime.now(UTC)).total_seconds()
        return asyncio.get_running_loop().call_later(
            max(0.0, left), self.refuse, "expired", "the token has expired"
        )

    async def run(self) -> None:
        self._task = asyncio.create_task(self._body())
        timer = self._expiry_timer()
        try:
            await self._task
        except asyncio.CancelledError:
            if self._ended is None:
                raise
            await self.context.abort(*self._ended)
        finally:
            if timer is not None:
                timer.cancel()

    async def wait_ended(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _body(self) -> None:
        await self._write(
            pb.GlobalMessage(
                welcome=pb.Welcome(
                    protocol=PROTOCOL,
                    protocol_version=PROTOCOL_VERSION,
                    instance_id=self.tracker.runtime.instance_id,
                    cp_version=__version__,
                )
            )
        )
        log.info(
            'zone "%s" connected (instance %s, zonemesh %s, from %s)',
            self.zone,
            self.instance_id,
            self.cp_version or "?",
            self.context.peer(),
        )
        sending = asyncio.create_task(self.outbox.run())
        receiving = asyncio.create_task(self._receive())
        try:
            done, _ = await asyncio.wait({sending, receiving}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raise what ended it
        finally:
            for task in (sending, receiving):
                task.cancel()
            await asyncio.gather(sending, receiving, return_exceptions=True)

    async def _receive(self) -> None:
        while True:
            message = await self.context.read()
            if message is grpc.aio.EOF:
                log.info('zone "%s" closed its stream', self.zone)
                return
            kind = message.WhichOneof("message")
            if kind == "changes":
                rejected = await self.inbox.apply(message.changes)
                await self._write(
                    pb.GlobalMessage(ack=pb.Ack(batch=message.changes.batch, rejected=rejected))
                )
                if message.changes.snapshot_complete:
                    log.info(
                        'zone "%s": snapshot applied (%d written, %d unchanged, %d refused)',
                        self.zone,
                        self.inbox.stats.applied,
                        self.inbox.stats.unchanged,
                        self.inbox.stats.rejected,
                    )
            elif kind == "ack":
                for rejection in message.ack.rejected:
                    self.errors += 1
                    log.warning(
                        'zone "%s" refused %s/%s/%s: %s',
                        self.zone,
                        rejection.ref.type,
                        rejection.ref.mesh,
                        rejection.ref.name,
                        rejection.reason,
                    )
            else:
                log.warning(
                    'zone "%s" sent an unexpected message (%s): ignored', self.zone, kind or "empty"
                )


class KdsServicer(pb_grpc.KDSServicer):
    def __init__(self, tracker: ZoneTracker) -> None:
        self.tracker = tracker
        self.auth = KdsAuthenticator.of(tracker.runtime)

    async def _refuse(self, context: grpc.aio.ServicerContext, refused: Refused) -> None:
        self.auth.record(refused, context.peer())
        await context.abort(refused.code, refused.message)

    async def Sync(  # the name the .proto gives the method
        self, request_iterator: object, context: grpc.aio.ServicerContext
    ) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                first = await context.read()
        except TimeoutError:
            log.warning("KDS peer %s sent no Hello within %gs", context.peer(), HANDSHAKE_TIMEOUT_S)
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no Hello within {HANDSHAKE_TIMEOUT_S:g}s",
            )
        if first is grpc.aio.EOF:
            return
        # The token before the Hello is looked at: a peer without a valid one learns nothing
        # (not even whether it speaks our protocol) and nothing more it sends is read. The
        # Hello is read first only so that the peer's write of it completes: ending a call
        # the client is still writing to can lose the status on its side.
        try:
            token = self.auth.authenticate(context.invocation_metadata() or ())
        except Refused as refused:
            await self._refuse(context, refused)
        hello = first.hello if first.WhichOneof("message") == "hello" else None
        problem = _check_hello(hello)
        if problem is not None:
            code, text = problem
            log.warning("refused KDS peer %s: %s", context.peer(), text)
            await context.abort(code, text)
        assert hello is not None
        try:
            self.auth.authorize(token, hello.zone)
        except Refused as refused:
            await self._refuse(context, refused)
        if self.tracker.closing:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the global control plane is shutting down"
            )
        session = ZoneSession(self.tracker, context, hello, token)
        try:
            self.tracker.register(session)
        except AlreadyConnected as e:
            log.error("refused a connection from %s: %s", context.peer(), e)
            await self._refuse(
                context, Refused(grpc.StatusCode.ALREADY_EXISTS, "already-connected", str(e))
            )
        try:
            await session.run()
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            if type(e).__module__.startswith("grpc"):  # the peer went away mid-write
                log.info('stream of zone "%s" ended: %s', session.zone, e)
            else:
                log.exception('stream of zone "%s" failed', session.zone)
            raise
        finally:
            self.tracker.unregister(session)


def _check_hello(hello: pb.Hello | None) -> tuple[grpc.StatusCode, str] | None:
    if hello is None:
        return grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello"
    if hello.protocol != PROTOCOL:
        return (
            grpc.StatusCode.FAILED_PRECONDITION,
            f"unknown protocol {hello.protocol!r}: this is a zonemesh global control plane "
            f"(protocol {PROTOCOL!r})",
        )
    if hello.protocol_version != PROTOCOL_VERSION:
        return (
            grpc.StatusCode.FAILED_PRECONDITION,
            f"unsupported {PROTOCOL} version {hello.protocol_version} "
            f"(this global speaks version {PROTOCOL_VERSION})",
        )
    try:
        resource_from_wire({"type": ZONE.name, "name": hello.zone})
    except ValidationError as e:
        return grpc.StatusCode.INVALID_ARGUMENT, f"zone name {hello.zone!r}: {e}"
    if not hello.instance_id:
        return grpc.StatusCode.INVALID_ARGUMENT, "instance_id must be set"
    return None


@dataclass
class KdsServer:
    """The global control plane's KDS endpoint (`multizone.global.kds_port`)."""

    runtime: Runtime
    name: str = "kds-server"
    port: int = 0  # the bound port, once started
    tracker: ZoneTracker = field(init=False)
    _server: grpc.aio.Server | None = None
    _ticker: asyncio.Task[None] | None = None
    _unsubscribe: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.tracker = ZoneTracker(self.runtime)

    def _on_revocation(self, kind: TokenKind, mesh: str, revoked: frozenset[str]) -> None:
        """Revoked zone tokens end their live sessions now, not at the next reconnect."""
        if kind is not TokenKind.ZONE:
            return
        for session in self.tracker.sessions():
            if session.token is not None and session.token.token_id in revoked:
                session.refuse("revoked", "the token has been revoked")

    async def start(self) -> None:
        config = self.runtime.config
        await self.tracker.load()
        if not KdsAuthenticator.of(self.runtime).required:
            log.warning(
                "KDS authentication is off (KUMA_MULTIZONE_GLOBAL_KDS_AUTH_TYPE=none): any "
                "process that reaches the KDS port can join as any zone"
            )
        self._unsubscribe = self.runtime.tokens.on_revocation(self._on_revocation)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        pb_grpc.add_KDSServicer_to_server(KdsServicer(self.tracker), server)
        address = f"{config.address}:{config.multizone.global_.kds_port}"
        try:
            self.port = add_grpc_port(server, address, self.runtime.server_tls)
        except RuntimeError as e:
            raise OSError(f"KDS could not listen on {address}: {e}") from None
        if not self.port:
            raise OSError(f"KDS could not listen on {address}")
        await server.start()
        self._server = server
        self._ticker = asyncio.create_task(self._tick_forever())
        self.runtime.views["kds"] = self.tracker  # connected zones, which are enabled
        where = f"{scheme(self.runtime.server_tls)}://{config.address}:{self.port}"
        self.runtime.status["kds"] = f"listening on {where}"
        self.tracker._publish_status()
        log.info("KDS listening on %s", where)

    async def _tick_forever(self) -> None:
        interval = max(0.1, min(1.0, self.tracker.grace_s / 4))
        while True:
            try:
                await self.tracker.tick()
            except Exception:
                log.exception("zone availability check failed")
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        # End the streams and record the zones as disconnected while the store is open.
        self.tracker.closing = True
        sessions = self.tracker.sessions()
        for session in sessions:
            session.end(grpc.StatusCode.UNAVAILABLE, "the global control plane is shutting down")
        for session in sessions:
            await session.wait_ended()
            self.tracker.unregister(session)
        await self.tracker.drain()
        if self._server is not None:
            await self._server.stop(grace=0.5)
        self.runtime.status["kds"] = "stopped"
