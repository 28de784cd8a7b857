"""`dp run --cp-address` and `--ca-cert-file`: how the data plane is told where its CP is
and what to trust; shared by the bootstrap (Envoy's ADS cluster) and dp's own channel."""

from __future__ import annotations

from pathlib import Path

from zonemesh.tls.address import GrpcAddress, parse_grpc_address

CP_ADDRESS_OPTION = "--cp-address"
CA_OPTION = "--ca-cert-file"


def parse_cp_address(cp_address: str) -> GrpcAddress:
    """`grpc[s]://HOST:PORT[,HOST:PORT...]`; raises ValueError (AddressError) naming the flag."""
    return parse_grpc_address(cp_address, CP_ADDRESS_OPTION)


def require_ca(address: GrpcAddress, ca_file: str | Path | None) -> None:
    """grpcs:// without a CA is refused: fail closed. (kuma-dp before 2.14 connected without
    verifying the CP's certificate when given no CA, so anyone on the path could serve it
    config; a proxy must never trust a control plane it cannot verify.)"""
    if address.tls and not ca_file:
        raise ValueError(
            f"{CP_ADDRESS_OPTION} {address}: grpcs:// needs {CA_OPTION} "
            "(the control plane's CA, e.g. <data-dir>/tls/ca.crt of the zone CP) "
            "[env KUMA_CONTROL_PLANE_CA_CERT_FILE]"
        )
