"""Which proxies are connected: identity from the node, registration, stream lifecycle.

`node.id` is `<mesh>.<name>` (split at the first dot). Zone ingresses and egresses are
global-scoped, so their key has mesh "" whatever the id's prefix; `dataplane.proxyType` in
the node metadata decides.

Registration (Kuma's Universal lifecycle): a proxy that brings its resource in
`dataplane.resource` (what `zonemesh dp run --dataplane-file` does) has it created or, when
it differs from the stored one, updated — so a changed file takes effect on the next `dp run`,
even across CP restarts. The dataplane token must allow both the stored resource and the new
one (a token scoped to one service cannot take over another's Dataplane). A resource created
this way carries `REGISTERED_LABEL`; `xds.lifecycle` deletes only those (on a graceful stop,
or when offline past the cleanup age), never one applied through the API. Updating an
API-applied one changes its spec only and leaves it unlabelled.

Connecting and disconnecting are events: the registry updates `runtime.health` and calls its
subscribers (`subscribe`). A second stream for the same proxy replaces the first, which is
told to close — but only once the newcomer's token has been verified and authorized for this
proxy (`DpAuthenticator`): a stream that is refused never touches the live one, and nothing
a refused stream sent is registered. A stream ends when its token expires or is revoked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import grpc
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format, struct_pb2

from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import parse_documents, resource_from_wire
from zonemesh.resources.errors import ValidationError
from zonemesh.resources.origin import stamp_origin
from zonemesh.resources.proxy_types import RESOURCE_TYPE, ProxyType
from zonemesh.resources.registry import MESH
from zonemesh.resources.types.dataplane import (
    MEMO_MAX_LISTS,
    CheckedOutbounds,
    DataplaneSpec,
    OutboundListMemo,
)
from zonemesh.resources.types.zone_proxies import ZoneIngressSpec
from zonemesh.runtime.insights import ProxyInsight
from zonemesh.store.base import AlreadyExistsError, ConflictError, NotFoundError
from zonemesh.xds.auth import AuthError, Credential, DpAuthenticator
from zonemesh.xds.engine.sharing import SharedOutbounds

if TYPE_CHECKING:
    from zonemesh.runtime.kernel import Runtime

log = logging.getLogger("zonemesh.xds")

META_PROXY_TYPE = "dataplane.proxyType"
EXPIRY_RECHECK_S = 1.0  # a token past its expiry but within the verifier's leeway
META_RESOURCE = "dataplane.resource"
# On a proxy resource created from node metadata (see the module docstring).
REGISTERED_LABEL = "zonemesh.io/registered-from"
REGISTERED_FROM_METADATA = "node-metadata"
REGISTER_ATTEMPTS = 5


class RegistrationError(Exception):
    """The proxy cannot be served; the stream ends with this gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class NodeIdentity:
    key: ResourceKey
    proxy_type: ProxyType
    node_id: str
    resource_doc: dict[str, Any] | None  # from `dataplane.resource`, not yet validated
    envoy_version: str = ""


_NESTED = "dataplane"
_READ_KEYS = (META_PROXY_TYPE, META_RESOURCE)  # what `parse_node` reads of the metadata


def _metadata(node: base_pb2.Node) -> dict[str, Any]:
    """The metadata keys `parse_node` reads, as `MessageToDict` gives them, also when nested
    (`{"dataplane": {"proxyType": ...}}`; the flat key wins). Only these are converted: the
    rest of the Struct (admin address, versions...) is not registration's business."""
    if not node.HasField("metadata"):
        return {}
    fields = node.metadata.fields  # `get`, never `[]`: indexing a missing key would add it
    nested = fields.get(_NESTED)
    nested_fields = (
        nested.struct_value.fields
        if nested is not None and nested.WhichOneof("kind") == "struct_value"
        else None
    )
    meta: dict[str, Any] = {}
    for key in _READ_KEYS:
        value = fields.get(key)
        if value is None and nested_fields is not None:
            value = nested_fields.get(key[len(_NESTED) + 1 :])
        if value is not None:
            meta[key] = _value(value)
    return meta


def _value(value: struct_pb2.Value) -> Any:
    """One Struct value as `MessageToDict` converts it (a string, the usual case, directly)."""
    if value.WhichOneof("kind") == "string_value":
        return value.string_value
    return json_format.MessageToDict(value)


