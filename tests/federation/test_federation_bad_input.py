"""Peers that misbehave: foreign protocols, wrong versions, invalid resources, unknown types,
addresses that are not a global control plane. Each gets a clear error; nothing else breaks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from federation_helpers import (
    Federation,
    eventually,
    find,
    free_port,
    mesh_service,
    names,
    put,
    zone_ingress,
)

from zonemesh.federation.mapping import content_hash, encode, global_name
from zonemesh.federation.proto import kds_pb2 as pb
from zonemesh.federation.proto import kds_pb2_grpc as pb_grpc
from zonemesh.federation.protocol import PROTOCOL, PROTOCOL_VERSION

MS = "MeshService"


def hello(zone: str = "rogue", **overrides: object) -> pb.ZoneMessage:
    fields = {
        "protocol": PROTOCOL,
        "protocol_version": PROTOCOL_VERSION,
        "zone": zone,
        "instance_id": "raw-client",
        "cp_version": "test",
    }
    fields.update(overrides)
    return pb.ZoneMessage(hello=pb.Hello(**fields))  # type: ignore[arg-type]


def resource(doc: dict[str, object], *, hash_: str | None = None) -> pb.Resource:
    data = encode(doc)  # type: ignore[arg-type]
    return pb.Resource(
        type=str(doc["type"]),
        mesh=str(doc.get("mesh", "")),
        name=str(doc["name"]),
        json=data,
        hash=hash_ or content_hash(data),
    )


@pytest.fixture
async def channel(federation: Federation) -> AsyncIterator[grpc.aio.Channel]:
    await federation.start_global()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{federation.kds_port}") as ch:
        yield ch


@pytest.fixture
async def token(federation: Federation, channel: grpc.aio.Channel) -> str:
    """A valid zone token for "rogue": these peers are authenticated, just misbehaving."""
    return await federation.zone_token("rogue")


def sync(channel: grpc.aio.Channel, token: str) -> grpc.aio.StreamStreamCall:
    return pb_grpc.KDSStub(channel).Sync(metadata=(("authorization", token),))


async def refusal(
    channel: grpc.aio.Channel, token: str, first: pb.ZoneMessage
) -> grpc.aio.AioRpcError:
    call = sync(channel, token)
    await call.write(first)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    return info.value


async def test_foreign_protocol_and_unsupported_version_are_refused_clearly(
    channel: grpc.aio.Channel, token: str
) -> None:
    error = await refusal(channel, token, hello(protocol="kuma.kds"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unknown protocol 'kuma.kds'" in (error.details() or "")

    error = await refusal(channel, token, hello(protocol_version=99))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unsupported zonemesh.kds version 99 (this global speaks version 1)" in (
        error.details() or ""
    )

    error = await refusal(channel, token, pb.ZoneMessage(changes=pb.Changes()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message must be a Hello" in (error.details() or "")

    error = await refusal(channel, token, hello(zone="Not A Name"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "zone name 'Not A Name'" in (error.details() or "")


async def test_invalid_and_unknown_resources_are_refused_and_the_rest_syncs(
    federation: Federation,
    channel: grpc.aio.Channel,
    token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="zonemesh.kds")
    g = federation.global_rt
    assert g is not None
    z1, _ = await federation.start_zone("zone1")  # a well-behaved zone, to watch

    call = sync(channel, token)
    await call.write(hello("rogue"))
    welcome = await call.read()
    assert welcome.WhichOneof("message") == "welcome"
    assert welcome.welcome.protocol == PROTOCOL

    bad = mesh_service("bad")
    bad["spec"]["ports"] = []  # type: ignore[index]
    tampered = resource(mesh_service("tampered"), hash_="0" * 16)
    changes = pb.Changes(
        batch=1,
        snapshot=True,
        snapshot_complete=True,
        upserts=[
            resource(mesh_service("good")),
            resource(bad),
            resource({"type": "MeshTeleporter", "mesh": "default", "name": "x", "spec": {}}),
            resource(
                {
                    "type": "MeshMultiZoneService",
                    "mesh": "default",
                    "name": "sneaky",
                    "spec": {
                        "selector": {"meshService": {"matchLabels": {"a": "b"}}},
                        "ports": [{"port": 80}],
                    },
                }
            ),
            tampered,
        ],
    )
    await call.write(pb.ZoneMessage())  # no message set (e.g. a newer peer's kind): ignored
    await call.write(pb.ZoneMessage(changes=changes))

    # Global's snapshot (batches) and the Ack for ours arrive in any order.
    ack = None
    while ack is None:
        message = await asyncio.wait_for(call.read(), 5)
        if message.WhichOneof("message") == "ack":
            ack = message.ack
    assert ack.batch == 1
    reasons = {r.ref.name: r.reason for r in ack.rejected}
    assert reasons["bad"] == "invalid: spec.ports: cannot be empty"
    assert reasons["x"] == "unknown resource type 'MeshTeleporter': ignored"
    assert reasons["sneaky"] == "MeshMultiZoneService is not synced in this direction"
    assert "does not match its hash" in reasons["tampered"]
    assert set(reasons) == {"bad", "x", "sneaky", "tampered"}

    good = global_name("good", "rogue")
    assert await names(g, MS) == {good}
    assert await names(g, "MeshMultiZoneService") == set()
    await eventually(lambda: _has(z1, MS, good))  # the valid one flows on
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "unknown resource type 'MeshTeleporter'" in logged
    assert "spec.ports: cannot be empty" in logged
    assert 'zone "rogue" sent an unexpected message (empty): ignored' in logged

    # The stream is still good after the refusals: an update is applied.
    await call.write(
        pb.ZoneMessage(changes=pb.Changes(batch=2, upserts=[resource(mesh_service("good2"))]))
    )
    await eventually(lambda: _has(g, MS, global_name("good2", "rogue")))
    call.cancel()


async def test_a_zone_cannot_claim_another_zone_or_echo_globals_data(
    federation: Federation, channel: grpc.aio.Channel, token: str
) -> None:
    g = federation.global_rt
    assert g is not None
    call = sync(channel, token)
    await call.write(hello("rogue"))
    await call.read()
    spoofed = mesh_service("spoof")
    spoofed["labels"] = {"kuma.io/zone": "zone1", "kuma.io/origin": "zone"}
    foreign_ingress = zone_ingress("hijack")
    foreign_ingress["zone"] = "zone1"
    echoed = mesh_service("echoed")
    echoed["labels"] = {"kuma.io/origin": "global"}
    own = zone_ingress("own")
    own["zone"] = "rogue"
    upserts = [resource(d) for d in (spoofed, foreign_ingress, echoed, own)]
    await call.write(pb.ZoneMessage(changes=pb.Changes(batch=1, upserts=upserts)))
    ack = await read_ack(call, 1)

    reasons = {r.ref.name: r.reason for r in ack.rejected}
    assert set(reasons) == {"spoof", "hijack", "echoed"}
    assert reasons["spoof"].startswith("labelled kuma.io/zone: 'zone1', but it comes from zone")
    assert reasons["hijack"].startswith("zone: 'zone1', but it comes from zone 'rogue'")
    # Refused, not rewritten: nothing of them on global, under any name.
    assert await names(g, MS) == set()
    assert await names(g, "ZoneIngress") == {global_name("own", "rogue")}
    assert g.refusals.count("kds", "foreign-zone") == 2
    call.cancel()


async def read_ack(call: grpc.aio.StreamStreamCall, batch: int) -> pb.Ack:
    """Global's snapshot batches and the Ack for ours arrive in any order."""
    while True:
        message = await asyncio.wait_for(call.read(), 5)
        if message.WhichOneof("message") == "ack" and message.ack.batch == batch:
            return message.ack


