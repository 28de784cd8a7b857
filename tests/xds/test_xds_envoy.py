"""A real Envoy against the in-process xDS server, over SotW and Delta ADS.

What a user would notice: traffic flows through the listener and cluster the CP sends; a
change in the store reaches the running Envoy without a restart; and a resource Envoy
refuses is NACKed once, reported with Envoy's reason, and not pushed again in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy_harness import Upstream, dynamic_configs, eventually, get_body
from google.protobuf import duration_pb2
from support.processes import free_port
from support.workload import Sidecar

from zonemesh.config import load_config
from zonemesh.dp.envoy import EnvoyProcess
from zonemesh.resources.base import ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.runtime.insights import ProxyInsight
from zonemesh.runtime.kernel import Runtime
from zonemesh.state.component import ComputedState
from zonemesh.store.memory import MemoryStore
from zonemesh.translate import Generator, MeshState, Proxy, ProxyResources
from zonemesh.xds.component import XdsServer

pytestmark = pytest.mark.timeout(90)

MODES = [pytest.param(False, id="sotw"), pytest.param(True, id="delta")]
KEY = ResourceKey("Dataplane", "default", "web-01")
BAD_LABEL = "test.zonemesh.io/bad-cluster"
BAD_CLUSTER = "refused-by-envoy"


class ControlPlane:
    """Store + computed state + xDS server, as `zonemesh cp run` composes them (no API)."""

    def __init__(self, wrap: Callable[[Generator], Generator] | None = None) -> None:
        config = load_config(env={}, flags={"store": "memory", "xds_port": 0})
        self.runtime = Runtime(config=config, store=MemoryStore())
        self.state = ComputedState(self.runtime)
        self.xds = XdsServer(self.runtime)
        if wrap is not None:  # the test's generator around the one the CP really uses
            self.xds.generator = wrap(self.xds.generator)

    @property
    def address(self) -> str:
        return f"grpc://127.0.0.1:{self.xds.port}"

    async def start(self) -> None:
        await self.runtime.tokens.start()
        await self.state.start()
        await self.xds.start()

    async def stop(self) -> None:
        await self.xds.stop()
        await self.state.stop()
        await self.runtime.tokens.stop()

    def insight(self, key: ResourceKey) -> ProxyInsight | None:
        return next((i for i in self.runtime.views["xds"].insights() if i.key == key), None)

    async def replace_dataplane(self, wire: dict[str, Any], **labels: str) -> None:
        """Update the stored Dataplane (as an operator's apply would), keeping its labels."""
        current = await self.runtime.store.get(KEY)
        new = resource_from_wire(wire)
        await self.runtime.store.update(
            new.with_(version=current.version, labels={**current.labels, **labels})
        )


def dataplane(
    inbounds: list[tuple[int, int]], outbound: tuple[int, int] | None = None
) -> dict[str, Any]:
    """web-01 on 127.0.0.1: each (inbound port, app port) is an HTTP inbound of `web`.

    `outbound` (listener port, service port) makes it a client of its own service too, so
    the request path includes the MeshService's EDS cluster: outbound -> EDS -> inbound -> app.
    """
    wire: dict[str, Any] = {
        "type": "Dataplane",
        "mesh": "default",
        "name": "web-01",
        "networking": {
            "address": "127.0.0.1",
            "inbound": [
                {
                    "port": port,
                    "servicePort": app,
                    "serviceAddress": "127.0.0.1",
                    "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"},
                }
                for port, app in inbounds
            ],
        },
    }
    if outbound is not None:
        port, service_port = outbound
        wire["networking"]["outbound"] = [
            {
                "port": port,
                "address": "127.0.0.1",
                "backendRef": {"kind": "MeshService", "name": "web", "port": service_port},
            }
        ]
    return wire


@contextlib.asynccontextmanager
async def running(
    wrap: Callable[[Generator], Generator] | None = None,
    bodies: tuple[str, ...] = ("from-a", "from-b"),
) -> AsyncIterator[tuple[ControlPlane, list[Upstream]]]:
    cp = ControlPlane(wrap)
    upstreams = [Upstream(body) for body in bodies]
    try:
        for upstream in upstreams:
            await upstream.start()
        await cp.start()
        yield cp, upstreams
    finally:
        await cp.stop()
        for upstream in upstreams:
            await upstream.stop()


@contextlib.asynccontextmanager
async def envoy_for(
    cp: ControlPlane, wire: dict[str, Any], delta: bool
) -> AsyncIterator[EnvoyProcess]:
    """Envoy as `dp run` starts it: with its token and its own certificate over local SDS."""
    async with Sidecar(cp.runtime, cp.xds.port, wire) as sidecar:
        envoy = EnvoyProcess(
            sidecar.bootstrap(cp.address, zone="zone-1", delta=delta), concurrency=1
        )
        try:
            await envoy.start(ready_timeout=45)
            yield envoy
        finally:
            await envoy.stop()


async def config_dump(envoy: EnvoyProcess) -> dict[str, Any]:
    return json.loads((await envoy.admin_get("/config_dump", include_eds="")).text)


async def active_clusters(envoy: EnvoyProcess) -> set[str]:
    dump = await config_dump(envoy)
    return {c["cluster"]["name"] for c in dynamic_configs(dump, "dynamic_active_clusters")}


async def eds_hosts(envoy: EnvoyProcess) -> dict[str, set[str]]:
    """`address:port` of the endpoints of every EDS cluster Envoy holds (from `/clusters`)."""
    dump = await config_dump(envoy)
    eds = {
        c["cluster"]["name"]
        for c in dynamic_configs(dump, "dynamic_active_clusters")
        if c["cluster"].get("type") == "EDS"
    }
    found: dict[str, set[str]] = {name: set() for name in eds}
    for line in (await envoy.admin_get("/clusters")).text.splitlines():
        parts = line.split("::")
        if len(parts) >= 3 and parts[0] in found and parts[2] == "health_flags":
            found[parts[0]].add(parts[1])
    return found


