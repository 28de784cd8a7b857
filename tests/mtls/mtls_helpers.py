"""Helpers for the mTLS tests: configs and runtimes, polling, workload CSRs and the CA's Sign
RPC on the xDS port."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from zonemesh.config import CpConfig
from zonemesh.dp.certs import SIGN_METHOD, new_key_and_csr
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.base import Store
from zonemesh.store.memory import MemoryStore

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


def new_csr(node_id: str = "default.web-1") -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A workload key and the CSR `dp run` would send for it."""
    key_pem, csr_pem = new_key_and_csr(node_id)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, csr_pem


async def sign(
    port: int,
    token: str | None,
    node_id: str,
    csr_pem: bytes,
    *,
    proxy_type: str = "dataplane",
) -> dict[str, Any]:
    """One call of the CA's Sign RPC on the xDS port; raises `grpc.aio.AioRpcError`."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        body = json.dumps({"nodeId": node_id, "proxyType": proxy_type, "csr": csr_pem.decode()})
        metadata = (("authorization", token),) if token is not None else None
        answer = await channel.unary_unary(SIGN_METHOD)(body.encode(), metadata=metadata, timeout=5)
    return json.loads(answer)  # type: ignore[no-any-return]
