"""The serving certificates of HTTPS gateway listeners: read from mesh Secrets, sent over ADS.

Why over ADS, unlike workload keys (`translate.tls`, served by `dp run`'s local SDS): a gateway
certificate is the public face of the mesh, chosen by an operator and stored in the control
plane already (a mesh Secret, as in Kuma, which sends it the same way). `dp run` has no other
channel to it, the ADS stream is authenticated with the gateway's dataplane token, and only
the Dataplanes a MeshGateway binds get it. No workload or CA key travels: a certificate that
is a CA is refused (so naming the mesh CA's Secret never ships its key), and the API's
`/xds` view removes private keys (`api.redact`).

A Secret's data is Kuma's bundle: PEM blocks of the private key and the certificate chain
(leaf first), base64 in the Secret as always.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from zonemesh.resources.base import ResourceKey
from zonemesh.resources.registry import SECRET
from zonemesh.resources.types.meshgateway import DataSource
from zonemesh.resources.types.secret import SecretSpec
from zonemesh.translate.builders import packed
from zonemesh.translate.state import MeshState, content_memo
from zonemesh.translate.tls import SERVER_ALPN_HTTP, TLS_SOCKET

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


class CertificateError(ValueError):
    """A listener certificate that cannot be served; the message names the problem."""


@dataclass(frozen=True)
class ServingCertificate:
    secret_name: str  # the SDS resource name the listener asks for
    chain_pem: bytes
    key_pem: bytes
    dns_names: tuple[str, ...]


def source_bytes(state: MeshState, mesh: str, source: DataSource) -> tuple[str, bytes]:
    """(what it is, its bytes) of a certificate source; raises CertificateError."""
    if source.secret is not None:
        secret = state.gateway_secrets.get(ResourceKey(SECRET.name, mesh, source.secret))
        if secret is None or not isinstance(secret.spec, SecretSpec):
            raise CertificateError(f'Secret "{source.secret}" not found in mesh "{mesh}"')
        return f"secret:{source.secret}", secret.spec.value
    if source.inline is not None:
        try:
            data = base64.b64decode(source.inline, validate=True)
        except (binascii.Error, ValueError):
            raise CertificateError("inline: not valid base64") from None
    else:
        data = (source.inline_string or "").encode()
    return f"inline:{hashlib.sha256(data).hexdigest()[:16]}", data


def serving_certificate(state: MeshState, mesh: str, source: DataSource) -> ServingCertificate:
    what, data = source_bytes(state, mesh, source)
    name = f"mesh_gateway_cert:{mesh}:{what}"
    return content_memo(state, ("gateway.cert", name, data), lambda: _parse(name, what, data))


def _parse(name: str, what: str, data: bytes) -> ServingCertificate:
    blocks = [(m.group(1).decode(), m.group(0)) for m in _PEM.finditer(data)]
    keys = [pem for kind, pem in blocks if "PRIVATE KEY" in kind]
    certs = [pem for kind, pem in blocks if kind == "CERTIFICATE"]
    if len(keys) != 1 or not certs:
        raise CertificateError(
            f"{what}: expected one PEM private key and at least one PEM certificate "
            f"(found {len(keys)} keys, {len(certs)} certificates)"
        )
    try:
        leaf = x509.load_pem_x509_certificate(certs[0])
        key = serialization.load_pem_private_key(keys[0], password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError(f"{what}: cannot be read: {e}") from None
    try:
        is_ca = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        raise CertificateError(f"{what}: is a CA certificate; a gateway serves a leaf certificate")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != leaf.public_key().public_bytes(der, public):
        raise CertificateError(f"{what}: the private key does not match the certificate")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = ()
    return ServingCertificate(name, b"".join(certs), keys[0], dns)


def tls_secret(cert: ServingCertificate) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=cert.secret_name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=cert.chain_pem),
            private_key=base_pb2.DataSource(inline_bytes=cert.key_pem),
        ),
    )


def ads_secret(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(
        name=name,
        sds_config=config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(),
            resource_api_version=config_source_pb2.V3,
        ),
    )


def terminating_tls(secret_names: list[str]) -> base_pb2.TransportSocket:
    """Server side of an HTTPS listener: the operator's certificates, no client certificate."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_sds_secret_configs=[ads_secret(n) for n in secret_names],
            alpn_protocols=list(SERVER_ALPN_HTTP),
        )
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(context))
