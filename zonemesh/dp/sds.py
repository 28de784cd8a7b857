"""The data plane's own SDS server: hands its Envoy the workload certificate, key and trust.

The private key is made by `zonemesh dp run` and never leaves it except to its own Envoy, over
a gRPC server on a Unix socket in a private (0700) directory: no other user of the host can
connect, and nothing listens on the network. The bootstrap names it as a static cluster
(`cpdp.names.SDS_CLUSTER`); every TLS context the control plane sends takes its secrets from there:

- `cpdp.names.identity_secret(mesh)`: the certificate chain (leaf + intermediate) and the key;
- `cpdp.names.ca_secret(mesh)`: the mesh root, to validate peers with.

`update()` swaps the secrets; every open stream is pushed the new version at once, so Envoy
uses the new certificate for new handshakes while established connections carry on. Both
SotW (`StreamSecrets`) and incremental (`DeltaSecrets`) are served; `FetchSecrets` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from zonemesh.cpdp.names import ca_secret, identity_secret

log = logging.getLogger("zonemesh.dp.sds")

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


@dataclass(frozen=True, eq=False)
class WorkloadSecrets:
    """What Envoy gets: PEM chain (leaf first), PEM key, PEM trust bundle."""

    mesh: str
    chain_pem: bytes
    key_pem: bytes = b""
    trust_pem: bytes = b""

    @property
    def version(self) -> str:
        digest = hashlib.sha256(self.chain_pem + b"\0" + self.trust_pem).hexdigest()
        return digest[:16]

    def resources(self) -> dict[str, secret_pb2.Secret]:
        return {
            identity_secret(self.mesh): secret_pb2.Secret(
                name=identity_secret(self.mesh),
                tls_certificate=common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(inline_bytes=self.chain_pem),
                    private_key=base_pb2.DataSource(inline_bytes=self.key_pem),
                ),
            ),
            ca_secret(self.mesh): secret_pb2.Secret(
                name=ca_secret(self.mesh),
                validation_context=common_pb2.CertificateValidationContext(
                    trusted_ca=base_pb2.DataSource(inline_bytes=self.trust_pem)
                ),
            ),
        }


def _packed(secret: secret_pb2.Secret) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(secret)
    return out


class LocalSdsServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """See the module docstring. `socket_path` must be in a directory only we can enter."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.pushes = 0  # responses sent (tests)
        self._secrets: WorkloadSecrets | None = None
        self._changed = asyncio.Event()  # replaced on every update: wakes every stream
        self._server: grpc.aio.Server | None = None
        self._nonce = 0

    async def start(self) -> None:
        parent = self.socket_path.parent
        if parent.stat().st_mode & 0o077:
            raise OSError(f"{parent} must be private (mode 0700) to hold the SDS socket")
        server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, server)
        if not server.add_insecure_port(f"unix:{self.socket_path}"):
            raise OSError(f"cannot listen on {self.socket_path}")
        await server.start()
        os.chmod(self.socket_path, 0o600)
        self._server = server
        log.debug("SDS for Envoy on %s", self.socket_path)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    @property
    def secrets(self) -> WorkloadSecrets | None:
        return self._secrets

    def update(self, secrets: WorkloadSecrets) -> None:
        """Serve `secrets` from now on and push them to every open stream."""
        self._secrets = secrets
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    async def _requests(self, requests: AsyncIterator[Any], wanted: _Wanted) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for request in requests:
                wanted.take(request)

    # --- State of the world --------------------------------------------------------------

    async def StreamSecrets(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        wanted = _Wanted()
        reader = asyncio.create_task(self._requests(request_iterator, wanted))
        sent: tuple[str, frozenset[str]] | None = None
        try:
            while not reader.done():
                changed = self._changed
                secrets = self._secrets
                if secrets is not None and wanted.names is not None:
                    current = (secrets.version, frozenset(wanted.names))
                    if current != sent:
                        yield self._sotw(secrets, wanted.names)
                        sent = current
                await _wait_any(changed, wanted.event, reader)
        finally:
            reader.cancel()

    def _sotw(self, secrets: WorkloadSecrets, wanted: set[str]) -> discovery_pb2.DiscoveryResponse:
        available = secrets.resources()
        chosen = [available[n] for n in sorted(wanted or available) if n in available]
        self.pushes += 1
        return discovery_pb2.DiscoveryResponse(
            version_info=secrets.version,
            type_url=SECRET_TYPE,
            nonce=self._next_nonce(),
            resources=[_packed(s) for s in chosen],
        )

    async def FetchSecrets(
        self, request: discovery_pb2.DiscoveryRequest, context: Any
    ) -> discovery_pb2.DiscoveryResponse:
        if self._secrets is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no certificate yet")
        assert self._secrets is not None
        return self._sotw(self._secrets, set(request.resource_names))

    # --- Incremental ---------------------------------------------------------------------

    async def DeltaSecrets(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        wanted = _Wanted()
        reader = asyncio.create_task(self._requests(request_iterator, wanted))
        known: dict[str, str] = {}  # what the client has: name -> version
        try:
            while not reader.done():
                changed = self._changed
                secrets = self._secrets
                if secrets is not None and wanted.names is not None:
                    names_ = wanted.names or set(secrets.resources())
                    known = {n: v for n, v in known.items() if n in names_}
                    due = [n for n in sorted(names_) if known.get(n) != secrets.version]
                    available = secrets.resources()
                    due = [n for n in due if n in available]
                    if due:
                        self.pushes += 1
                        for n in due:
                            known[n] = secrets.version
                        yield discovery_pb2.DeltaDiscoveryResponse(
                            system_version_info=secrets.version,
                            type_url=SECRET_TYPE,
                            nonce=self._next_nonce(),
                            resources=[
                                discovery_pb2.Resource(
                                    name=n, version=secrets.version, resource=_packed(available[n])
                                )
                                for n in due
                            ],
                        )
                await _wait_any(changed, wanted.event, reader)
        finally:
            reader.cancel()


class _Wanted:
    """The secret names one stream asks for, and a wake-up when they change."""

    def __init__(self) -> None:
        self.names: set[str] | None = None  # None: no request yet
        self.event = asyncio.Event()

    def take(self, request: Any) -> None:
        if isinstance(request, discovery_pb2.DeltaDiscoveryRequest):
            names_ = set(self.names or ())
            names_.update(request.resource_names_subscribe)
            names_.difference_update(request.resource_names_unsubscribe)
        else:
            names_ = set(request.resource_names)
        if request.HasField("error_detail"):
            log.warning("Envoy rejected its secrets: %s", request.error_detail.message)
        if names_ != self.names:
            self.names = names_
            self.event.set()


async def _wait_any(
    changed: asyncio.Event, wanted: asyncio.Event, reader: asyncio.Task[None]
) -> None:
    waits = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(wanted.wait())]
    try:
        await asyncio.wait([*waits, reader], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    wanted.clear()
