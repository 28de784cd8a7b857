"""Sidecars get their certificate and the mesh CA over SDS through ADS; the certificate stays
byte-identical across generation passes and is replaced before it expires."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from mtls_helpers import SecretClient, dataplane_doc, eventually, make_runtime, uri_sans

from zonemesh.config import ConfigError, load_config
from zonemesh.cp.runtime import Runtime
from zonemesh.mtls import IdentityProvider, create_mesh_ca
from zonemesh.resources.base import Resource, ResourceKey
from zonemesh.resources.codec import resource_from_wire
from zonemesh.resources.registry import MESH, SECRET
from zonemesh.resources.types.mesh import MeshSpec
from zonemesh.state.ca import ca_secret_resource
from zonemesh.state.component import ComputedState
from zonemesh.translate import names
from zonemesh.translate.generator import SECRET as SECRET_URL
from zonemesh.translate.generator import Proxy, ProxyType
from zonemesh.translate.secrets import SecretsGenerator
from zonemesh.translate.state import MeshState
from zonemesh.xds.component import XdsServer

pytestmark = pytest.mark.timeout(45)


def state_with(*resources: Resource, cas: dict | None = None) -> MeshState:
    return MeshState(
        version=1,
        zone="z1",
        meshes={},
        dataplanes={r.key: r for r in resources if r.type == "Dataplane"},
        mesh_services={},
        mesh_multi_zone_services={},
        zone_ingresses={r.key: r for r in resources if r.type == "ZoneIngress"},
        zone_egresses={},
        mesh_load_balancing_strategies={},
        mesh_cas=cas or {},
    )


def sidecar(resource: Resource) -> Proxy:
    return Proxy(key=resource.key, proxy_type=ProxyType.DATAPLANE, resource=resource)


def test_a_sidecar_gets_its_identity_and_the_mesh_ca() -> None:
    ca = create_mesh_ca("default")
    dp = resource_from_wire(dataplane_doc("web-1", ["web", "admin", "web"]))
    state = state_with(dp, cas={"default": ca})
    generator = SecretsGenerator(IdentityProvider(timedelta(hours=1)))

    out = generator.generate(state, sidecar(dp)).of_type(SECRET_URL)
    assert set(out) == {names.identity_secret("default"), names.ca_secret("default")}
    identity = out[names.identity_secret("default")]
    pem = identity.tls_certificate.certificate_chain.inline_bytes  # type: ignore[attr-defined]
    assert uri_sans(pem) == ["spiffe://default/admin", "spiffe://default/web"]
    assert identity.tls_certificate.private_key.inline_bytes.startswith(b"-----BEGIN")  # type: ignore[attr-defined]
    x509.load_pem_x509_certificate(pem).verify_directly_issued_by(ca.certificate)
    trusted = out[names.ca_secret("default")].validation_context.trusted_ca.inline_bytes  # type: ignore[attr-defined]
    assert trusted == ca.cert_pem

    # Generating again (a later pass) gives the very same bytes: nothing to push.
    again = generator.generate(state_with(dp, cas={"default": ca}), sidecar(dp)).of_type(SECRET_URL)
    for name, message in out.items():
        assert again[name].SerializeToString(deterministic=True) == message.SerializeToString(
            deterministic=True
        )


def test_zone_proxies_get_no_secrets() -> None:
    ingress = resource_from_wire(
        {
            "type": "ZoneIngress",
            "name": "ingress-1",
            "networking": {"address": "127.0.0.1", "port": 10001},
        }
    )
    state = state_with(ingress, cas={"default": create_mesh_ca("default")})
    proxy = Proxy(key=ingress.key, proxy_type=ProxyType.INGRESS, resource=ingress)
    assert len(SecretsGenerator(IdentityProvider()).generate(state, proxy)) == 0


def test_a_mesh_without_ca_gives_no_secrets_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dp = resource_from_wire(dataplane_doc("web-1", ["web"]))
    generator = SecretsGenerator(IdentityProvider())
    with caplog.at_level(logging.WARNING, logger="zonemesh.translate.secrets"):
        for _ in range(3):
            assert len(generator.generate(state_with(dp), sidecar(dp))) == 0
    assert len([r for r in caplog.records if "no CA" in r.getMessage()]) == 1


@contextlib.asynccontextmanager
async def control_plane(
    runtime: Runtime, provider: IdentityProvider
) -> AsyncIterator[tuple[ComputedState, XdsServer]]:
    state = ComputedState(runtime)
    xds = XdsServer(runtime, SecretsGenerator(provider), identities=provider)
    await state.start()
    try:
        await xds.start()
        try:
            yield state, xds
        finally:
            await xds.stop()
    finally:
        await state.stop()


@contextlib.asynccontextmanager
async def secret_client(xds: XdsServer, doc: dict) -> AsyncIterator[SecretClient]:
    client = SecretClient(xds.port, doc)
    try:
        yield client
    finally:
        await client.close()


async def test_secrets_are_not_pushed_again_by_unrelated_passes() -> None:
    runtime = make_runtime()
    provider = IdentityProvider(timedelta(hours=24))
    async with (
        control_plane(runtime, provider) as (_, xds),
        secret_client(xds, dataplane_doc("web-1", ["web"])) as client,
    ):

        async def both() -> bool:
            return client.identity_pem() is not None and client.ca_pem() is not None

        await eventually(both, "the sidecar receives both secrets")
        first, responses = client.identity_pem(), client.responses
        assert uri_sans(first or b"") == ["spiffe://default/web"]

        # Unrelated changes cause full passes; the sidecar's secrets do not move.
        for i in range(3):
            passes = xds.generations
            await runtime.store.create(
                Resource(type=MESH.name, name=f"other-{i}", mesh="", spec=MeshSpec())
            )

            async def passed(after: int = passes) -> bool:
                return xds.generations > after

            await eventually(passed, f"generation pass after mesh other-{i}")
        assert client.identity_pem() == first
        assert client.responses == responses
        assert provider.issued == 1


async def test_config_dumps_never_show_a_private_key() -> None:
    runtime = make_runtime()
    async with (
        control_plane(runtime, IdentityProvider(timedelta(hours=1))) as (_, xds),
        secret_client(xds, dataplane_doc("web-1", ["web"])) as client,
    ):
        await eventually(lambda: _async(client.identity_pem()), "the sidecar gets its identity")
        dump = xds.config_dump(ResourceKey("Dataplane", "default", "web-1"))
        assert dump is not None
        (identity,) = [s for s in dump[SECRET_URL] if s["name"] == names.identity_secret("default")]
        assert identity["tlsCertificate"]["privateKey"] == {"inlineString": "[redacted]"}
        assert "certificateChain" in identity["tlsCertificate"]
        assert "PRIVATE KEY" not in str(dump)


async def test_certificate_is_replaced_before_it_expires() -> None:
    runtime = make_runtime()
    provider = IdentityProvider(timedelta(seconds=6))  # re-issued after 4 s
    async with (
        control_plane(runtime, provider) as (_, xds),
        secret_client(xds, dataplane_doc("web-1", ["web"])) as client,
    ):
        first = await eventually(
            lambda: _async(client.identity_pem()), "the first certificate arrives"
        )
        old_expiry = x509.load_pem_x509_certificate(first).not_valid_after_utc

        async def rotated() -> bytes | None:
            pem = client.identity_pem()
            return pem if pem != first else None

        second = await eventually(rotated, "a new certificate arrives", timeout=20)
        arrived = datetime.now(UTC)
        assert arrived < old_expiry, "the new certificate came only after the old one expired"
        new = x509.load_pem_x509_certificate(second)
        assert new.not_valid_after_utc > old_expiry
        assert uri_sans(second) == ["spiffe://default/web"]
        # The CA did not change with it.
        assert client.ca_pem() is not None


async def test_a_ca_arriving_later_reaches_connected_sidecars() -> None:
    """On a federated zone the CA comes from global; a sidecar connected before gets it then."""
    runtime = make_runtime(federated=True)
    await runtime.store.create(Resource(type=MESH.name, name="default", mesh="", spec=MeshSpec()))
    provider = IdentityProvider(timedelta(hours=1))
    async with (
        control_plane(runtime, provider) as (_, xds),
        secret_client(xds, dataplane_doc("web-1", ["web"])) as client,
    ):
        key = ResourceKey("Dataplane", "default", "web-1")

        async def registered() -> bool:
            return xds.registry.connection(key) is not None and xds.generations > 0

        await eventually(registered, "the sidecar is connected and generated for")
        assert client.identity_pem() is None  # no CA yet: nothing to send

        synced = ca_secret_resource("default").with_(labels={"kuma.io/origin": "global"})
        await runtime.store.create(synced)
        await eventually(lambda: _async(client.identity_pem()), "the certificate arrives")
        assert client.ca_pem() is not None
        assert (await runtime.store.list(SECRET.name))[0].labels["kuma.io/origin"] == "global"


def test_validity_comes_from_the_argument_then_the_configuration() -> None:
    assert XdsServer(make_runtime()).identities.validity == timedelta(hours=24)
    runtime = make_runtime()
    runtime.config = load_config(env={"ZONEMESH_CERT_VALIDITY": "90m"}, flags={"store": "memory"})
    assert XdsServer(runtime).identities.validity == timedelta(minutes=90)
    given = XdsServer(make_runtime(), cert_validity=timedelta(seconds=30))
    assert given.identities.validity == timedelta(seconds=30)
    with pytest.raises(ConfigError, match=r"xds\.certValidity: invalid duration 'whenever'"):
        load_config(env={"ZONEMESH_CERT_VALIDITY": "whenever"})


async def _async(value: bytes | None) -> bytes | None:
    return value
