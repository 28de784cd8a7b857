"""Workload keys never leave the workload, with real processes: `zonemesh cp run` (certificates
valid 6 s), two `zonemesh dp run` instances of one service behind one service-scoped token,
a client sidecar calling them over mutual TLS (mesh mTLS on), and the echo apps.

- each instance holds its own key pair (read from its Envoy), and the CP serves no secret;
- certificates rotate under traffic: at least two rotations seen in every Envoy's /certs
  while requests flow sidecar to sidecar, with no failed request, one keep-alive connection
  open throughout and no upstream mTLS connection closed. `pytest -s` prints the figures.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support.processes import CpProcess, free_port, wait_for
from support.sidecars import Sidecar, dataplane, start_sidecar, stop
from support.tokens import issue_dataplane_token, token_file

pytestmark = pytest.mark.timeout(180)

VALIDITY_S = 6
APP_PORT = free_port()  # the echo service port, the same on every instance address
SERVERS = {"echo-1": "127.0.7.21", "echo-2": "127.0.7.22"}
CLIENT = "127.0.7.30"


@dataclass
class Mesh:
    cp: CpProcess
    servers: list[Sidecar]
    client: Sidecar

    def envoys(self) -> list[Sidecar]:
        return [*self.servers, self.client]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("workload-keys")
    cp = CpProcess(tmp, store="memory", env={"ZONEMESH_CERT_VALIDITY": f"{VALIDITY_S}s"})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cp.start()
        mtls = {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}
        response = cp.api(
            "PUT", "/meshes/default", json={"type": "Mesh", "name": "default", "mtls": mtls}
        )
        assert response.status_code in (200, 201), response.text
        servers = [Sidecar(n, a, free_port(), free_port()) for n, a in SERVERS.items()]
        client_app = free_port()
        client = Sidecar("client-1", CLIENT, free_port(), free_port(), outbound=free_port())
        # One token for every instance of `echo` (as in Kuma), one for the client.
        echo_token = token_file(
            tmp, "echo", issue_dataplane_token(cp.url, tags={"kuma.io/service": ["echo"]})
        )
        client_token = token_file(tmp, "client", issue_dataplane_token(cp.url, name="client-1"))
        for sidecar, token, service, app in (
            *((s, echo_token, "echo", APP_PORT) for s in servers),
            (client, client_token, "client", client_app),
        ):
            doc = dataplane(sidecar, service, app, echo_port=APP_PORT)
            procs += start_sidecar(
                sidecar, doc, app, token, tmp, cp=cp, dp_args=("--log-level", "info")
            )
        topology = Mesh(cp, servers, client)

        def both_answer() -> bool:
            seen = set()
            for _ in range(10):
                try:
                    answer = httpx.get(f"http://{CLIENT}:{client.outbound}/", timeout=2)
                    seen.add(answer.json()["instance"])
                except (httpx.HTTPError, ValueError, KeyError):
                    return False
            return seen == set(SERVERS)

        wait_for(both_answer, timeout=60, interval=0.5, message="mTLS traffic to both instances")
        yield topology
    finally:
        for proc in reversed(procs):
            stop(proc)
        cp.terminate()


def certs(sidecar: Sidecar) -> dict[str, Any]:
    return httpx.get(f"{sidecar.admin_url}/certs", timeout=2).json()  # type: ignore[no-any-return]


def identity_chain(sidecar: Sidecar) -> list[x509.Certificate]:
    """The certificate chain Envoy holds for its identity secret (from /config_dump)."""
    dump = httpx.get(
        f"{sidecar.admin_url}/config_dump", params={"resource": "dynamic_active_secrets"}
    ).json()
    for entry in dump["configs"]:
        secret = entry["secret"]
        if secret["name"].startswith("identity_cert:"):
            chain = secret["tls_certificate"]["certificate_chain"]
            pem = chain.get("inline_bytes") or chain.get("inline_string")
            data = base64.b64decode(pem) if "inline_bytes" in chain else pem.encode()
            return x509.load_pem_x509_certificates(data)
    raise AssertionError(f"{sidecar.name}: no identity secret in {dump}")


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_every_instance_holds_its_own_key_and_the_cp_serves_none(mesh: Mesh) -> None:
    chains = {s.name: identity_chain(s) for s in mesh.servers}
    keys = {name: spki(chain[0]) for name, chain in chains.items()}
    assert keys["echo-1"] != keys["echo-2"]  # one token, one service, two key pairs
    for chain in chains.values():
        san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://default/echo"]
    client = identity_chain(mesh.client)[0]
    assert spki(client) not in keys.values()
    for sidecar in mesh.envoys():
        dump = mesh.cp.api("GET", f"/meshes/default/dataplanes/{sidecar.name}/xds")
        assert dump.status_code == 200
        assert "PRIVATE KEY" not in dump.text
        assert not dump.json().get(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
        )
    # The key was made by dp run and is nowhere on disk but in the process (and its Envoy).
    run_dirs = list(Path("/tmp").glob("zonemesh-dp-*"))
    for directory in run_dirs:
        assert directory.stat().st_mode & 0o077 == 0, directory


def _serial(sidecar: Sidecar) -> str | None:
    try:
        for entry in certs(sidecar).get("certificates", []):
            for cert in entry.get("cert_chain", []):
                if any("spiffe://" in s.get("uri", "") for s in cert.get("subject_alt_names", [])):
                    return str(cert["serial_number"])
    except (httpx.HTTPError, ValueError):
        return None
    return None


def _client_cluster_stats(client: Sidecar) -> dict[str, int]:
    text = httpx.get(f"{client.admin_url}/stats", params={"filter": "upstream_cx_"}).text
    out: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"cluster\.(default_echo_[^:]*)\.(upstream_cx_\w+): (\d+)$", line)
        if match:
            out[match.group(2)] = out.get(match.group(2), 0) + int(match.group(3))
    return out


async def _keep_alive(url_host: str, port: int, until: float, result: dict[str, Any]) -> None:
    """Sequential requests on ONE connection; it must stay open across every rotation."""
    reader, writer = await asyncio.open_connection(url_host, port)
    try:
        while time.monotonic() < until:
            writer.write(b"GET /keep-alive HTTP/1.1\r\nhost: echo\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            result["ok" if head.startswith(b"HTTP/1.1 200") else "failed"] += 1
            await asyncio.sleep(0.05)
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
        result["broken"] = repr(e)
    finally:
        writer.close()


async def _new_connections(url: str, until: float, result: dict[str, Any]) -> None:
    """A new connection (and so new mTLS handshakes behind it) for every request."""
    while time.monotonic() < until:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                answer = await client.get(url, headers={"connection": "close"})
            result["ok" if answer.status_code == 200 else "failed"] += 1
        except httpx.HTTPError as e:
            result["failed"] += 1
            result.setdefault("errors", []).append(repr(e))
        await asyncio.sleep(0.05)


async def _watch_serials(mesh: Mesh, until: float, seen: dict[str, list[str]]) -> None:
    while time.monotonic() < until:
        for sidecar in mesh.envoys():
            serial = await asyncio.to_thread(_serial, sidecar)
            history = seen.setdefault(sidecar.name, [])
            if serial and (not history or history[-1] != serial):
                history.append(serial)
        await asyncio.sleep(0.3)


def test_certificates_rotate_under_traffic_with_no_failed_request(mesh: Mesh) -> None:
    duration = VALIDITY_S * 3 + 2  # about four rotations at 2/3 of 6 s
    before = _client_cluster_stats(mesh.client)
    keep: dict[str, Any] = {"ok": 0, "failed": 0}
    fresh: dict[str, Any] = {"ok": 0, "failed": 0}
    seen: dict[str, list[str]] = {}

    async def run() -> None:
        until = time.monotonic() + duration
        await asyncio.gather(
            _keep_alive(CLIENT, mesh.client.outbound or 0, until, keep),
            _new_connections(f"http://{CLIENT}:{mesh.client.outbound}/", until, fresh),
            _watch_serials(mesh, until, seen),
        )

    asyncio.run(run())
    after = _client_cluster_stats(mesh.client)
    rotations = {name: len(serials) - 1 for name, serials in seen.items()}
    figures = {
        "seconds": duration,
        "certificate validity s": VALIDITY_S,
        "rotations per Envoy": rotations,
        "keep-alive requests (one connection)": keep,
        "new-connection requests": fresh,
        "client upstream mTLS connections opened": after.get("upstream_cx_total", 0)
        - before.get("upstream_cx_total", 0),
        "client upstream mTLS connections closed": after.get("upstream_cx_destroy", 0)
        - before.get("upstream_cx_destroy", 0),
        "client upstream mTLS connections open": after.get("upstream_cx_active", 0),
    }
    print("\ncertificate rotation under traffic:\n" + json.dumps(figures, indent=2))
    assert "broken" not in keep, keep
    assert keep["failed"] == 0 and fresh["failed"] == 0, figures
    assert keep["ok"] > 50 and fresh["ok"] > 20, figures
    assert all(count >= 2 for count in rotations.values()) and len(rotations) == 3, figures
    assert figures["client upstream mTLS connections open"] >= 1, figures
    assert figures["client upstream mTLS connections closed"] == 0, figures
