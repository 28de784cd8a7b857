"""The xDS protocol rules, in one place, without I/O: one session object per stream.

A session takes the client's requests (`on_request`) and the proxy's latest `Snapshot`
(`set_snapshot`), and says what to send next (`pending`), already encoded. The server only
moves bytes. Rules implemented (see the xDS protocol doc):

- Versions are per type and derived from content; nonces are per stream, checked per type.
- SotW: a request whose nonce is not the latest sent for its type is ignored. One response
  per type is outstanding at a time; the next waits for the ACK/NACK (natural backpressure).
- NACK = `error_detail` present. The rejected resources are remembered as sent, so they are
  not sent again until the proxy's resources change (no resend loop).
- Wildcard: `"*"`, or an empty list while no request on the stream ever named a resource.
  Newly named resources are sent; named resources that do not exist yet are sent when they
  appear (Delta: reported in `removed_resources` meanwhile).
- SotW Listener/Cluster responses carry the full state; Endpoint/Route responses carry the
  named resources that changed. Delta sends changed resources and `removed_resources`, and
  honours `initial_resource_versions` and subscription changes even with a stale nonce.
- Order in every flush: clusters, endpoints, listeners, routes, secrets. After a cluster
  changes, its ClusterLoadAssignment is sent again even if unchanged, so it leaves warming.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, NamedTuple, TypeVar

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER
from zonemesh.xds import wire
from zonemesh.xds.cache import (
    Snapshot,
    VersionedResource,
    format_version,
    item_hash,
    versions_hash,
    versions_total,
)
from zonemesh.xds.types import TYPE_ORDER

FULL_STATE_TYPES = frozenset({LISTENER, CLUSTER})
KNOWN_TYPES = frozenset(TYPE_ORDER)
WILDCARD = "*"
DEFAULT_MAX_RESOURCE_NAMES = 20_000  # per request; more is refused, not processed
DEFAULT_MAX_UNACKED = 64  # Delta responses of one type in flight before the stream is closed
_ABSENT = "\0absent"  # Delta: the client was told this named resource does not exist


class ProtocolError(Exception):
    """The client broke the protocol or a limit; the stream ends with this status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RequestKind(StrEnum):
    INITIAL = "initial"  # first request for a type (or a re-request without a nonce)
    ACK = "ACK"
    NACK = "NACK"
    STALE = "stale"  # nonce of an older response: SotW ignores it
    UNKNOWN_TYPE = "unknown_type"


class RequestInfo(NamedTuple):
    """What a request meant, for metrics, insights and logs (one per request: a named
    tuple, built in C, where a frozen dataclass sets each field through Python)."""

    kind: RequestKind
    type_url: str
    nonce: str = ""
    version: str = ""  # the version the ACK/NACK answers
    error: str = ""  # Envoy's error_detail message of a NACK
    sent_at: float | None = None  # monotonic time the answered response was sent


class Outgoing(NamedTuple):
    """One encoded response, ready to write (one per response: a named tuple)."""

    type_url: str
    nonce: str
    version: str
    payload: bytes
    resources: int
    removed: int = 0


class _Nonces:
    def __init__(self) -> None:
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return str(self._n)


def _check_names(type_url: str, count: int, limit: int) -> None:
    if count > limit:
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{type_url}: {count} resource names in one request; at most {limit} are accepted",
        )


@dataclass
class _SotwType:
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    ever_named: bool = False
    sent: dict[str, str] | None = None  # name -> version last sent; None: nothing yet
    client_version: str = ""  # version_info of the first request (a reconnecting client)
    nonce: str = ""
    sent_version: str = ""
    sent_at: float = 0.0
    awaiting: bool = False  # a response is out and not yet ACKed/NACKed
    dirty: bool = True
    force: set[str] = field(default_factory=set)
    # Named types: the sum of `item_hash` over `sent` (None: recount), and, as in
    # `_DeltaType`, the snapshot `sent` was last brought in step with.
    sent_total: int | None = None
    synced: Snapshot | None = None
    requested: bool = True


@dataclass
class _DeltaType:
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    known: dict[str, str] = field(default_factory=dict)  # what the client has: name -> version
    inflight: dict[str, tuple[float, str]] = field(default_factory=dict)  # nonce -> (at, version)
    responded: bool = False
    dirty: bool = True
    force: set[str] = field(default_factory=set)
    # The snapshot `known` was last brought in step with, and whether a request changed
    # what the stream wants since (then every name is compared again).
    synced: Snapshot | None = None
    requested: bool = True


_TypeState = TypeVar("_TypeState", _SotwType, _DeltaType)


