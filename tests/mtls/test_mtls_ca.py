"""The mesh CA and the certificates it issues, as a TLS peer (or an auditor) would see them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from mtls_helpers import uri_sans

from zonemesh.config import parse_duration
from zonemesh.mtls import (
    CaBundleError,
    create_mesh_ca,
    decode_ca_bundle,
    encode_ca_bundle,
    issue_leaf,
)

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_mesh_ca_is_a_self_signed_leaf_only_ca_naming_the_mesh() -> None:
    ca = create_mesh_ca("payments", now=NOW)
    cert = ca.certificate
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
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
