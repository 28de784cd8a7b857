"""The client side of HTTPS: `--cp https://…` verified with `--ca-cert-file` / the env var.

The server is zonemesh's own API app served by uvicorn with TLS in a thread, with a
certificate for 127.0.0.1 signed by a CA made here (the control plane's TLS comes from the
TLS slice; only the client is under test).
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from cli_helpers import zonemesh
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.processes import free_port

from zonemesh.api.app import create_app
from zonemesh.config import CpConfig
from zonemesh.resources.codec import resource_from_wire
from zonemesh.runtime.kernel import Runtime
from zonemesh.store.memory import MemoryStore


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])


def write_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (
        directory / "ca.crt",
        directory / "tls.crt",
        directory / "tls.key",
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


class HttpsApi:
    """zonemesh's API app over HTTPS on a loopback port, in its own thread and loop."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        config = CpConfig.model_validate({"store": {"type": "memory"}})
        self.runtime = Runtime(config=config, store=MemoryStore())
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.runtime),
                host="127.0.0.1",
                port=self.port,
                ssl_certfile=str(cert_file),
                ssl_keyfile=str(key_file),
                lifespan="off",
                log_config=None,
                log_level="warning",
            )
        )
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        await self.runtime.store.create(resource_from_wire({"type": "Mesh", "name": "default"}))
        await self.runtime.tokens.start()
        try:
            await self.server.serve()
        finally:
            await self.runtime.tokens.stop()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> HttpsApi:
        self._thread.start()
        for _ in range(300):
            if self.server.started:
                return self
            if not self._thread.is_alive():
                break
            threading.Event().wait(0.05)
        raise RuntimeError("the HTTPS API did not start")

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self._thread.join(15)


@pytest.fixture
def https_api(tmp_path: Path) -> Iterator[tuple[HttpsApi, Path]]:
    ca_file, cert_file, key_file = write_ca_and_server_cert(tmp_path)
    with HttpsApi(cert_file, key_file) as api:
        yield api, ca_file


def test_https_with_the_ca_file(https_api: tuple[HttpsApi, Path]) -> None:
    api, ca_file = https_api
    by_flag = zonemesh("get", "meshes", "--cp", api.url, "--ca-cert-file", str(ca_file))
    assert by_flag.returncode == 0, by_flag.stderr
    assert by_flag.stdout.splitlines()[1].split()[0] == "default"
    by_env = zonemesh(
        "get", "meshes", cp_url=api.url, env={"ZONEMESH_CP_CA_CERT_FILE": str(ca_file)}
    )
    assert by_env.returncode == 0, by_env.stderr


def test_https_without_the_ca_names_the_flag(https_api: tuple[HttpsApi, Path]) -> None:
    api, _ = https_api
    result = zonemesh("get", "meshes", "--cp", api.url)
    assert result.returncode != 0
    assert "does not verify" in result.stderr
    assert "--ca-cert-file" in result.stderr
    missing = zonemesh("get", "meshes", "--cp", api.url, "--ca-cert-file", "/nonexistent/ca.crt")
    assert missing.returncode != 0
    assert "--ca-cert-file /nonexistent/ca.crt: cannot use it as a CA" in missing.stderr
