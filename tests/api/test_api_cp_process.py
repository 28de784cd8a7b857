"""Smoke tests against a real `zonemesh cp run` process: the API as users reach it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest
from api_helpers import MMZS_PATH, assert_error, dataplane, mmzs
from support.processes import ZONEMESH, CpProcess


@pytest.fixture(scope="module")
def cp_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpProcess]:
    cp = CpProcess(tmp_path_factory.mktemp("cp"), store="memory").start()
    try:
        yield cp
    finally:
        code = cp.terminate()
    assert code == 0, cp.log.read_text()


@pytest.fixture
def client(cp_process: CpProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cp_process.url, timeout=30) as c:
        yield c


def test_index_and_default_mesh(client: httpx.Client) -> None:
    index = client.get("/").json()
    assert index["product"] == "zonemesh"
    assert index["mode"] == "zone"
    assert client.get("/meshes/default").status_code == 200
    assert client.get("/healthy").status_code == 200
    assert client.get("/config").json()["store"]["type"] == "memory"


def test_crud_over_the_real_process(client: httpx.Client) -> None:
    assert client.put(f"{MMZS_PATH}/smoke", json=mmzs("smoke")).status_code == 201
    assert client.put(f"{MMZS_PATH}/smoke", json=mmzs("smoke")).status_code == 200
    assert client.get(f"{MMZS_PATH}/smoke").json()["snis"][0]["sni"] == (
        "sni.mzsvc.default.smoke.1027"
    )
    bad = mmzs("bad", ports=[])
    fields = {
        p["field"]
        for p in assert_error(client.put(f"{MMZS_PATH}/bad", json=bad), 400)["invalid_parameters"]
    }
    assert fields == {"spec.ports"}
    assert client.delete(f"{MMZS_PATH}/smoke").status_code == 200
    assert_error(client.get(f"{MMZS_PATH}/smoke"), 404)


def test_dataplane_overview_and_metrics(client: httpx.Client) -> None:
    assert (
        client.put("/meshes/default/dataplanes/smoke-dp", json=dataplane("smoke-dp")).status_code
        == 201
    )
    overview = client.get(
        "/meshes/default/dataplanes/_overview", params={"name": "smoke-dp"}
    ).json()
    assert overview["items"][0]["status"] == "Offline"  # applied, never connected over xDS
    metrics = client.get("/metrics")
    assert "api_server_requests_total" in metrics.text


def test_cli_against_the_real_process(cp_process: CpProcess) -> None:
    result = subprocess.run(
        [ZONEMESH, "get", "meshes", "--cp", cp_process.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[0] == "default"
