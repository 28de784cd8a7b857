"""The two-zone mesh of `zonemesh demo` inside a network lab, called the seed's way: by name.

Namespaces (10.213.<segment>.<host>; segment 0 is global, N is zoneN):

    router           the bridges, forwarding between segments, and the lab's upstream DNS
                     (10.213.0.1:53, `upstream_dns`), the "host resolver" of every workload
    global (.0.2)    the global control plane
    zoneN (.N.2)     zoneN's control plane and its zone ingress (10001)
    zoneN-echo-K     an echo instance: `zonemesh echo` on .N.(10+K):1027 and its sidecar
    zoneN-client     a client's sidecar; its "app" is whatever the test or demo runs there

Every workload namespace has `zonemesh install transparent-proxy --redirect-dns` applied and
its Dataplane asks for `transparentProxying`, so an app there runs
`curl http://echo.mzsvc.mesh.local:1027/`: the name resolves through the sidecar's resolver
to the MMZS VIP, and the connection goes through the sidecar's virtual outbound listener.
Every port is fixed (each namespace has its own), and control planes listen on 0.0.0.0 so
that their API answers on the namespace's loopback (which is admin).

Processes run through the demo's `ProcessGroup` behind `ip netns exec`, so the demo's
scenario drives this mesh as it drives the loopback one. `stop()` ends every process and
removes every namespace.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zonemesh.demo.processes import ProcessError, ProcessGroup
from zonemesh.demo.topology import (
    ECHO_PORT,
    HTTP_MMZS,
    MESH,
    TCP_MMZS,
    Host,
    mmzs,
    mmzs_cluster_name,
    parse_hosts,
)
from zonemesh.demo.traffic import Answer, Load
from zonemesh.lab.netns import IP, LabError, NetLab, sweep

ZONES = ("zone1", "zone2")
INSTANCES = {"zone1": 2, "zone2": 1}
API_PORT, HTTPS_PORT, XDS_PORT, KDS_PORT = 5681, 5682, 5678, 5685
INGRESS_PORT = 10001
ECHO_INBOUND = 21027
CLIENT_INBOUND, CLIENT_APP = 20080, 8080
ADMIN_PORT = 9901
UPSTREAM_DNS = "10.213.0.1"
LAB_NAMES = {"db.lab.test": "10.213.0.9"}  # what the upstream DNS knows
START_TIMEOUT_S = 90.0
TRANSPARENT = {"redirectPortInbound": 15006, "redirectPortOutbound": 15001}


def unavailable_reason() -> str | None:
    """Why this mesh cannot run here (None: it can)."""
    import shutil

    from zonemesh.lab.netns import unavailable_reason as netns_reason

    reason = netns_reason()
    if reason is None and shutil.which("iptables-restore") is None:
        reason = "the transparent proxy needs iptables (apt-get install iptables)"
    if reason is None and shutil.which("curl") is None:
        reason = "the lab's clients need curl (apt-get install curl)"
    return reason


def hostname_url(name: str = HTTP_MMZS) -> str:
    return f"http://{name}.mzsvc.mesh.local:{ECHO_PORT}/"


@dataclass
class LabCp:
    name: str
    role: str  # its namespace
    address: str
    data_dir: Path

    url = f"http://127.0.0.1:{API_PORT}"  # inside its namespace

    @property
    def xds_address(self) -> str:
        return f"grpcs://{self.address}:{XDS_PORT}"

    @property
    def kds_address(self) -> str:
        return f"grpcs://{self.address}:{KDS_PORT}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "ca.crt"


@dataclass
class LabProxy:
    name: str
    zone: str
    role: str  # its namespace
    address: str
    resource: dict[str, Any]
    proxy_type: str = "dataplane"
    app_port: int | None = None
    inbound_port: int | None = None
    outbounds: dict[str, int] = field(default_factory=dict)

    admin_url = f"http://127.0.0.1:{ADMIN_PORT}"  # inside its namespace

    @property
    def sidecar(self) -> str:
        return f"{self.name}-dp"

    @property
    def app(self) -> str:
        return f"{self.name}-app"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.inbound_port}"


class NetnsLoad(Load):
    """A `Load` whose requests are sent from inside a namespace, by the `clients` program
    (one JSON line per request, read back from its log)."""

    def __init__(self, mesh: LabMesh, zone: str, interval: float, tcp: bool = False) -> None:
        super().__init__(mesh.client_url(zone, tcp), interval=interval)
        self.mesh, self.zone, self.tcp = mesh, zone, tcp
        self.name = f"load-{zone}{'-tcp' if tcp else ''}"

    def start(self) -> NetnsLoad:
        target = self.url if not self.tcp else f"{TCP_MMZS}.mzsvc.mesh.local:{ECHO_PORT}"
        args = ["-m", "zonemesh.lab.clients", "load", "tcp" if self.tcp else "http", target]
        self.mesh.spawn_in(
            self.mesh.clients[self.zone].role,
            self.name,
            [*args, "--interval", str(self.interval)],
            python=True,
        )
        self._thread = threading.Thread(target=self._follow, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Answer]:
        if self.name in self.mesh.group.procs and self.mesh.group[self.name].running:
            self.mesh.group.stop(self.name)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return list(self.answers)

    def _follow(self) -> None:
        path = self.mesh.group[self.name].log_path
        position = 0
        while not self._stop.is_set():
            try:
                with path.open("rb") as log:
                    log.seek(position)
                    data = log.read()
            except OSError:
                data = b""
            end = data.rfind(b"\n") + 1
            position += end
            for line in data[:end].splitlines():
                if line.startswith(b"{"):
                    self.answers.append(_answer(json.loads(line)))
            self._stop.wait(0.05)


def _answer(data: dict[str, Any]) -> Answer:
    return Answer(
        float(data["at"]),
        bool(data["ok"]),
        zone=str(data.get("zone", "")),
        instance=str(data.get("instance", "")),
        error=str(data.get("error", "")),
    )


class LabMesh:
    """See the module docstring. The same surface as `TwoZoneMesh` where the demo's scenario
    uses it (`start`, `stop`, `group`, `instances`, `load`, `stop_zone_instances`, …)."""

    mode = "netns"
    target = f"{hostname_url()} (by name, through the transparent proxy)"

    def __init__(self, run_dir: Path, *, log_level: str = "info") -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_level = log_level
        self.lab = NetLab()
        self.group = ProcessGroup(self.run_dir)
        self.cps: dict[str, LabCp] = {}
        self.ingresses: dict[str, LabProxy] = {}
        self.instances: dict[str, list[LabProxy]] = {}
        self.clients: dict[str, LabProxy] = {}
        self.python = sys.executable

    def mode_line(self) -> str:
        return (
            "mode: netns (every workload in its own network namespace; clients call "
            f"{hostname_url()} by name through the transparent proxy)"
        )

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> LabMesh:
        self.group.__enter__()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        sweep()
        try:
            self._build_lab()
        except LabError as e:
            raise ProcessError(f"network lab: {e}") from None
        self._plan()
        self._write_files()
        self._start_all()
        self.wait_ready()

    def stop(self) -> None:
        try:
            self.group.__exit__(None, None, None)
        finally:
            self.lab.close()

    def _build_lab(self) -> None:
        self.lab.add_segment("global", 0)
        for index, zone in enumerate(ZONES, start=1):
            self.lab.add_segment(zone, index)
        self.lab.add_namespace("global", "global", 2)
        for zone in ZONES:
            self.lab.add_namespace(zone, zone, 2)
            for i in range(INSTANCES[zone]):
                self.lab.add_namespace(f"{zone}-echo-{i + 1}", zone, 11 + i, UPSTREAM_DNS)
            self.lab.add_namespace(f"{zone}-client", zone, 50, UPSTREAM_DNS)

    def _address(self, role: str) -> str:
        return self.lab.namespaces[role].address

    def _plan(self) -> None:
        self.cps["global"] = LabCp(
            "global", "global", self._address("global"), self.run_dir / "cp-global-data"
        )
        for zone in ZONES:
            self.cps[zone] = LabCp(
                zone, zone, self._address(zone), self.run_dir / f"cp-{zone}-data"
            )
            self.ingresses[zone] = self._ingress(zone)
            self.instances[zone] = [self._instance(zone, i) for i in range(INSTANCES[zone])]
            self.clients[zone] = self._client(zone)

    def _ingress(self, zone: str) -> LabProxy:
        address = self._address(zone)
        resource = {
            "type": "ZoneIngress",
            "name": f"ingress-{zone}",
            "networking": {
                "address": address,
                "port": INGRESS_PORT,
                "advertisedAddress": address,
                "advertisedPort": INGRESS_PORT,
            },
        }
        return LabProxy(f"ingress-{zone}", zone, zone, address, resource, "ingress")

    def _instance(self, zone: str, index: int) -> LabProxy:
        role = f"{zone}-echo-{index + 1}"
        address = self._address(role)
        name = f"echo-{zone}-{index + 1}"
        resource = _dataplane(name, address, ECHO_INBOUND, ECHO_PORT, "echo")
        return LabProxy(name, zone, role, address, resource, "dataplane", ECHO_PORT, ECHO_INBOUND)

    def _client(self, zone: str) -> LabProxy:
        role = f"{zone}-client"
        address = self._address(role)
        name = f"client-{zone}"
        resource = _dataplane(name, address, CLIENT_INBOUND, CLIENT_APP, name)
        return LabProxy(name, zone, role, address, resource, "dataplane", None, CLIENT_INBOUND)

    def proxies(self) -> list[LabProxy]:
        out = [self.ingresses[z] for z in ZONES]
        out += [i for z in ZONES for i in self.instances[z]]
        return out + [self.clients[z] for z in ZONES]

    def _write_files(self) -> None:
        for proxy in self.proxies():
            (self.run_dir / f"{proxy.name}.yaml").write_text(
                yaml.safe_dump(proxy.resource, sort_keys=False)
            )
        (self.run_dir / "mmzs.yaml").write_text(
            yaml.safe_dump_all([mmzs(HTTP_MMZS, "http"), mmzs(TCP_MMZS, "tcp")], sort_keys=False)
        )
        topology = {
            "namespaces": {r: ns.name for r, ns in self.lab.namespaces.items()},
            "addresses": {r: ns.address for r, ns in self.lab.namespaces.items()},
        }
        (self.run_dir / "topology.json").write_text(json.dumps(topology, indent=2))

    # --- commands ------------------------------------------------------------------------

    def spawn_in(
        self,
        role: str,
        name: str,
        args: list[str],
        *,
        python: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start (again, if it exists) `zonemesh <args>` or `python <args>` in a namespace."""
        if name not in self.group.procs:
            self.group.add(
                name,
                args,
                env,
                prefix=self.lab.namespaces[role].exec_args([]),
                program=[self.python] if python else None,
            )
        self.group.start(name)

    def cp_args(self, cp: LabCp, *extra: str) -> list[str]:
        return [
            *("cp", "run", *extra, "--address", "0.0.0.0"),
            *("--api-port", str(API_PORT), "--https-port", str(HTTPS_PORT)),
            *("--xds-port", str(XDS_PORT), "--kds-port", str(KDS_PORT)),
            *("--store", "memory", "--data-dir", str(cp.data_dir)),
            *("--log-level", self.log_level),
        ]

    def dp_args(self, proxy: LabProxy) -> list[str]:
        """The one place a `dp run` command line is built (tokens go here when required)."""
        cp = self.cps[proxy.zone]
        return [
            *("dp", "run", "--cp-address", cp.xds_address, "--ca-cert-file", str(cp.ca_file)),
            *("--dataplane-file", str(self.run_dir / f"{proxy.name}.yaml")),
            *("--proxy-type", proxy.proxy_type, "--admin-port", str(ADMIN_PORT)),
            *("--dataplane-token-file", str(self._token_file("tokens", proxy.name))),
            *("--log-level", self.log_level),
        ]

    def _token_file(self, kind: str, name: str) -> Path:
        return self.run_dir / kind / f"{name}.token"

    def _issue(self, role: str, url: str, body: dict[str, Any], kind: str, name: str) -> Path:
        """A token from a CP's `POST /tokens/…`, asked from inside its namespace (loopback is
        admin there), kept where only this user can read it, as an operator would deploy it."""
        status, text = self.http(role, url, method="POST", body=body)
        if status != 200:
            raise ProcessError(f"POST {url} in {role}: {status} {text}")
        path = self._token_file(kind, name)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text.strip())
        return path

    def _issue_dataplane_tokens(self, zone: str) -> None:
        """A token per proxy of `zone`, bound to its name and type, from the zone CP."""
        url = f"{self.cps[zone].url}/tokens/dataplane"
        for proxy in self.proxies():
            if proxy.zone == zone:
                body = {
                    "mesh": MESH,
                    "name": proxy.name,
                    "type": proxy.proxy_type,
                    "validFor": "24h",
                }
                self._issue(zone, url, body, "tokens", proxy.name)

    def install_transparent_proxy(self, role: str) -> None:
        result = self.lab.run(
            role, [*_zonemesh(), "install", "transparent-proxy", "--redirect-dns"], timeout=30
        )
        if result.returncode != 0:
            raise ProcessError(f"install transparent-proxy in {role}: {result.stderr.strip()}")

    def http(
        self, role: str, url: str, *, method: str = "GET", body: dict[str, Any] | None = None
    ) -> tuple[int, str]:
        """A request from inside a namespace (curl): (status, body); status 0 if none."""
        args = ["curl", "-s", "-m", "3", "-X", method, "-w", "\n%{http_code}", url]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        result = self.lab.run(role, args, timeout=10)
        text, _, code = result.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), text

    def wait(self, what: str, check: Callable[[], Any], *, watch: list[str], timeout: float) -> Any:
        return self.group.wait_until(what, check, timeout=timeout, interval=0.2, watch=watch)

    def wait_http(self, name: str, role: str, url: str, timeout: float = START_TIMEOUT_S) -> None:
        self.wait(
            f"{name}: {url}", lambda: self.http(role, url)[0] == 200, watch=[name], timeout=timeout
        )

    # --- starting -------------------------------------------------------------------------

    def _start_all(self) -> None:
        self._start_upstream_dns()
        glob = self.cps["global"]
        self.spawn_in("global", "cp-global", self.cp_args(glob, "--mode", "global"))
        for zone in ZONES:
            for instance in self.instances[zone]:
                self._start_app(instance)
                self.install_transparent_proxy(instance.role)
            self.install_transparent_proxy(self.clients[zone].role)
        self.wait_http("cp-global", "global", f"{glob.url}/ready")
        for name, doc in ((HTTP_MMZS, mmzs(HTTP_MMZS, "http")), (TCP_MMZS, mmzs(TCP_MMZS, "tcp"))):
            path = f"/meshes/{MESH}/meshmultizoneservices/{name}"
            status, text = self.http("global", f"{glob.url}{path}", method="PUT", body=doc)
            if status not in (200, 201):
                raise ProcessError(f"PUT {path} on global: {status} {text}")
        for zone in ZONES:
            token = self._issue(
                "global",
                f"{glob.url}/tokens/zone",
                {"zone": zone, "validFor": "24h"},
                "zone-tokens",
                zone,
            )
            env = {
                "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE": str(glob.ca_file),
                "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH": str(token),
            }
            args = ("--mode", "zone", "--zone", zone, "--global-address", glob.kds_address)
            self.spawn_in(zone, f"cp-{zone}", self.cp_args(self.cps[zone], *args), env=env)
        for zone in ZONES:
            cp = self.cps[zone]
            self.wait_http(f"cp-{zone}", zone, f"{cp.url}/ready")
            for name in (HTTP_MMZS, TCP_MMZS):
                self.wait_http(
                    f"cp-{zone}", zone, f"{cp.url}/meshes/{MESH}/meshmultizoneservices/{name}"
                )
            self._issue_dataplane_tokens(zone)
        for proxy in self.proxies():
            self.spawn_in(proxy.role, proxy.sidecar, self.dp_args(proxy))
        for proxy in self.proxies():
            self.wait_http(proxy.sidecar, proxy.role, f"{proxy.admin_url}/ready")

    def _start_upstream_dns(self) -> None:
        records = [f"--record={name}={ip}" for name, ip in LAB_NAMES.items()]
        log = self.run_dir / "upstream-dns-queries.log"
        args = ["-m", "zonemesh.lab.upstream_dns", "--address", UPSTREAM_DNS, *records]
        self.group.add(
            "upstream-dns",
            [*args, "--log", str(log)],
            prefix=[IP, "netns", "exec", self.lab.router],
            program=[self.python],
        )
        self.group.start("upstream-dns")

    def _start_app(self, instance: LabProxy) -> None:
        args = ["echo", "--address", instance.address, "--port", str(ECHO_PORT)]
        self.spawn_in(
            instance.role,
            instance.app,
            [*args, "--zone", instance.zone, "--instance", instance.name],
        )

    # --- what the demo and the tests change -------------------------------------------------

    def stop_zone_instances(self, zone: str) -> None:
        names = [n for i in self.instances[zone] for n in (i.app, i.sidecar)]
        self.group.stop(*[n for n in names if self.group[n].running])

    def start_zone_instances(self, zone: str) -> None:
        for instance in self.instances[zone]:
            if not self.group[instance.app].running:
                self._start_app(instance)
            if not self.group[instance.sidecar].running:
                self.spawn_in(instance.role, instance.sidecar, self.dp_args(instance))
        for instance in self.instances[zone]:
            url = f"http://{instance.address}:{ECHO_PORT}/"
            self.wait_http(instance.app, instance.role, url)
            self.wait_http(instance.sidecar, instance.role, f"{instance.admin_url}/ready")

    # --- observing -------------------------------------------------------------------------

    def client_url(self, zone: str, tcp: bool = False) -> str:
        return hostname_url(TCP_MMZS if tcp else HTTP_MMZS)

    def load(self, zone: str, interval: float, tcp: bool = False) -> NetnsLoad:
        return NetnsLoad(self, zone, interval, tcp)

    def ask(self, zone: str, tcp: bool = False) -> Answer:
        """One request from `zone`'s client namespace, by name (curl for HTTP, a raw TCP
        client for the tcp MMZS)."""
        role = self.clients[zone].role
        if tcp:
            args = [self.python, "-m", "zonemesh.lab.clients", "tcp"]
            args += [f"{TCP_MMZS}.mzsvc.mesh.local", str(ECHO_PORT)]
            result = self.lab.run(role, args, timeout=10)
            try:
                return _answer(json.loads(result.stdout))
            except ValueError:
                return Answer(time.monotonic(), False, error=result.stderr.strip()[:200])
        at = time.monotonic()
        status, text = self.http(role, hostname_url())
        if status != 200:
            return Answer(at, False, error=f"curl: HTTP {status} {text[:120]}")
        try:
            body = json.loads(text)
            return Answer(at, True, zone=body["zone"], instance=body["instance"])
        except (ValueError, KeyError):
            return Answer(at, False, error=f"not an echo answer: {text[:120]!r}")

    def cluster_name(self, tcp: bool = False) -> str:
        return mmzs_cluster_name(MESH, TCP_MMZS if tcp else HTTP_MMZS, ECHO_PORT)

    def admin(self, proxy: LabProxy, path: str) -> str:
        status, text = self.http(proxy.role, f"{proxy.admin_url}{path}")
        return text if status == 200 else ""

    def hosts(self, zone: str, tcp: bool = False) -> list[Host]:
        try:
            statuses = json.loads(self.admin(self.clients[zone], "/clusters?format=json"))
        except ValueError:
            return []
        return parse_hosts(statuses.get("cluster_statuses", []), self.cluster_name(tcp))

    def cluster_stat(self, zone: str, stat: str, tcp: bool = False) -> int:
        name = f"cluster.{self.cluster_name(tcp)}.{stat}"
        for line in self.admin(self.clients[zone], f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name and value.strip().isdigit():
                return int(value)
        return 0

    def wait_answers_from(
        self, zone: str, expected: str, *, tcp: bool = False, streak: int = 5, timeout: float = 30
    ) -> None:
        run = 0

        def settled() -> bool:
            nonlocal run
            answer = self.ask(zone, tcp)
            run = run + 1 if answer.ok and answer.zone == expected else 0
            return run >= streak

        self.wait(
            f"{zone} client ({'tcp' if tcp else 'http'}) answered by {expected}",
            settled,
            watch=self.group.running(),
            timeout=timeout,
        )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """As `TwoZoneMesh.wait_ready`: every client answered by its own zone, by name, on
        both ports, with the other zone's ingress already at priority 1."""
        for zone in ZONES:
            other = next(z for z in ZONES if z != zone)
            remote = f"{self.ingresses[other].address}:{INGRESS_PORT}"
            local = {i.endpoint for i in self.instances[zone]}
            for tcp in (False, True):
                self.wait(
                    f"{zone} client: local instances at priority 0, {remote} at priority 1",
                    lambda zone=zone, tcp=tcp, local=local, remote=remote: self._layout(
                        zone, tcp, local, remote
                    ),
                    watch=[self.clients[zone].sidecar, f"cp-{zone}"],
                    timeout=timeout,
                )
                self.wait_answers_from(zone, zone, tcp=tcp, timeout=timeout)

    def _layout(self, zone: str, tcp: bool, local: set[str], remote: str) -> bool:
        hosts = self.hosts(zone, tcp)
        return {h.address for h in hosts if h.priority == 0} == local and remote in {
            h.address for h in hosts if h.priority == 1
        }

    def explore_lines(self) -> list[str]:
        ns = {r: n.name for r, n in self.lab.namespaces.items()}
        client = ns["zone1-client"]
        return [
            "The mesh keeps running; explore it (Ctrl-C or SIGTERM stops everything):",
            f"  ip netns exec {client} curl -s -H 'Accept: text/plain' {hostname_url()}",
            f"  ip netns exec {client} dig +short echo.mzsvc.mesh.local",
            f"  ip netns exec {client} iptables-save -t nat",
            f"  ip netns exec {ns['zone1']} zonemesh get meshmultizoneservices",
            f"  ip netns exec {ns['zone1']} zonemesh inspect dataplanes",
            f"  namespaces: {', '.join(sorted(ns.values()))}",
            f"  logs: {self.run_dir}/*.log   addresses: {self.run_dir}/topology.json",
        ]


def _dataplane(name: str, address: str, inbound: int, app: int, service: str) -> dict[str, Any]:
    return {
        "type": "Dataplane",
        "mesh": MESH,
        "name": name,
        "networking": {
            "address": address,
            "inbound": [
                {
                    "port": inbound,
                    "servicePort": app,
                    "tags": {"kuma.io/service": service, "kuma.io/protocol": "http"},
                }
            ],
            "transparentProxying": dict(TRANSPARENT),
        },
    }


def _zonemesh() -> list[str]:
    from zonemesh.demo.processes import zonemesh_command

    return zonemesh_command()
