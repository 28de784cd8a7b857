"""Incremental generation with the production generator: a change reaches only the proxies
that hold what it affects, as an EDS-only push, without a generator run per proxy; proxies
reconnecting all at once (a control-plane restart) are all configured."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.gateway_topologies import gateway_dataplane, gateway_route, mesh_gateway, path_rule
from test_xds_harness import (
    AdsClient,
    Harness,
    dataplane_doc,
    eventually,
    mesh_service_doc,
    names_of,
    node,
    running_xds,
    sotw,
    unpack,
)

from zonemesh.envoy_types import CLUSTER, ENDPOINT, LISTENER
from zonemesh.store.memory import MemoryStore
from zonemesh.translate.default import default_generator

SERVICE_PORT = 8080
GENERATIONS = "xds_generation_count"  # generator runs, as the CP's metrics report them


def instance(service: str, i: int) -> dict[str, Any]:
    """An instance applied through the API (no health information: healthy)."""
    address = f"127.0.{3 if service == 'svc-a' else 4}.{10 + i}"
    return dataplane_doc(
        f"{service}-{i}", address=address, inbounds=[(20080, SERVICE_PORT, service, "http")]
    )


def client_of(name: str, service: str, index: int) -> dict[str, Any]:
    """A sidecar of service `client` with one outbound, to `service`."""
    doc = dataplane_doc(
        name, address=f"127.0.5.{10 + index}", inbounds=[(20080, 8080, "client", "http")]
    )
    doc["networking"]["outbound"] = [
        {
            "port": 30001,
            "address": "127.0.0.1",
            "backendRef": {"kind": "MeshService", "name": service, "port": SERVICE_PORT},
        }
    ]
    return doc


def addresses(cla_response: Any) -> set[str]:
    return {
        lb.endpoint.address.socket_address.address
        for cla in unpack(cla_response)
        for group in cla.endpoints
        for lb in group.lb_endpoints
    }


async def configure(h: Harness, name: str, doc: dict[str, Any]) -> tuple[AdsClient, list[str]]:
    """Like Envoy: CDS wildcard, then EDS for the EDS clusters, then LDS; all ACKed."""
    c, cds = await h.connect_sotw(name, doc)
    eds_names = sorted(m.name for m in unpack(cds) if m.type == m.EDS)
    c.send(sotw(ENDPOINT, eds_names))
    eds = await c.recv_type(ENDPOINT)
    c.send(sotw(ENDPOINT, eds_names, nonce=eds.nonce, version=eds.version_info))
    c.send(sotw(LISTENER))
    lds = await c.recv_type(LISTENER)
    c.send(sotw(LISTENER, nonce=lds.nonce, version=lds.version_info))
    return c, eds_names


async def quiet(h: Harness) -> None:
    """Until the server has no debounced round pending (no timing asserted)."""
    await eventually(
        lambda: not h.server.scheduler.signal.debouncer.pending, "debounced rounds done"
    )
    await asyncio.sleep(0.05)
    await eventually(
        lambda: not h.server.scheduler.signal.debouncer.pending, "debounced rounds done"
    )


async def test_a_new_instance_is_an_eds_only_push_to_the_callers_of_its_service() -> None:
    async with running_xds(default_generator()) as h:
        for service in ("svc-a", "svc-b"):
            await h.apply(mesh_service_doc(service))
            for i in range(2):
                await h.apply(instance(service, i))
        callers_a = [
            await configure(h, f"a-{i}", client_of(f"a-{i}", "svc-a", i)) for i in range(4)
        ]
        callers_b = [
            await configure(h, f"b-{i}", client_of(f"b-{i}", "svc-b", 10 + i)) for i in range(4)
        ]
        await quiet(h)
        runs = h.metric(GENERATIONS)

        await h.apply(instance("svc-a", 2))  # a new instance of an existing service
        for c, eds_names in callers_a:
            update = await c.recv()  # nothing before it: no CDS, no LDS
            assert update.type_url == ENDPOINT, (update.type_url, names_of(update))
            assert "127.0.3.12" in addresses(update)
            assert set(names_of(update)) <= set(eds_names)
            c.send(sotw(ENDPOINT, eds_names, nonce=update.nonce, version=update.version_info))
        await quiet(h)
        # One generator run per group of proxies with the same outbounds (two groups here),
        # not one per connected proxy: the others' snapshots are recomposed.
        assert h.metric(GENERATIONS) - runs <= 2
        assert h.server.scheduler.recomposed >= len(callers_a) - 1

        # The callers of svc-b got nothing: their next response is svc-b's own change.
        await h.apply(instance("svc-b", 2))
        for c, _ in callers_b:
            update = await c.recv()
            assert update.type_url == ENDPOINT, (update.type_url, names_of(update))
            assert "127.0.4.12" in addresses(update) and "127.0.3.12" not in addresses(update)


async def test_a_removed_instance_leaves_the_endpoints_of_its_callers_only() -> None:
    async with running_xds(default_generator()) as h:
        await h.apply(mesh_service_doc("svc-a"))
        for i in range(3):
            await h.apply(instance("svc-a", i))
        callers = [await configure(h, f"a-{i}", client_of(f"a-{i}", "svc-a", i)) for i in range(3)]
        await quiet(h)
        await h.delete("Dataplane", "svc-a-1")
        for c, _ in callers:
            update = await c.recv()
            assert update.type_url == ENDPOINT, (update.type_url, names_of(update))
            assert "127.0.3.11" not in addresses(update) and "127.0.3.10" in addresses(update)


async def test_every_proxy_of_a_reconnect_storm_is_configured() -> None:
    """A control-plane restart: every proxy reconnects at once to a new server on the same
    store; each gets its clusters, endpoints and listeners, and no stream is reset."""
    store = MemoryStore()
    proxies = 60
    docs = {f"p-{i}": client_of(f"p-{i}", "svc-a", i) for i in range(proxies)}
    async with running_xds(default_generator(), store=store) as h:
        await h.apply(mesh_service_doc("svc-a"))
        for i in range(2):
            await h.apply(instance("svc-a", i))
        for name in list(docs)[:5]:
            await configure(h, name, docs[name])  # registered once, before the restart
    async with running_xds(default_generator(), store=store) as h:
        clients = [h.client(token=await h.mesh_token("default")) for _ in docs]
        for c, (name, doc) in zip(clients, docs.items(), strict=True):
            c.send(sotw(CLUSTER, node_=node(f"default.{name}", resource=doc)))

        async def configured(c: AdsClient) -> None:
            cds = await c.recv_type(CLUSTER)
            c.send(sotw(CLUSTER, nonce=cds.nonce, version=cds.version_info))
            eds_names = sorted(m.name for m in unpack(cds) if m.type == m.EDS)
            assert any("svc-a" in n for n in eds_names), eds_names
            c.send(sotw(ENDPOINT, eds_names))
            eds = await c.recv_type(ENDPOINT)
            assert {"127.0.3.10", "127.0.3.11"} <= addresses(eds)
            c.send(sotw(LISTENER))
            lds = await c.recv_type(LISTENER)
            assert lds.resources

        await asyncio.gather(*(configured(c) for c in clients))
        assert len(h.server.registry.connections()) == proxies
        assert h.metric("xds_streams_active") == proxies


async def test_a_builtin_gateway_gets_every_change_to_its_backends() -> None:
    """A gateway's clusters and endpoints are all its own (no shared parts), like those of
    sidecars without outbounds: whichever proxy of that kind the engine looks at first, a
    new backend instance must reach the gateway."""
    async with running_xds(default_generator()) as h:
        await h.apply(mesh_service_doc("svc-a"))
        await h.apply(instance("svc-a", 0))
        await h.apply(mesh_gateway())
        backend = {"kind": "MeshService", "name": "svc-a", "port": SERVICE_PORT}
        await h.apply(gateway_route("edge", [path_rule("/", backend)]))
        for i in range(8):  # instances of another service: no outbounds, no shared parts
            await h.connect_sotw(f"svc-b-{i}", instance("svc-b", i))
        gateway, eds_names = await configure(h, "edge-gateway-1", gateway_dataplane())
        assert any("svc-a" in n for n in eds_names), eds_names
        await quiet(h)

        await h.apply(instance("svc-a", 1))
        update = await gateway.recv_type(ENDPOINT)
        assert "127.0.3.11" in addresses(update), addresses(update)
