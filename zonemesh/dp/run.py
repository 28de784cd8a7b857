"""`zonemesh dp run`: one Envoy for a Dataplane, ZoneIngress or ZoneEgress, fed by the zone CP.

The data plane needs only the CP's xDS address (and, for `grpcs://`, the CA that signed the
CP's certificate): Envoy gets everything over ADS, and readiness reports and certificate
signing travel on the same port, each with the dataplane token (`--dataplane-token-file`,
metadata `authorization`). Before anything else it runs the start check
(zonemesh/tls/probe.py): a wrong CA, or TLS on one side and plaintext on the other, ends
`dp run` at once with the problem named. A CP that does not answer yet is waited for with a
backoff (saying so once per attempt). Then it checks that the CP accepts its token, runs
Envoy, probes the apps behind its inbounds, and on SIGTERM drains Envoy's listeners and exits
0 with no child left. A sidecar's key pair is made here and never leaves this process but to
its own Envoy, over a local SDS socket in a private directory (`dp.certs`, `dp.sds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from zonemesh.dp.bootstrap import render_bootstrap
from zonemesh.dp.certs import FATAL, CertificateRefused, WorkloadCertificates
from zonemesh.dp.channel import open_cp_channel
from zonemesh.dp.cp_address import CA_OPTION, parse_cp_address, require_ca
from zonemesh.dp.dns_service import TransparentDns
from zonemesh.dp.envoy import EnvoyError, EnvoyProcess, envoy_binary, envoy_version
from zonemesh.dp.probes import not_ready_ports, probes_for
from zonemesh.dp.sds import LocalSdsServer
from zonemesh.mtls.identities import workload_spiffe_ids
from zonemesh.resources import labels
from zonemesh.resources.codec import parse_documents, resource_from_wire, resource_to_wire
from zonemesh.resources.errors import ValidationError
from zonemesh.resources.types.dataplane import DataplaneSpec
from zonemesh.tls.probe import check_address
from zonemesh.tls.trust import ClientCa, StartCheckError, load_client_ca
from zonemesh.tproxy.identity import join_dp_group

log = logging.getLogger("zonemesh.dp")

RESOURCE_TYPE = {"dataplane": "Dataplane", "ingress": "ZoneIngress", "egress": "ZoneEgress"}
READINESS_METHOD = "/zonemesh.dp.v1.Readiness/Report"
CP_FLAG = "--cp-address"
PROBE_INTERVAL_S = 1.0
REPORT_REFRESH_S = 5.0  # re-send unchanged readiness: the CP may have restarted meanwhile


class DataPlaneError(Exception):
    """A problem the user can fix (bad file, no Envoy); printed without a traceback."""


def load_resource(path: str, proxy_type: str) -> dict[str, Any]:
    """The dataplane file as wire JSON, validated; errors name the file and the field."""
    try:
        text = Path(path).read_text() if path != "-" else _stdin()
    except OSError as e:
        raise DataPlaneError(f"{path}: {e.strerror or e}") from None
    try:
        docs = parse_documents(text, source=path)
        if len(docs) != 1:
            raise DataPlaneError(f"{path}: expected one resource, found {len(docs)}")
        doc = docs[0]
        expected = RESOURCE_TYPE[proxy_type]
        if doc.get("type") != expected:
            raise DataPlaneError(
                f"{path}: type: must be {expected} for --proxy-type {proxy_type} "
                f"(got {doc.get('type')!r})"
            )
        resource = resource_from_wire(doc)
    except ValidationError as e:
        raise DataPlaneError("\n".join(f"{path}: {v}" for v in e.violations)) from None
    return resource_to_wire(resource)


def read_token(path: str | None, inline: str | None) -> str | None:
    """The dataplane token from `--dataplane-token-file` or `--dataplane-token` (or their
    env vars); None when neither is given. Errors name the file."""
    if path and inline:
        raise DataPlaneError("give --dataplane-token-file or --dataplane-token, not both")
    if inline is not None:
        token = inline.strip()
        source = "--dataplane-token"
    elif path:
        try:
            token = Path(path).read_text().strip()
        except OSError as e:
            raise DataPlaneError(f"{path}: {e.strerror or e}") from None
        source = path
    else:
        return None
    if not token:
        raise DataPlaneError(f"{source}: the dataplane token is empty")
    return token


def _stdin() -> str:
    import sys

    return sys.stdin.read()


@dataclass
class DataPlaneOptions:
    cp_address: str
    proxy_type: str
    admin_port: int
    envoy_binary: str | None = None
    envoy_log_level: str = "warn"
    max_backoff_s: float = 5.0
    ca_cert_file: str | None = None  # required for grpcs://
    token: str | None = None  # the dataplane token; None: the CP must not require one
    dns_port: int = 15053  # the resolver, for transparent proxying (0: none)


class DataPlane:
    def __init__(self, wire: dict[str, Any], options: DataPlaneOptions) -> None:
        self.wire = wire
        self.resource = resource_from_wire(wire)
        self.options = options
        self.node_id = f"{self.resource.mesh or 'default'}.{self.resource.name}"
        self.envoy: EnvoyProcess | None = None
        self.certificates: WorkloadCertificates | None = None
        token = options.token
        self.metadata = (("authorization", token),) if token else None

    @property
    def needs_certificate(self) -> bool:
        """Sidecars terminate and originate mTLS; zone proxies pass it through."""
        return self.options.proxy_type == "dataplane"

    @property
    def role(self) -> str:
        """What this proxy is, for the log: a gateway's type is the CP's to act on (a BUILTIN
        gateway's listeners come from its MeshGateway over ADS); `dp run` runs it alike."""
        kind = RESOURCE_TYPE[self.options.proxy_type]
        spec = self.resource.spec
        if isinstance(spec, DataplaneSpec) and spec.networking.gateway_type:
            return f"{kind} ({spec.networking.gateway_type.lower()} gateway)"
        return kind

    def bootstrap(self, version: str = "", sds_socket: str | None = None) -> dict[str, Any]:
        if sds_socket is None and self.needs_certificate:
            sds_socket = str(Path(tempfile.gettempdir()) / "zonemesh-dp-RUN" / "sds.sock")
        return render_bootstrap(
            self.wire,
            self.options.proxy_type,
            self.options.cp_address,
            self.options.admin_port,
            envoy_version=version,
            ca_file=self.options.ca_cert_file,
            token=self.options.token,
            sds_socket=sds_socket if self.needs_certificate else None,
        )

    async def run(self, stop: asyncio.Event) -> int:
        options = self.options
        binary = envoy_binary(options.envoy_binary)
        who = ", ".join(workload_spiffe_ids(self.resource)) or self.resource.label(labels.ZONE, "-")
        log.info(
            "%s %s (%s) -> control plane %s",
            self.role,
            self.node_id,
            who,
            options.cp_address,
        )
        if options.token is None:
            log.warning(
                "no dataplane token (--dataplane-token-file): a control plane with "
                "authentication on refuses this proxy"
            )
        join_dp_group(self.resource)  # before any socket: see zonemesh.tproxy.identity
        address = parse_cp_address(options.cp_address)
        ca = self._client_ca()
        if not await self._wait_for_cp(ca, stop):
            return 0
        async with open_cp_channel(address, ca) as channel:
            await self._check_token(channel)
            run_dir = Path(tempfile.mkdtemp(prefix="zonemesh-dp-"))  # 0700: ours alone
            sds: LocalSdsServer | None = None
            try:
                if self.needs_certificate:
                    sds = LocalSdsServer(run_dir / "sds.sock")
                    await sds.start()
                    self.certificates = WorkloadCertificates(
                        channel,
                        node_id=self.node_id,
                        mesh=self.resource.mesh,
                        metadata=self.metadata,
                        sds=sds,
                    )
                return await self._run_envoy(channel, stop, binary, sds)
            finally:
                if sds is not None:
                    await sds.stop()
                shutil.rmtree(run_dir, ignore_errors=True)

    async def _run_envoy(
        self,
        channel: grpc.aio.Channel,
        stop: asyncio.Event,
        binary: Path,
        sds: LocalSdsServer | None,
    ) -> int:
        options = self.options
        self.envoy = EnvoyProcess(
            self.bootstrap(
                await envoy_version(binary), str(sds.socket_path) if sds is not None else None
            ),
            binary=binary,
            log_level=options.envoy_log_level,
            inherit_output=True,
        )
        # Certificates first: Envoy's listeners warm until their secrets arrive, and the CA
        # signs once Envoy's ADS stream has registered the proxy.
        background = []
        if self.certificates is not None:
            background.append(asyncio.create_task(self.certificates.run(), name="dp-certs"))
        try:
            starting = asyncio.create_task(self.envoy.start())
            await asyncio.wait([starting, *background], return_when=asyncio.FIRST_COMPLETED)
            _raise_refusal(background)
            if not starting.done():  # the certificate task failed otherwise: a bug
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                raise DataPlaneError(f"certificates failed: {background[0].exception()!r}")
            await starting
            log.info("Envoy %s ready, admin %s", self.envoy.pid, self.envoy.admin_url)
            dns = TransparentDns.for_resource(self.resource, options.dns_port)
            if dns is not None:
                await dns.start()
            tasks = [
                asyncio.create_task(stop.wait()),
                asyncio.create_task(self.envoy.wait()),
                asyncio.create_task(self._report_readiness(channel)),
            ]
            try:
                await asyncio.wait([*tasks, *background], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                if dns is not None:
                    await dns.stop()
            _raise_refusal([*tasks, *background])
        finally:
            for task in background:
                task.cancel()
        if self.envoy.returncode is not None:
            log.error("Envoy exited unexpectedly with code %s", self.envoy.returncode)
            await self.envoy.stop()
            return 1
        await self._report_stopping(channel)
        log.info("draining Envoy's listeners")
        await self.envoy.drain()
        await self.envoy.stop()
        log.info("stopped")
        return 0

    async def _check_token(self, channel: grpc.aio.Channel) -> None:
        """Fail at start, with the CP's reason, if it refuses our token: a readiness report
        before the ADS stream exists is authenticated and authorized, then NOT_FOUND."""
        try:
            await channel.unary_unary(READINESS_METHOD)(
                self._readiness_body(()), metadata=self.metadata, timeout=5.0
            )
        except grpc.aio.AioRpcError as e:
            if e.code() in FATAL:
                raise DataPlaneError(
                    f"the control plane refused this proxy: {e.details()}"
                ) from None

    def _client_ca(self) -> ClientCa | None:
        """The CA for grpcs:// (read and checked once); None for grpc://."""
        address = parse_cp_address(self.options.cp_address)
        try:
            require_ca(address, self.options.ca_cert_file)
        except ValueError as e:
            raise DataPlaneError(str(e)) from None
        if not address.tls or not self.options.ca_cert_file:
            return None
        try:
            return load_client_ca(self.options.ca_cert_file, CA_OPTION)
        except StartCheckError as e:
            raise DataPlaneError(str(e)) from None

    async def _wait_for_cp(self, ca: ClientCa | None, stop: asyncio.Event) -> bool:
        """True once the CP answers as expected; False if asked to stop first. A CP that
        answers with the wrong certificate or protocol is not waited for: DataPlaneError."""
        address = parse_cp_address(self.options.cp_address)
        attempt, delay = 0, 0.25
        while not stop.is_set():
            attempt += 1
            try:
                result = await check_address(address, ca)
            except StartCheckError as e:
                raise DataPlaneError(f"{CP_FLAG} {address}: {e}") from None
            if result.ok:
                if attempt > 1:
                    log.info("control plane %s reachable", self.options.cp_address)
                return True
            log.warning(
                "control plane %s not reachable (attempt %d): %s; retrying in %.1fs",
                self.options.cp_address,
                attempt,
                result.detail,
                delay,
            )
            with contextlib.suppress(TimeoutError):  # not wait_for: see dp.certs
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, self.options.max_backoff_s)
        return False

    async def _report_stopping(self, channel: grpc.aio.Channel) -> None:
        """Every inbound not ready, before draining: the CP takes this instance out of EDS
        now, instead of when the ADS stream closes after the drain. Otherwise callers keep
        picking it for the whole drain, and get 503s if its app is already gone. `stopping`
        makes the stream's end a graceful stop: the CP deregisters what it registered."""
        spec = self.resource.spec
        ports = (
            sorted(p.inbound_port for p in probes_for(spec))
            if isinstance(spec, DataplaneSpec)
            else []
        )
        try:
            await channel.unary_unary(READINESS_METHOD)(
                self._readiness_body(ports, stopping=True), metadata=self.metadata, timeout=1.0
            )
        except grpc.aio.AioRpcError as e:
            log.debug("stopping report not taken: %s", e.details())
        else:
            log.info("readiness: not ready (stopping)")

    def _readiness_body(self, not_ready: Sequence[int], *, stopping: bool = False) -> bytes:
        body: dict[str, Any] = {
            "nodeId": self.node_id,
            "proxyType": self.options.proxy_type,
            "notReadyInboundPorts": list(not_ready),
        }
        if stopping:
            body["stopping"] = True
        return json.dumps(body).encode()

    async def _report_readiness(self, channel: grpc.aio.Channel) -> None:
        """Probe the apps and tell the CP; zone proxies (no inbounds) report too, to learn
        which zone they joined."""
        spec = self.resource.spec
        probes = probes_for(spec) if isinstance(spec, DataplaneSpec) else []
        report = channel.unary_unary(READINESS_METHOD)
        loop = asyncio.get_running_loop()
        last: tuple[int, ...] | None = None
        last_sent = 0.0
        zone = ""
        while True:
            ports = await not_ready_ports(probes)
            if ports != last or loop.time() - last_sent > REPORT_REFRESH_S:
                try:
                    answer = await report(
                        self._readiness_body(ports), metadata=self.metadata, timeout=2.0
                    )
                except grpc.aio.AioRpcError as e:
                    if e.code() in FATAL:  # e.g. the token was revoked or has expired
                        raise DataPlaneError(
                            f"the control plane refused this proxy: {e.details()}"
                        ) from None
                    # NOT_FOUND until Envoy's ADS stream is open; try again next round.
                    log.debug("readiness report not taken: %s", e.details())
                else:
                    if self.certificates is not None:
                        fingerprint = _trust_of(answer, self.resource.mesh)
                        self.certificates.trust_changed(fingerprint)
                    joined = _zone_of(answer)
                    if joined != zone:
                        zone = joined
                        log.info("%s joined zone %s", self.node_id, zone or "-")
                    if ports != last:
                        state = f"not ready: inbound ports {list(ports)}" if ports else "ready"
                        log.info("readiness: %s", state)
                    last, last_sent = ports, loop.time()
            await asyncio.sleep(PROBE_INTERVAL_S)


def _raise_refusal(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """A finished task that failed with a refusal ends `dp run` with its message."""
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if isinstance(error, CertificateRefused):
                raise DataPlaneError(str(error))
            if isinstance(error, DataPlaneError):
                raise error


def _trust_of(answer: bytes, mesh: str) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str((json.loads(answer or b"{}").get("trustFingerprints") or {}).get(mesh, ""))
    return ""


def _zone_of(answer: bytes) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(answer or b"{}").get("zone", ""))
    return ""


async def run_data_plane(wire: dict[str, Any], options: DataPlaneOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dp = DataPlane(wire, options)
    try:
        return await dp.run(stop)
    except EnvoyError as e:
        raise DataPlaneError(str(e)) from None
    finally:
        if dp.envoy is not None:
            await dp.envoy.stop()
