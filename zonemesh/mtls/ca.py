"""A mesh's builtin certificate authority: root, per-zone intermediates, signing CSRs.

Every mesh gets one root CA (EC P-256, self-signed, path length 1, URI SAN `spiffe://<mesh>`),
whether or not the mesh enables mTLS, because traffic between zones is always mutual TLS.
Global gives each zone an intermediate (`issue_intermediate`, path length 0) that the zone
signs its workloads' CSRs with, so a compromised zone can mint only under its own
intermediate, which global can withdraw. A standalone control plane signs with the root.

Stored form: a Secret whose data (base64, as every Secret) is a PEM bundle: the CA
certificate, then its PKCS#8 private key (`ca-builtin` for the root, `zone-ca-<zone>` for an
intermediate; see `zonemesh.mtls.trust`). A zone receives the root's certificate only.

Leaf certificates carry the proxy's SPIFFE IDs as URI SANs and are valid for client and server
authentication. The key is the workload's own (`sign_csr`: the CSR proves possession);
`issue_leaf` also makes a key, for tests that need a certificate without a workload. Functions
take `now` so tests can build certificates at a chosen time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zonemesh.pki import key_usage

CA_SECRET_NAME = "ca-builtin"
CA_VALIDITY = timedelta(days=3650)
INTERMEDIATE_VALIDITY = timedelta(days=365)
# Certificates start a little in the past: control planes and proxies in other zones may run
# with clocks slightly behind ours.
BACKDATE = timedelta(minutes=1)
ORGANIZATION = "zonemesh"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


class CaBundleError(ValueError):
    """A stored CA bundle that cannot be used (malformed, not a CA, key does not match)."""


class CsrError(ValueError):
    """A certificate signing request that is refused (unreadable, bad signature, weak key)."""


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

    @property
    def is_root(self) -> bool:
        return self.certificate.issuer == self.certificate.subject

    @property
    def chain_pem(self) -> bytes:
        """What follows a leaf this CA signs in its chain: an intermediate's own certificate
        (the root is the peers' trust anchor and is not sent)."""
        return b"" if self.is_root else self.cert_pem


@dataclass(frozen=True, eq=False)
class SignedCert:
    """A leaf certificate for a workload's own key, with the chain to send after it."""

    cert_pem: bytes
    chain_pem: bytes  # leaf, then intermediates
    spiffe_ids: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: int


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
    """A new self-signed root for `mesh`: signs zone intermediates and, on a standalone
    control plane, leaves (path length 1: at most one intermediate below it)."""
    start = _now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _ca_name(f"mesh {mesh}")
    certificate = (
        _ca_builder(mesh, name, key, path_length=1)
        .issuer_name(name)
        .not_valid_before(start - BACKDATE)
        .not_valid_after(start + validity)
        .sign(key, hashes.SHA256())
    )
    return _ca_from(mesh, certificate, key)


def issue_intermediate(
    root: MeshCA,
    zone: str,
    *,
    now: datetime | None = None,
    validity: timedelta = INTERMEDIATE_VALIDITY,
) -> MeshCA:
    """A CA for `zone`'s workloads, signed by the mesh root (path length 0: leaves only).
    Never valid beyond the root."""
    start = _now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _ca_builder(root.mesh, _ca_name(f"zone {zone} mesh {root.mesh}"), key, path_length=0)
        .issuer_name(root.certificate.subject)
        .not_valid_before(start - BACKDATE)
        .not_valid_after(min(start + validity, root.not_after))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.private_key.public_key()),
            critical=False,
        )
        .sign(root.private_key, hashes.SHA256())
    )
    return _ca_from(root.mesh, certificate, key)


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _ca_builder(
    mesh: str, name: x509.Name, key: ec.EllipticCurvePrivateKey, *, path_length: int
) -> x509.CertificateBuilder:
    """Everything a CA certificate of this mesh has, but issuer and validity."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            key_usage(digital_signature=True, cert_sign=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{mesh}")]),
            critical=False,
        )
    )


def issue_leaf(
    ca: MeshCA,
    spiffe_ids: Sequence[str],
    *,
    validity: timedelta,
    now: datetime | None = None,
) -> IssuedCert:
    """A fresh key and a certificate for it, naming `spiffe_ids`, signed by `ca` (tests and
    static configurations: workloads make their own key and send a CSR, `sign_csr`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    signed = _sign_leaf(ca, key.public_key(), spiffe_ids, validity=validity, now=now)
    return IssuedCert(
        cert_pem=signed.cert_pem,
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        spiffe_ids=signed.spiffe_ids,
        not_before=signed.not_before,
        not_after=signed.not_after,
        serial=signed.serial,
    )


MIN_RSA_BITS = 2048
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1)


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """A CSR whose signature verifies with its own key (proof of possession) and whose key is
    EC P-256/P-384 or RSA >= 2048 bits; raises `CsrError` naming the problem."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise CsrError(f"the CSR is not a PEM certificate request: {e}") from None
    try:
        public_key = csr.public_key()
    except (ValueError, TypeError) as e:
        raise CsrError(f"the CSR's public key is unreadable: {e}") from None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, _EC_CURVES):
            raise CsrError(f"the CSR's EC curve {public_key.curve.name} is not P-256 or P-384")
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CsrError(f"the CSR's RSA key has {public_key.key_size} bits; at least 2048")
    else:
        raise CsrError("the CSR's key must be EC (P-256, P-384) or RSA")
    if not csr.is_signature_valid:
        raise CsrError("the CSR's signature does not verify: it does not prove the key")
    return csr


def sign_csr(
    ca: MeshCA,
    csr_pem: bytes,
    spiffe_ids: Sequence[str],
    *,
    validity: timedelta,
    now: datetime | None = None,
) -> SignedCert:
    """A certificate for the CSR's key naming `spiffe_ids` — chosen by the caller from what
    the workload is authorized to be; the CSR's own subject and SANs are ignored."""
    csr = load_csr(csr_pem)
    return _sign_leaf(ca, csr.public_key(), spiffe_ids, validity=validity, now=now)  # type: ignore[arg-type]


