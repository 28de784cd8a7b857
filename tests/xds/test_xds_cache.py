"""The cache: content versions, shared encoded bytes, pushes only where something changed."""

from __future__ import annotations

from support.simple_generator import _eds_cluster
from test_xds_harness import (
    dataplane_doc,
    delta,
    eventually,
    mesh_service_doc,
    names_of,
    running_xds,
    sotw,
)

from zonemesh.envoy_types import CLUSTER, ENDPOINT
from zonemesh.resources.base import ResourceKey
from zonemesh.translate.generator import ProxyResources
from zonemesh.xds.cache import ResourceInterner, Snapshot, SnapshotCache

DP1 = ResourceKey("Dataplane", "default", "dp-1")
DP2 = ResourceKey("Dataplane", "default", "dp-2")


def test_identical_content_gets_the_same_version_and_the_same_bytes() -> None:
    interner = ResourceInterner()
    one, two = ProxyResources(), ProxyResources()
    one.add(_eds_cluster("a_80"))
    two.add(_eds_cluster("a_80"))  # a different object with the same content
    s1, s2 = interner.snapshot(one), interner.snapshot(two)
    r1, r2 = s1.of_type(CLUSTER)["a_80"], s2.of_type(CLUSTER)["a_80"]
    assert r1 is r2 and r1.any_bytes is r2.any_bytes
    assert s1.versions == s2.versions
    assert s2.changed_types(s1) == frozenset()


def test_unchanged_snapshot_notifies_nobody() -> None:
    interner, cache = ResourceInterner(), SnapshotCache()
    calls: list[frozenset[str]] = []
    cache.watch(DP1, lambda _s, changed: calls.append(changed))
    res = ProxyResources()
    res.add(_eds_cluster("a_80"))
    assert cache.set(DP1, interner.snapshot(res)) == frozenset({CLUSTER})
    assert cache.set(DP1, interner.snapshot(res)) == frozenset()
    assert cache.set(DP1, Snapshot.of({})) == frozenset({CLUSTER})
    assert calls == [frozenset({CLUSTER}), frozenset({CLUSTER})]


async def test_proxies_share_one_encoding_of_a_service_endpoints() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        await h.connect_sotw("dp-1")
        await h.connect_sotw("dp-2", dataplane_doc("dp-2", address="127.0.1.2"))
        await eventually(lambda: h.server.cache.get(DP1) and h.server.cache.get(DP2), "both")

        def same_cla() -> bool:
            s1, s2 = h.server.cache.get(DP1), h.server.cache.get(DP2)
            cla1, cla2 = s1.of_type(ENDPOINT)["a_8080"], s2.of_type(ENDPOINT)["a_8080"]
            # Both instances are in it (once both streams are connected and healthy).
            return cla1 is cla2 and cla1.any_bytes.count(b"127.0.1.2") == 1

        await eventually(same_cla, "one shared CLA with both endpoints")
        before = h.server.interner.serializations
        await h.apply(mesh_service_doc("b"))
        await eventually(lambda: "b_8080" in h.server.cache.get(DP2).of_type(CLUSTER), "b")
        # One pass: 2 new shared resources (b's cluster and CLA) + the unchanged ones once
        # per state, not once per proxy: the per-proxy local clusters/listeners are per proxy.
        per_pass = h.server.interner.serializations - before
        assert per_pass <= 2 * 2 + 2 + 2  # (2 shared pairs) + 2 local clusters + 2 listeners


async def test_a_change_reaches_only_the_proxies_it_concerns() -> None:
    async with running_xds() as h:
        await h.apply({"type": "Mesh", "name": "other"})
        await h.apply(mesh_service_doc("a"))
        c1, _ = await h.connect_delta("dp-1")
        c2, _ = await h.connect_delta("dp-9", mesh="other")
        for c in (c1, c2):
            c.send(delta(ENDPOINT))
            eds = await c.recv_type(ENDPOINT)
            c.send(delta(ENDPOINT, nonce=eds.nonce))
        sent_before = h.server.registry.record(
            ResourceKey("Dataplane", "other", "dp-9")
        ).responses_sent
        await h.apply(
            dataplane_doc("dp-b", address="127.0.1.2", inbounds=[(20080, 8080, "a", "http")])
        )
        update = await c1.recv_type(ENDPOINT)  # only the endpoints, only to mesh default
        assert names_of(update) == ["a_8080"]
        await h.barrier(c2, mesh="other", eds_wildcard=True)
        record = h.server.registry.record(ResourceKey("Dataplane", "other", "dp-9"))
        assert record.responses_sent == sent_before + 2  # just the barrier's CDS and EDS


async def test_sotw_client_gets_only_the_changed_type() -> None:
    async with running_xds() as h:
        await h.apply(mesh_service_doc("a"))
        c, _ = await h.connect_sotw("dp-1")
        c.send(sotw(ENDPOINT, ["a_8080"]))
        eds = await c.recv_type(ENDPOINT)
        c.send(sotw(ENDPOINT, ["a_8080"], nonce=eds.nonce, version=eds.version_info))
        await h.apply(
            dataplane_doc("dp-b", address="127.0.1.2", inbounds=[(20080, 8080, "a", "http")])
        )
        update = await c.recv()
        assert update.type_url == ENDPOINT  # no CDS: the clusters did not change
