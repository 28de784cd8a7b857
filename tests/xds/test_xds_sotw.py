"""State-of-the-world ADS conformance: one test per protocol rule, with a scripted client."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import duration_pb2
from support.simple_generator import SimpleGenerator
from test_xds_harness import (
    dataplane_doc,
    eventually,
    mesh_service_doc,
    names_of,
    node,
    running_xds,
    sotw,
    unpack,
)

from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from zonemesh.resources.base import ResourceKey
from zonemesh.translate.generator import GenerationError, Proxy, ProxyResources
from zonemesh.translate.state import MeshState

DP1 = ResourceKey("Dataplane", "default", "dp-1")


async def test_cluster_and_listener_responses_carry_the_full_state() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, cds = await h.connect_sotw("dp-1")
        assert sorted(names_of(cds)) == ["a_8080", "localhost:127.0.1.1:8080"]
        await h.apply(mesh_service_doc("b"))
        update = await c.recv_type(CLUSTER)
        # Not just the new cluster: the whole set (SotW CDS is full state).
        assert sorted(names_of(update)) == ["a_8080", "b_8080", "localhost:127.0.1.1:8080"]
        assert update.version_info != cds.version_info
        c.send(sotw(CLUSTER, nonce=update.nonce, version=update.version_info))
        await h.delete("MeshService", "a")
        removal = await c.recv_type(CLUSTER)
        assert sorted(names_of(removal)) == ["b_8080", "localhost:127.0.1.1:8080"]


async def test_versions_and_nonces_are_per_type() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, cds = await h.connect_sotw("dp-1")
        c.send(sotw(LISTENER))
        lds = await c.recv_type(LISTENER)
        assert lds.nonce != cds.nonce and lds.version_info != cds.version_info
        # Versions come from content: a proxy with the same clusters gets the same version.
        _, cds2 = await h.connect_sotw("dp-2", dataplane_doc("dp-2"))
        assert cds2.version_info == cds.version_info


async def test_stale_nonce_request_is_ignored() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        await h.apply(mesh_service_doc("b"))
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(ENDPOINT, ["a_8080"]))
        eds = await c.recv_type(ENDPOINT)
        assert names_of(eds) == ["a_8080"]
        c.send(sotw(ENDPOINT, ["a_8080"], nonce=eds.nonce, version=eds.version_info))
        seen = h.requests_seen(DP1)
        c.send(sotw(ENDPOINT, ["a_8080", "b_8080"], nonce="not-the-latest"))
        await eventually(lambda: h.requests_seen(DP1) > seen, "stale request read")
        await h.barrier(c)  # b_8080 would have come before the barrier
        # The valid nonce with the same names is honoured.
        c.send(sotw(ENDPOINT, ["a_8080", "b_8080"], nonce=eds.nonce, version=eds.version_info))
        later = await c.recv_type(ENDPOINT)
        assert names_of(later) == ["b_8080"]


async def test_nack_is_recorded_and_the_rejected_version_is_not_resent() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(LISTENER))
        lds = await c.recv_type(LISTENER)
        c.send(sotw(LISTENER, nonce=lds.nonce, version="", error="port 20080 in use"))
        record = await eventually(
            lambda: (r := h.server.registry.record(DP1)) and r.nacks == 1 and r, "NACK counted"
        )
        assert record.last_nack == "port 20080 in use"
        insight = next(i for i in h.server.insights() if i.key == DP1)
        assert (insight.nacks, insight.last_nack) == (1, "port 20080 in use")
        assert (
            h.metric("xds_requests_received_total", {"type_url": LISTENER, "confirmation": "NACK"})
            == 1
        )
        await h.barrier(c)  # no LDS resend before it, no resend loop
        await h.barrier(c)
        # A real change of the proxy's listeners is sent.
        await h.apply(
            dataplane_doc("dp-1", inbounds=[(20080, 8080, "a", "http"), (20081, 8081, "b", "tcp")])
        )
        cds = await c.recv_type(CLUSTER)  # the new local cluster first
        c.send(sotw(CLUSTER, nonce=cds.nonce, version=cds.version_info))
        fixed = await c.recv_type(LISTENER)
        assert sorted(names_of(fixed)) == ["inbound:127.0.1.1:20080", "inbound:127.0.1.1:20081"]
        assert fixed.version_info != lds.version_info


async def test_empty_first_request_is_wildcard_and_later_empty_list_unsubscribes() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        await h.apply(mesh_service_doc("b"))
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(ENDPOINT, []))  # never named anything: wildcard
        eds = await c.recv_type(ENDPOINT)
        assert sorted(names_of(eds)) == ["a_8080", "b_8080"]
        c.send(sotw(ENDPOINT, ["a_8080"], nonce=eds.nonce, version=eds.version_info))
        c.send(sotw(ENDPOINT, [], nonce=eds.nonce, version=eds.version_info))  # now: none
        await eventually(lambda: h.requests_seen(DP1) >= 4, "requests read")
        await h.apply(
            dataplane_doc("dp-b", address="127.0.1.2", inbounds=[(20080, 8080, "a", "http")])
        )
        await h.barrier(c)  # the endpoint change of a_8080 is not sent


async def test_explicit_wildcard_subscribes_to_everything() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(ENDPOINT, ["*"]))
        eds = await c.recv_type(ENDPOINT)
        assert names_of(eds) == ["a_8080"]


async def test_names_requested_later_are_sent() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        await h.apply(mesh_service_doc("b"))
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(ENDPOINT, ["a_8080"]))
        eds = await c.recv_type(ENDPOINT)
        c.send(sotw(ENDPOINT, ["a_8080", "b_8080"], nonce=eds.nonce, version=eds.version_info))
        more = await c.recv_type(ENDPOINT)
        assert names_of(more) == ["b_8080"]
        # Dropped and asked for again: sent again (the client forgot it).
        c.send(sotw(ENDPOINT, ["b_8080"], nonce=more.nonce, version=more.version_info))
        c.send(sotw(ENDPOINT, ["a_8080", "b_8080"], nonce=more.nonce, version=more.version_info))
        again = await c.recv_type(ENDPOINT)
        assert names_of(again) == ["a_8080"]


async def test_names_not_yet_existing_are_sent_once_they_exist() -> None:
    async with running_xds() as h:
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(ENDPOINT, ["later_8080"]))
        await eventually(lambda: h.requests_seen(DP1) >= 3, "EDS request read")
        await h.apply(mesh_service_doc("later"))
        cds = await c.recv_type(CLUSTER)
        assert "later_8080" in names_of(cds)
        eds = await c.recv_type(ENDPOINT)
        assert names_of(eds) == ["later_8080"]


async def test_update_order_is_clusters_endpoints_listeners() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(ENDPOINT, []))
        eds = await c.recv_type(ENDPOINT)
        c.send(sotw(ENDPOINT, [], nonce=eds.nonce, version=eds.version_info))
        c.send(sotw(LISTENER))
        lds = await c.recv_type(LISTENER)
        c.send(sotw(LISTENER, nonce=lds.nonce, version=lds.version_info))
        await eventually(lambda: h.requests_seen(DP1) >= 5, "ACKs read")
        # One change touching all three: dp-1 moves to another address (its listener, its
        # local cluster, and its endpoint in service a).
        await h.apply(dataplane_doc("dp-1", address="127.0.1.5"))
        order = [(await c.recv()).type_url for _ in range(3)]
        assert order == [CLUSTER, ENDPOINT, LISTENER]


class _Gate:
    """A generator that fails (so nothing is served) until opened."""

    def __init__(self) -> None:
        self.open = False
        self.inner = SimpleGenerator()

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        if not self.open:
            raise GenerationError("gate closed")
        return self.inner.generate(state, proxy)


async def test_first_connect_order_does_not_depend_on_request_order() -> None:
    gate = _Gate()
    async with running_xds(gate) as h:
        await h.apply(mesh_service_doc("a"))
        c = h.client()
        first = node("default.dp-1", resource=dataplane_doc("dp-1"))
        c.send(sotw(ROUTE, ["r"], node_=first))
        c.send(sotw(LISTENER))
        c.send(sotw(ENDPOINT, ["a_8080"]))
        c.send(sotw(CLUSTER))
        await eventually(lambda: h.requests_seen(DP1) == 4, "all four requests read")
        gate.open = True
        await h.apply(mesh_service_doc("a", port=8080) | {"labels": {"x": "y"}})
        order = [(await c.recv()).type_url for _ in range(3)]
        assert order == [CLUSTER, ENDPOINT, LISTENER]


class _TimeoutFromLabel:
    """SimpleGenerator, with each MeshService cluster's connect timeout from a label."""

    def __init__(self) -> None:
        self.inner = SimpleGenerator()

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        generated = self.inner.generate(state, proxy)
        out = ProxyResources()
        for type_url in generated.types():
            for name, message in generated.of_type(type_url).items():
                if type_url == CLUSTER and name.endswith("_8080"):
                    ms = state.mesh_services.get(
                        ResourceKey("MeshService", proxy.mesh, name.rsplit("_", 1)[0])
                    )
                    seconds = int(ms.labels.get("timeout", "5")) if ms else 5
                    copy = cluster_pb2.Cluster()
                    copy.CopyFrom(message)
                    copy.connect_timeout.CopyFrom(duration_pb2.Duration(seconds=seconds))
                    message = copy
                out.add(message, name)
        return out


