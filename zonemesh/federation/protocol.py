"""Constants and helpers of the KDS protocol (see protos/zonemesh/kds/v1/kds.proto)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from zonemesh.federation.mapping import Entry
from zonemesh.federation.proto import kds_pb2 as pb
from zonemesh.resources.base import ResourceKey

PROTOCOL = "zonemesh.kds"
PROTOCOL_VERSION = 1
HANDSHAKE_TIMEOUT_S = 10.0
# A snapshot is split so that no message comes near gRPC's limits.
BATCH_BYTES = 1 << 20
BATCH_ITEMS = 500
MAX_MESSAGE_BYTES = 64 << 20

# Dead peers (a zone that vanished without closing its connection) are noticed by pings.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
]


def ref(key: ResourceKey) -> pb.ResourceRef:
    return pb.ResourceRef(type=key.type, mesh=key.mesh, name=key.name)


def key_of(message: pb.ResourceRef | pb.Resource) -> ResourceKey:
    return ResourceKey(message.type, message.mesh, message.name)


def to_message(entry: Entry) -> pb.Resource:
    return pb.Resource(
        type=entry.key.type,
        mesh=entry.key.mesh,
        name=entry.key.name,
        json=entry.json,
        hash=entry.hash,
    )


def batches(
    upserts: Iterable[Entry], deletes: Iterable[ResourceKey], *, snapshot: bool
) -> Iterator[pb.Changes]:
    """Split changes into messages of bounded size; a snapshot's last one says complete
    (an empty snapshot is still one message)."""
    current = pb.Changes(snapshot=snapshot)
    size = 0
    count = 0

    def full() -> bool:
        return count >= BATCH_ITEMS or size >= BATCH_BYTES

    for item in upserts:
        current.upserts.append(to_message(item))
        size += len(item.json)
        count += 1
        if full():
            yield current
            current, size, count = pb.Changes(snapshot=snapshot), 0, 0
    for key in deletes:
        current.deletes.append(ref(key))
        count += 1
        if full():
            yield current
            current, size, count = pb.Changes(snapshot=snapshot), 0, 0
    if snapshot:
        current.snapshot_complete = True
        yield current
    elif count:
        yield current
