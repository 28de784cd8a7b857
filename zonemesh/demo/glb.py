"""The global load balancer of the disaster-recovery demo: a plain Envoy outside the mesh.

It stands where the seed's "Global Load Balancer" stands, in front of one edge gateway per
zone, and knows nothing of the mesh: a static bootstrap (no xDS), one cluster whose endpoints
are the gateways' listeners. Three mechanisms make a lost zone cost few requests:

- active HTTP health checks of each gateway's listener, on a path the gateway routes to the
  service (so a gateway that still serves, from another zone, stays in: the mesh fails over
  below it and the load balancer changes nothing), every 0.5 s, out after 2 failures;
- outlier detection: a refused or reset connection ejects that gateway at once;
- retries on another gateway for connect failures, resets and 502/503/504, so the requests
  caught by the loss are answered by the other zone.

Each answer carries the gateway that served it in `UPSTREAM_HEADER`, which is how the demo
counts per gateway from outside.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

CLUSTER = "edge-gateways"
UPSTREAM_HEADER = "x-zonemesh-glb-upstream"
HEALTH_PATH = "/echo/glb-health"
HEALTH_INTERVAL_S = 0.5
UNHEALTHY_THRESHOLD = 2
HEALTHY_THRESHOLD = 2

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_DOWNSTREAM_LIMIT = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
    "DownstreamConnectionsConfig"
)
_PREVIOUS_HOSTS = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)


@dataclass(frozen=True)
class Backend:
    """One edge gateway's listener, as the load balancer sees it."""

    zone: str
    address: str
    port: int

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass
class GlobalLoadBalancer:
    """Where it listens and which gateways it sends to; `bootstrap()` is its whole config."""

    address: str
    port: int
    admin_port: int
    backends: list[Backend] = field(default_factory=list)
    health_path: str = HEALTH_PATH

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def zone_of_upstream(self, upstream: str) -> str:
        """The zone of the gateway at `upstream` (`address:port`, from `UPSTREAM_HEADER`)."""
        for backend in self.backends:
            if backend.endpoint == upstream:
                return backend.zone
        return ""

    def bootstrap(self) -> dict[str, Any]:
        return {
            "node": {"id": "global-load-balancer", "cluster": "global-load-balancer"},
            "admin": {"address": _socket("127.0.0.1", self.admin_port)},
            "static_resources": {"listeners": [self._listener()], "clusters": [self._cluster()]},
            "overload_manager": {
                "resource_monitors": [
                    {
                        "name": "envoy.resource_monitors.global_downstream_max_connections",
                        "typed_config": {
                            "@type": _DOWNSTREAM_LIMIT,
                            "max_active_downstream_connections": 10000,
                        },
                    }
                ]
            },
        }

    def _listener(self) -> dict[str, Any]:
        route = {
            "match": {"prefix": "/"},
            "route": {
                "cluster": CLUSTER,
                "timeout": "5s",
                "retry_policy": {
                    "retry_on": "connect-failure,refused-stream,reset,gateway-error",
                    "num_retries": 2,
                    "per_try_timeout": "2s",
                    "retry_host_predicate": [
                        {
                            "name": "envoy.retry_host_predicates.previous_hosts",
                            "typed_config": {"@type": _PREVIOUS_HOSTS},
                        }
                    ],
                    "host_selection_retry_max_attempts": 5,
                },
            },
            "response_headers_to_add": [
                {"header": {"key": UPSTREAM_HEADER, "value": "%UPSTREAM_HOST%"}}
            ],
        }
        manager = {
            "@type": _HCM + "HttpConnectionManager",
            "stat_prefix": "glb",
            "route_config": {
                "name": "glb",
                "virtual_hosts": [{"name": "gateways", "domains": ["*"], "routes": [route]}],
            },
            "http_filters": [
                {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}
            ],
        }
        return {
            "name": "glb",
            "address": _socket(self.address, self.port),
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": manager,
                        }
                    ]
                }
            ],
        }

    def _cluster(self) -> dict[str, Any]:
        interval = f"{HEALTH_INTERVAL_S}s"
        return {
            "name": CLUSTER,
            "type": "STATIC",
            "connect_timeout": "0.25s",
            "lb_policy": "ROUND_ROBIN",
            # Never spread over unhealthy gateways: one zone left means that zone only.
            "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
            "load_assignment": {
                "cluster_name": CLUSTER,
                "endpoints": [
                    {
                        "locality": {"zone": b.zone},
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": _socket(b.address, b.port),
                                    "hostname": f"gateway-{b.zone}",
                                }
                            }
                        ],
                    }
                    for b in self.backends
                ],
            },
            "health_checks": [
                {
                    "timeout": "0.4s",
                    "interval": interval,
                    "no_traffic_interval": interval,  # default 60 s: before the first request
                    "unhealthy_interval": interval,
                    "unhealthy_threshold": UNHEALTHY_THRESHOLD,
                    "healthy_threshold": HEALTHY_THRESHOLD,
                    "always_log_health_check_failures": True,
                    "http_health_check": {"path": self.health_path, "host": "glb-health-check"},
                }
            ],
            "outlier_detection": {
                "split_external_local_origin_errors": True,
                "consecutive_local_origin_failure": 1,
                "enforcing_consecutive_local_origin_failure": 100,
                "consecutive_gateway_failure": 2,
                "enforcing_consecutive_gateway_failure": 100,
                "interval": interval,
                "base_ejection_time": "2s",
                "max_ejection_percent": 50,
            },
        }

    def write(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump(self.bootstrap(), sort_keys=False))
        return path

    def envoy_args(self, config: Path, work_dir: Path) -> list[str]:
        """Arguments of the Envoy binary that runs this load balancer."""
        return [
            *("-c", str(config), "--concurrency", "1", "--drain-time-s", "1"),
            *("--log-level", "warn", "--use-dynamic-base-id"),
            *("--base-id-path", str(work_dir / "glb-base-id")),
        ]

    def health(self, timeout: float = 2.0) -> dict[str, bool]:
        """Per zone: does the load balancer send to that zone's gateway (healthy, not
        ejected)? Empty if its admin does not answer."""
        try:
            response = httpx.get(
                f"{self.admin_url}/clusters", params={"format": "json"}, timeout=timeout
            )
            statuses = response.json().get("cluster_statuses", [])
        except (httpx.HTTPError, ValueError):
            return {}
        out = {}
        for status in statuses:
            if status.get("name") != CLUSTER:
                continue
            for host in status.get("host_statuses", []):
                sock = host.get("address", {}).get("socket_address", {})
                zone = self.zone_of_upstream(f"{sock.get('address')}:{sock.get('port_value')}")
                flags = host.get("health_status", {})
                bad = [k for k, v in flags.items() if k != "eds_health_status" and v is True]
                out[zone] = not bad and flags.get("eds_health_status", "HEALTHY") == "HEALTHY"
        return out


def validate(binary: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate`: Envoy's own verdict on the bootstrap, without serving."""
    return subprocess.run(
        [str(binary), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}
