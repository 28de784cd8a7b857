"""The data plane's own gRPC channel to its control plane (readiness reports, CSRs).

Envoy dials the CP itself (the ADS cluster of the bootstrap); this is the channel `dp run`
uses for its own calls, verified against the same CA. One function, so every caller dials
the same way: `grpcs://` verifies the CP's certificate and host against the CA file,
`grpc://` is plaintext (the CP allows that only on loopback). Several addresses: see
zonemesh/tls/channel.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from zonemesh.dp.cp_address import CA_OPTION, parse_cp_address, require_ca
from zonemesh.tls.address import GrpcAddress
from zonemesh.tls.channel import open_channel
from zonemesh.tls.trust import ClientCa, load_client_ca


def open_cp_channel(
    address: GrpcAddress | str,
    ca_file: str | Path | ClientCa | None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to the CP (use as `async with`). Raises ValueError for a bad address or
    grpcs:// without a CA, StartCheckError for an unusable CA file."""
    parsed = parse_cp_address(address) if isinstance(address, str) else address
    require_ca(parsed, ca_file.path if isinstance(ca_file, ClientCa) else ca_file)
    ca = None
    if parsed.tls:
        assert ca_file is not None
        ca = ca_file if isinstance(ca_file, ClientCa) else load_client_ca(ca_file, CA_OPTION)
    return open_channel(parsed, ca, options)