class _Session(Generic[_TypeState]):
    """What both flavours keep per stream: per-type state, the snapshot, nonces."""

    def __init__(self, *, control_plane: str, max_names: int) -> None:
        self._types: dict[str, _TypeState] = {}
        self._snapshot: Snapshot | None = None
        self._nonces = _Nonces()
        self._cp = wire.control_plane(control_plane) if control_plane else b""
        self._max_names = max_names

    def set_snapshot(self, snapshot: Snapshot, changed: frozenset[str] | None = None) -> None:
        self._snapshot = snapshot
        for type_url, ts in self._types.items():
            if changed is None or type_url in changed:
                ts.dirty = True

    def _in_step_names(self, type_url: str, ts: _TypeState) -> frozenset[str] | None:
        """When the stream is in step with the snapshot the current one derives from (no
        request changed what it wants since), the only names of `type_url` that can differ
        from what it has; None: compare every name. One rule for both flavours."""
        snapshot = self._snapshot
        assert snapshot is not None
        if ts.requested or snapshot.delta is None or not snapshot.derives_from(ts.synced):
            return None
        return snapshot.delta.get(type_url)

    def subscribed_types(self) -> list[str]:
        return list(self._types)

    def has_pending(self) -> bool:
        """Whether `pending` may have something to send: a plain ACK leaves nothing to do,
        and the writer need not wake for it (one per proxy and push)."""
        return self._snapshot is not None and any(
            ts.dirty or ts.force for ts in self._types.values()
        )