async def test_an_address_that_is_not_a_global_cp_is_reported_and_retried(
    federation: Federation,
) -> None:
    # A gRPC server that serves something else (like a zone's xDS port).
    other = grpc.aio.server()
    port = other.add_insecure_port("127.0.0.1:0")
    await other.start()
    try:
        z, client = await federation.start_zone("zone1", address=f"grpc://127.0.0.1:{port}")

        async def reported() -> None:
            assert (
                "not a zonemesh global control plane (it does not serve KDS)" in z.status["global"]
            )
            assert client.attempts >= 2

        await eventually(reported)
    finally:
        await other.stop(None)


async def test_a_global_address_that_does_not_answer_is_retried_with_backoff(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zonemesh.kds")
    dead = f"grpc://127.0.0.1:{free_port()}"
    z, client = await federation.start_zone("zone1", address=dead)

    async def retrying() -> None:
        assert client.attempts >= 3
        assert z.status["global"].startswith(f"connecting to {dead} (attempt ")
        assert "does not answer" in z.status["global"]

    await eventually(retrying)
    attempts = [r.getMessage() for r in caplog.records if "KDS: attempt" in r.getMessage()]
    assert attempts[0].startswith(f"KDS: attempt 1 to {dead} failed: does not answer")
    assert "retrying in 0.1s" in attempts[0] and "retrying in 0.2s" in attempts[1]


async def test_a_bad_global_address_is_reported_without_retrying(federation: Federation) -> None:
    z, client = await federation.start_zone("zone1", address="https://global:5685")
    await eventually(lambda: _status_contains(z, "scheme must be grpc://"))
    assert z.status["global"].startswith("not syncing")
    assert client.attempts == 0


async def _status_contains(runtime, text: str) -> None:  # type: ignore[no-untyped-def]
    assert text in runtime.status.get("global", "")


async def _has(runtime, type_: str, name: str) -> None:  # type: ignore[no-untyped-def]
    assert await find(runtime, type_, name) is not None


async def test_a_resource_global_refuses_is_reported_in_the_zone_and_the_rest_syncs(
    federation: Federation,
) -> None:
    g = await federation.start_global()
    z1, client = await federation.start_zone("zone1")
    too_long = "a" * 250  # valid in the zone, but no room left for global's zone suffix
    await put(z1, mesh_service(too_long))
    await put(z1, mesh_service("fine"))

    async def reported() -> None:
        text = z1.status.get("global_rejected", "")
        assert text.startswith("1 refused by global: ")
        assert f"MeshService/default/{too_long}: name: too long to federate" in text
        assert client.rejected

    await eventually(reported)
    assert await names(g, MS) == {global_name("fine", "zone1")}
    assert z1.status["global"].startswith("connected to grpc://")