def parse_node(node: base_pb2.Node | None) -> NodeIdentity:
    """The proxy's key and type from `node`; raises `RegistrationError` (INVALID_ARGUMENT)."""
    if node is None or not node.id:
        raise RegistrationError(
            grpc.StatusCode.INVALID_ARGUMENT, "node.id is required in the first request"
        )
    meta = _metadata(node)
    raw_type = meta.get(META_PROXY_TYPE) or ProxyType.DATAPLANE.value
    try:
        proxy_type = ProxyType(raw_type)
    except ValueError:
        raise RegistrationError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{META_PROXY_TYPE}: must be one of: dataplane, ingress, egress (got {raw_type!r})",
        ) from None
    doc: dict[str, Any] | None = None
    raw_resource = meta.get(META_RESOURCE)
    if raw_resource:
        if isinstance(raw_resource, dict):
            doc = dict(raw_resource)
        else:
            try:
                docs = parse_documents(str(raw_resource), source=META_RESOURCE)
            except ValidationError as e:
                raise RegistrationError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
            if len(docs) != 1:
                raise RegistrationError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{META_RESOURCE}: must hold one resource"
                )
            doc = docs[0]
    mesh, dot, name = node.id.partition(".")
    if not dot:
        mesh, name = "", node.id
    if proxy_type is ProxyType.DATAPLANE:
        if not mesh or not name:
            raise RegistrationError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'node.id "{node.id}" must be "<mesh>.<name>" for a dataplane',
            )
    else:
        mesh = ""
        if doc and isinstance(doc.get("name"), str) and doc["name"]:
            name = doc["name"]  # the resource knows its name; the id prefix is decoration
    version = node.user_agent_build_version
    envoy_version = (
        f"{version.version.major_number}.{version.version.minor_number}.{version.version.patch}"
        if node.HasField("user_agent_build_version")
        else node.user_agent_version
    )
    return NodeIdentity(
        key=ResourceKey(RESOURCE_TYPE[proxy_type], mesh, name),
        proxy_type=proxy_type,
        node_id=node.id,
        resource_doc=doc,
        envoy_version=envoy_version,
    )


class ProxyEventKind(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class ProxyEvent:
    kind: ProxyEventKind
    key: ResourceKey
    proxy_type: ProxyType
    node_id: str
    stopping: bool = False  # on DISCONNECTED: the data plane said it was stopping first


@dataclass
class ProxyRecord:
    """Per-proxy counters since this CP started (the insight's source)."""

    key: ResourceKey
    proxy_type: ProxyType
    node_id: str = ""
    online: bool = False
    last_connected: datetime | None = None
    last_disconnected: datetime | None = None
    requests: int = 0  # every request read, stale and unknown types included
    responses_sent: int = 0
    acks: int = 0
    nacks: int = 0
    last_nack: str | None = None
    envoy_version: str = ""


@dataclass(eq=False)
class Connection:
    """One live stream of one proxy; `close` asks the stream to end."""

    key: ResourceKey
    proxy_type: ProxyType
    node_id: str
    record: ProxyRecord
    on_close: Callable[[grpc.StatusCode, str], None] = field(repr=False)
    credential: Credential | None = None  # None: authentication is off
    peer: str = ""
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)
    stopping: bool = False  # the data plane reported a graceful stop on this stream

    def close(self, code: grpc.StatusCode, reason: str) -> None:
        self.on_close(code, reason)


ProxyListener = Callable[[ProxyEvent], None]