class SotwSession(_Session[_SotwType]):
    """State-of-the-world ADS over one stream."""

    def __init__(
        self, *, control_plane: str = "", max_names: int = DEFAULT_MAX_RESOURCE_NAMES
    ) -> None:
        super().__init__(control_plane=control_plane, max_names=max_names)

    def on_request(self, req: discovery_pb2.DiscoveryRequest) -> RequestInfo:
        type_url = req.type_url
        if type_url not in KNOWN_TYPES:
            return RequestInfo(RequestKind.UNKNOWN_TYPE, type_url)
        _check_names(type_url, len(req.resource_names), self._max_names)
        ts = self._types.get(type_url)
        if req.response_nonce:
            if ts is None or req.response_nonce != ts.nonce:
                return RequestInfo(RequestKind.STALE, type_url, nonce=req.response_nonce)
            ts.awaiting = False
            nack = req.HasField("error_detail")
            info = RequestInfo(
                RequestKind.NACK if nack else RequestKind.ACK,
                type_url,
                nonce=req.response_nonce,
                version=ts.sent_version,
                error=req.error_detail.message if nack else "",
                sent_at=ts.sent_at,
            )
        else:
            if ts is None:
                ts = self._types[type_url] = _SotwType(client_version=req.version_info)
            ts.awaiting = False
            info = RequestInfo(RequestKind.INITIAL, type_url)
        if self._subscribe(type_url, ts, req.resource_names) or info.kind is not RequestKind.ACK:
            # An ACK naming what was named before asks for nothing new: whatever changed
            # meanwhile already marked the type (`set_snapshot`), so it is not recomputed.
            ts.dirty = ts.requested = True
        return info

    @staticmethod
    def _subscribe(type_url: str, ts: _SotwType, names_list: object) -> bool:
        """Apply the request's names; False when the subscription is as it was."""
        names = set(names_list)  # type: ignore[call-overload]
        explicit_wildcard = WILDCARD in names
        names.discard(WILDCARD)
        wildcard = explicit_wildcard or (not names and not ts.ever_named)
        ever_named = ts.ever_named or bool(names)
        if (wildcard, ever_named, names) == (ts.wildcard, ts.ever_named, ts.names):
            return False
        ts.wildcard, ts.ever_named, ts.names = wildcard, ever_named, names
        if ts.sent is not None and type_url not in FULL_STATE_TYPES and not ts.wildcard:
            # Envoy drops what it no longer names; asking again later must resend it.
            ts.sent = {n: v for n, v in ts.sent.items() if n in names}
            ts.sent_total = None
        return True

    def _desired(self, type_url: str, ts: _SotwType) -> Mapping[str, VersionedResource]:
        available = self._snapshot.of_type(type_url) if self._snapshot else {}
        if ts.wildcard:
            return available
        return {n: available[n] for n in ts.names if n in available}

    def pending(self) -> list[Outgoing]:
        """Responses due now, in make-before-break order; marks them as sent."""
        if self._snapshot is None:
            return []
        out: list[Outgoing] = []
        for type_url in TYPE_ORDER:
            ts = self._types.get(type_url)
            if ts is None or ts.awaiting or not (ts.dirty or ts.force):
                continue
            ts.dirty = False
            if type_url in FULL_STATE_TYPES:
                response, changed = self._full_state(type_url, ts)
            else:
                response, changed = self._named(type_url, ts)
            if response is None:
                continue
            out.append(response)
            if type_url == CLUSTER:
                self._follow_up(changed)
        return out

    def _full_state(
        self, type_url: str, ts: _SotwType
    ) -> tuple[Outgoing | None, list[VersionedResource]]:
        desired = self._desired(type_url, ts)
        current = {n: r.version for n, r in desired.items()}
        assert self._snapshot is not None
        version = (
            self._snapshot.version(type_url) if ts.wildcard else versions_hash(current.items())
        )
        if ts.sent is None and ts.client_version and ts.client_version == version:
            ts.sent, ts.sent_version = current, version  # reconnected: it has this already
            return None, []
        if ts.sent == current:
            return None, []
        previous = ts.sent or {}
        changed = [r for n, r in desired.items() if previous.get(n) != r.version]
        entries = [desired[n].sotw_entry for n in sorted(desired)]
        ts.sent = current
        return self._emit(type_url, ts, version, entries), changed

    def _named(
        self, type_url: str, ts: _SotwType
    ) -> tuple[Outgoing | None, list[VersionedResource]]:
        snapshot = self._snapshot
        assert snapshot is not None
        available = snapshot.of_type(type_url)
        force = ts.force
        delta = self._in_step_names(type_url, ts)
        if delta is not None and ts.sent is not None:
            # Only the in-step names, and those forced, can differ from what was sent.
            sent = ts.sent
            names = [
                n
                for n in delta | force
                if n in available
                and (ts.wildcard or n in ts.names)
                and (n in force or sent.get(n) != available[n].version)
            ]
        else:
            desired = self._desired(type_url, ts)
            if ts.sent is None and ts.client_version:
                current = {n: r.version for n, r in desired.items()}
                if ts.client_version == versions_hash(current.items()):
                    ts.sent, ts.sent_version, ts.sent_total = current, ts.client_version, None
                    ts.synced, ts.requested = snapshot, False
                    force.clear()
                    return None, []
            sent = ts.sent if ts.sent is not None else {}
            # Only the changed names are sorted (a push usually carries a few of a hundred).
            names = [n for n, r in desired.items() if sent.get(n) != r.version]
            if force:
                names = list({*names, *(n for n in force if n in desired)})
        ts.synced, ts.requested = snapshot, False
        changed = [available[n] for n in sorted(names)]
        force.clear()
        ts.sent = sent
        if not changed:
            return None, []
        # The version is the sum of the sent pairs' hashes, kept up to date with `sent`
        # rather than summed again over every name on each push.
        total = ts.sent_total
        if total is None:
            total = versions_total(sent.items())
        for r in changed:
            before = sent.get(r.name)
            if before is not None:
                total -= item_hash(r.name, before)
            total += r.item_hash or item_hash(r.name, r.version)
            sent[r.name] = r.version
        ts.sent_total = total
        version = format_version(total)
        return self._emit(type_url, ts, version, [r.sotw_entry for r in changed]), changed

    def _follow_up(self, changed_clusters: list[VersionedResource]) -> None:
        endpoints = self._types.get(ENDPOINT)
        if endpoints is None:
            return
        for cluster in changed_clusters:
            endpoints.force.update(cluster.follow_ups)

    def _emit(self, type_url: str, ts: _SotwType, version: str, entries: list[bytes]) -> Outgoing:
        nonce = self._nonces.next()
        ts.nonce, ts.sent_version, ts.sent_at, ts.awaiting = nonce, version, time.monotonic(), True
        payload = wire.sotw_response(
            version_info=version, type_url=type_url, nonce=nonce, entries=entries, cp=self._cp
        )
        return Outgoing(type_url, nonce, version, payload, len(entries))


