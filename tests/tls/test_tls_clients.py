"""The clients' side: `dp run` and a zone's KDS client over grpcs://, and the start check
that stops them, with the problem named, instead of retrying forever."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.processes import CpProcess, free_port, wait_for
from support.sidecars import start, stop
from tls_helpers import DATAPLANE, make_pki, run_zonemesh

QUICK_S = 15  # a refused start must come well before any backoff would give up


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpProcess]:
    """A zone CP as `cp run` starts by default: xDS over TLS with its generated CA."""
    process = CpProcess(tmp_path_factory.mktemp("tls-cp"), store="memory").start()
    yield process
    assert process.terminate() == 0


@pytest.fixture(scope="module")
def plaintext_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpProcess]:
    process = CpProcess(
        tmp_path_factory.mktemp("plain-cp"), "--grpc-plaintext", store="memory"
    ).start()
    yield process
    assert process.terminate() == 0


ZONE_TOKEN_ENV = "KUMA_MULTIZONE_ZONE_KDS_AUTH_TOKEN_INLINE"


def dataplane_token(cp: CpProcess, name: str) -> str:
    return cp.issue_token("dataplane", {"mesh": "default", "name": name, "validFor": "1h"})


def dataplane_file(tmp_path: Path, name: str = "web") -> Path:
    file = tmp_path / f"{name}.yaml"
    file.write_text(DATAPLANE.format(name=name, inbound=free_port(), app=free_port()))
    return file


def dp_run_refused(tmp_path: Path, *args: str) -> str:
    """`dp run` that must exit non-zero by itself, quickly: its stderr."""
    started = time.monotonic()
    result = run_zonemesh(
        [
            "dp",
            "run",
            "--dataplane-file",
            str(dataplane_file(tmp_path)),
            *args,
            "--admin-port",
            "0",
        ],
        timeout=QUICK_S + 15,
    )
    assert time.monotonic() - started < QUICK_S, "the start check took too long"
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def envoy_stats(admin: str, pattern: str) -> dict[str, int]:
    text = httpx.get(f"{admin}/stats", params={"filter": pattern}, timeout=2).text
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def test_dp_run_over_grpcs_configures_envoy_over_tls_ads(tmp_path: Path, cp: CpProcess) -> None:
    admin_port = free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    log = tmp_path / "dp.log"
    dp = start(
        [
            *("dp", "run", "--cp-address", cp.xds_address, "--ca-cert-file", str(cp.ca_file)),
            *("--dataplane-file", str(dataplane_file(tmp_path, "tls-web"))),
            *("--dataplane-token", dataplane_token(cp, "tls-web")),
            *("--admin-port", str(admin_port)),
        ],
        log,
    )
    try:

        def configured() -> bool:
            try:
                return httpx.get(f"{admin}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(configured, timeout=30, message=f"Envoy never got its config:\n{log.read_text()}")
        stats = envoy_stats(admin, r"^cluster\.ads_cluster\.ssl\.")
        assert stats.get("cluster.ads_cluster.ssl.handshake", 0) >= 1, stats
        assert stats.get("cluster.ads_cluster.ssl.connection_error", 0) == 0, stats
        listeners = httpx.get(f"{admin}/listeners", params={"format": "json"}, timeout=2).json()
        assert listeners["listener_statuses"], "ADS delivered no listener"

        def online() -> bool:
            items = cp.api("GET", "/meshes/default/dataplanes/_overview").json()["items"]
            return any(i["name"] == "tls-web" for i in items)

        wait_for(online, timeout=15, message="the CP never saw the proxy")
    finally:
        assert stop(dp) == 0, log.read_text()


def test_dp_run_with_the_wrong_ca_stops_at_start(tmp_path: Path, cp: CpProcess) -> None:
    other = make_pki(tmp_path / "other", ips=("127.0.0.1",))
    err = dp_run_refused(
        tmp_path, "--cp-address", cp.xds_address, "--ca-cert-file", str(other.ca_file)
    )
    assert (
        f"the CA in {other.ca_file} does not verify the control plane's certificate at "
        f"127.0.0.1:{cp.xds_port}: unable to get local issuer certificate"
    ) in err


def test_dp_run_plaintext_against_a_tls_cp_stops_at_start(tmp_path: Path, cp: CpProcess) -> None:
    err = dp_run_refused(tmp_path, "--cp-address", f"grpc://127.0.0.1:{cp.xds_port}")
    assert (
        f"the control plane at 127.0.0.1:{cp.xds_port} serves TLS; "
        f"use grpcs://127.0.0.1:{cp.xds_port} with --ca-cert-file"
    ) in err


def test_dp_run_tls_against_a_plaintext_cp_stops_at_start(
    tmp_path: Path, cp: CpProcess, plaintext_cp: CpProcess
) -> None:
    address = f"grpcs://127.0.0.1:{plaintext_cp.xds_port}"
    err = dp_run_refused(tmp_path, "--cp-address", address, "--ca-cert-file", str(cp.ca_file))
    assert (
        f"the control plane at 127.0.0.1:{plaintext_cp.xds_port} serves plaintext gRPC; "
        f"use grpc://127.0.0.1:{plaintext_cp.xds_port}"
    ) in err


def test_dp_run_grpcs_without_a_usable_ca_file_stops_at_once(tmp_path: Path, cp: CpProcess) -> None:
    assert "grpcs:// needs --ca-cert-file" in dp_run_refused(
        tmp_path, "--cp-address", cp.xds_address
    )
    missing = tmp_path / "missing-ca.crt"
    err = dp_run_refused(tmp_path, "--cp-address", cp.xds_address, "--ca-cert-file", str(missing))
    assert f"--ca-cert-file {missing}: cannot read it: No such file or directory" in err
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    err = dp_run_refused(tmp_path, "--cp-address", cp.xds_address, "--ca-cert-file", str(garbage))
    assert f"--ca-cert-file {garbage}: not a PEM CA certificate" in err


def test_dp_run_with_several_addresses_skips_one_that_is_down(
    tmp_path: Path, cp: CpProcess
) -> None:
    """The start check moves on from an address that refuses; Envoy gets every endpoint."""
    down = free_port()
    address = f"grpcs://127.0.0.1:{down},127.0.0.1:{cp.xds_port}"
    result = run_zonemesh(
        [
            *("dp", "bootstrap", "--cp-address", address, "--ca-cert-file", str(cp.ca_file)),
            *("--dataplane-file", str(dataplane_file(tmp_path))),
        ]
    )
    assert result.returncode == 0, result.stderr
    clusters = json.loads(result.stdout)["static_resources"]["clusters"]
    (cluster,) = [c for c in clusters if c["name"] == "ads_cluster"]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [down, cp.xds_port]
    context = cluster["transport_socket"]["typed_config"]
    assert context["common_tls_context"]["validation_context"]["trusted_ca"] == {
        "filename": str(cp.ca_file.resolve())
    }
    log = tmp_path / "dp-multi.log"
    admin_port = free_port()
    dp = start(
        [
            *("dp", "run", "--cp-address", address, "--ca-cert-file", str(cp.ca_file)),
            *("--dataplane-file", str(dataplane_file(tmp_path, "multi-web"))),
            *("--dataplane-token", dataplane_token(cp, "multi-web")),
            *("--admin-port", str(admin_port)),
        ],
        log,
    )
    try:

        def ready() -> bool:
            try:
                return (
                    httpx.get(f"http://127.0.0.1:{admin_port}/ready", timeout=2).status_code == 200
                )
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=30, message=f"Envoy not configured:\n{log.read_text()}")
    finally:
        assert stop(dp) == 0, log.read_text()


# --- KDS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def global_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpProcess]:
    process = CpProcess(
        tmp_path_factory.mktemp("tls-global"), "--mode", "global", store="memory"
    ).start()
    yield process
    assert process.terminate() == 0


def test_a_zone_syncs_with_global_over_grpcs(tmp_path: Path, global_cp: CpProcess) -> None:
    zone = CpProcess(
        tmp_path,
        *("--mode", "zone", "--zone", "zone-tls", "--global-address", global_cp.kds_address),
        store="memory",
        env={
            "KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE": str(global_cp.ca_file),
            ZONE_TOKEN_ENV: global_cp.issue_token("zone", {"zone": "zone-tls", "validFor": "1h"}),
        },
    ).start()  # ready = synced: a federated zone is ready once global's meshes arrived
    try:
        status = zone.api("GET", "/").json()["status"]["global"]
        assert status.startswith(f"connected to {global_cp.kds_address}")

        def registered() -> bool:
            return global_cp.api("GET", "/zones/zone-tls").status_code == 200

        wait_for(registered, timeout=15, message="global never saw the zone")
    finally:
        assert zone.terminate() == 0


def zone_refused(tmp_path: Path, address: str, ca_file: Path | None) -> str:
    ports = [str(free_port()) for _ in range(3)]
    # A token of the right form: the start check under test comes before global reads it.
    env = {ZONE_TOKEN_ENV: "not-checked-before-the-tls-check"}
    if ca_file:
        env["KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE"] = str(ca_file)
    started = time.monotonic()
    result = run_zonemesh(
        [
            *("cp", "run", "--mode", "zone", "--zone", "zone-bad", "--global-address", address),
            *("--store", "memory", "--data-dir", str(tmp_path / "zone-data")),
            *("--api-port", ports[0], "--xds-port", ports[1], "--https-port", ports[2]),
        ],
        env=env,
    )
    assert time.monotonic() - started < QUICK_S
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_a_zone_with_the_wrong_ca_stops_at_start(tmp_path: Path, global_cp: CpProcess) -> None:
    other = make_pki(tmp_path / "other", ips=("127.0.0.1",))
    err = zone_refused(tmp_path, global_cp.kds_address, other.ca_file)
    assert (
        f"the CA in {other.ca_file} does not verify the global control plane's certificate "
        f"at 127.0.0.1:{global_cp.kds_port}"
    ) in err


def test_a_zone_dialling_grpcs_without_a_ca_or_plaintext_to_tls_stops_at_start(
    tmp_path: Path, global_cp: CpProcess
) -> None:
    assert "grpcs:// needs KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE" in zone_refused(
        tmp_path, global_cp.kds_address, None
    )
    err = zone_refused(tmp_path, f"grpc://127.0.0.1:{global_cp.kds_port}", None)
    assert (
        f"the global control plane at 127.0.0.1:{global_cp.kds_port} serves TLS; "
        f"use grpcs://127.0.0.1:{global_cp.kds_port} with KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE"
    ) in err