class ProxyRegistry:
    def __init__(
        self,
        runtime: Runtime,
        auth: DpAuthenticator | None = None,
        outbounds: SharedOutbounds | None = None,
        memo_lists: int = MEMO_MAX_LISTS,
    ) -> None:
        """`outbounds`: the generation engine's sharing of equal outbounds (else our own);
        `memo_lists`: how many validated outbound lists registration keeps (0: none, every
        document is validated in full)."""
        self._runtime = runtime
        self.auth = auth or DpAuthenticator(runtime)
        self._connections: dict[ResourceKey, Connection] = {}
        self._records: dict[ResourceKey, ProxyRecord] = {}
        self._listeners: list[ProxyListener] = []
        self.outbounds = outbounds if outbounds is not None else SharedOutbounds()  # len 0 is falsy
        # Proxies of one service bring the same outbound list: validated once (types.dataplane).
        # Its lists are shared already (`SharedOutbounds`): a hit skips the sharing too.
        self.outbound_lists = OutboundListMemo(memo_lists, intern=self.outbounds.share_list)
        # Proxies whose insight state (not counters) changed since `take_changed`: a writer
        # after a burst of connects visits these, not every proxy (that was quadratic).
        self._changed: set[ResourceKey] = set()
        self._change_listeners: list[Callable[[], None]] = []

    # --- events -------------------------------------------------------------------------

    def subscribe(self, listener: ProxyListener) -> Callable[[], None]:
        """Call `listener` on every connect/disconnect; returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, kind: ProxyEventKind, conn: Connection) -> None:
        event = ProxyEvent(kind, conn.key, conn.proxy_type, conn.node_id, conn.stopping)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("proxy event listener failed on %s", event)

    # --- lifecycle ----------------------------------------------------------------------

    async def connect(
        self,
        node: base_pb2.Node | None,
        on_close: Callable[[grpc.StatusCode, str], None],
        *,
        credential: Credential | None = None,
        peer: str = "",
    ) -> Connection:
        """Identify, authorize `credential` (already verified) for the proxy, register it if
        needed, and make this stream the proxy's current one. Raises `RegistrationError` or
        `AuthError`; either way no live stream was touched."""
        identity = parse_node(node)
        await self._ensure_registered(identity, credential, peer)
        if credential is not None:  # revoked while registration awaited the store?
            self.auth.reverify(credential, interface="xds", peer=peer)
        key = identity.key
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = ProxyRecord(key, identity.proxy_type)
        record.node_id, record.proxy_type = identity.node_id, identity.proxy_type
        record.envoy_version = identity.envoy_version or record.envoy_version
        record.online, record.last_connected = True, datetime.now(UTC)
        conn = Connection(
            key,
            identity.proxy_type,
            identity.node_id,
            record,
            on_close,
            credential=credential,
            peer=peer,
        )
        if credential is not None:
            self._close_at_expiry(conn, credential)
        previous = self._connections.get(key)
        self._connections[key] = conn
        if previous is not None:
            log.info("proxy %s: a new stream replaces the previous one", key)
            previous.close(grpc.StatusCode.ABORTED, "replaced by a newer stream of the same proxy")
        self._runtime.health.set_connected(key, True)
        self._mark_changed(key)
        log.info("proxy %s (%s) connected", key, identity.proxy_type.value)
        self._emit(ProxyEventKind.CONNECTED, conn)
        return conn

    def _close_at_expiry(self, conn: Connection, credential: Credential) -> None:
        """Kuma keeps a stream whose token expired (kumahq/kuma#3379); we end it once the
        token no longer verifies (its expiry plus the verifier's leeway for clock skew)."""

        def due() -> None:
            conn.expiry = None
            try:
                self.auth.reverify(credential, interface="xds", peer=conn.peer)
            except AuthError as e:
                conn.close(e.code, e.message)
                return
            conn.expiry = loop.call_later(EXPIRY_RECHECK_S, due)

        loop = asyncio.get_running_loop()
        delay = (credential.token.expires_at - datetime.now(UTC)).total_seconds()
        conn.expiry = loop.call_later(max(delay, 0.0), due)

    def close_revoked(self, mesh: str, revoked: frozenset[str]) -> int:
        """End every stream whose token is in `mesh`'s revocation list; returns how many."""
        closed = 0
        for conn in list(self._connections.values()):
            token = conn.credential.token if conn.credential is not None else None
            if token is None or token.mesh != mesh or token.token_id not in revoked:
                continue
            message = "dataplane token refused: the token has been revoked"
            self.auth.refuse("xds", grpc.StatusCode.UNAUTHENTICATED, "revoked", message, conn.peer)
            conn.close(grpc.StatusCode.UNAUTHENTICATED, message)
            closed += 1
        return closed

    def disconnect(self, conn: Connection) -> None:
        """The stream ended; only the proxy's current stream marks it offline."""
        if conn.expiry is not None:
            conn.expiry.cancel()
            conn.expiry = None
        if self._connections.get(conn.key) is not conn:
            return
        del self._connections[conn.key]
        conn.record.online, conn.record.last_disconnected = False, datetime.now(UTC)
        self._runtime.health.set_connected(conn.key, False)
        self._mark_changed(conn.key)
        log.info("proxy %s disconnected", conn.key)
        self._emit(ProxyEventKind.DISCONNECTED, conn)

    def forget(self, key: ResourceKey) -> None:
        """The proxy's resource was deleted while it was not connected: drop what we knew."""
        if key in self._connections:
            return
        self._records.pop(key, None)
        self._runtime.health.forget(key)

    def close_all(self, code: grpc.StatusCode, reason: str) -> None:
        for conn in list(self._connections.values()):
            conn.close(code, reason)

    def set_readiness(
        self,
        key: ResourceKey,
        not_ready_inbound_ports: tuple[int, ...],
        *,
        stopping: bool = False,
    ) -> None:
        """Readiness reported by the data plane: the inbound ports whose app is down, and
        whether it is stopping gracefully (then its stream's end deregisters it)."""
        self._runtime.health.set_readiness(key, tuple(sorted(set(not_ready_inbound_ports))))
        self._mark_changed(key)
        conn = self._connections.get(key)
        if stopping and conn is not None and not conn.stopping:
            conn.stopping = True
            log.info("proxy %s is stopping", key)

    def record_nack(self, conn: Connection, error: str) -> None:
        conn.record.nacks += 1
        conn.record.last_nack = error
        self._mark_changed(conn.key)

    # --- what changed, for the insight writer -------------------------------------------

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when a proxy's state changes (connect, disconnect, readiness,
        NACK); `take_changed` says which. Returns the unsubscribe."""
        self._change_listeners.append(listener)
        return lambda: self._change_listeners.remove(listener)

    def take_changed(self) -> set[ResourceKey]:
        """The proxies whose state changed since the last call (see `__init__`)."""
        changed, self._changed = self._changed, set()
        return changed

    def _mark_changed(self, key: ResourceKey) -> None:
        self._changed.add(key)
        for listener in self._change_listeners:
            listener()

    # --- queries ------------------------------------------------------------------------

    def connection(self, key: ResourceKey) -> Connection | None:
        return self._connections.get(key)

    def connections(self) -> list[Connection]:
        return list(self._connections.values())

    def record(self, key: ResourceKey) -> ProxyRecord | None:
        return self._records.get(key)

    def insights(
        self, *, ordered: bool = True, keys: Iterable[ResourceKey] | None = None
    ) -> list[ProxyInsight]:
        """Every proxy seen (or those of `keys` that were); by key when `ordered` (for
        people). The insight writer needs no order: sorting keys compares them in Python,
        which at a thousand proxies costs more than the rest of its check."""
        health = self._runtime.health
        out = []
        if keys is None:
            keys = sorted(self._records) if ordered else list(self._records)
        elif ordered:
            keys = sorted(keys)
        for key in keys:
            r = self._records.get(key)
            if r is None:
                continue
            h = health.get(key)
            out.append(
                ProxyInsight(
                    key=key,
                    proxy_type=r.proxy_type.value,
                    online=r.online,
                    last_connected=r.last_connected,
                    last_disconnected=r.last_disconnected,
                    responses_sent=r.responses_sent,
                    acks=r.acks,
                    nacks=r.nacks,
                    last_nack=r.last_nack,
                    ready=h.ready if h is not None else True,
                    not_ready_inbounds=tuple(h.not_ready_inbounds) if h is not None else (),
                    envoy_version=r.envoy_version,
                )
            )
        return out

    # --- registration -------------------------------------------------------------------

    async def _ensure_registered(
        self, identity: NodeIdentity, credential: Credential | None, peer: str
    ) -> None:
        """Create or update the proxy's resource from its metadata (module docstring)."""
        store = self._runtime.store
        key = identity.key
        incoming = self._from_metadata(identity) if identity.resource_doc is not None else None
        mesh_checked = False
        for _ in range(REGISTER_ATTEMPTS):
            existing = await store.find(key)
            # Both the resource the proxy brings and the one already stored must be within
            # the token. Kuma checks only the incoming one, so a token scoped to a tag can
            # take over a same-named Dataplane of another service (trust-model.md §6): here
            # the stored resource is authoritative too, and a newcomer claiming it must be
            # allowed it.
            self.auth.authorize(
                credential,
                key,
                identity.proxy_type.value,
                (incoming, existing),
                interface="xds",
                peer=peer,
            )
            if not mesh_checked and identity.proxy_type is ProxyType.DATAPLANE:
                if await store.find(ResourceKey(MESH.name, "", key.mesh)) is None:
                    raise RegistrationError(
                        grpc.StatusCode.FAILED_PRECONDITION, f"mesh {key.mesh} not found"
                    )
                mesh_checked = True
            if incoming is None:
                if existing is None:
                    raise RegistrationError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"{key} is not in the store and node metadata carries no {META_RESOURCE}",
                    )
                return
            try:
                if existing is None:
                    await store.create(incoming)
                    log.info("registered %s from node metadata", key)
                    return
                desired = _updated(existing, incoming)
                if desired is None:
                    return
                await store.update(desired.with_(version=existing.version))
                log.info("updated %s from node metadata (its file changed)", key)
                return
            except (AlreadyExistsError, ConflictError, NotFoundError):
                continue  # written meanwhile (another stream, a status pass): check again
        raise RegistrationError(
            grpc.StatusCode.UNAVAILABLE, f"{key}: registration kept conflicting; retry"
        )

    def _from_metadata(self, identity: NodeIdentity) -> Resource:
        doc = dict(identity.resource_doc or {})
        key = identity.key
        expected = RESOURCE_TYPE[identity.proxy_type]
        doc.setdefault("type", expected)
        doc.setdefault("name", key.name)
        if key.mesh:
            doc.setdefault("mesh", key.mesh)
        bad = None
        if doc["type"] != expected:
            bad = f'type "{doc["type"]}" does not match proxy type "{identity.proxy_type}"'
        elif doc["name"] != key.name:
            bad = f'name "{doc["name"]}" does not match node.id "{identity.node_id}"'
        elif key.mesh and doc["mesh"] != key.mesh:
            bad = f'mesh "{doc["mesh"]}" does not match node.id "{identity.node_id}"'
        if bad:
            raise RegistrationError(grpc.StatusCode.INVALID_ARGUMENT, f"{META_RESOURCE}: {bad}")
        try:
            resource = resource_from_wire(doc, context=self.outbound_lists.context())
        except ValidationError as e:
            raise RegistrationError(
                grpc.StatusCode.INVALID_ARGUMENT, f"{META_RESOURCE}: {e}"
            ) from None
        zone = self._runtime.zone
        if identity.proxy_type is not ProxyType.DATAPLANE:
            resource = resource.with_(spec=resource.spec.model_copy(update={"zone": zone}))
        elif not _from_memo(resource):  # what the memo returns is shared already
            resource = self.outbounds.share(resource)
        marked = {**resource.labels, REGISTERED_LABEL: REGISTERED_FROM_METADATA}
        return stamp_origin(resource.with_(labels=marked), is_global=False, zone=zone)


