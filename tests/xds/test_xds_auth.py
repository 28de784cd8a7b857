"""Dataplane tokens on the xDS port, attacked as the Trust issue found it open: real gRPC
streams against the in-process server, tokens from its own TokenService."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import timedelta

import grpc
import jwt
import pytest
from test_xds_harness import (
    AdsClient,
    dataplane_doc,
    delta,
    eventually,
    issue_token,
    node,
    running_xds,
    sotw,
    token_metadata,
    unpack,
)

from zonemesh.cpdp.names import SDS_CLUSTER, ca_secret, identity_secret
from zonemesh.envoy_types import CLUSTER, LISTENER, SECRET
from zonemesh.resources.base import ResourceKey
from zonemesh.resources.codec import resource_from_wire, resource_to_wire
from zonemesh.translate.default import default_generator
from zonemesh.xds.readiness import METHOD as READINESS

pytestmark = pytest.mark.timeout(60)

VICTIM = ResourceKey("Dataplane", "default", "victim")
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def refusals(h: object, interface: str, reason: str) -> float:
    return h.metric(  # type: ignore[attr-defined, no-any-return]
        "zonemesh_auth_refusals_total", {"interface": interface, "reason": reason}
    )


async def test_a_stream_without_token_gets_nothing_and_registers_nothing() -> None:
    async with running_xds(default_generator()) as h:
        await h.apply(dataplane_doc("victim", inbounds=[(20080, 8080, "victim", "http")]))
        # As found: node.id of the victim, no metadata, asking for its secret.
        bare = h.client(token=None)
        bare.send(sotw(SECRET, [identity_secret("default")], node_=node("default.victim")))
        code, details = await bare.status()
        assert code is grpc.StatusCode.UNAUTHENTICATED
        assert "no dataplane token" in details and "authorization" in details
        # A new node claiming a service is not registered.
        claim = h.client(token=None, delta_mode=True)
        doc = dataplane_doc("intruder", inbounds=[(20080, 8080, "payments", "http")])
        claim.send(delta(SECRET, node_=node("default.intruder", resource=doc)))
        assert (await claim.status())[0] is grpc.StatusCode.UNAUTHENTICATED
        assert await h.store.find(ResourceKey("Dataplane", "default", "intruder")) is None
        assert refusals(h, "xds", "missing") == 2


async def test_no_ads_response_carries_a_private_key_and_no_secret_at_all() -> None:
    async with running_xds(default_generator()) as h:
        token = await issue_token(h.runtime, name="victim")
        c = h.client(token=token)
        doc = dataplane_doc("victim", inbounds=[(20080, 8080, "victim", "http")])
        c.send(sotw(CLUSTER, node_=node("default.victim", resource=doc)))
        cds = await c.recv_type(CLUSTER)
        c.send(sotw(CLUSTER, nonce=cds.nonce, version=cds.version_info))
        c.send(sotw(LISTENER))
        lds = await c.recv_type(LISTENER)
        seen = h.requests_seen(VICTIM)
        c.send(sotw(SECRET, [identity_secret("default"), ca_secret("default")]))
        c.send(sotw(LISTENER, nonce=lds.nonce, version=lds.version_info))
        await eventually(lambda: h.requests_seen(VICTIM) >= seen + 2, "requests read")
        await asyncio.sleep(0.5)  # a pass or two: a secret would be sent by now
        assert c.responses.empty()
        for response in (cds, lds):
            assert b"PRIVATE KEY" not in response.SerializeToString()
        # The TLS contexts name the data plane's own SDS, not ADS.
        sds = json.dumps([str(m) for m in unpack(lds)])
        assert SDS_CLUSTER in sds


@pytest.mark.parametrize(
    ("token_args", "node_id", "doc", "expected"),
    [
        ({"name": "real"}, "default.other", None, 'the token is for proxy "real", not "other"'),
        (
            {"tags": {"kuma.io/service": ["web"]}},
            "default.web-2",
            dataplane_doc("web-2", inbounds=[(20080, 8080, "payments", "http")]),
            "the token allows kuma.io/service web, not payments",
        ),
        ({"mesh": "other"}, "default.dp-1", None, 'the token is for mesh "other", not "default"'),
    ],
    ids=["another-name", "another-service", "another-mesh"],
)
async def test_a_proxy_claiming_more_than_its_token_is_permission_denied(
    token_args: dict[str, object], node_id: str, doc: dict[str, object] | None, expected: str
) -> None:
    async with running_xds() as h:
        await h.apply({"type": "Mesh", "name": "other"})
        c = h.client(token=await issue_token(h.runtime, **token_args))  # type: ignore[arg-type]
        name = node_id.split(".", 1)[1]
        c.send(sotw(CLUSTER, node_=node(node_id, resource=doc or dataplane_doc(name))))
        code, details = await c.status()
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert expected in details
        assert await h.store.find(ResourceKey("Dataplane", "default", name)) is None
        assert refusals(h, "xds", "forbidden") == 1


async def test_a_sidecar_token_cannot_register_an_ingress() -> None:
    async with running_xds() as h:
        ingress = {
            "type": "ZoneIngress",
            "name": "rogue-ingress",
            "networking": {"address": "127.0.0.1", "port": 10001},
        }
        c = h.client()  # a mesh-wide *dataplane* token
        c.send(
            sotw(
                CLUSTER, node_=node("default.rogue-ingress", proxy_type="ingress", resource=ingress)
            )
        )
        code, details = await c.status()
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert "the token is for a dataplane proxy, not a ingress" in details
        assert await h.store.find(ResourceKey("ZoneIngress", "", "rogue-ingress")) is None


async def test_a_tag_scoped_token_cannot_take_over_a_stored_dataplane() -> None:
    """Kuma authorizes only the incoming resource; the stored one counts here too."""
    async with running_xds() as h:
        stored = await h.apply(dataplane_doc("db-1", inbounds=[(20080, 8080, "db", "tcp")]))
        c = h.client(token=await issue_token(h.runtime, tags={"kuma.io/service": ["web"]}))
        claim = dataplane_doc("db-1", inbounds=[(20080, 8080, "web", "http")])
        c.send(sotw(CLUSTER, node_=node("default.db-1", resource=claim)))
        code, details = await c.status()
        assert code is grpc.StatusCode.PERMISSION_DENIED and "not db" in details
        after = await h.store.get(stored.key)
        assert resource_to_wire(after) == resource_to_wire(stored)


async def test_impersonating_streams_never_replace_the_live_one() -> None:
    """As found: 12 short streams as echo-z2-a each replaced the real Envoy's stream."""
    async with running_xds() as h:
        key = ResourceKey("Dataplane", "default", "echo-z2-a")
        doc = dataplane_doc("echo-z2-a", inbounds=[(20080, 8080, "echo", "http")])
        real = h.client(token=await issue_token(h.runtime, name="echo-z2-a"))
        real.send(sotw(CLUSTER, node_=node("default.echo-z2-a", resource=doc)))
        cds = await real.recv_type(CLUSTER)
        real.send(sotw(CLUSTER, nonce=cds.nonce, version=cds.version_info))
        live = h.server.registry.connection(key)
        other_name = await issue_token(h.runtime, name="echo-z2-b")
        other_service = await issue_token(h.runtime, tags={"kuma.io/service": ["web"]})
        for i in range(12):
            token = (None, "not-a-token", other_name, other_service)[i % 4]
            fake = AdsClient(h.server.port, token=token)
            h.clients.append(fake)
            fake.send(sotw(CLUSTER, node_=node("default.echo-z2-a", resource=doc)))
            assert (await fake.status())[0] in REFUSED
        assert h.server.registry.connection(key) is live
        assert h.runtime.health.get(key).connected  # type: ignore[union-attr]
        await h.barrier(real)  # the real stream still gets every update


