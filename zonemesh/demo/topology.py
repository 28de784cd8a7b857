"""A two-zone mesh on loopback with real Envoy, for `zonemesh demo` and the end-to-end tests.

`TwoZoneMesh(run_dir).start()` brings up, in order: a global CP and the MeshMultiZoneServices
`echo` (port 1027, http) and `echo-tcp` (the same MeshServices, port 1027 as tcp); a zone CP
per zone; a zone ingress per zone; the echo instances (two in zone1, one in zone2), each an
`zonemesh echo` app behind a `zonemesh dp run` sidecar; and a client sidecar per zone whose
outbounds lead to both MMZS ports. Zone N lives on 127.x.N.0/24: CP .1, echo instances .11,
.12, client .50, ingress .100. Every port is picked free at start, except the echo apps'
1027: an MMZS port names the MeshService port, which is the inbounds' `servicePort`. So that
two runs never share an address, each run claims a slot (a lock file held while it runs):
slot 0 is 127.0.N.x, slot k is 127.k.N.x.

Every process logs to `<run_dir>/<name>.log`; `stop()` (or leaving `with`) ends them all.
Each proxy presents a dataplane token bound to its name (and type), issued by its zone CP's
`POST /tokens/dataplane` from loopback once that CP is ready, kept in
`<run_dir>/tokens/<name>.token` (0600); each sidecar makes its own key.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from zonemesh.demo.processes import ProcessError, ProcessGroup, free_port, port_is_free
from zonemesh.demo.traffic import Answer, Load, ask, ask_many, new_client

MESH = "default"
ECHO_PORT = 1027
ZONES = ("zone1", "zone2")
INSTANCES = {"zone1": 2, "zone2": 1}
HTTP_MMZS = "echo"
TCP_MMZS = "echo-tcp"
MAX_SLOTS = 64
START_TIMEOUT_S = 60.0


def new_run_dir() -> Path:
    """A fresh directory for one run's logs and files, named after the time it started."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.mkdtemp(prefix=f"zonemesh-demo-{stamp}-"))


def mmzs_cluster_name(mesh: str, name: str, port: int) -> str:
    """The Envoy cluster of an MMZS port on a zonemesh sidecar, as its admin `/clusters`
    shows it. The demo reads it from outside, like an operator, so it spells the name out
    instead of importing the translator (which may change inside without changing this)."""
    return f"{mesh}_{name}__mzsvc_{port}"


def mmzs(name: str, app_protocol: str) -> dict[str, Any]:
    return {
        "type": "MeshMultiZoneService",
        "mesh": MESH,
        "name": name,
        "spec": {
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "echo"}}},
            "ports": [{"port": ECHO_PORT, "appProtocol": app_protocol}],
        },
    }


@dataclass
class ControlPlane:
    """A `cp run` serving xDS and KDS over TLS with the certificate it generates in its data
    directory; its clients trust `ca_file`, written there at start."""

    name: str
    address: str
    api_port: int
    xds_port: int
    kds_port: int
    https_port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.api_port}"

    @property
    def https_url(self) -> str:
        return f"https://{self.address}:{self.https_port}"

    @property
    def xds_address(self) -> str:
        return f"grpcs://{self.address}:{self.xds_port}"

    @property
    def kds_address(self) -> str:
        return f"grpcs://{self.address}:{self.kds_port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "ca.crt"


@dataclass
class Proxy:
    """A `zonemesh dp run` and, for sidecars, the `zonemesh echo` behind its first inbound."""

    name: str
    zone: str
    address: str
    admin_port: int
    resource: dict[str, Any]
    app_port: int | None = None  # the app behind the inbound (None: a zone ingress)
    inbound_port: int | None = None
    outbounds: dict[str, int] = field(default_factory=dict)  # MMZS name -> listener port

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def sidecar(self) -> str:
        """The process name of the data plane."""
        return f"{self.name}-dp"

    @property
    def app(self) -> str:
        """The process name of the app."""
        return f"{self.name}-app"

    @property
    def endpoint(self) -> str:
        """`address:inbound_port`: how other sidecars' EDS lists this instance."""
        return f"{self.address}:{self.inbound_port}"


