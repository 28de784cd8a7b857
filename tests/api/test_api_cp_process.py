"""Smoke tests against a real `zonemesh cp run` process: the API as users reach it."""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_helpers import MMZS_PATH, assert_error, dataplane, mmzs

ZONEMESH = str(Path(sys.executable).parent / "zonemesh")

pytestmark = pytest.mark.skipif(
    any(
        importlib.util.find_spec(m) is None
        for m in ("zonemesh.state.component", "zonemesh.xds.component")
    ),
    reason="cp run needs the computed-state and xDS components",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CpProcess:
    def __init__(self, tmp: Path) -> None:
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.log = tmp / "cp.log"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                ZONEMESH,
                "cp",
                "run",
                "--store",
                "memory",
                "--api-port",
                str(self.api_port),
                "--xds-port",
                str(free_port()),
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cp run exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"cp run did not become ready:\n{self.log.read_text()}")

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._log_file.close()


@pytest.fixture(scope="module")
def cp_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CpProcess]:
    cp = CpProcess(tmp_path_factory.mktemp("cp"))
    try:
        cp.wait_ready()
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
