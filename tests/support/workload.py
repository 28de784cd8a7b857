"""What `zonemesh dp run` gives its Envoy, for tests that start Envoy themselves: a dataplane
token (from the in-process Runtime's TokenService), the workload's own key and certificate
(CSR to the in-process CA), and the local SDS server on a Unix socket in a private directory.

    async with Sidecar(runtime, xds_port, wire) as sidecar:
        envoy = EnvoyProcess(sidecar.bootstrap(cp_address, admin_port=0))

`Sidecar.bootstrap` is `render_bootstrap` with the token and the SDS socket filled in.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc

from zonemesh.dp.bootstrap import render_bootstrap
from zonemesh.dp.certs import WorkloadCertificates
from zonemesh.dp.sds import LocalSdsServer
from zonemesh.runtime.kernel import Runtime


async def issue_token(runtime: Runtime, wire: dict[str, Any], proxy_type: str = "dataplane") -> str:
    """A token for exactly this proxy (its name), valid for an hour."""
    mesh = wire.get("mesh") or "default"
    return await runtime.tokens.issue_dataplane(
        mesh=mesh, name=wire["name"], proxy_type=proxy_type, valid_for=timedelta(hours=1)
    )


class Sidecar:
    def __init__(
        self,
        runtime: Runtime,
        xds_port: int,
        wire: dict[str, Any],
        *,
        proxy_type: str = "dataplane",
    ) -> None:
        self.runtime = runtime
        self.xds_port = xds_port
        self.wire = wire
        self.proxy_type = proxy_type
        self.node_id = f"{wire.get('mesh') or 'default'}.{wire['name']}"
        self.token = ""
        self.certificates: WorkloadCertificates | None = None
        self.sds: LocalSdsServer | None = None
        self._dir: Path | None = None
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def sds_socket(self) -> str | None:
        return str(self.sds.socket_path) if self.sds is not None else None

    async def __aenter__(self) -> Sidecar:
        self.token = await issue_token(self.runtime, self.wire, self.proxy_type)
        if self.proxy_type != "dataplane":
            return self  # zone proxies pass TLS through: no certificate
        self._dir = Path(tempfile.mkdtemp(prefix="zonemesh-test-dp-"))
        self.sds = LocalSdsServer(self._dir / "sds.sock")
        await self.sds.start()
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.xds_port}")
        self.certificates = WorkloadCertificates(
            self._channel,
            node_id=self.node_id,
            mesh=self.wire.get("mesh") or "default",
            metadata=(("authorization", self.token),),
            sds=self.sds,
        )
        self._task = asyncio.create_task(self.certificates.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.sds is not None:
            await self.sds.stop()
        if self._channel is not None:
            await self._channel.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def bootstrap(self, cp_address: str, admin_port: int = 0, **kwargs: Any) -> dict[str, Any]:
        return render_bootstrap(
            self.wire,
            self.proxy_type,
            cp_address,
            admin_port,
            token=self.token,
            sds_socket=self.sds_socket,
            **kwargs,
        )
