"""The data plane's local SDS server, spoken to as Envoy does (real gRPC over its Unix socket):
SotW and incremental streams get the workload's secrets, and a renewed certificate is pushed
on every open stream; the socket lives in a directory no other user can enter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from zonemesh.cpdp.names import ca_secret, identity_secret
from zonemesh.dp.sds import LocalSdsServer, WorkloadSecrets

pytestmark = pytest.mark.timeout(30)

IDENTITY, TRUST = identity_secret("default"), ca_secret("default")


@contextlib.asynccontextmanager
async def running_sds() -> AsyncIterator[
    tuple[LocalSdsServer, sds_pb2_grpc.SecretDiscoveryServiceStub]
]:
    directory = Path(tempfile.mkdtemp(prefix="zonemesh-test-sds-"))
    server = LocalSdsServer(directory / "sds.sock")
    await server.start()
    channel = grpc.aio.insecure_channel(f"unix:{server.socket_path}")
    try:
        yield server, sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
    finally:
        await channel.close()
        await server.stop()
        directory.rmdir()


def secrets(serial: int) -> WorkloadSecrets:
    return WorkloadSecrets("default", f"CHAIN {serial}".encode(), f"KEY {serial}".encode(), b"ROOT")


def unpacked(resources: Any) -> dict[str, secret_pb2.Secret]:
    out = {}
    for item in resources:
        packed = item.resource if hasattr(item, "resource") else item
        secret = secret_pb2.Secret()
        packed.Unpack(secret)
        out[secret.name] = secret
    return out


async def test_the_socket_is_private_and_a_shared_directory_is_refused() -> None:
    async with running_sds() as (server, _):
        mode = server.socket_path.parent.stat().st_mode
        assert stat.S_IMODE(mode) == 0o700
        assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o600
    shared = Path(tempfile.mkdtemp())
    shared.chmod(0o755)
    try:
        with pytest.raises(OSError, match="must be private"):
            await LocalSdsServer(shared / "sds.sock").start()
    finally:
        shared.rmdir()


async def test_sotw_streams_wait_for_a_certificate_then_get_every_renewal() -> None:
    async with running_sds() as (server, stub):
        requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()

        async def send() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
            while True:
                yield await requests.get()

        call = stub.StreamSecrets(send())
        requests.put_nowait(discovery_pb2.DiscoveryRequest(resource_names=[IDENTITY]))
        pending = asyncio.ensure_future(call.read())
        await asyncio.sleep(0.3)
        assert not pending.done()  # nothing to serve yet: Envoy's listener warms meanwhile
        server.update(secrets(1))
        first = await asyncio.wait_for(pending, 5)
        got = unpacked(first.resources)
        assert set(got) == {IDENTITY}  # only what the stream named
        assert got[IDENTITY].tls_certificate.private_key.inline_bytes == b"KEY 1"
        requests.put_nowait(
            discovery_pb2.DiscoveryRequest(
                resource_names=[IDENTITY],
                version_info=first.version_info,
                response_nonce=first.nonce,
            )
        )
        server.update(secrets(2))
        second = await asyncio.wait_for(call.read(), 5)
        renewed = unpacked(second.resources)[IDENTITY].tls_certificate
        assert renewed.certificate_chain.inline_bytes == b"CHAIN 2"
        assert second.version_info != first.version_info
        call.cancel()


async def test_delta_streams_get_the_secrets_they_subscribe_and_renewals() -> None:
    async with running_sds() as (server, stub):
        server.update(secrets(1))
        requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()

        async def send() -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
            while True:
                yield await requests.get()

        call = stub.DeltaSecrets(send())
        requests.put_nowait(
            discovery_pb2.DeltaDiscoveryRequest(resource_names_subscribe=[IDENTITY, TRUST])
        )
        first = await asyncio.wait_for(call.read(), 5)
        got = unpacked(first.resources)
        assert set(got) == {IDENTITY, TRUST}
        assert got[TRUST].validation_context.trusted_ca.inline_bytes == b"ROOT"
        requests.put_nowait(discovery_pb2.DeltaDiscoveryRequest(response_nonce=first.nonce))
        server.update(secrets(2))
        second = await asyncio.wait_for(call.read(), 5)
        assert unpacked(second.resources)[
            IDENTITY
        ].tls_certificate.certificate_chain.inline_bytes == (b"CHAIN 2")
        call.cancel()
