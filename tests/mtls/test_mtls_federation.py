"""Global creates each mesh's CA; zones receive it over KDS and issue their sidecars'
certificates from it, so every zone of a mesh trusts the same root."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from cryptography import x509
from mtls_helpers import SecretClient, dataplane_doc, eventually, make_runtime
from zonemesh.translate.secrets import SecretsGenerator

from zonemesh.config import CpConfig
from zonemesh.cp.runtime import Component, Runtime
from zonemesh.federation.client import KdsClient
from zonemesh.federation.server import KdsServer
from zonemesh.mtls import CA_SECRET_NAME, IdentityProvider
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.registry import MESH, SECRET
from zonemesh.resources.types.mesh import MeshSpec
from zonemesh.state.component import ComputedState
from zonemesh.store.memory import MemoryStore
from zonemesh.translate.state import load_mesh_cas
from zonemesh.xds.component import XdsServer

pytestmark = pytest.mark.timeout(45)


@contextlib.asynccontextmanager
async def started(*components: Component) -> AsyncIterator[None]:
    running: list[Component] = []
    try:
        for component in components:
            await component.start()
            running.append(component)
        yield
    finally:
        for component in reversed(running):
            await component.stop()


async def test_zone_sidecars_get_certificates_from_the_ca_global_created() -> None:
    global_rt = make_runtime(mode="global")
    kds = KdsServer(global_rt)
    async with started(ComputedState(global_rt), kds):
        zone_config = CpConfig.model_validate(
            {
                "mode": "zone",
                "store": {"type": "memory"},
                "xds": {"port": 0},
                "multizone": {
                    "zone": {"name": "z1", "globalAddress": f"grpc://127.0.0.1:{kds.port}"}
                },
            }
        )
        zone_rt = Runtime(config=zone_config, store=MemoryStore())
        provider = IdentityProvider(timedelta(hours=1))
        xds = XdsServer(zone_rt, SecretsGenerator(provider), identities=provider)
        async with started(ComputedState(zone_rt), KdsClient(zone_rt), xds):
            global_ca = (await load_mesh_cas(global_rt.store))["default"]

            async def synced() -> bool:
                cas = await load_mesh_cas(zone_rt.store)
                return "default" in cas and cas["default"].fingerprint == global_ca.fingerprint

            await eventually(synced, "the default mesh's CA reaches the zone")
            # The zone made none of its own: exactly the one Secret, as global wrote it.
            (secret,) = await zone_rt.store.list(SECRET.name)
            assert secret.labels["kuma.io/origin"] == "global"

            client = SecretClient(xds.port, dataplane_doc("web-1", ["web"]))
            try:

                async def certificate() -> bytes | None:
                    return client.identity_pem()

                pem = await eventually(certificate, "the zone sidecar gets its certificate")
                x509.load_pem_x509_certificate(pem).verify_directly_issued_by(global_ca.certificate)
                assert client.ca_pem() == global_ca.cert_pem
            finally:
                await client.close()

            # A mesh created on global later: its CA follows it to the zone.
            await global_rt.store.create(
                Resource(type=MESH.name, name="payments", mesh="", spec=MeshSpec())
            )

            async def payments_ca() -> Resource | None:
                return await zone_rt.store.find(
                    ResourceKey(SECRET.name, "payments", CA_SECRET_NAME)
                )

            await eventually(payments_ca, "the payments CA reaches the zone")
