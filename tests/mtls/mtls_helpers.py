"""Helpers for the mTLS tests: configs and runtimes, polling, and a scripted SotW ADS client
that asks for a sidecar's two secrets and ACKs everything it receives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from zonemesh.config import CpConfig
from zonemesh.cp.runtime import Runtime
from zonemesh.store.base import Store
from zonemesh.store.memory import MemoryStore
from zonemesh.translate import names
from zonemesh.translate.generator import SECRET

T = TypeVar("T")


def make_config(*, mode: str = "zone", zone: str = "z1", federated: bool = False) -> CpConfig:
    multizone: dict[str, Any] = {}
    if mode == "zone":
        multizone["zone"] = {"name": zone}
        if federated:
            multizone["zone"]["globalAddress"] = "grpc://127.0.0.1:5685"
    return CpConfig.model_validate(
        {"mode": mode, "store": {"type": "memory"}, "multizone": multizone, "xds": {"port": 0}}
    )


def make_runtime(store: Store | None = None, **config: Any) -> Runtime:
    return Runtime(config=make_config(**config), store=store or MemoryStore())


async def eventually(
    check: Callable[[], Awaitable[T]], what: str, timeout: float = 15.0, interval: float = 0.05
) -> T:
    """Poll until `check` returns something truthy; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except Exception as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}; last: {last!r}")
        await asyncio.sleep(interval)


def dataplane_doc(
    name: str, services: list[str], *, mesh: str = "default", first_port: int = 20000
) -> dict[str, Any]:
    """A Dataplane on 127.0.0.1 with one TCP inbound per service."""
    return {
        "type": "Dataplane",
        "mesh": mesh,
        "name": name,
        "networking": {
            "address": "127.0.0.1",
            "inbound": [
                {
                    "port": first_port + i,
                    "servicePort": first_port + 100 + i,
                    "tags": {"kuma.io/service": s, "kuma.io/protocol": "tcp"},
                }
                for i, s in enumerate(services)
            ],
        },
    }


def uri_sans(pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


class SecretClient:
    """A SotW ADS stream of one sidecar asking for its identity and CA secrets."""

    def __init__(self, port: int, dataplane: dict[str, Any]) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.mesh = dataplane["mesh"]
        metadata = struct_pb2.Struct()
        metadata.update(
            {"dataplane.proxyType": "dataplane", "dataplane.resource": json.dumps(dataplane)}
        )
        self.node = base_pb2.Node(id=f"{self.mesh}.{dataplane['name']}", metadata=metadata)
        self.names = [names.identity_secret(self.mesh), names.ca_secret(self.mesh)]
        self._requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources(self._stream())
        self.latest: dict[str, secret_pb2.Secret] = {}
        self.responses = 0
        self._reader = asyncio.create_task(self._read())
        self._requests.put_nowait(
            discovery_pb2.DiscoveryRequest(
                node=self.node, type_url=SECRET, resource_names=self.names
            )
        )

    async def _stream(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            request = await self._requests.get()
            if request is None:
                return
            yield request

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for response in self.call:
                for packed in response.resources:
                    secret = secret_pb2.Secret()
                    packed.Unpack(secret)
                    self.latest[secret.name] = secret
                self.responses += 1
                self._requests.put_nowait(  # ACK
                    discovery_pb2.DiscoveryRequest(
                        type_url=response.type_url,
                        resource_names=self.names,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )

    def identity_pem(self) -> bytes | None:
        secret = self.latest.get(names.identity_secret(self.mesh))
        return secret.tls_certificate.certificate_chain.inline_bytes if secret else None

    def ca_pem(self) -> bytes | None:
        secret = self.latest.get(names.ca_secret(self.mesh))
        return secret.validation_context.trusted_ca.inline_bytes if secret else None

    async def close(self) -> None:
        self._requests.put_nowait(None)
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.channel.close()
