"""X.509 for the control plane's own TLS: a CA, the server certificates it signs, and checks.

EC P-256 throughout: small keys, fast handshakes, and what every client here (Python's
`ssl`, gRPC's BoringSSL, Envoy) verifies. The CA is a root only for zonemesh's servers; it
is unrelated to the mesh CAs that sign workload certificates (zonemesh/mtls).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zonemesh.pki import key_usage

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=5 * 365)
BACKDATE = timedelta(minutes=5)  # clients whose clocks lag a little still accept it
ORGANIZATION = "zonemesh"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Names:
    """The subject alternative names of a server certificate."""

    dns: frozenset[str]
    ips: frozenset[IpAddress]

    def covers(self, other: Names) -> bool:
        return other.dns <= self.dns and other.ips <= self.ips

    def describe(self) -> list[str]:
        return sorted(self.dns) + sorted(str(ip) for ip in self.ips)


def new_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "zonemesh control plane CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            key_usage(digital_signature=False, cert_sign=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_server_cert(
    ca_cert: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    names: Names,
    now: datetime,
    validity: timedelta = SERVER_VALIDITY,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    first = sorted(names.dns)[0] if names.dns else str(sorted(names.ips, key=str)[0])
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(names.dns)]
    sans += [x509.IPAddress(ip) for ip in sorted(names.ips, key=str)]
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, first[:64]),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(digital_signature=True),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def names_of(cert: x509.Certificate) -> Names:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return Names(frozenset(), frozenset())
    return Names(
        frozenset(d.lower() for d in san.get_values_for_type(x509.DNSName)),
        frozenset(san.get_values_for_type(x509.IPAddress)),  # type: ignore[arg-type]
    )


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    encoding, form = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(encoding, form) == key.public_key().public_bytes(
        encoding, form
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def parse_certs(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; ValueError when there is none or one is broken."""
    certs = x509.load_pem_x509_certificates(data)
    if not certs:
        raise ValueError("no PEM certificate in it")
    return certs


def parse_key(data: bytes) -> PrivateKeyTypes:
    """A PEM private key without a passphrase; ValueError otherwise."""
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted; give it without a passphrase") from None
