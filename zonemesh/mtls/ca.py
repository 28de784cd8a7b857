"""A mesh's builtin certificate authority: creation, leaf issuance, and its stored form.

Every mesh gets one CA (EC P-256, self-signed, path length 0, URI SAN `spiffe://<mesh>`),
whether or not the mesh enables mTLS, because traffic between zones is always mutual TLS.

Stored form: one Secret named `ca-builtin` in the mesh, whose data (base64, as every Secret)
is a PEM bundle: the CA certificate, then its PKCS#8 private key. One resource rather than two
so that a cert can never be synced or read without its key (zones issue certificates too).

Leaf certificates carry the proxy's SPIFFE IDs as URI SANs and are valid for client and server
authentication. Functions take `now` so tests can build certificates at a chosen time.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_SECRET_NAME = "ca-builtin"
CA_VALIDITY = timedelta(days=3650)
# Certificates start a little in the past: control planes and proxies in other zones may run
# with clocks slightly behind ours.
BACKDATE = timedelta(minutes=1)
ORGANIZATION = "zonemesh"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


class CaBundleError(ValueError):
    """A stored CA bundle that cannot be used (malformed, not a CA, key does not match)."""


@dataclass(frozen=True, eq=False)
class MeshCA:
    """A mesh CA in memory: certificate, private key, and the PEM proxies validate against."""

    mesh: str
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    cert_pem: bytes
    fingerprint: str  # hex SHA-256 of the certificate's DER: changes when the CA does

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


@dataclass(frozen=True, eq=False)
class IssuedCert:
    """A leaf certificate and its key, PEM encoded, as handed to a proxy."""

    cert_pem: bytes
    key_pem: bytes
    spiffe_ids: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: int


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def _fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def _ca_from(mesh: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> MeshCA:
    return MeshCA(
        mesh=mesh,
        certificate=certificate,
        private_key=key,
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        fingerprint=_fingerprint(certificate),
    )


def create_mesh_ca(
    mesh: str, *, now: datetime | None = None, validity: timedelta = CA_VALIDITY
) -> MeshCA:
    """A new self-signed CA for `mesh` that may sign leaf certificates only (pathlen 0)."""
    start = _now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mesh {mesh}"[:64]),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{mesh}")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return _ca_from(mesh, certificate, key)


def issue_leaf(
    ca: MeshCA,
    spiffe_ids: Sequence[str],
    *,
    validity: timedelta,
    now: datetime | None = None,
) -> IssuedCert:
    """A fresh key and a certificate for it, naming `spiffe_ids`, signed by `ca`.

    Never valid beyond the CA itself. With no SPIFFE ID (a proxy without inbounds) the
    certificate still proves mesh membership, just without a service identity.
    """
    start = _now(now)
    ids = tuple(sorted(set(spiffe_ids)))
    key = ec.generate_private_key(ec.SECP256R1())
    not_before = start - BACKDATE
    not_after = min(start + validity, ca.not_after)
    serial = x509.random_serial_number()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
    )
    if ids:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(i) for i in ids]),
            critical=False,
        )
    certificate = builder.sign(ca.private_key, hashes.SHA256())
    return IssuedCert(
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        spiffe_ids=ids,
        not_before=not_before,
        not_after=not_after,
        serial=serial,
    )


def encode_ca_bundle(ca: MeshCA) -> bytes:
    """The stored form: certificate PEM followed by the unencrypted PKCS#8 key PEM."""
    key_pem = ca.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ca.cert_pem + key_pem


def decode_ca_bundle(mesh: str, data: bytes) -> MeshCA:
    """Parse a stored bundle; raises `CaBundleError` when it is not a usable CA.

    Cached: the xDS server decodes every mesh's CA on each state build, and the bytes rarely
    change.
    """
    return _decode(mesh, bytes(data))


@functools.lru_cache(maxsize=256)
def _decode(mesh: str, data: bytes) -> MeshCA:
    blocks: dict[bytes, list[bytes]] = {}
    for match in _PEM_BLOCK.finditer(data):
        blocks.setdefault(match.group(1), []).append(match.group(0))
    certs = blocks.get(b"CERTIFICATE", [])
    keys = blocks.get(b"PRIVATE KEY", []) + blocks.get(b"EC PRIVATE KEY", [])
    if len(certs) != 1 or len(keys) != 1:
        raise CaBundleError(
            f"expected one CERTIFICATE and one PRIVATE KEY PEM block, "
            f"found {len(certs)} and {len(keys)}"
        )
    try:
        certificate = x509.load_pem_x509_certificate(certs[0])
        key = serialization.load_pem_private_key(keys[0], password=None)
    except ValueError as e:
        raise CaBundleError(f"unreadable CA bundle: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaBundleError("the CA key must be an EC key")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaBundleError("the certificate is not a CA (basicConstraints CA:true missing)")
    if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
        raise CaBundleError("the private key does not belong to the CA certificate")
    return _ca_from(mesh, certificate, key)
