"""`zonemesh cp run`'s own TLS: generated and kept in the data directory, or given as files;
xDS, KDS and the HTTPS API serve it; plaintext gRPC only on loopback."""

from __future__ import annotations

import socket
import ssl
import stat
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from support.processes import CpProcess, free_port
from tls_helpers import make_pki, run_zonemesh, verifying_context


def served_certificate(port: int, ca_file: Path, host: str = "127.0.0.1") -> x509.Certificate:
    """The certificate the server at host:port presents, verified against `ca_file`."""
    context = verifying_context(ca_file)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_material_is_kept_private_and_names_loopback(tmp_path: Path) -> None:
    cp = CpProcess(tmp_path, store="memory").start()
    try:
        tls, keys = cp.data_dir / "tls", cp.data_dir / "tls-keys"
        assert cp.ca_file == tls / "ca.crt" and cp.ca_file.is_file()
        assert mode(keys) == 0o700
        assert mode(keys / "ca.key") == 0o600 and mode(keys / "server.key") == 0o600
        assert sorted(p.name for p in tls.iterdir()) == ["ca.crt", "server.crt"], "no key in tls/"
        served = served_certificate(cp.xds_port, cp.ca_file)
        assert {"127.0.0.1", "localhost", "::1", socket.gethostname().lower()} <= sans(served)
        assert served.public_bytes(Encoding.PEM) == (tls / "server.crt").read_bytes()
        # The log says where the CA is.
        assert f"signed by the CA in {cp.ca_file}" in cp.log.read_text()
        # The API over HTTPS, same certificate, verified with the same CA.
        with httpx.Client(verify=verifying_context(cp.ca_file), timeout=10) as client:
            config = client.get(f"{cp.https_url}/config")
        assert config.status_code == 200
        assert served_certificate(cp.https_port, cp.ca_file) == served
        in_use = config.json()["tlsInUse"]
        assert in_use["grpc"]["caFile"] == str(cp.ca_file)
        assert in_use["https"]["source"] == "generated"
        assert "PRIVATE KEY" not in config.text
        assert "PRIVATE KEY" not in cp.api("GET", "/config").text
    finally:
        assert cp.terminate() == 0


def test_a_restart_keeps_the_ca_and_reissues_for_a_new_address(tmp_path: Path) -> None:
    cp = CpProcess(tmp_path, store="memory").start()
    ca = cp.ca_file.read_bytes()
    server = (cp.data_dir / "tls" / "server.crt").read_bytes()
    assert cp.terminate() == 0
    cp.start()  # same data directory
    try:
        assert cp.ca_file.read_bytes() == ca
        assert (cp.data_dir / "tls" / "server.crt").read_bytes() == server, "reused as it was"
    finally:
        assert cp.terminate() == 0
    # Bound to another address: the same CA issues a certificate that names it too.
    cp.args += ["--address", "127.0.0.3"]
    cp.url = f"http://127.0.0.3:{cp.api_port}"
    cp.start()
    try:
        assert cp.ca_file.read_bytes() == ca
        served = served_certificate(cp.xds_port, cp.ca_file, host="127.0.0.3")
        assert "127.0.0.3" in sans(served)
        assert (cp.data_dir / "tls" / "server.crt").read_bytes() != server
    finally:
        assert cp.terminate() == 0


def test_given_certificate_and_key_are_what_every_listener_serves(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", dns=("localhost",), ips=("127.0.0.1",))
    env = {"KUMA_GENERAL_TLS_CERT_FILE": str(pki.cert_file)}
    env["KUMA_GENERAL_TLS_KEY_FILE"] = str(pki.key_file)
    cp = CpProcess(tmp_path, "--mode", "global", store="memory", env=env).start()
    try:
        given = x509.load_pem_x509_certificate(pki.cert_file.read_bytes())
        for port in (cp.kds_port, cp.https_port):
            assert served_certificate(port, pki.ca_file) == given
        assert not (cp.data_dir / "tls").exists(), "nothing generated when files are given"
        with httpx.Client(verify=verifying_context(pki.ca_file), timeout=10) as client:
            in_use = client.get(f"{cp.https_url}/config").json()["tlsInUse"]
        assert in_use["grpc"]["source"] == "files" and in_use["grpc"]["caFile"] is None
    finally:
        assert cp.terminate() == 0


def cp_run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """`cp run` that must refuse to start: its stderr."""
    ports = [str(free_port()) for _ in range(4)]
    result = run_zonemesh(
        [
            *("cp", "run", "--store", "memory", "--data-dir", str(tmp_path / "data")),
            *("--api-port", ports[0], "--xds-port", ports[1], "--kds-port", ports[2]),
            *("--https-port", ports[3], *args),
        ],
        env=env,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_bad_given_files_stop_the_start_naming_the_file(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", ips=("127.0.0.1",))
    other = make_pki(tmp_path / "other", ips=("127.0.0.1",))
    missing = tmp_path / "nope.crt"
    cases = [
        ({"KUMA_GENERAL_TLS_CERT_FILE": str(missing)}, f"{missing}: cannot read it"),
        ({"KUMA_GENERAL_TLS_CERT_FILE": str(pki.key_file)}, "not a PEM certificate"),
        ({"KUMA_GENERAL_TLS_KEY_FILE": str(other.key_file)}, "does not match the certificate"),
    ]
    for override, message in cases:
        env = {
            "KUMA_GENERAL_TLS_CERT_FILE": str(pki.cert_file),
            "KUMA_GENERAL_TLS_KEY_FILE": str(pki.key_file),
            **override,
        }
        assert message in cp_run(tmp_path, env=env)
    only_cert = cp_run(tmp_path, env={"KUMA_GENERAL_TLS_CERT_FILE": str(pki.cert_file)})
    assert "general.tls.certFile is set but general.tls.keyFile is not" in only_cert


def test_plaintext_grpc_is_refused_off_loopback(tmp_path: Path) -> None:
    for args, env in (
        (("--address", "0.0.0.0", "--grpc-plaintext"), None),
        (("--address", "0.0.0.0"), {"ZONEMESH_GRPC_PLAINTEXT": "true"}),
    ):
        err = cp_run(tmp_path, *args, env=env)
        assert "plaintext gRPC is refused on 0.0.0.0, which is not a loopback address" in err
    assert not (tmp_path / "data").exists(), "refused before anything was written"


def test_the_ca_file_verifies_only_the_names_in_the_certificate(tmp_path: Path) -> None:
    """A client dialling a name the certificate lacks is refused by the handshake itself."""
    cp = CpProcess(tmp_path, store="memory").start()
    try:
        context = verifying_context(cp.ca_file)
        with (
            pytest.raises(ssl.SSLCertVerificationError, match=r"not-this-host\.example"),
            socket.create_connection(("127.0.0.1", cp.xds_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="not-this-host.example"),
        ):
            pass
    finally:
        assert cp.terminate() == 0
