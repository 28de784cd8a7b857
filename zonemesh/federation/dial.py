"""How a zone dials global: `--global-address grpc[s]://…`, the root CA for grpcs://
(`KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE`), and the start check before the first attempt.

grpcs:// without the CA is refused rather than connecting unverified: a zone that trusted
any server would take its meshes, policies and CA from whoever answers.
"""

from __future__ import annotations

import grpc

from zonemesh.config import CpConfig
from zonemesh.tls.address import GrpcAddress, parse_grpc_address
from zonemesh.tls.channel import open_channel
from zonemesh.tls.probe import Peer, ProbeResult, check_address
from zonemesh.tls.trust import ClientCa, StartCheckError, load_client_ca

ADDRESS_OPTION = "--global-address"
CA_OPTION = "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE"
GLOBAL = Peer(what="the global control plane", ca_option=CA_OPTION)


def global_address(config: CpConfig) -> GrpcAddress:
    """Raises AddressError naming the option."""
    return parse_grpc_address(config.multizone.zone.global_address, ADDRESS_OPTION)


def root_ca(config: CpConfig, address: GrpcAddress) -> ClientCa | None:
    """The CA that verifies global (None for grpc://); StartCheckError when unusable."""
    file = config.multizone.zone.kds_root_ca_file
    if not address.tls:
        return None
    if not file:
        raise StartCheckError(
            f"{ADDRESS_OPTION} {address}: grpcs:// needs {CA_OPTION} (config "
            "multizone.zone.kdsRootCaFile): global's CA, its <data-dir>/tls/ca.crt"
        )
    return load_client_ca(file, CA_OPTION)


async def start_check(address: GrpcAddress, ca: ClientCa | None) -> ProbeResult:
    """StartCheckError when global answers with the wrong certificate or protocol."""
    try:
        return await check_address(address, ca, GLOBAL)
    except StartCheckError as e:
        raise StartCheckError(f"{ADDRESS_OPTION} {address}: {e}") from None


def open_global_channel(
    address: GrpcAddress, ca: ClientCa | None, options: list[tuple[str, object]]
) -> grpc.aio.Channel:
    return open_channel(address, ca, options)
