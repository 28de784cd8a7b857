"""A gRPC client channel to a `GrpcAddress`: verified TLS for grpcs://, plaintext for grpc://.

Several addresses: when all are IP literals of one family they go into one channel that
tries them in order (gRPC's pick_first), each checked against the first host's name, which
the shared certificate of replicas must name; otherwise the channel dials the first address
(give one DNS name that resolves to every replica for failover).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from zonemesh.tls.address import Endpoint, GrpcAddress
from zonemesh.tls.trust import ClientCa


def open_channel(
    address: GrpcAddress, ca: ClientCa | None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    if address.tls and ca is None:
        raise ValueError(f"{address}: grpcs:// needs a CA")
    target, first = _target(address)
    opts = list(options)
    if not address.tls:
        return grpc.aio.insecure_channel(target, options=opts)
    assert ca is not None
    if target != first.target:
        opts += [
            ("grpc.default_authority", first.target),
            ("grpc.ssl_target_name_override", first.host),
        ]
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.pem)
    return grpc.aio.secure_channel(target, credentials, options=opts)


def _target(address: GrpcAddress) -> tuple[str, Endpoint]:
    first = address.first
    endpoints = address.endpoints
    one_family = len({":" in e.host for e in endpoints}) == 1
    if len(endpoints) > 1 and all(e.is_ip for e in endpoints) and one_family:
        scheme = "ipv6" if ":" in first.host else "ipv4"
        return f"{scheme}:{','.join(e.target for e in endpoints)}", first
    return first.target, first
