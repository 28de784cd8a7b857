"""Global creates each mesh's root and an intermediate per zone; a zone receives them over
KDS and signs its sidecars' CSRs with its own intermediate, so every zone of a mesh trusts the
same root while each can mint only under its own intermediate."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from cryptography import x509
from mtls_helpers import dataplane_doc, eventually, make_runtime, new_csr, sign

from zonemesh.config import CpConfig
from zonemesh.federation.client import KdsClient
from zonemesh.federation.server import KdsServer
from zonemesh.mtls import CA_SECRET_NAME
from zonemesh.mtls.trust import MeshTrust, zone_ca_key
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.registry import MESH, SECRET
from zonemesh.resources.types.mesh import MeshSpec
from zonemesh.runtime.kernel import Component, Runtime
from zonemesh.state.component import ComputedState
from zonemesh.store.memory import MemoryStore
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


async def test_zone_sidecars_get_certificates_under_the_zones_intermediate() -> None:
    global_rt = make_runtime(mode="global")
    kds = KdsServer(global_rt)
    async with started(ComputedState(global_rt), kds):
        zone_token = await global_rt.tokens.issue_zone(
            zone="z1", scope=["cp"], valid_for=timedelta(hours=1)
        )
        zone_config = CpConfig.model_validate(
            {
                "mode": "zone",
                "store": {"type": "memory"},
                "xds": {"port": 0},
                "multizone": {
                    "zone": {
                        "name": "z1",
                        "globalAddress": f"grpc://127.0.0.1:{kds.port}",
                        "kdsAuth": {"tokenInline": zone_token},
                    }
                },
            }
        )
        zone_rt = Runtime(config=zone_config, store=MemoryStore())
        await zone_rt.tokens.start()
        xds = XdsServer(zone_rt)
        async with started(ComputedState(zone_rt), KdsClient(zone_rt), xds):
            global_trust = MeshTrust(global_rt.store, "")
            root = await global_trust.root("default")
            assert root is not None

            async def intermediate() -> Resource | None:
                return await zone_rt.store.find(zone_ca_key("default", "z1"))

            await eventually(intermediate, "zone z1's intermediate reaches the zone")
            # The zone made none of its own: every Secret it has came from global.
            for secret in await zone_rt.store.list(SECRET.name):
                assert secret.labels["kuma.io/origin"] == "global", secret.name

            await zone_rt.store.create(resource_from_wire(dataplane_doc("web-1", ["web"])))
            token = await zone_rt.tokens.issue_dataplane(
                mesh="default", name="web-1", valid_for=timedelta(hours=1)
            )
            _, csr = new_csr()
            answer = await sign(xds.port, token, "default.web-1", csr)
            leaf, middle = x509.load_pem_x509_certificates(answer["certificateChain"].encode())
            assert "z1" in middle.subject.rfc4514_string()
            leaf.verify_directly_issued_by(middle)
            middle.verify_directly_issued_by(root.certificate)
            assert answer["trustBundle"].encode() == root.cert_pem
            assert answer["trustFingerprint"] == root.fingerprint

            # A mesh created on global later: its root follows it to the zone.
            await global_rt.store.create(
                Resource(type=MESH.name, name="payments", mesh="", spec=MeshSpec())
            )

            async def payments_ca() -> Resource | None:
                return await zone_rt.store.find(
                    ResourceKey(SECRET.name, "payments", CA_SECRET_NAME)
                )

            await eventually(payments_ca, "the payments CA reaches the zone")
        await zone_rt.tokens.stop()