async def test_many_anonymous_streams_leave_no_dataplane_behind() -> None:
    """As found: 600 anonymous streams with metadata left 584 Dataplanes in the store."""
    async with running_xds() as h:
        before = len(await h.store.list("Dataplane"))
        clients = []
        for i in range(100):
            c = h.client(token=None, delta_mode=bool(i % 2))
            doc = dataplane_doc(f"anon-{i}")
            request = delta if i % 2 else sotw
            c.send(request(CLUSTER, node_=node(f"default.anon-{i}", resource=doc)))
            clients.append(c)
        codes = await asyncio.gather(*(c.status() for c in clients))
        assert {code for code, _ in codes} == {grpc.StatusCode.UNAUTHENTICATED}
        assert len(await h.store.list("Dataplane")) == before
        await h.connect_sotw("legit")  # the server carries on


async def test_an_expired_token_is_refused_and_ends_the_stream_it_opened() -> None:
    async with running_xds() as h:
        token = await issue_token(h.runtime, name="dp-1", valid_for=timedelta(seconds=1))
        c = h.client(token=token)
        c.send(sotw(CLUSTER, node_=node("default.dp-1", resource=dataplane_doc("dp-1"))))
        await c.recv_type(CLUSTER)
        # Ends once the token no longer verifies (expiry + the verifier's 5 s leeway).
        code, details = await asyncio.wait_for(c.status(), 15)
        assert code is grpc.StatusCode.UNAUTHENTICATED and "the token has expired" in details
        again = h.client(token=token)
        again.send(sotw(CLUSTER, node_=node("default.dp-1")))
        assert await again.status() == (
            grpc.StatusCode.UNAUTHENTICATED,
            "dataplane token refused: the token has expired",
        )
        assert refusals(h, "xds", "expired") == 2


