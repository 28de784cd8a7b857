"""The workload CA on the xDS port, called as `dp run` calls it (real gRPC): it signs a CSR
for exactly what the token allows the stored proxy to be, and refuses everything else with a
status that says why — counted under interface `ca`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store
from mtls_helpers import dataplane_doc, make_runtime, new_csr, sign, uri_sans

from zonemesh.config import ConfigError, load_config
from zonemesh.resources.codec import resource_from_wire
from zonemesh.runtime.kernel import Runtime
from zonemesh.state.component import ComputedState
from zonemesh.xds.component import XdsServer

pytestmark = pytest.mark.timeout(45)


@contextlib.asynccontextmanager
async def control_plane(
    *, with_ca: bool = True, cert_validity: timedelta | None = None
) -> AsyncIterator[tuple[Runtime, XdsServer]]:
    """A standalone zone CP: tokens, computed state (the mesh CA) and the xDS port."""
    runtime = make_runtime()
    await runtime.tokens.start()
    state = ComputedState(runtime)
    xds = XdsServer(runtime, cert_validity=cert_validity)
    if with_ca:
        await state.start()
    else:
        await runtime.store.create(resource_from_wire({"type": "Mesh", "name": "default"}))
    await xds.start()
    try:
        yield runtime, xds
    finally:
        await xds.stop()
        if with_ca:
            await state.stop()
        await runtime.tokens.stop()


async def token(runtime: Runtime, **claims: object) -> str:
    return await runtime.tokens.issue_dataplane(
        mesh=str(claims.pop("mesh", "default")),
        valid_for=timedelta(hours=1),
        **claims,  # type: ignore[arg-type]
    )


def refusals(runtime: Runtime, reason: str) -> float:
    value = runtime.metrics.get_sample_value(
        "zonemesh_auth_refusals_total", {"interface": "ca", "reason": reason}
    )
    return value or 0.0


async def refused(coro: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await coro  # type: ignore[misc]
    return error.value.code(), error.value.details() or ""


async def test_signs_the_csr_key_for_the_identities_of_the_stored_proxy() -> None:
    async with control_plane(cert_validity=timedelta(minutes=5)) as (runtime, xds):
        await runtime.store.create(resource_from_wire(dataplane_doc("web-1", ["web", "api"])))
        key, _ = new_csr()
        # The CSR asks for an admin identity; the certificate names what the proxy is.
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier("spiffe://default/admin")]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        answer = await sign(xds.port, await token(runtime, name="web-1"), "default.web-1", csr)
        chain = x509.load_pem_x509_certificates(answer["certificateChain"].encode())
        leaf = chain[0]
        assert uri_sans(leaf.public_bytes(serialization.Encoding.PEM)) == [
            "spiffe://default/api",
            "spiffe://default/web",
        ]
        assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
        root = x509.load_pem_x509_certificate(answer["trustBundle"].encode())
        verifier = PolicyBuilder().store(Store([root])).build_client_verifier()
        verifier.verify(leaf, chain[1:])
        lifetime = leaf.not_valid_after_utc - datetime.fromisoformat(answer["notBefore"])
        assert timedelta(minutes=5) <= lifetime <= timedelta(minutes=7)  # plus the backdating
        assert answer["trustFingerprint"] == await xds.trust.root_fingerprint("default")
        assert "PRIVATE KEY" not in str(answer)


async def test_each_call_signs_the_key_it_was_given_so_instances_never_share_one() -> None:
    async with control_plane() as (runtime, xds):
        for name in ("web-1", "web-2"):
            await runtime.store.create(resource_from_wire(dataplane_doc(name, ["web"])))
        service_token = await token(runtime, tags={"kuma.io/service": ["web"]})
        keys = []
        for name in ("web-1", "web-2"):
            _, csr = new_csr(f"default.{name}")
            answer = await sign(xds.port, service_token, f"default.{name}", csr)
            leaf = x509.load_pem_x509_certificates(answer["certificateChain"].encode())[0]
            keys.append(
                leaf.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        assert keys[0] != keys[1]


async def test_the_ca_refuses_a_csr_for_a_proxy_the_token_does_not_allow() -> None:
    async with control_plane() as (runtime, xds):
        await runtime.store.create(resource_from_wire(dataplane_doc("db-1", ["db"])))
        _, csr = new_csr()
        for claims, expected in (
            ({"name": "web-1"}, 'the token is for proxy "web-1", not "db-1"'),
            ({"tags": {"kuma.io/service": ["web"]}}, "allows kuma.io/service web, not db"),
            ({"proxy_type": "ingress"}, "the token is for a ingress proxy, not a dataplane"),
        ):
            code, details = await refused(
                sign(xds.port, await token(runtime, **claims), "default.db-1", csr)
            )
            assert code is grpc.StatusCode.PERMISSION_DENIED and expected in details
        assert refusals(runtime, "forbidden") == 3
        code, details = await refused(sign(xds.port, None, "default.db-1", csr))
        assert code is grpc.StatusCode.UNAUTHENTICATED and "no dataplane token" in details
        assert refusals(runtime, "missing") == 1


async def test_a_csr_that_does_not_prove_its_key_is_refused() -> None:
    async with control_plane() as (runtime, xds):
        await runtime.store.create(resource_from_wire(dataplane_doc("web-1", ["web"])))
        key = ec.generate_private_key(ec.SECP256R1())
        other = ec.generate_private_key(ec.SECP256R1())
        der = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(other, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )

        def spki(k: ec.EllipticCurvePrivateKey) -> bytes:
            return k.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )

        tampered = x509.load_der_x509_csr(der.replace(spki(other), spki(key)))
        pem = tampered.public_bytes(serialization.Encoding.PEM)
        code, details = await refused(
            sign(xds.port, await token(runtime, name="web-1"), "default.web-1", pem)
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "does not prove the key" in details
        assert refusals(runtime, "bad-csr") == 1


async def test_unknown_proxies_zone_proxies_and_meshes_without_ca_are_told_why() -> None:
    async with control_plane() as (runtime, xds):
        _, csr = new_csr()
        any_dp = await token(runtime)
        code, details = await refused(sign(xds.port, any_dp, "default.ghost", csr))
        assert code is grpc.StatusCode.NOT_FOUND and "not registered yet" in details
        ingress = await token(runtime, proxy_type="ingress")
        code, details = await refused(
            sign(xds.port, ingress, "default.ingress-1", csr, proxy_type="ingress")
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "get no certificate" in details
    async with control_plane(with_ca=False) as (runtime, xds):
        await runtime.store.create(resource_from_wire(dataplane_doc("web-1", ["web"])))
        code, details = await refused(
            sign(xds.port, await token(runtime, name="web-1"), "default.web-1", csr)
        )
        assert code is grpc.StatusCode.UNAVAILABLE and "no CA for mesh default yet" in details


def test_certificate_validity_comes_from_the_cp() -> None:
    assert XdsServer(make_runtime()).ca.validity == timedelta(hours=24)
    runtime = make_runtime()
    runtime.config = load_config(env={"ZONEMESH_CERT_VALIDITY": "90m"}, flags={"store": "memory"})
    assert XdsServer(runtime).ca.validity == timedelta(minutes=90)
    given = XdsServer(make_runtime(), cert_validity=timedelta(seconds=30))
    assert given.ca.validity == timedelta(seconds=30)
    with pytest.raises(ConfigError, match=r"xds\.certValidity: invalid duration 'whenever'"):
        load_config(env={"ZONEMESH_CERT_VALIDITY": "whenever"})
