"""The mesh root, zone intermediates and the certificates they sign, as a TLS peer (or an
auditor) would see them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from mtls_helpers import uri_sans

from zonemesh.config import parse_duration
from zonemesh.mtls import (
    CaBundleError,
    CsrError,
    create_mesh_ca,
    decode_ca_bundle,
    encode_ca_bundle,
    issue_intermediate,
    issue_leaf,
    sign_csr,
)
from zonemesh.mtls.ca import decode_ca_certificate

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_mesh_root_is_self_signed_allows_one_intermediate_and_names_the_mesh() -> None:
    ca = create_mesh_ca("payments", now=NOW)
    cert = ca.certificate
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 1
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert cert.issuer == cert.subject
    assert "payments" in cert.subject.rfc4514_string()
    assert uri_sans(ca.cert_pem) == ["spiffe://payments"]
    assert isinstance(ca.private_key.curve, ec.SECP256R1)
    assert cert.not_valid_before_utc <= NOW
    assert cert.not_valid_after_utc - NOW >= timedelta(days=3600)
    cert.verify_directly_issued_by(cert)  # self-signed


def test_leaf_chains_to_its_mesh_ca_with_the_spiffe_ids_for_client_and_server() -> None:
    ca = create_mesh_ca("default", now=NOW)
    ids = ["spiffe://default/web", "spiffe://default/api"]
    leaf = issue_leaf(ca, ids, validity=timedelta(hours=24), now=NOW)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)

    assert uri_sans(leaf.cert_pem) == sorted(ids)
    assert leaf.spiffe_ids == tuple(sorted(ids))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc == NOW + timedelta(hours=24)
    assert cert.not_valid_before_utc <= NOW
    assert leaf.not_after == cert.not_valid_after_utc

    # A verifier trusting only the mesh CA accepts it as a client certificate.
    verifier = (
        PolicyBuilder()
        .store(Store([ca.certificate]))
        .time(NOW + timedelta(hours=1))
        .build_client_verifier()
    )
    verified = verifier.verify(cert, [])
    assert {s.value for s in verified.subjects or []} == set(ids)

    # ... and the key in the bundle is the one the certificate names.
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(leaf.key_pem, password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_leaf_from_another_mesh_ca_does_not_verify() -> None:
    ours, theirs = create_mesh_ca("default", now=NOW), create_mesh_ca("default", now=NOW)
    leaf = x509.load_pem_x509_certificate(
        issue_leaf(theirs, ["spiffe://default/web"], validity=timedelta(hours=1), now=NOW).cert_pem
    )
    verifier = PolicyBuilder().store(Store([ours.certificate])).time(NOW).build_client_verifier()
    with pytest.raises(VerificationError):
        verifier.verify(leaf, [])


def test_leaf_never_outlives_its_ca() -> None:
    ca = create_mesh_ca("default", now=NOW, validity=timedelta(hours=2))
    leaf = issue_leaf(ca, ["spiffe://default/web"], validity=timedelta(days=5), now=NOW)
    assert leaf.not_after == ca.not_after


def test_bundle_round_trip_keeps_the_same_ca() -> None:
    ca = create_mesh_ca("default", now=NOW)
    bundle = encode_ca_bundle(ca)
    assert bundle.startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"-----BEGIN PRIVATE KEY-----" in bundle
    decoded = decode_ca_bundle("default", bundle)
    assert decoded.fingerprint == ca.fingerprint
    assert decoded.cert_pem == ca.cert_pem
    # The decoded key signs certificates the original CA certificate verifies.
    leaf = issue_leaf(decoded, ["spiffe://default/x"], validity=timedelta(hours=1), now=NOW)
    x509.load_pem_x509_certificate(leaf.cert_pem).verify_directly_issued_by(ca.certificate)


def test_unusable_bundles_are_refused_with_a_reason() -> None:
    ca, other = create_mesh_ca("default"), create_mesh_ca("default")
    other_key = encode_ca_bundle(other).split(b"-----END CERTIFICATE-----\n")[1]
    leaf = issue_leaf(ca, ["spiffe://default/web"], validity=timedelta(hours=1))
    cases = {
        b"not pem at all": "found 0 and 0",
        ca.cert_pem: "found 1 and 0",
        ca.cert_pem + other_key: "does not belong",
        leaf.cert_pem + leaf.key_pem: "not a CA",
    }
    for data, reason in cases.items():
        with pytest.raises(CaBundleError, match=reason):
            decode_ca_bundle("default", data)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("90m", 5400), ("3s", 3), ("1h30m", 5400), ("500ms", 0.5), ("120", 120)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "-5", "24x", "h", "1h 2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def csr_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *sans: str) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "workload")])
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(s) for s in sans]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def verify_chain(root_pem: bytes, chain_pem: bytes) -> x509.Certificate:
    """Verify as a TLS client would, trusting the root only; returns the leaf."""
    certs = x509.load_pem_x509_certificates(chain_pem)
    store = Store([x509.load_pem_x509_certificate(root_pem)])
    verifier = PolicyBuilder().store(store).time(NOW).build_client_verifier()
    verifier.verify(certs[0], certs[1:])
    return certs[0]


def test_a_zone_intermediate_signs_leaves_that_verify_against_the_root_alone() -> None:
    root = create_mesh_ca("default", now=NOW)
    zone = issue_intermediate(root, "zone-1", now=NOW)
    constraints = zone.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca and constraints.value.path_length == 0
    assert not zone.is_root and root.is_root
    zone.certificate.verify_directly_issued_by(root.certificate)
    assert zone.not_after <= root.not_after
    key = ec.generate_private_key(ec.SECP256R1())
    signed = sign_csr(
        zone, csr_for(key), ["spiffe://default/web"], validity=timedelta(hours=1), now=NOW
    )
    leaf = verify_chain(root.cert_pem, signed.chain_pem)
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert uri_sans(signed.cert_pem) == ["spiffe://default/web"]
    # Another mesh's root does not accept it.
    with pytest.raises(VerificationError):
        verify_chain(create_mesh_ca("default", now=NOW).cert_pem, signed.chain_pem)


def test_an_intermediate_cannot_make_another_ca_valid() -> None:
    """pathlen 0: a zone that mints a CA of its own gets nothing peers accept."""
    root = create_mesh_ca("default", now=NOW)
    zone = issue_intermediate(root, "zone-1", now=NOW)
    rogue = issue_intermediate(zone, "rogue", now=NOW)  # signed, but beyond the path length
    leaf = issue_leaf(rogue, ["spiffe://default/web"], validity=timedelta(hours=1), now=NOW)
    chain = leaf.cert_pem + rogue.cert_pem + zone.cert_pem
    with pytest.raises(VerificationError):
        verify_chain(root.cert_pem, chain)


def test_the_csr_gives_only_its_key_never_its_names() -> None:
    root = create_mesh_ca("default", now=NOW)
    csr = csr_for(ec.generate_private_key(ec.SECP256R1()), "spiffe://default/admin")
    signed = sign_csr(root, csr, ["spiffe://default/web"], validity=timedelta(hours=1), now=NOW)
    assert uri_sans(signed.cert_pem) == ["spiffe://default/web"]
    assert signed.chain_pem == signed.cert_pem  # the root is the anchor, never sent


def test_csrs_that_prove_nothing_or_use_weak_keys_are_refused() -> None:
    root = create_mesh_ca("default", now=NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    good = x509.load_pem_x509_csr(csr_for(key))
    # Proof of possession: a CSR signed by another key than the one it carries.
    other = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(good.subject)
        .sign(other, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    # Swap in the victim's public key bytes: the signature no longer matches.
    victim_spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    other_spki = other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tampered = x509.load_der_x509_csr(forged.replace(other_spki, victim_spki)).public_bytes(
        serialization.Encoding.PEM
    )
    with pytest.raises(CsrError, match="signature does not verify"):
        sign_csr(root, tampered, [], validity=timedelta(hours=1))
    weak = csr_for(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(CsrError, match="at least 2048"):
        sign_csr(root, weak, [], validity=timedelta(hours=1))
    with pytest.raises(CsrError, match="not a PEM certificate request"):
        sign_csr(root, b"hello", [], validity=timedelta(hours=1))


def test_a_zones_copy_of_the_root_is_its_certificate_alone() -> None:
    root = create_mesh_ca("default", now=NOW)
    copy = decode_ca_certificate(root.cert_pem)
    assert copy.fingerprint == root.fingerprint
    with pytest.raises(CaBundleError):
        decode_ca_bundle("default", root.cert_pem)  # no key: cannot sign
