"""Which CA a control plane signs workload CSRs with, and what its proxies trust.

The trust material lives in each mesh's Secrets:
- `ca-builtin`: the mesh root (certificate and key on global or a standalone CP; a zone
  receives the certificate only);
- `zone-ca-<zone>` (label `zonemesh.io/ca-zone: <zone>`): zone's intermediate, certificate
  and key, signed by the root; global creates one per Zone and sends it to that zone only.

A control plane signs with its own zone's intermediate when it has one (the chain then is
leaf + intermediate), else — standalone only — with the root, whose key it holds, else not at
all (`NoAuthority`: the mesh has no CA here yet). A federated zone never signs with the root,
even if a root key reached it: what it can mint is bounded by its intermediate. Proxies trust the root alone, so a workload
of any zone validates a peer of any other. An intermediate that does not chain to the
current root is never used.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature

from zonemesh.mtls.ca import (
    CA_SECRET_NAME,
    CaBundleError,
    CaCertificate,
    MeshCA,
    decode_ca_bundle,
    decode_ca_certificate,
)
from zonemesh.resources.base import ResourceKey
from zonemesh.resources.registry import SECRET
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.store.base import Store

log = logging.getLogger("zonemesh.mtls")
T = TypeVar("T")

ZONE_CA_PREFIX = "zone-ca-"
ZONE_CA_LABEL = "zonemesh.io/ca-zone"


def zone_ca_name(zone: str) -> str:
    return f"{ZONE_CA_PREFIX}{zone}"


def root_key(mesh: str) -> ResourceKey:
    return ResourceKey(SECRET.name, mesh, CA_SECRET_NAME)


def zone_ca_key(mesh: str, zone: str) -> ResourceKey:
    return ResourceKey(SECRET.name, mesh, zone_ca_name(zone))


class NoAuthority(Exception):
    """This control plane cannot sign for the mesh (yet)."""


@dataclass(frozen=True, eq=False)
class Signer:
    """The CA to sign with, and the root proxies validate its leaves against."""

    ca: MeshCA
    root: CaCertificate


MAX_DECODED = 256  # cached decodings (two or three per mesh)


class MeshTrust:
    """Resolves the signing CA and trust bundle of a mesh from the store, per call (the store
    is the one source: a rotated or withdrawn CA counts from the next CSR on). Decoded
    certificates and keys are cached by Secret and content, so a CSR does not parse PEM."""

    def __init__(self, store: Store, zone: str, *, federated: bool = False) -> None:
        self._store = store
        self._zone = zone
        self._federated = federated
        self._warned: set[tuple[ResourceKey, bytes]] = set()  # (secret, digest) logged
        self._decoded: dict[tuple[ResourceKey, bytes, str], Any] = {}

    def _cached(self, key: ResourceKey, data: bytes, what: str, decode: Callable[[], T]) -> T:
        """`decode()` once per content (a re-created Secret starts again at version 1, so
        versions would not do); raises what it raises (never cached)."""
        entry = (key, hashlib.sha256(data).digest(), what)
        if entry not in self._decoded:
            if len(self._decoded) >= MAX_DECODED:
                self._decoded.clear()
            self._decoded[entry] = decode()
        return self._decoded[entry]  # type: ignore[no-any-return]

    async def _data(self, key: ResourceKey) -> bytes | None:
        secret = await self._store.find(key)
        if secret is None or not isinstance(secret.spec, SecretSpec):
            return None
        try:
            return secret.spec.value
        except ValueError:
            return None

    def _warn(self, key: ResourceKey, data: bytes, reason: str) -> None:
        entry = (key, hashlib.sha256(data).digest())
        if entry not in self._warned:
            self._warned.add(entry)
            log.warning("mesh %s: Secret %s is unusable: %s", key.mesh, key.name, reason)

    async def root(self, mesh: str) -> CaCertificate | None:
        """The mesh root's certificate (the trust bundle), or None before it exists."""
        data = await self._data(root_key(mesh))
        if data is None:
            return None
        try:
            return self._cached(root_key(mesh), data, "cert", lambda: decode_ca_certificate(data))
        except CaBundleError as e:
            self._warn(root_key(mesh), data, str(e))
            return None

    async def root_fingerprint(self, mesh: str) -> str:
        root = await self.root(mesh)
        return root.fingerprint if root is not None else ""

    async def signer(self, mesh: str) -> Signer:
        """See the module docstring; raises `NoAuthority` saying why."""
        root = await self.root(mesh)
        if root is None:
            raise NoAuthority(f"no CA for mesh {mesh} yet")
        if self._zone:
            intermediate = await self._intermediate(mesh, root)
            if intermediate is not None:
                return Signer(intermediate, root)
        data = None if self._federated else await self._data(root_key(mesh))
        if data is not None:
            try:
                ca = self._cached(
                    root_key(mesh), data, "bundle", lambda: decode_ca_bundle(mesh, data)
                )
            except CaBundleError:
                ca = None  # a zone's copy: certificate only
            if ca is not None and ca.fingerprint == root.fingerprint:
                return Signer(ca, root)
        where = f"zone {self._zone}" if self._zone else "this control plane"
        raise NoAuthority(f"no CA for mesh {mesh} yet: {where} has no intermediate from global")

    async def _intermediate(self, mesh: str, root: CaCertificate) -> MeshCA | None:
        key = zone_ca_key(mesh, self._zone)
        data = await self._data(key)
        if data is None:
            return None
        try:
            ca = self._cached(key, data, "bundle", lambda: decode_ca_bundle(mesh, data))
            ca.certificate.verify_directly_issued_by(root.certificate)
        except CaBundleError as e:
            self._warn(key, data, str(e))
            return None
        except (InvalidSignature, ValueError, TypeError) as e:
            self._warn(key, data, f"not signed by the mesh root ({e or 'wrong issuer'})")
            return None
        return ca
