"""`zonemesh echo` as a user runs it: JSON for programs, a greeting for curl, h2c for proxies."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.processes import free_port

ZONEMESH = str(Path(sys.executable).parent / "zonemesh")


@pytest.fixture
def echo() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            ZONEMESH,
            "echo",
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--zone",
            "zone1",
            "--instance",
            "echo-z1-a",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(url, timeout=0.5)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("echo did not start")
            time.sleep(0.1)
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_json_names_zone_instance_path_method_and_headers(
    echo: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = echo
    response = httpx.post(f"{url}/orders/7", headers={"x-request-id": "abc"}, content=b"body")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["zone"], body["instance"], body["path"], body["method"]) == (
        "zone1",
        "echo-z1-a",
        "/orders/7",
        "POST",
    )
    assert body["headers"]["x-request-id"] == "abc"


def test_curl_users_get_a_greeting(echo: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = echo
    response = httpx.get(f"{url}/hello", headers={"accept": "text/plain"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert (
        "zone zone1" in response.text
        and "instance echo-z1-a" in response.text
        and "/hello" in response.text
    )


def test_h2c_prior_knowledge(echo: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = echo
    with httpx.Client(http1=False, http2=True) as client:
        response = client.get(f"{url}/h2")
    assert response.http_version == "HTTP/2"
    assert response.json()["zone"] == "zone1"


def test_sigterm_exits_zero(echo: tuple[str, subprocess.Popen[bytes]]) -> None:
    _, proc = echo
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [ZONEMESH, "echo", "--port", str(port)], capture_output=True, text=True, timeout=30
        )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