async def test_endpoints_follow_a_cluster_change_even_when_unchanged() -> None:
    async with running_xds(_TimeoutFromLabel()) as h:
        await h.apply(mesh_service_doc("a"))
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(ENDPOINT, ["a_8080"]))
        eds = await c.recv_type(ENDPOINT)
        c.send(sotw(ENDPOINT, ["a_8080"], nonce=eds.nonce, version=eds.version_info))
        await eventually(lambda: h.requests_seen(DP1) >= 4, "ACK read")
        doc = mesh_service_doc("a")
        doc["labels"]["timeout"] = "7"
        await h.apply(doc)
        cds = await c.recv_type(CLUSTER)
        changed = next(m for m in unpack(cds) if m.name == "a_8080")
        assert changed.connect_timeout.seconds == 7
        again = await c.recv_type(ENDPOINT)  # the same CLA, so the cluster leaves warming
        assert names_of(again) == ["a_8080"]
        assert unpack(again) == unpack(eds)


async def test_reconnect_with_current_version_is_not_sent_the_same_state() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, cds = await h.connect_sotw("dp-1")
        await c.close()
        await eventually(lambda: not h.server.registry.connection(DP1), "first stream gone")
        c2 = h.client()
        c2.send(sotw(CLUSTER, version=cds.version_info, node_=node("default.dp-1")))
        await eventually(lambda: h.server.registry.connection(DP1), "reconnected")
        await h.barrier(c2)  # the first CDS response is the barrier, not a resend
