"""A real Envoy takes its own certificate (its key made by the data plane, signed by the CA
on the xDS port) and the mesh root over its local SDS, and serves mutual TLS with them: a
client holding a certificate from the mesh CA gets through and sees the server's SPIFFE ID; a
client without one does not; a renewed certificate is served before the old one expires."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import any_pb2
from mtls_helpers import eventually, make_runtime
from support.processes import free_port
from support.workload import Sidecar

from zonemesh.cpdp.names import ca_secret, identity_secret
from zonemesh.dp.envoy import EnvoyProcess
from zonemesh.mtls import CA_SECRET_NAME, MeshCA, decode_ca_bundle, issue_leaf
from zonemesh.resources.base import ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.proxy_types import ProxyType
from zonemesh.runtime.kernel import Runtime
from zonemesh.state.component import ComputedState
from zonemesh.translate import names
from zonemesh.translate.generator import Proxy, ProxyResources
from zonemesh.translate.state import MeshState
from zonemesh.translate.tls import local_sds_source
from zonemesh.xds.component import XdsServer

pytestmark = pytest.mark.timeout(90)

BODY = b"secured by the mesh"
KEY = ResourceKey("Dataplane", "default", "web-1")


def packed(message: Any) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=local_sds_source())


class MtlsInboundGenerator:
    """For each inbound, an mTLS listener answering BODY itself, with the SDS secrets."""

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        out = ProxyResources()
        if proxy.proxy_type is not ProxyType.DATAPLANE:
            return out
        net = proxy.resource.spec.networking  # type: ignore[attr-defined]
        for inbound in net.inbound:
            out.add(self._listener(proxy.mesh, net.address, inbound.port))
        return out

    def _listener(self, mesh: str, address: str, port: int) -> listener_pb2.Listener:
        route = route_pb2.RouteConfiguration(
            name="direct",
            virtual_hosts=[
                route_components_pb2.VirtualHost(
                    name="all",
                    domains=["*"],
                    routes=[
                        route_components_pb2.Route(
                            match=route_components_pb2.RouteMatch(prefix="/"),
                            direct_response=route_components_pb2.DirectResponseAction(
                                status=200, body=base_pb2.DataSource(inline_bytes=BODY)
                            ),
                        )
                    ],
                )
            ],
        )
        manager = hcm_pb2.HttpConnectionManager(
            stat_prefix="mtls_inbound",
            route_config=route,
            http_filters=[
                hcm_pb2.HttpFilter(
                    name="envoy.filters.http.router", typed_config=packed(router_pb2.Router())
                )
            ],
        )
        tls = tls_pb2.DownstreamTlsContext(
            common_tls_context=tls_pb2.CommonTlsContext(
                tls_certificate_sds_secret_configs=[sds(identity_secret(mesh))],
                validation_context_sds_secret_config=sds(ca_secret(mesh)),
            )
        )
        tls.require_client_certificate.value = True
        return listener_pb2.Listener(
            name=names.inbound_listener(address, port),
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=address, port_value=port)
            ),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[
                        listener_components_pb2.Filter(
                            name="envoy.filters.network.http_connection_manager",
                            typed_config=packed(manager),
                        )
                    ],
                    transport_socket=base_pb2.TransportSocket(
                        name="envoy.transport_sockets.tls", typed_config=packed(tls)
                    ),
                )
            ],
        )


def dataplane(port: int) -> dict[str, Any]:
    return {
        "type": "Dataplane",
        "mesh": "default",
        "name": "web-1",
        "networking": {
            "address": "127.0.0.1",
            "inbound": [
                {
                    "port": port,
                    "servicePort": free_port(),
                    "tags": {"kuma.io/service": "web", "kuma.io/protocol": "http"},
                }
            ],
        },
    }


@contextlib.asynccontextmanager
async def mesh_with_envoy(
    validity: timedelta, delta: bool
) -> AsyncIterator[tuple[Runtime, XdsServer, EnvoyProcess, int]]:
    runtime = make_runtime()
    await runtime.tokens.start()
    state = ComputedState(runtime)
    xds = XdsServer(runtime, MtlsInboundGenerator(), cert_validity=validity)
    port = free_port()
    await state.start()
    try:
        await xds.start()
        wire = dataplane(port)
        await runtime.store.create(resource_from_wire(wire))
        try:
            async with Sidecar(runtime, xds.port, wire) as sidecar:
                bootstrap = sidecar.bootstrap(f"grpc://127.0.0.1:{xds.port}", delta=delta)
                envoy = EnvoyProcess(bootstrap, concurrency=1)
                try:
                    await envoy.start(ready_timeout=45)
                    yield runtime, xds, envoy, port
                finally:
                    await envoy.stop()
        finally:
            await xds.stop()
    finally:
        await state.stop()
        await runtime.tokens.stop()


async def mesh_root(runtime: Runtime) -> MeshCA:
    """The standalone CP's root, key included (signs the test client's certificate)."""
    secret = await runtime.store.get(ResourceKey("Secret", "default", CA_SECRET_NAME))
    return decode_ca_bundle("default", secret.spec.value)  # type: ignore[attr-defined]


def client_context(ca: MeshCA, tmp: Path, *, with_cert: bool) -> ssl.SSLContext:
    """Trusts only the mesh CA; presents a certificate for `spiffe://default/client` if asked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # mesh certificates name SPIFFE IDs, not hosts
    context.load_verify_locations(cadata=ca.cert_pem.decode())
    if with_cert:
        leaf = issue_leaf(ca, ["spiffe://default/client"], validity=timedelta(hours=1))
        cert, key = tmp / "client.pem", tmp / "client.key"
        cert.write_bytes(leaf.cert_pem)
        key.write_bytes(leaf.key_pem)
        context.load_cert_chain(cert, key)
    return context