async def wait_body(port: int, body: str, what: str) -> None:
    async def answered() -> bool:
        return await get_body(port) == body

    await eventually(answered, timeout=20, what=what)


@pytest.mark.parametrize("delta", MODES)
async def test_envoy_serves_traffic_and_follows_store_changes(delta: bool) -> None:
    async with running() as (cp, (app_a, app_b)):
        inbound, outbound = free_port(), free_port()
        wire = dataplane([(inbound, app_a.port)], outbound=(outbound, app_a.port))
        async with envoy_for(cp, wire, delta) as envoy:
            # The inbound listener and the app cluster arrive: traffic reaches app A.
            await wait_body(inbound, "from-a", "request through the inbound reaches app A")
            dump = await config_dump(envoy)
            listeners = {lst["name"] for lst in dynamic_configs(dump, "dynamic_listeners")}
            assert f"inbound:127.0.0.1:{inbound}" in listeners

            # Registered from its metadata, the proxy becomes the endpoint of MeshService
            # `web`; its outbound to `web` gets an EDS cluster with that endpoint.
            await wait_body(outbound, "from-a", "outbound -> EDS cluster -> inbound -> app A")

            async def web_endpoint() -> bool:
                hosts = await eds_hosts(envoy)
                return any(f"127.0.0.1:{inbound}" in h for h in hosts.values())

            await eventually(web_endpoint, what="an EDS cluster with the proxy's inbound")
            insight = cp.insight(KEY)
            assert insight is not None and insight.online and insight.nacks == 0
            assert app_a.requests >= 2

            # Change the store: the inbound now points at app B (the outbound follows the
            # service port), and a second inbound points at app A. Envoy picks it all up
            # without a restart.
            pid = envoy.pid
            second = free_port()
            await cp.replace_dataplane(
                dataplane(
                    [(inbound, app_b.port), (second, app_a.port)], outbound=(outbound, app_b.port)
                )
            )
            await wait_body(inbound, "from-b", "the changed inbound reaches app B")
            await wait_body(second, "from-a", "the new inbound reaches app A")
            await wait_body(outbound, "from-b", "the outbound follows to the new service port")
            assert envoy.pid == pid and envoy.returncode is None
            assert await envoy.stat("listener_manager.lds.update_rejected") == 0
            assert await envoy.stat("cluster_manager.cds.update_rejected") == 0
            assert cp.insight(KEY).nacks == 0  # type: ignore[union-attr]


class RefusedClusterGenerator:
    """The CP's generator plus, for a Dataplane labelled BAD_LABEL, a cluster Envoy rejects."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        out = self.inner.generate(state, proxy)
        if proxy.resource.labels.get(BAD_LABEL):
            # A connect timeout must be > 0: Envoy's validation refuses the whole update.
            out.add(
                cluster_pb2.Cluster(
                    name=BAD_CLUSTER,
                    type=cluster_pb2.Cluster.STATIC,
                    connect_timeout=duration_pb2.Duration(seconds=0),
                )
            )
        return out


@pytest.mark.parametrize("delta", MODES)
async def test_refused_cluster_is_nacked_once_and_not_resent(delta: bool) -> None:
    async with running(RefusedClusterGenerator, bodies=("from-a",)) as (cp, (app,)):
        inbound, outbound = free_port(), free_port()
        wire = dataplane([(inbound, app.port)], outbound=(outbound, app.port))
        async with envoy_for(cp, wire, delta) as envoy:
            # Registration and the MeshService's pushes are done once the outbound works.
            await wait_body(outbound, "from-a", "outbound -> EDS cluster -> inbound -> app")
            accepted = await envoy.stat("cluster_manager.cds.update_success")
            assert await envoy.stat("cluster_manager.cds.update_rejected") == 0

            # The operator labels the Dataplane; the generator now adds a cluster Envoy refuses.
            await cp.replace_dataplane(wire, **{BAD_LABEL: "yes"})

            async def rejected() -> int | None:
                return await envoy.stat("cluster_manager.cds.update_rejected")

            assert await eventually(rejected, what="Envoy rejects the CDS update") == 1

            async def nack_recorded() -> ProxyInsight | None:
                insight = cp.insight(KEY)
                return insight if insight is not None and insight.nacks else None

            insight = await eventually(nack_recorded, what="the CP records the NACK")
            assert insight.nacks == 1
            assert insight.last_nack and "ConnectTimeout" in insight.last_nack, insight.last_nack

            # Not looped: over several seconds the CP does not push the refused set again.
            end = time.monotonic() + 4
            while time.monotonic() < end:
                assert await envoy.stat("cluster_manager.cds.update_rejected") == 1
                assert cp.insight(KEY).nacks == 1  # type: ignore[union-attr]
                await asyncio.sleep(0.25)

            # Envoy kept its last good config: traffic still flows, the refused cluster is absent.
            assert await get_body(outbound) == "from-a"
            assert BAD_CLUSTER not in await active_clusters(envoy)

            # Fixing the input clears it: the next update is accepted, no new NACK.
            await cp.replace_dataplane(wire, **{BAD_LABEL: ""})

            async def accepted_again() -> bool:
                success = await envoy.stat("cluster_manager.cds.update_success")
                return success is not None and accepted is not None and success > accepted

            await eventually(accepted_again, what="the corrected CDS update is accepted")
            assert await envoy.stat("cluster_manager.cds.update_rejected") == 1
            assert cp.insight(KEY).nacks == 1  # type: ignore[union-attr]
