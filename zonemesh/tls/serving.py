"""How a control-plane gRPC server listens: TLS with the runtime's material, plaintext
without it. The one place that rule lives, for xDS and KDS alike."""

from __future__ import annotations

import grpc

from zonemesh.tls.material import ServerTls


def add_grpc_port(server: grpc.aio.Server, address: str, tls: ServerTls | None) -> int:
    """The bound port (0 when gRPC could not bind, as `add_*_port` itself reports)."""
    if tls is None:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)])
    return server.add_secure_port(address, credentials)


def scheme(tls: ServerTls | None) -> str:
    return "grpc" if tls is None else "grpcs"