def _from_memo(resource: Resource) -> bool:
    spec = resource.spec
    return isinstance(spec, DataplaneSpec) and isinstance(
        spec.networking.outbound, CheckedOutbounds
    )


def is_registered_from_metadata(resource: Resource) -> bool:
    """Created by a proxy's registration (the lifecycle may delete it), not by the API."""
    return resource.labels.get(REGISTERED_LABEL) == REGISTERED_FROM_METADATA


def _updated(existing: Resource, incoming: Resource) -> Resource | None:
    """`existing` as the proxy's metadata wants it; None when nothing would change.

    A resource registered from metadata takes the incoming labels and spec whole; one applied
    through the API only its spec (its labels are the API's, and it stays unlabelled, so the
    lifecycle never deletes it). What the CP writes into a ZoneIngress itself
    (`availableServices`) is kept, or every reconnect would rewrite it twice."""
    spec = incoming.spec
    if isinstance(spec, ZoneIngressSpec) and isinstance(existing.spec, ZoneIngressSpec):
        spec = spec.model_copy(update={"available_services": existing.spec.available_services})
    new_labels = incoming.labels if is_registered_from_metadata(existing) else existing.labels
    if spec == existing.spec and new_labels == existing.labels:
        return None
    return existing.with_(spec=spec, labels=new_labels)