class DeltaSession(_Session[_DeltaType]):
    """Incremental ADS over one stream."""

    def __init__(
        self,
        *,
        control_plane: str = "",
        max_names: int = DEFAULT_MAX_RESOURCE_NAMES,
        max_unacked: int = DEFAULT_MAX_UNACKED,
    ) -> None:
        super().__init__(control_plane=control_plane, max_names=max_names)
        self._max_unacked = max_unacked

    def on_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> RequestInfo:
        type_url = req.type_url
        if type_url not in KNOWN_TYPES:
            return RequestInfo(RequestKind.UNKNOWN_TYPE, type_url)
        _check_names(
            type_url,
            max(
                len(req.resource_names_subscribe) + len(req.resource_names_unsubscribe),
                len(req.initial_resource_versions),
            ),
            self._max_names,
        )
        ts = self._types.get(type_url)
        first = ts is None
        if ts is None:
            ts = self._types[type_url] = _DeltaType(known=dict(req.initial_resource_versions))
            ts.responded = bool(ts.known)
            ts.wildcard = not req.resource_names_subscribe  # legacy wildcard
        info = RequestInfo(RequestKind.INITIAL, type_url)
        if req.response_nonce:
            answered = ts.inflight.pop(req.response_nonce, None)
            if answered is None:
                info = RequestInfo(RequestKind.STALE, type_url, nonce=req.response_nonce)
            else:
                nack = req.HasField("error_detail")
                info = RequestInfo(
                    RequestKind.NACK if nack else RequestKind.ACK,
                    type_url,
                    nonce=req.response_nonce,
                    version=answered[1],
                    error=req.error_detail.message if nack else "",
                    sent_at=answered[0],
                )
        # Subscription changes count even with a stale nonce.
        subscription = bool(req.resource_names_subscribe or req.resource_names_unsubscribe)
        if first or not req.response_nonce or subscription:
            ts.dirty = ts.requested = True
        for name in req.resource_names_subscribe:
            if name == WILDCARD:
                ts.wildcard = True
                continue
            ts.names.add(name)
            if not first:
                ts.known.pop(name, None)  # a (re)subscribed resource must be sent again
        for name in req.resource_names_unsubscribe:
            if name == WILDCARD:
                ts.wildcard = False
                ts.known = {n: v for n, v in ts.known.items() if n in ts.names}
                continue
            ts.names.discard(name)
            if not ts.wildcard:
                ts.known.pop(name, None)
        # An ACK, NACK or stale nonce without subscription changes asks for nothing: what
        # changed since is already marked (`set_snapshot`), so the type is not diffed again
        # (every push would otherwise cost a second diff per stream, on its ACK).
        return info

    def pending(self) -> list[Outgoing]:
        if self._snapshot is None:
            return []
        out: list[Outgoing] = []
        for type_url in TYPE_ORDER:
            ts = self._types.get(type_url)
            if ts is None or not (ts.dirty or ts.force):
                continue
            ts.dirty = False
            response, updated = self._diff(type_url, ts)
            if response is None:
                continue
            out.append(response)
            if type_url == CLUSTER:
                endpoints = self._types.get(ENDPOINT)
                if endpoints is not None:
                    for cluster in updated:
                        endpoints.force.update(cluster.follow_ups)
        return out

    def _diff(
        self, type_url: str, ts: _DeltaType
    ) -> tuple[Outgoing | None, list[VersionedResource]]:
        snapshot = self._snapshot
        assert snapshot is not None
        available = snapshot.of_type(type_url)
        known, force = ts.known, ts.force
        delta = self._in_step_names(type_url, ts)
        if delta is not None:
            # Only the in-step names can differ from what the client has (a push costs
            # what it carries).
            candidates: Set[str] = delta | force
            held = {n for n in candidates if n in available and (ts.wildcard or n in ts.names)}
        elif ts.wildcard:
            held = available.keys()
            candidates = held | known.keys() | ts.names
        else:
            held = ts.names & available.keys()
            candidates = ts.names | known.keys()
        ts.synced, ts.requested = snapshot, False
        changed = [n for n in held if n in force or known.get(n) != available[n].version]
        # Only what changed is sorted, not every name the stream holds: a push usually
        # carries a few resources of a hundred.
        updates = [available[n] for n in sorted(changed)]
        force.clear()
        gone = [n for n in candidates if n not in held]
        removed = sorted(n for n in gone if n in known and known[n] != _ABSENT)
        # Named but not existing, and not said so yet: tell the client not to wait for it.
        removed += sorted(n for n in gone if n in ts.names and n not in known)
        if not updates and not removed and (ts.responded or not ts.wildcard):
            return None, []
        if len(ts.inflight) >= self._max_unacked:
            raise ProtocolError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{type_url}: {len(ts.inflight)} responses not acknowledged; "
                "the client is not reading",
            )
        for r in updates:
            ts.known[r.name] = r.version
        for n in removed:
            if n in ts.names:
                ts.known[n] = _ABSENT
            else:
                ts.known.pop(n, None)
        ts.responded = True
        nonce = self._nonces.next()
        version = self._snapshot.version(type_url)
        ts.inflight[nonce] = (time.monotonic(), version)
        payload = wire.delta_response(
            system_version_info=version,
            type_url=type_url,
            nonce=nonce,
            entries=[r.delta_entry for r in updates],
            removed=removed,
            cp=self._cp,
        )
        return Outgoing(type_url, nonce, version, payload, len(updates), len(removed)), updates