async def fetch(port: int, context: ssl.SSLContext) -> tuple[x509.Certificate, bytes]:
    """One HTTPS request; the server's certificate and the raw response."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context), timeout=5
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der), response


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


async def active_secret_names(envoy: EnvoyProcess) -> set[str]:
    dump = json.loads((await envoy.admin_get("/config_dump")).text)
    found = set()
    for section in dump.get("configs", []):
        for entry in section.get("dynamic_active_secrets", []):
            found.add(entry["name"])
    return found


@pytest.mark.parametrize("delta", [pytest.param(False, id="sotw"), pytest.param(True, id="delta")])
async def test_envoy_serves_mutual_tls_with_the_mesh_identity(delta: bool, tmp_path: Path) -> None:
    async with mesh_with_envoy(timedelta(hours=24), delta) as (runtime, xds, envoy, port):
        ca = await mesh_root(runtime)
        wanted = {identity_secret("default"), ca_secret("default")}

        async def secrets_active() -> bool:
            return wanted <= await active_secret_names(envoy)

        await eventually(secrets_active, "Envoy holds both secrets", timeout=30)

        good = client_context(ca, tmp_path, with_cert=True)
        server_cert, response = await eventually(
            lambda: fetch(port, good), "an mTLS request is answered", timeout=30
        )
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(BODY)
        assert spiffe_ids(server_cert) == ["spiffe://default/web"]
        server_cert.verify_directly_issued_by(ca.certificate)

        insight = next(i for i in xds.insights() if i.key == KEY)
        assert insight.nacks == 0

        # Without a client certificate the listener refuses to talk.
        anonymous = client_context(ca, tmp_path, with_cert=False)
        try:
            _, refused = await fetch(port, anonymous)
        except (ssl.SSLError, ConnectionError, ValueError):  # ValueError: no handshake
            refused = b""
        assert BODY not in refused


async def test_envoy_serves_the_rotated_certificate_before_the_old_one_expires(
    tmp_path: Path,
) -> None:
    async with mesh_with_envoy(timedelta(seconds=12), True) as (runtime, xds, _, port):
        ca = await mesh_root(runtime)
        good = client_context(ca, tmp_path, with_cert=True)
        first, _ = await eventually(lambda: fetch(port, good), "the first mTLS answer", timeout=30)

        seen_at: list[datetime] = []

        async def rotated() -> x509.Certificate | None:
            started = datetime.now(UTC)
            cert, response = await fetch(port, good)
            if cert.serial_number != first.serial_number and BODY in response:
                seen_at.append(started)
                return cert
            return None

        second = await eventually(rotated, "Envoy serves a new certificate", timeout=25)
        assert seen_at[0] < first.not_valid_after_utc
        assert spiffe_ids(second) == ["spiffe://default/web"]
        assert second.not_valid_after_utc > first.not_valid_after_utc
        assert next(i for i in xds.insights() if i.key == KEY).nacks == 0