@dataclass(frozen=True)
class Host:
    """One endpoint of a client's cluster, from Envoy's admin `/clusters`."""

    address: str
    priority: int
    zone: str
    healthy: bool
    requests: int


def parse_hosts(statuses: list[dict[str, Any]], cluster: str) -> list[Host]:
    """The hosts of `cluster` in Envoy's admin `/clusters?format=json` `cluster_statuses`."""
    out = []
    for status in statuses:
        if status.get("name") != cluster:
            continue
        for host in status.get("host_statuses", []):
            sock = host.get("address", {}).get("socket_address", {})
            stats = {s.get("name"): int(s.get("value", 0)) for s in host.get("stats", [])}
            health = host.get("health_status", {})
            flags = [k for k, v in health.items() if k != "eds_health_status" and v is True]
            out.append(
                Host(
                    address=f"{sock.get('address')}:{sock.get('port_value')}",
                    priority=int(host.get("priority", 0)),
                    zone=host.get("locality", {}).get("zone", ""),
                    healthy=health.get("eds_health_status", "HEALTHY") == "HEALTHY" and not flags,
                    requests=stats.get("rq_total", 0),
                )
            )
    return out


class SlotClaim:
    """A run's claim on 127.<slot>.N.x: an flock on a file in the temp directory, which the
    kernel drops if this process dies."""

    def __init__(self, addresses: list[str]) -> None:
        self.slot = -1
        self._fd: int | None = None
        for slot in range(MAX_SLOTS):
            path = Path(tempfile.gettempdir()) / f"zonemesh-demo-slot-{slot}.lock"
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            wanted = [a.format(slot=slot) for a in addresses]
            if all(port_is_free(a, ECHO_PORT) for a in wanted):
                self.slot, self._fd = slot, fd
                return
            os.close(fd)  # someone else (not a demo) holds one of them
        raise ProcessError(f"no free address slot: port {ECHO_PORT} is taken on every one")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class TwoZoneMesh:
    """The demo topology; see the module docstring. Synchronous; use `with` or `stop()`.
    Other shapes (three zones, a zone with a client only) through the constructor's
    `zones` / `instances`.

    Drive it from one long-lived thread (children die with the thread that started them):

        with TwoZoneMesh() as mesh:           # or mesh = TwoZoneMesh(); mesh.start() ... stop()
            mesh.ask("zone1")                 # [Answer(ok, zone="zone1", instance=...)]
            with Load(mesh.client_url("zone1")) as load:
                t = time.monotonic()
                mesh.stop_zone_instances("zone1")
                ...load.settled_at(t, "zone2")  # when answers moved to zone2
            mesh.start_zone_instances("zone1")
    """

    with_clients = True  # a client sidecar per zone (the DR topology has external clients)

    def __init__(
        self,
        run_dir: Path | None = None,
        *,
        log_level: str = "info",
        zones: tuple[str, ...] = ZONES,
        instances: dict[str, int] | None = None,
        cp_env: dict[str, str] | None = None,
        store: str = "memory",
    ) -> None:
        """`zones` and `instances` (echo instances per zone, 0 allowed: a zone with only a
        client) shape the topology; `cp_env`: settings (env names) for every CP; `store`
        theirs (`sqlite` keeps a CP's tokens and proxies across a restart)."""
        self.store = store
        self.zones = tuple(zones)
        self.instance_counts = dict(instances if instances is not None else INSTANCES)
        self.cp_env = dict(cp_env or {})
        self.run_dir = Path(run_dir) if run_dir is not None else new_run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_level = log_level
        self.group = ProcessGroup(self.run_dir)
        self.slot: SlotClaim | None = None
        self.cps: dict[str, ControlPlane] = {}
        self.ingresses: dict[str, Proxy] = {}
        self.instances: dict[str, list[Proxy]] = {}
        self.clients: dict[str, Proxy] = {}
        self._taken: set[tuple[str, int]] = set()

    # --- addresses -------------------------------------------------------------------------

    def address(self, zone: str, host: int) -> str:
        assert self.slot is not None
        return f"127.{self.slot.slot}.{self.zones.index(zone) + 1}.{host}"

    def _port(self, address: str = "127.0.0.1") -> int:
        return free_port(address, self._taken)

    def _common_port(self, addresses: list[str]) -> int:
        """One port free on every address: instances of a service share their inbound port,
        as the generated MeshService's `targetPort` is a single number."""
        for _ in range(100):
            port = free_port(addresses[0])
            pairs = {(a, port) for a in addresses}
            if not pairs & self._taken and all(port_is_free(a, port) for a in addresses):
                self._taken |= pairs
                return port
        raise ProcessError(f"no port free on all of {addresses}")

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> TwoZoneMesh:
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
        """Everything; returns once every client answers from its own zone on both MMZS ports
        and knows the other zone's ingress as its failover. The apps start while the CPs
        start, then every proxy at once: most of a start is processes booting, which overlaps."""
        self.slot = SlotClaim(
            [
                f"127.{{slot}}.{self.zones.index(z) + 1}.{11 + i}"
                for z in self.zones
                for i in range(self.instance_counts.get(z, 0))
            ]
        )
        self._plan()
        self._write_files()
        self._start_together()
        self.wait_ready()

    def stop(self) -> None:
        """Stop every process (SIGTERM, SIGKILL after a timeout) and release the slot."""
        try:
            self.group.__exit__(None, None, None)
        finally:
            if self.slot is not None:
                self.slot.release()

    def _control_plane(self, name: str, address: str) -> ControlPlane:
        api, xds, kds, https = (self._port(address) for _ in range(4))
        return ControlPlane(name, address, api, xds, kds, https, self.run_dir / f"cp-{name}-data")

    def _plan(self) -> None:
        self.cps["global"] = self._control_plane("global", "127.0.0.1")
        echo_inbound = self._common_port(
            [
                self.address(z, 11 + i)
                for z in self.zones
                for i in range(self.instance_counts.get(z, 0))
            ]
        )
        for zone in self.zones:
            self.cps[zone] = self._control_plane(zone, self.address(zone, 1))
            self.ingresses[zone] = self._ingress(zone)
            self.instances[zone] = [
                self._instance(zone, i, echo_inbound)
                for i in range(self.instance_counts.get(zone, 0))
            ]
            if self.with_clients:
                self.clients[zone] = self._client(zone)

    def _ingress(self, zone: str) -> Proxy:
        address = self.address(zone, 100)
        port = self._port(address)
        resource = {
            "type": "ZoneIngress",
            "name": f"ingress-{zone}",
            "networking": {
                "address": address,
                "port": port,
                "advertisedAddress": address,
                "advertisedPort": port,
            },
        }
        return Proxy(f"ingress-{zone}", zone, address, self._port(), resource)

    def _instance(self, zone: str, index: int, inbound: int) -> Proxy:
        address = self.address(zone, 11 + index)
        name = f"echo-{zone}-{index + 1}"
        resource = {
            "type": "Dataplane",
            "mesh": MESH,
            "name": name,
            "networking": {
                "address": address,
                "inbound": [
                    {
                        "port": inbound,
                        "servicePort": ECHO_PORT,
                        "tags": {"kuma.io/service": "echo", "kuma.io/protocol": "http"},
                    }
                ],
            },
        }
        return Proxy(name, zone, address, self._port(), resource, ECHO_PORT, inbound)

    def _client(self, zone: str) -> Proxy:
        address = self.address(zone, 50)
        name = f"client-{zone}"
        app, inbound = self._port(address), self._port(address)
        outbounds = {HTTP_MMZS: self._port(address), TCP_MMZS: self._port(address)}
        resource = {
            "type": "Dataplane",
            "mesh": MESH,
            "name": name,
            "networking": {
                "address": address,
                "inbound": [
                    {
                        "port": inbound,
                        "servicePort": app,
                        "tags": {"kuma.io/service": name, "kuma.io/protocol": "http"},
                    }
                ],
                "outbound": [
                    {
                        "address": address,
                        "port": port,
                        "backendRef": {
                            "kind": "MeshMultiZoneService",
                            "name": service,
                            "port": ECHO_PORT,
                        },
                    }
                    for service, port in outbounds.items()
                ],
            },
        }
        return Proxy(name, zone, address, self._port(), resource, app, inbound, outbounds)

    def _write_files(self) -> None:
        for proxy in self.proxies():
            (self.run_dir / f"{proxy.name}.yaml").write_text(
                yaml.safe_dump(proxy.resource, sort_keys=False)
            )
        (self.run_dir / "mmzs.yaml").write_text(
            yaml.safe_dump_all([mmzs(HTTP_MMZS, "http"), mmzs(TCP_MMZS, "tcp")], sort_keys=False)
        )
        (self.run_dir / "topology.json").write_text(json.dumps(self.describe(), indent=2))

    def proxies(self) -> list[Proxy]:
        return [p for z in self.zones for p in self.zone_proxies(z)]

    def zone_proxies(self, zone: str) -> list[Proxy]:
        """Every data plane of `zone`: its ingress, its instances, its client if it has one."""
        client = [self.clients[zone]] if zone in self.clients else []
        return [self.ingresses[zone], *self.instances[zone], *client]

    def proxy_type(self, proxy: Proxy) -> str:
        """`dp run --proxy-type` (and the token's type) of `proxy`."""
        return "ingress" if proxy is self.ingresses.get(proxy.zone) else "dataplane"

    def describe(self) -> dict[str, Any]:
        """Where everything listens (also written to `<run_dir>/topology.json`)."""
        return {
            "runDir": str(self.run_dir),
            "tokens": str(self.tokens_dir),
            "controlPlanes": {
                n: {
                    "api": cp.url,
                    "https": cp.https_url,
                    "xds": cp.xds_address,
                    "kds": cp.kds_address,
                    "caFile": str(cp.ca_file),
                }
                for n, cp in self.cps.items()
            },
            "zoneTokens": {z: str(self.zone_token_file(z)) for z in self.zones},
            "proxies": {
                p.name: {
                    "zone": p.zone,
                    "address": p.address,
                    "admin": p.admin_url,
                    "app": f"{p.address}:{p.app_port}" if p.app_port else None,
                    "inbound": p.inbound_port,
                    "outbounds": p.outbounds,
                }
                for p in self.proxies()
            },
        }

    # --- starting pieces -------------------------------------------------------------------

    def _start_control_planes(self) -> None:
        glob = self.cps["global"]
        self.group.spawn("cp-global", self._cp_args(glob, "--mode", "global"), env=self.cp_env)
        self.group.wait_http("cp-global", f"{glob.url}/ready", timeout=START_TIMEOUT_S)
        for path, doc in self.global_resources():
            response = httpx.put(f"{glob.url}{path}", json=doc, timeout=10)
            if response.status_code not in (200, 201):
                raise ProcessError(f"PUT {path} on global: {response.status_code} {response.text}")
        for zone in self.zones:
            cp = self.cps[zone]
            args = ("--mode", "zone", "--zone", zone, "--global-address", glob.kds_address)
            env = {
                **self.cp_env,
                "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE": str(glob.ca_file),
                "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_PATH": str(self._zone_token(zone)),
            }
            self.group.spawn(f"cp-{zone}", self._cp_args(cp, *args), env=env)
        for zone in self.zones:
            cp = self.cps[zone]
            self.group.wait_http(f"cp-{zone}", f"{cp.url}/ready", timeout=START_TIMEOUT_S)
            self._issue_tokens(zone)
            # A Dataplane needs its mesh, and a client's outbounds their MMZS: all sync down.
            paths = [f"/meshes/{MESH}", *(path for path, _ in self.global_resources())]
            for path in paths:
                self.group.wait_http(f"cp-{zone}", f"{cp.url}{path}", timeout=START_TIMEOUT_S)

    def global_resources(self) -> list[tuple[str, dict[str, Any]]]:
        """What is applied on global before the zones start, as (API path, document); each
        zone waits until it has synced all of it."""
        return [
            (f"/meshes/{MESH}/meshmultizoneservices/{name}", mmzs(name, protocol))
            for name, protocol in ((HTTP_MMZS, "http"), (TCP_MMZS, "tcp"))
        ]

    def zone_token_file(self, zone: str) -> Path:
        return self.run_dir / "zone-tokens" / f"{zone}.token"

    def _zone_token(self, zone: str) -> Path:
        """Global issues the zone's token (its API is admin from loopback); the zone CP reads
        it from a file only this user can read, as an operator would deploy it."""
        response = httpx.post(
            f"{self.cps['global'].url}/tokens/zone",
            json={"zone": zone, "validFor": "24h"},
            timeout=10,
        )
        if response.status_code != 200:
            raise ProcessError(
                f"POST /tokens/zone on global: {response.status_code} {response.text}"
            )
        path = self.zone_token_file(zone)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(response.text)
        return path

    def _start_together(self) -> None:
        """The apps (which need nothing) while the CPs start, then every proxy at once."""
        with_app = [p for p in self.proxies() if p.app_port is not None]
        for proxy in with_app:
            self._start_app(proxy, wait=False)
        self._start_control_planes()
        for proxy in self.proxies():
            self._start_proxy(proxy, self.proxy_type(proxy), wait=False)
        for proxy in with_app:
            url = f"http://{proxy.address}:{proxy.app_port}/"
            self.group.wait_http(proxy.app, url, timeout=START_TIMEOUT_S)
        for proxy in self.proxies():
            self.group.wait_http(proxy.sidecar, f"{proxy.admin_url}/ready", timeout=START_TIMEOUT_S)

    @property
    def tokens_dir(self) -> Path:
        return self.run_dir / "tokens"

    def token_path(self, proxy: Proxy) -> Path:
        return self.tokens_dir / f"{proxy.name}.token"

    def _issue_tokens(self, zone: str) -> None:
        """A token per proxy of `zone`, bound to its name and type, from the zone CP."""
        self.tokens_dir.mkdir(mode=0o700, exist_ok=True)
        cp = self.cps[zone]
        for proxy in self.zone_proxies(zone):
            body = {
                "mesh": MESH,
                "name": proxy.name,
                "type": self.proxy_type(proxy),
                "validFor": "24h",
            }
            response = httpx.post(f"{cp.url}/tokens/dataplane", json=body, timeout=10)
            if response.status_code != 200:
                raise ProcessError(
                    f"POST /tokens/dataplane on cp-{zone}: {response.status_code} {response.text}"
                )
            path = self.token_path(proxy)
            path.touch(mode=0o600)
            path.write_text(response.text.strip())

    def _cp_args(self, cp: ControlPlane, *extra: str) -> list[str]:
        return [
            *("cp", "run", *extra, "--address", cp.address),
            *("--api-port", str(cp.api_port), "--xds-port", str(cp.xds_port)),
            *("--kds-port", str(cp.kds_port), "--https-port", str(cp.https_port)),
            *("--store", self.store, "--data-dir", str(cp.data_dir)),
            *("--log-level", self.log_level),
        ]

    def _dp_args(self, proxy: Proxy, proxy_type: str) -> list[str]:
        return [
            *("dp", "run", "--cp-address", self.cps[proxy.zone].xds_address),
            *("--ca-cert-file", str(self.cps[proxy.zone].ca_file)),
            *("--dataplane-file", str(self.run_dir / f"{proxy.name}.yaml")),
            *("--proxy-type", proxy_type, "--admin-port", str(proxy.admin_port)),
            *("--dataplane-token-file", str(self.token_path(proxy))),
            *("--log-level", self.log_level),
        ]

    def _start_proxy(self, proxy: Proxy, proxy_type: str, wait: bool = True) -> None:
        if proxy.sidecar not in self.group.procs:
            self.group.add(proxy.sidecar, self._dp_args(proxy, proxy_type))
        self.group.start(proxy.sidecar)
        if wait:
            self.group.wait_http(proxy.sidecar, f"{proxy.admin_url}/ready", timeout=START_TIMEOUT_S)

    def _start_app(self, proxy: Proxy, wait: bool = True) -> None:
        assert proxy.app_port is not None
        if proxy.app not in self.group.procs:
            args = ["echo", "--address", proxy.address, "--port", str(proxy.app_port)]
            args += ["--zone", proxy.zone, "--instance", proxy.name]
            self.group.add(proxy.app, args)
        self.group.start(proxy.app)
        if wait:
            self.group.wait_http(
                proxy.app, f"http://{proxy.address}:{proxy.app_port}/", timeout=START_TIMEOUT_S
            )

    # --- what the demo and the tests change ------------------------------------------------

    def instance(self, zone: str, index: int) -> Proxy:
        return self.instances[zone][index]

    def stop_zone_instances(self, zone: str) -> None:
        """Every echo instance of `zone`, apps and sidecars at once (a zone outage)."""
        names_ = [n for i in self.instances[zone] for n in (i.app, i.sidecar)]
        self.group.stop(*[n for n in names_ if self.group[n].running])

    def start_zone_instances(self, zone: str) -> None:
        """Start every stopped app and sidecar of `zone`'s echo instances; wait until ready."""
        instances = self.instances[zone]
        for instance in instances:
            if not self.group[instance.app].running:
                self._start_app(instance, wait=False)
        for instance in instances:
            if not self.group[instance.sidecar].running:
                self._start_proxy(instance, "dataplane", wait=False)
        for instance in instances:
            self.group.wait_http(
                instance.app,
                f"http://{instance.address}:{instance.app_port}/",
                timeout=START_TIMEOUT_S,
            )
            self.group.wait_http(
                instance.sidecar, f"{instance.admin_url}/ready", timeout=START_TIMEOUT_S
            )

    def stop_app(self, zone: str, index: int) -> None:
        """Only the app; its sidecar stays up and reports it not ready."""
        self.group.stop(self.instance(zone, index).app)

    def start_app(self, zone: str, index: int) -> None:
        self._start_app(self.instance(zone, index))

    def kill_cp(self, name: str) -> None:
        """SIGKILL a control plane (`global` or a zone): nothing gets to clean up."""
        self.group[f"cp-{name}"].kill()

    def start_cp(self, name: str) -> None:
        """Start a stopped control plane again, on the same ports and data directory."""
        self.group.start(f"cp-{name}")
        cp = self.cps[name]
        self.group.wait_http(f"cp-{name}", f"{cp.url}/ready", timeout=START_TIMEOUT_S)

    def global_api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the global CP's API (admin from loopback)."""
        return httpx.request(method, f"{self.cps['global'].url}{path}", timeout=10, **kwargs)

    def client_url(self, zone: str, tcp: bool = False) -> str:
        client = self.clients[zone]
        return f"http://{client.address}:{client.outbounds[TCP_MMZS if tcp else HTTP_MMZS]}/"

    def load(self, zone: str, interval: float) -> Load:
        """A background load from `zone`'s client (not started)."""
        return Load(self.client_url(zone), interval=interval)

    mode = "loopback"
    target = "echo.mzsvc (port 1027)"

    def mode_line(self) -> str:
        return "mode: loopback (clients call 127.x outbound listeners declared in their Dataplanes)"

    # --- observing -------------------------------------------------------------------------

    def ask(self, zone: str, tcp: bool = False, count: int = 1) -> list[Answer]:
        """`count` requests from `zone`'s client, one connection each."""
        return ask_many(self.client_url(zone, tcp), count)

    @staticmethod
    def cluster_name(tcp: bool = False) -> str:
        return mmzs_cluster_name(MESH, TCP_MMZS if tcp else HTTP_MMZS, ECHO_PORT)

    def hosts(self, zone: str, tcp: bool = False) -> list[Host]:
        """The endpoints `zone`'s client sidecar has for an MMZS port (empty if unreachable)."""
        try:
            response = httpx.get(
                f"{self.clients[zone].admin_url}/clusters", params={"format": "json"}, timeout=2
            )
            statuses = response.json().get("cluster_statuses", [])
        except (httpx.HTTPError, ValueError):
            return []
        return parse_hosts(statuses, self.cluster_name(tcp))

    def stats(self, proxy: Proxy, pattern: str) -> dict[str, int]:
        """Counters and gauges of `proxy`'s Envoy whose name matches the regex `pattern`."""
        response = httpx.get(f"{proxy.admin_url}/stats", params={"filter": pattern}, timeout=2)
        out = {}
        for line in response.text.splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                with contextlib.suppress(ValueError):
                    out[key] = int(value)
        return out

    def cluster_stat(self, zone: str, stat: str, tcp: bool = False) -> int:
        """One counter of the client's MMZS cluster, e.g. `ssl.handshake`."""
        name = f"cluster.{self.cluster_name(tcp)}.{stat}"
        return self.stats(self.clients[zone], f"^{name.replace('.', '[.]')}$").get(name, 0)

    def wait_answers_from(
        self, zone: str, expected: str, *, tcp: bool = False, streak: int = 10, timeout: float = 30
    ) -> None:
        """Until `streak` requests in a row from `zone`'s client are answered by `expected`."""
        url = self.client_url(zone, tcp)
        with new_client() as client:
            run = 0

            def settled() -> bool:
                nonlocal run
                answer = ask(client, url)
                run = run + 1 if answer.ok and answer.zone == expected else 0
                return run >= streak

            self.group.wait_until(
                f"{zone} client ({'tcp' if tcp else 'http'}) answered by {expected}",
                settled,
                timeout=timeout,
                interval=0.02,
                watch=self.group.running(),
            )

    def wait_hosts(
        self,
        zone: str,
        what: str,
        predicate: Callable[[list[Host]], bool],
        *,
        tcp: bool = False,
        timeout: float = 30,
    ) -> list[Host]:
        """Until `predicate(hosts)` holds for `zone`'s client cluster; the hosts."""

        def check() -> list[Host] | None:
            hosts = self.hosts(zone, tcp)
            return hosts if predicate(hosts) else None

        return self.group.wait_until(
            f"{zone} client: {what}",
            check,
            timeout=timeout,
            watch=[self.clients[zone].sidecar, f"cp-{zone}"],
        )

    def ingress_endpoint(self, zone: str) -> str:
        """`address:port` other zones' sidecars dial for `zone` (its advertised address)."""
        ingress = self.ingresses[zone]
        return f"{ingress.address}:{ingress.resource['networking']['advertisedPort']}"

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Every client has its local instances at priority 0 and the ingress of every other
        zone with instances at priority 1 (so failover does not wait for a configuration
        push), and answers from its own zone on both ports if it has instances."""
        for zone in self.zones:
            remotes = {
                self.ingress_endpoint(z) for z in self.zones if z != zone and self.instances[z]
            }
            local = {i.endpoint for i in self.instances[zone]}
            for tcp in (False, True):
                self.wait_hosts(
                    zone,
                    f"all local instances at priority 0 and {sorted(remotes)} at priority 1",
                    lambda hosts, local=local, remotes=remotes: (
                        {h.address for h in hosts if h.priority == 0} == local
                        and remotes <= {h.address for h in hosts if h.priority == 1}
                    ),
                    tcp=tcp,
                    timeout=timeout,
                )
                if local:
                    self.wait_answers_from(zone, zone, tcp=tcp, timeout=timeout)