def _sign_leaf(
    ca: MeshCA,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    spiffe_ids: Sequence[str],
    *,
    validity: timedelta,
    now: datetime | None,
) -> SignedCert:
    """Never valid beyond the CA itself. With no SPIFFE ID (a proxy without inbounds) the
    certificate still proves mesh membership, just without a service identity."""
    start = _now(now)
    ids = tuple(sorted(set(spiffe_ids)))
    not_before = start - BACKDATE
    not_after = min(start + validity, ca.not_after)
    serial = x509.random_serial_number()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(digital_signature=True, key_encipherment=True),
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
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    return SignedCert(
        cert_pem=cert_pem,
        chain_pem=cert_pem + ca.chain_pem,
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
    """Parse a stored bundle; raises `CaBundleError` when it is not a usable CA."""
    return _decode(mesh, bytes(data))


@dataclass(frozen=True, eq=False)
class CaCertificate:
    """A CA's certificate without its key: what peers trust (a zone's copy of the root)."""

    certificate: x509.Certificate
    cert_pem: bytes
    fingerprint: str


def decode_ca_certificate(data: bytes) -> CaCertificate:
    """The (first) CA certificate of a stored bundle, key or no key; raises `CaBundleError`."""
    certs = [m.group(0) for m in _PEM_BLOCK.finditer(data) if m.group(1) == b"CERTIFICATE"]
    if not certs:
        raise CaBundleError("no CERTIFICATE PEM block")
    try:
        certificate = x509.load_pem_x509_certificate(certs[0])
    except ValueError as e:
        raise CaBundleError(f"unreadable CA certificate: {e}") from None
    _check_is_ca(certificate)
    return CaCertificate(
        certificate, certificate.public_bytes(serialization.Encoding.PEM), _fingerprint(certificate)
    )


def _check_is_ca(certificate: x509.Certificate) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaBundleError("the certificate is not a CA (basicConstraints CA:true missing)")


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
    _check_is_ca(certificate)
    if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
        raise CaBundleError("the private key does not belong to the CA certificate")
    return _ca_from(mesh, certificate, key)
