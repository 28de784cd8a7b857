"""The seed's disaster-recovery picture on loopback: external clients -> a global load balancer
-> an edge gateway per zone -> the `echo` MeshMultiZoneService -> the nearest healthy zone.

`DrMesh` is the two-zone mesh of `TwoZoneMesh` (global CP, a zone CP, a zone ingress and echo
instances per zone) without its client sidecars, plus:

- the `edge-gateway` MeshGateway and its `/echo` MeshHTTPRoute, applied on global;
- a builtin gateway instance per zone, `gateway-<zone>` on 127.x.N.60 (a `dp run`);
- the global load balancer (`glb.py`), a plain Envoy on 127.x.0.200 in front of both.

A zone can be lost and brought back whole: `kill_zone` SIGKILLs every process group of the
zone (CP, ingress, gateway, apps, sidecars) at once; `restore_zone` starts its CP again on the
same data directory (SQLite: tokens, signing keys, CA and resources survive), then its proxies.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import yaml

from zonemesh.demo.gateways import (
    ROUTE_PREFIX,
    api_path,
    delegated_gateway_dataplane,
    echo_route,
    gateway_dataplane,
    mesh_gateway,
)
from zonemesh.demo.glb import UPSTREAM_HEADER, Backend, GlobalLoadBalancer
from zonemesh.demo.processes import ZONEMESH, ProcessError
from zonemesh.demo.topology import (
    ECHO_PORT,
    HTTP_MMZS,
    MESH,
    START_TIMEOUT_S,
    Host,
    Proxy,
    TwoZoneMesh,
    parse_hosts,
)
from zonemesh.demo.traffic import Answer, Load, ask, new_client
from zonemesh.dp.envoy import envoy_binary

GATEWAY_HOST = 60
GLB_HOST = 200
GLB_PROCESS = "global-load-balancer"
GATEWAY_KINDS = ("builtin", "delegated")
_MMZS_CLUSTER = re.compile(rf"{re.escape(MESH)}_{re.escape(HTTP_MMZS)}_+mzsvc_{ECHO_PORT}")


class DrMesh(TwoZoneMesh):
    """See the module docstring. Drive it like `TwoZoneMesh`, from one long-lived thread."""

    with_clients = False
    mode = "loopback"
    target = "the global load balancer (GET /echo)"

    def __init__(
        self, run_dir: Path | None = None, *, log_level: str = "info", gateway: str = "builtin"
    ) -> None:
        """`gateway`: `builtin` (MeshGateway + MeshHTTPRoute, Envoy as the gateway) or
        `delegated` (a Dataplane's MMZS outbound where the gateway listens)."""
        if gateway not in GATEWAY_KINDS:
            raise ValueError(f"gateway must be one of {', '.join(GATEWAY_KINDS)}, not {gateway!r}")
        super().__init__(run_dir, log_level=log_level, store="sqlite")
        self.gateway_kind = gateway
        self.gateways: dict[str, Proxy] = {}
        self.gateway_port = 0
        self._glb: GlobalLoadBalancer | None = None

    @property
    def glb(self) -> GlobalLoadBalancer:
        if self._glb is None:
            raise ProcessError("the global load balancer is planned at start()")
        return self._glb

    # --- the plan --------------------------------------------------------------------------

    def _plan(self) -> None:
        super()._plan()
        assert self.slot is not None
        addresses = [self.address(z, GATEWAY_HOST) for z in self.zones]
        # The MeshGateway's listener port is one number for every instance.
        self.gateway_port = self._common_port(addresses)
        for zone, address in zip(self.zones, addresses, strict=True):
            name = f"gateway-{zone}"
            resource = (
                gateway_dataplane(MESH, name, address)
                if self.gateway_kind == "builtin"
                else delegated_gateway_dataplane(
                    MESH, name, address, self.gateway_port, HTTP_MMZS, ECHO_PORT
                )
            )
            self.gateways[zone] = Proxy(
                name, zone, address, self._port(), resource, inbound_port=self.gateway_port
            )
        glb_address = f"127.{self.slot.slot}.0.{GLB_HOST}"
        backends = [Backend(z, self.gateways[z].address, self.gateway_port) for z in self.zones]
        self._glb = GlobalLoadBalancer(glb_address, self._port(glb_address), self._port(), backends)

    def gateway_resources(self) -> list[dict[str, Any]]:
        """The MeshGateway and its route (none for a delegated gateway)."""
        if self.gateway_kind != "builtin":
            return []
        return [mesh_gateway(MESH, self.gateway_port), echo_route(MESH, HTTP_MMZS, ECHO_PORT)]

    def global_resources(self) -> list[tuple[str, dict[str, Any]]]:
        docs = self.gateway_resources()
        return [*super().global_resources(), *((api_path(MESH, d), d) for d in docs)]

    def zone_proxies(self, zone: str) -> list[Proxy]:
        gateway = [self.gateways[zone]] if zone in self.gateways else []
        return [*super().zone_proxies(zone), *gateway]

    def _write_files(self) -> None:
        super()._write_files()
        docs = self.gateway_resources()
        if docs:
            (self.run_dir / "edge-gateway.yaml").write_text(
                yaml.safe_dump_all(docs, sort_keys=False)
            )
        self.glb.write(self.glb_config)

    @property
    def glb_config(self) -> Path:
        return self.run_dir / "global-load-balancer.yaml"

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self._glb is not None:
            out["globalLoadBalancer"] = {
                "url": self.glb.url,
                "admin": self.glb.admin_url,
                "config": str(self.glb_config),
                "gateways": {b.zone: b.endpoint for b in self.glb.backends},
            }
        return out

    # --- starting --------------------------------------------------------------------------

    def _start_together(self) -> None:
        super()._start_together()
        binary = envoy_binary()
        if GLB_PROCESS not in self.group.procs:
            args = self.glb.envoy_args(self.glb_config, self.run_dir)
            self.group.add(GLB_PROCESS, args, program=[str(binary)])
        self.group.start(GLB_PROCESS)
        self.group.wait_http(GLB_PROCESS, f"{self.glb.admin_url}/ready", timeout=START_TIMEOUT_S)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Each gateway answers `/echo` from its own zone and has the other zone's ingress
        at priority 1 (failover without waiting for a push); the load balancer sends to both."""
        for zone in self.zones:
            others = {self.ingress_endpoint(z) for z in self.zones if z != zone}
            self.group.wait_until(
                f"gateway-{zone}: the other zones' ingresses at priority 1",
                lambda zone=zone, others=others: (
                    others <= {h.address for h in self.gateway_hosts(zone) if h.priority == 1}
                ),
                timeout=timeout,
                watch=[self.gateways[zone].sidecar, f"cp-{zone}"],
            )
            self._wait_streak(self.gateway_url(zone), zone, None, timeout)
        self.group.wait_until(
            "global load balancer: both gateways healthy",
            lambda: all(self.glb.health().get(z) for z in self.zones),
            timeout=timeout,
            watch=[GLB_PROCESS],
        )

    def _wait_streak(
        self, url: str, zone: str, via_zone: str | None, timeout: float, streak: int = 10
    ) -> None:
        """Until `streak` requests in a row to `url` are answered by `zone` (and, through the
        load balancer, by `via_zone`'s gateway)."""
        with new_client() as client:
            run = 0

            def settled() -> bool:
                nonlocal run
                answer = ask(client, url, UPSTREAM_HEADER)
                good = answer.ok and answer.zone == zone
                if via_zone is not None:
                    good = good and self.glb.zone_of_upstream(answer.via) == via_zone
                run = run + 1 if good else 0
                return run >= streak

            self.group.wait_until(
                f"{url} answered by {zone}", settled, timeout=timeout, interval=0.02
            )

    # --- what the scenario changes ---------------------------------------------------------

    def zone_process_names(self, zone: str) -> list[str]:
        """Every process of `zone`: its CP and every data plane and app in it."""
        names = [f"cp-{zone}"]
        for proxy in self.zone_proxies(zone):
            names.append(proxy.sidecar)
            if proxy.app_port is not None:
                names.append(proxy.app)
        return names

    def kill_zone(self, zone: str) -> list[str]:
        """SIGKILL every running process of `zone` at once (a lost region); their names."""
        running = [n for n in self.zone_process_names(zone) if self.group[n].running]
        self.group.kill(*running)
        return running

    def restore_zone(self, zone: str) -> None:
        """The zone's CP first (with its state), then its apps and proxies; until ready."""
        self.start_cp(zone)
        proxies = self.zone_proxies(zone)
        for proxy in proxies:
            if proxy.app_port is not None and not self.group[proxy.app].running:
                self._start_app(proxy, wait=False)
        for proxy in proxies:
            if not self.group[proxy.sidecar].running:
                self._start_proxy(proxy, self.proxy_type(proxy), wait=False)
        for proxy in proxies:
            if proxy.app_port is not None:
                url = f"http://{proxy.address}:{proxy.app_port}/"
                self.group.wait_http(proxy.app, url, timeout=START_TIMEOUT_S)
            self.group.wait_http(proxy.sidecar, f"{proxy.admin_url}/ready", timeout=START_TIMEOUT_S)

    # --- observing -------------------------------------------------------------------------

    @property
    def glb_url(self) -> str:
        return f"{self.glb.url}{ROUTE_PREFIX}"

    def gateway_url(self, zone: str) -> str:
        gateway = self.gateways[zone]
        return f"http://{gateway.address}:{self.gateway_port}{ROUTE_PREFIX}"

    def load(self, zone: str, interval: float) -> Load:
        """An external client sending through the load balancer (`zone` names it only)."""
        return Load(self.glb_url, interval=interval, via_header=UPSTREAM_HEADER)

    def lb_health(self) -> dict[str, bool]:
        """Per zone: does the global load balancer send to its gateway?"""
        return self.glb.health()

    def gateway_zone(self, answer: Answer) -> str:
        """The zone whose gateway served `answer` (empty: unknown, e.g. refused)."""
        return self.glb.zone_of_upstream(answer.via)

    def gateway_hosts(self, zone: str) -> list[Host]:
        """The endpoints `zone`'s gateway has for the `echo` MMZS (empty if unreachable)."""
        try:
            response = httpx.get(
                f"{self.gateways[zone].admin_url}/clusters", params={"format": "json"}, timeout=2
            )
            statuses = response.json().get("cluster_statuses", [])
        except (httpx.HTTPError, ValueError):
            return []
        names = {s.get("name", "") for s in statuses if _MMZS_CLUSTER.match(s.get("name", ""))}
        return [h for name in sorted(names) for h in parse_hosts(statuses, name)]

    def mode_line(self) -> str:
        return (
            "mode: loopback, scenario dr (external clients -> a global load balancer -> "
            f"a {self.gateway_kind} edge gateway per zone -> the echo MMZS)"
        )

    def explore_lines(self) -> list[str]:
        """How to reproduce each phase by hand on the running mesh."""
        zm = "zonemesh" if shutil.which("zonemesh") == ZONEMESH else ZONEMESH
        pids = {n: self.group[n].pid for n in self.zone_process_names("zone1")}
        lines = [
            "The mesh keeps running; reproduce the phases by hand (Ctrl-C or SIGTERM stops it):",
            f"  curl -si {self.glb_url} | grep -i -e {UPSTREAM_HEADER} -e zone"
            "    # through the global load balancer",
        ]
        for zone in self.zones:
            lines.append(f"  curl -s {self.gateway_url(zone)}    # gateway-{zone} directly")
        instance_pids = [str(pids[n]) for i in self.instances["zone1"] for n in (i.app, i.sidecar)]
        lines += [
            f"  kill -TERM {' '.join(instance_pids)}    # zone1's echo instances fail: "
            "gateway-zone1 answers from zone2",
            f"  kill -KILL -- {' '.join(f'-{p}' for p in pids.values())}    # zone1 lost "
            "(each process group: CP, ingress, gateway, apps, sidecars)",
            f"  curl -s '{self.glb.admin_url}/clusters' | grep health_flags    # the LB's view",
            f"  {zm} inspect zones --cp {self.cps['global'].url}",
            f"  logs: {self.run_dir}/*.log   addresses: {self.run_dir}/topology.json",
        ]
        return lines