async def test_a_revoked_token_closes_its_live_stream_within_seconds() -> None:
    async with running_xds() as h:
        token = await issue_token(h.runtime, name="dp-1")
        keep = await issue_token(h.runtime, name="dp-2")
        c = h.client(token=token)
        c.send(sotw(CLUSTER, node_=node("default.dp-1", resource=dataplane_doc("dp-1"))))
        await c.recv_type(CLUSTER)
        other = h.client(token=keep)
        other.send(sotw(CLUSTER, node_=node("default.dp-2", resource=dataplane_doc("dp-2"))))
        cds = await other.recv_type(CLUSTER)
        other.send(sotw(CLUSTER, nonce=cds.nonce, version=cds.version_info))
        jti = jwt.decode(token, options={"verify_signature": False})["jti"]
        revocations = {
            "type": "Secret",
            "mesh": "default",
            "name": "dataplane-token-revocations-default",
            "data": base64.b64encode(jti.encode()).decode(),
        }
        loop = asyncio.get_running_loop()
        started = loop.time()
        await h.store.create(resource_from_wire(revocations))
        code, details = await asyncio.wait_for(c.status(), 5)
        took = loop.time() - started
        assert code is grpc.StatusCode.UNAUTHENTICATED and "revoked" in details
        assert took < 3, took
        again = h.client(token=token)
        again.send(sotw(CLUSTER, node_=node("default.dp-1")))
        code, details = await again.status()
        assert code is grpc.StatusCode.UNAUTHENTICATED and "the token has been revoked" in details
        await h.barrier(other)  # another proxy's stream is untouched


async def test_bearer_prefix_is_accepted_and_two_values_are_not() -> None:
    async with running_xds() as h:
        token = h.tokens["dataplane"]
        c = h.client(token=f"Bearer {token}")
        c.send(sotw(CLUSTER, node_=node("default.dp-1", resource=dataplane_doc("dp-1"))))
        await c.recv_type(CLUSTER)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{h.server.port}")
        try:
            call = channel.stream_stream(
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
            )(iter([]), metadata=(("authorization", token), ("authorization", token)))
            assert await call.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "send exactly one" in await call.details()
        finally:
            await channel.close()


async def test_readiness_needs_a_token_allowing_the_reported_proxy() -> None:
    """As found: anyone could take an instance out of EDS."""
    async with running_xds() as h:
        await h.connect_sotw("dp-1")
        key = ResourceKey("Dataplane", "default", "dp-1")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{h.server.port}")
        report = channel.unary_unary(READINESS)
        body = b'{"nodeId": "default.dp-1", "notReadyInboundPorts": [20080]}'
        try:
            for token, code in (
                (None, grpc.StatusCode.UNAUTHENTICATED),
                ("forged", grpc.StatusCode.UNAUTHENTICATED),
                (await issue_token(h.runtime, name="dp-2"), grpc.StatusCode.PERMISSION_DENIED),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await report(body, metadata=token_metadata(token))
                assert refused.value.code() is code
                assert h.runtime.health.get(key).ready  # type: ignore[union-attr]
            own = await issue_token(h.runtime, name="dp-1")
            await report(body, metadata=token_metadata(own))
            await eventually(lambda: not h.runtime.health.get(key).ready, "reported not ready")  # type: ignore[union-attr]
        finally:
            await channel.close()


async def test_authentication_off_is_explicit_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "zonemesh.xds")
    from support.simple_generator import SimpleGenerator

    from zonemesh.config import load_config
    from zonemesh.runtime.kernel import Runtime
    from zonemesh.store.memory import MemoryStore
    from zonemesh.xds.component import XdsServer

    config = load_config(
        env={"KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": "none"},
        flags={"xds_port": 0, "store": "memory"},
    )
    runtime = Runtime(config=config, store=MemoryStore())
    await runtime.store.create(resource_from_wire({"type": "Mesh", "name": "default"}))
    server = XdsServer(runtime, SimpleGenerator())
    await server.start()
    try:
        assert "data plane authentication is off" in caplog.text
        c = AdsClient(server.port)
        c.send(sotw(CLUSTER, node_=node("default.dp-1", resource=dataplane_doc("dp-1"))))
        await c.recv_type(CLUSTER)
        await c.close()
    finally:
        await server.stop()
