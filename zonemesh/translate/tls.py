"""Transport sockets: mutual TLS between sidecars, with the workload's certificates over SDS.

Both sides take their certificate and key (`cpdp.names.identity_secret`) and the mesh root
(`cpdp.names.ca_secret`) over SDS from the data plane's own local server
(`cpdp.names.SDS_CLUSTER`, a Unix socket only that data plane can use), never from the control
plane: the key is made by `zonemesh dp run`, which renews the certificate and pushes it there.
A client checks the server's SPIFFE ID against the identities of the services it
meant to reach; a server accepts any identity of its own mesh (authorization is not ours here).
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from zonemesh.cpdp.names import SDS_CLUSTER, ca_secret, identity_secret
from zonemesh.translate.builders import packed, struct_metadata

TLS_SOCKET = "envoy.transport_sockets.tls"
# Endpoint metadata that selects the TLS transport socket for a zone-crossing endpoint.
MATCH_FILTER = "envoy.transport_socket_match"
CROSS_ZONE_KEY = "zonemesh.io/cross-zone"
CROSS_ZONE_MATCH = "cross-zone-mtls"
H2_ALPN = ("h2",)
SERVER_ALPN_HTTP = ("h2", "http/1.1")


def local_sds_source() -> config_source_pb2.ConfigSource:
    """gRPC SDS from the data plane's local server, through the bootstrap's static cluster."""
    return config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC,
            transport_api_version=config_source_pb2.V3,
            grpc_services=[
                grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER)
                )
            ],
        ),
        resource_api_version=config_source_pb2.V3,
    )


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=local_sds_source())


def _uri_san(matcher: string_pb2.StringMatcher) -> common_pb2.SubjectAltNameMatcher:
    return common_pb2.SubjectAltNameMatcher(
        san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=matcher
    )


def _common(
    mesh: str, sans: Iterable[common_pb2.SubjectAltNameMatcher], alpn: Iterable[str]
) -> tls_pb2.CommonTlsContext:
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[_sds(identity_secret(mesh))],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=list(sans)
            ),
            validation_context_sds_secret_config=_sds(ca_secret(mesh)),
        ),
        alpn_protocols=list(alpn),
    )


def upstream_tls(
    mesh: str, sni: str, spiffe_ids: Iterable[str], *, http2: bool
) -> base_pb2.TransportSocket:
    """Client side of a sidecar-to-sidecar hop: our identity, their SPIFFE IDs, the SNI the
    zone ingress routes by."""
    sans = [_uri_san(string_pb2.StringMatcher(exact=s)) for s in sorted(set(spiffe_ids))]
    context = tls_pb2.UpstreamTlsContext(
        common_tls_context=_common(mesh, sans, H2_ALPN if http2 else ()), sni=sni
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(context))


def downstream_tls(mesh: str, *, http: bool) -> base_pb2.TransportSocket:
    """Server side of an inbound: our identity; the client must show a certificate from the
    mesh CA with a SPIFFE ID of this mesh."""
    sans = [_uri_san(string_pb2.StringMatcher(prefix=f"spiffe://{mesh}/"))]
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common(mesh, sans, SERVER_ALPN_HTTP if http else ()),
    )
    context.require_client_certificate.value = True
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(context))


def cross_zone_metadata() -> base_pb2.Metadata:
    """Marks an endpoint (a remote zone's ingress, or our egress) as needing mutual TLS."""
    return struct_metadata(MATCH_FILTER, {CROSS_ZONE_KEY: "true"})
