"""Token signing keys: RSA key pairs kept as GlobalSecrets, one ring per token kind (and mesh).

A ring's newest key (highest serial) signs; every key in it verifies, so rotating (adding the
next serial) never invalidates tokens already issued; deleting a key does, as in Kuma. The key
id (`kid`) is a fingerprint of the public key rather than Kuma's bare serial, so keys of two
control planes can never be mistaken for each other.

Stored form: GlobalSecret `<kind>-token-signing-key[-<mesh>]-<serial>` (Kuma's names), labelled
with the kind, mesh and serial, whose data is the PKCS#8 private key PEM followed by the public
key PEM. GlobalSecrets never leave the control plane that wrote them, and the API never returns
a private key block.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from zonemesh.auth.tokens import TokenKind
from zonemesh.resources import labels
from zonemesh.resources.base import Resource
from zonemesh.resources.registry import GLOBAL_SECRET
from zonemesh.resources.types.secret import SecretSpec

KIND_LABEL = "zonemesh.io/signing-key-kind"
SERIAL_LABEL = "zonemesh.io/signing-key-serial"
RSA_BITS = 2048

RingId = tuple[TokenKind, str]  # (kind, mesh); mesh is "" for zone and user tokens


@dataclass(frozen=True, eq=False)
class SigningKey:
    ring: RingId
    serial: int
    kid: str
    private_key: rsa.RSAPrivateKey
    public_key: rsa.RSAPublicKey


def secret_name(ring: RingId, serial: int) -> str:
    kind, mesh = ring
    middle = f"-{mesh}" if mesh else ""
    return f"{kind.value}-token-signing-key{middle}-{serial}"


def _kid(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def new_key(ring: RingId, serial: int) -> tuple[SigningKey, Resource]:
    """A fresh key pair and the GlobalSecret that stores it."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    public_key = private_key.public_key()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kind, mesh = ring
    key_labels = {KIND_LABEL: kind.value, SERIAL_LABEL: str(serial)}
    if mesh:
        key_labels[labels.MESH] = mesh
    resource = Resource(
        type=GLOBAL_SECRET.name,
        name=secret_name(ring, serial),
        mesh="",
        spec=SecretSpec(data=base64.b64encode(pem).decode()),
        labels=key_labels,
    )
    return SigningKey(ring, serial, _kid(public_key), private_key, public_key), resource


def key_from_secret(resource: Resource) -> SigningKey | None:
    """The signing key a GlobalSecret holds, or None when it is not one (or unreadable)."""
    raw_kind = resource.labels.get(KIND_LABEL)
    if raw_kind is None or not isinstance(resource.spec, SecretSpec):
        return None
    try:
        kind = TokenKind(raw_kind)
        serial = int(resource.labels.get(SERIAL_LABEL, ""))
        private_key = serialization.load_pem_private_key(resource.spec.value, password=None)
    except ValueError:
        return None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        return None
    mesh = resource.labels.get(labels.MESH, "") if kind is TokenKind.DATAPLANE else ""
    public_key = private_key.public_key()
    return SigningKey((kind, mesh), serial, _kid(public_key), private_key, public_key)


class KeyRings:
    """Every signing key this control plane holds, by ring and by key id."""

    def __init__(self) -> None:
        self._by_name: dict[str, SigningKey] = {}

    def put(self, name: str, key: SigningKey) -> None:
        self._by_name[name] = key

    def remove(self, name: str) -> None:
        self._by_name.pop(name, None)

    def newest(self, ring: RingId) -> SigningKey | None:
        keys = [k for k in self._by_name.values() if k.ring == ring]
        return max(keys, key=lambda k: k.serial, default=None)

    def find(self, ring: RingId, kid: str) -> SigningKey | None:
        for key in self._by_name.values():
            if key.ring == ring and key.kid == kid:
                return key
        return None

    def keys(self, ring: RingId) -> list[SigningKey]:
        return sorted((k for k in self._by_name.values() if k.ring == ring), key=lambda k: k.serial)
