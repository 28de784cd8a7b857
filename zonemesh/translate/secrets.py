"""`SecretsGenerator`: the SDS secrets a sidecar's TLS contexts name (`translate.names`).

For a Dataplane: `identity_secret(mesh)` — its certificate (one SPIFFE ID per inbound
`kuma.io/service`) and key, inline — and `ca_secret(mesh)` — the mesh CA as the trusted CA
to validate peers with. Zone ingress and egress pass TLS through untouched and get nothing.
A mesh whose CA does not exist yet gets no secrets: the listeners that need them simply stay
warming until the CA arrives, which is better than failing the whole generation.

Certificates come from the shared `IdentityProvider`, so regenerating a proxy reuses the same
certificate bytes (no push) until it is due for rotation.
"""

from __future__ import annotations

import functools
import logging

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from zonemesh.mtls.ca import IssuedCert
from zonemesh.mtls.identities import IdentityProvider
from zonemesh.resources import labels
from zonemesh.resources.types.dataplane import DataplaneSpec
from zonemesh.translate import names
from zonemesh.translate.generator import Proxy, ProxyResources, ProxyType
from zonemesh.translate.state import MeshState

log = logging.getLogger("zonemesh.translate.secrets")


def proxy_spiffe_ids(proxy: Proxy) -> list[str]:
    """`spiffe://<mesh>/<service>` for every distinct `kuma.io/service` of its inbounds (and
    of its gateway, if it is one)."""
    spec = proxy.resource.spec
    if not isinstance(spec, DataplaneSpec):
        return []
    networking = spec.networking
    services = {
        inbound.tags[labels.SERVICE_TAG]
        for inbound in networking.inbound
        if inbound.tags.get(labels.SERVICE_TAG)
    }
    gateway_tags = (networking.gateway or {}).get("tags") or {}
    if isinstance(gateway_tags, dict) and gateway_tags.get(labels.SERVICE_TAG):
        services.add(str(gateway_tags[labels.SERVICE_TAG]))
    return [names.spiffe_id(proxy.mesh, s) for s in sorted(services)]


class SecretsGenerator:
    """Identity and CA secrets for sidecars; see the module docstring."""

    def __init__(self, identities: IdentityProvider) -> None:
        self.identities = identities
        self._missing_ca: set[str] = set()  # meshes already logged as having no CA

    def generate(self, state: MeshState, proxy: Proxy) -> ProxyResources:
        out = ProxyResources()
        if proxy.proxy_type is not ProxyType.DATAPLANE:
            return out
        mesh = proxy.mesh
        ca = state.mesh_cas.get(mesh)
        if ca is None:
            if mesh not in self._missing_ca:
                self._missing_ca.add(mesh)
                log.warning("mesh %s has no CA yet: its proxies get no certificates", mesh)
            return out
        self._missing_ca.discard(mesh)
        issued = self.identities.identity(ca, proxy_spiffe_ids(proxy))
        out.add(_identity_secret(mesh, issued))
        out.add(
            state.memo(("secrets.ca", mesh, ca.fingerprint), lambda: _ca_secret(mesh, ca.cert_pem))
        )
        return out


@functools.lru_cache(maxsize=4096)
def _identity_secret(mesh: str, issued: IssuedCert) -> secret_pb2.Secret:
    """Built once per issued certificate and shared by every proxy holding it (the xDS
    cache then serializes it once). `IssuedCert` hashes by identity, so this never mixes two."""
    return secret_pb2.Secret(
        name=names.identity_secret(mesh),
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=issued.cert_pem),
            private_key=base_pb2.DataSource(inline_bytes=issued.key_pem),
        ),
    )


def _ca_secret(mesh: str, ca_pem: bytes) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=names.ca_secret(mesh),
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=ca_pem)
        ),
    )
