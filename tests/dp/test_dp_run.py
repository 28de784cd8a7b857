"""`zonemesh dp run` as users run it: real CP, real Envoy, real app, a dataplane token from
the CP's API; the workload's key made by `dp run` and kept there."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.processes import ZONEMESH, CpProcess, free_port, wait_for
from support.sidecars import start, stop
from support.tokens import issue_dataplane_token, token_file

DATAPLANE = """\
type: Dataplane
mesh: default
name: echo-a
networking:
  address: 127.0.1.11
  inbound:
  - port: {inbound}
    servicePort: {app}
    tags: {{kuma.io/service: echo, kuma.io/protocol: http}}
"""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[CpProcess]:
    process = CpProcess(tmp_path, store="memory").start()
    yield process
    assert process.terminate() == 0


def test_bad_dataplane_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "dp.yaml"
    bad.write_text(DATAPLANE.format(inbound=70000, app=1027))
    result = subprocess.run(
        [ZONEMESH, "dp", "run", "--cp-address", "grpc://127.0.0.1:1", "--dataplane-file", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert (
        f"{bad}: networking.inbound[0].port: must be in inclusive range [1, 65535]" in result.stderr
    )
    assert "Traceback" not in result.stderr
    wrong_type = subprocess.run(
        [
            ZONEMESH,
            "dp",
            "run",
            "--cp-address",
            "grpc://127.0.0.1:1",
            "--dataplane-file",
            str(bad),
            "--proxy-type",
            "ingress",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "type: must be ZoneIngress for --proxy-type ingress" in wrong_type.stderr


def test_bootstrap_carries_identity_token_and_cp(tmp_path: Path) -> None:
    file = tmp_path / "dp.yaml"
    file.write_text(DATAPLANE.format(inbound=21027, app=1027))
    token = token_file(tmp_path, "echo-a", "the-token")
    result = subprocess.run(
        [
            ZONEMESH,
            "dp",
            "bootstrap",
            "--cp-address",
            "grpc://127.0.0.1:5678",
            "--dataplane-file",
            str(file),
            "--admin-port",
            "9902",
            "--dataplane-token-file",
            str(token),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    bootstrap = json.loads(result.stdout)
    assert bootstrap["node"]["id"] == "default.echo-a"
    assert bootstrap["node"]["metadata"]["dataplane.proxyType"] == "dataplane"
    assert json.loads(bootstrap["node"]["metadata"]["dataplane.resource"])["name"] == "echo-a"
    assert bootstrap["admin"]["address"]["socket_address"]["port_value"] == 9902
    (ads,) = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"]
    assert ads["initial_metadata"] == [{"key": "authorization", "value": "the-token"}]
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    sds = clusters["zonemesh_local_sds"]  # the TLS contexts' secrets: dp run's own SDS
    (endpoint,) = sds["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["pipe"]["path"].endswith("sds.sock")


def test_waits_for_an_absent_cp_and_stops_cleanly(tmp_path: Path) -> None:
    file = tmp_path / "dp.yaml"
    file.write_text(DATAPLANE.format(inbound=21027, app=1027))
    log = tmp_path / "dp.log"
    proc = start(
        [
            "dp",
            "run",
            "--cp-address",
            f"grpc://127.0.0.1:{free_port()}",
            "--dataplane-file",
            str(file),
            "--admin-port",
            "0",
        ],
        log,
    )
    wait_for(
        lambda: "not reachable (attempt 2)" in log.read_text(), timeout=20, message=log.read_text()
    )
    assert stop(proc) == 0


def test_a_refused_token_stops_dp_run_at_start_saying_why(tmp_path: Path, cp: CpProcess) -> None:
    file = tmp_path / "dp.yaml"
    file.write_text(DATAPLANE.format(inbound=free_port(), app=free_port()))
    other = issue_dataplane_token(cp.url, name="echo-b")
    for args, expected in (
        ([], "no dataplane token"),
        (["--dataplane-token", "garbage"], "the token is not a valid JWT"),
        (["--dataplane-token", other], 'the token is for proxy "echo-b", not "echo-a"'),
    ):
        result = subprocess.run(
            [
                *(ZONEMESH, "dp", "run", "--cp-address", cp.xds_address),
                *("--ca-cert-file", str(cp.ca_file)),
                *("--dataplane-file", str(file), "--admin-port", "0", *args),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1, result.stderr
        assert "Error: the control plane refused this proxy" in result.stderr
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
    assert cp.api("GET", "/meshes/default/dataplanes/echo-a").status_code == 404
    missing = subprocess.run(
        [
            *(ZONEMESH, "dp", "run", "--cp-address", "grpc://127.0.0.1:1"),
            *("--dataplane-file", str(file), "--dataplane-token-file", str(tmp_path / "nope")),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode != 0 and "nope: No such file or directory" in missing.stderr


def test_traffic_readiness_and_clean_shutdown(tmp_path: Path, cp: CpProcess) -> None:
    app_port, inbound_port = free_port(), free_port()
    file = tmp_path / "dp.yaml"
    file.write_text(DATAPLANE.format(inbound=inbound_port, app=app_port))
    token = token_file(
        tmp_path, "echo", issue_dataplane_token(cp.url, tags={"kuma.io/service": ["echo"]})
    )
    echo = start(
        ["echo", "--address", "127.0.1.11", "--port", str(app_port), "--instance", "echo-a"],
        tmp_path / "echo.log",
    )
    dp = start(
        [
            "dp",
            "run",
            "--cp-address",
            cp.xds_address,
            "--ca-cert-file",
            str(cp.ca_file),
            "--dataplane-file",
            str(file),
            "--admin-port",
            "0",
            "--dataplane-token-file",
            str(token),
        ],
        tmp_path / "dp.log",
    )
    try:

        def through_envoy() -> str | None:
            try:
                return httpx.get(f"http://127.0.1.11:{inbound_port}/x", timeout=2).json()[
                    "instance"
                ]
            except (httpx.HTTPError, ValueError, KeyError):
                return None

        assert (
            wait_for(through_envoy, timeout=20, message="no traffic through the sidecar")
            == "echo-a"
        )

        def state() -> str:
            response = cp.api("GET", "/meshes/default/meshservices/echo")
            return response.json()["spec"]["state"] if response.status_code == 200 else ""

        wait_for(lambda: state() == "Available", message="echo never Available")
        assert stop(echo) == 0  # the app goes down, its sidecar stays up
        wait_for(
            lambda: state() == "Unavailable", timeout=10, message="readiness did not reach the CP"
        )
        overview = cp.api("GET", "/meshes/default/dataplanes/_overview").json()["items"][0]
        assert "not ready" in json.dumps(overview)

        envoy_pids = [
            int(p)
            for p in subprocess.run(
                ["pgrep", "-P", str(dp.pid)], capture_output=True, text=True
            ).stdout.split()
        ]
        assert envoy_pids, "dp run has no child"
        assert stop(dp) == 0
        wait_for(
            lambda: not any(pid_alive(p) for p in envoy_pids),
            timeout=10,
            message="Envoy left behind",
        )
        wait_for(lambda: state() == "Unavailable")
    finally:
        stop(dp)
        stop(echo)
    log = (tmp_path / "dp.log").read_text()
    assert "default.echo-a joined zone default" in log
    assert "draining Envoy's listeners" in log


def test_a_new_mesh_root_reaches_the_running_sidecar(tmp_path: Path, cp: CpProcess) -> None:
    """dp run notices the CP's trust bundle changed (readiness answer) and signs again."""
    app_port, inbound_port, admin = free_port(), free_port(), free_port()
    file = tmp_path / "dp.yaml"
    file.write_text(DATAPLANE.format(inbound=inbound_port, app=app_port))
    token = token_file(tmp_path, "echo-a", issue_dataplane_token(cp.url, name="echo-a"))
    dp = start(
        [
            *("dp", "run", "--cp-address", cp.xds_address, "--ca-cert-file", str(cp.ca_file)),
            *("--dataplane-file", str(file), "--admin-port", str(admin)),
            *("--dataplane-token-file", str(token)),
        ],
        tmp_path / "dp.log",
    )

    def envoy_certs() -> tuple[str, str] | None:
        """(trusted root serial, own certificate serial) from Envoy's /certs."""
        try:
            entries = httpx.get(f"http://127.0.0.1:{admin}/certs", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return None
        for entry in entries.get("certificates", []):
            if entry.get("ca_cert") and entry.get("cert_chain"):
                return entry["ca_cert"][0]["serial_number"], entry["cert_chain"][0]["serial_number"]
        return None

    try:
        before = wait_for(envoy_certs, timeout=30, message="Envoy never got its certificate")
        deleted = cp.api("DELETE", "/meshes/default/secrets/ca-builtin")
        assert deleted.status_code == 200, deleted.text  # the CP makes a new root at once
        after = wait_for(
            lambda: (c := envoy_certs()) and c[0] != before[0] and c,
            timeout=30,
            message="the new root never reached Envoy",
        )
        assert after[1] != before[1]  # and a certificate signed under it
    finally:
        stop(dp)
    assert "trust bundle changed" in (tmp_path / "dp.log").read_text()
