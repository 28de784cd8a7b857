"""The control plane's server TLS material: given files, or a CA and certificate of its own.

Given (`general.tls.certFile` / `keyFile`, env `KUMA_GENERAL_TLS_CERT_FILE` / `_KEY_FILE`):
both files are read and checked at start (readable, PEM, the key matches the certificate,
not expired); any problem stops `cp run` with the file and the problem named.

Generated (the default): a CA and a server certificate it signs, kept across restarts:

    <data-dir>/tls/ca.crt            the CA clients trust (`dp run --ca-cert-file`,
                                     `KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE`)
    <data-dir>/tls/server.crt        what xDS, KDS and the HTTPS API serve
    <data-dir>/tls-keys/ca.key       0600, in a 0700 directory
    <data-dir>/tls-keys/server.key   0600

The keys live beside `tls/`, not in it, so `tls/` can be handed to clients as it is (a
shared volume in docker-compose) without handing them the keys. The CA is made once and
never replaced behind the operator's back: a broken or half-present CA stops the start. The
server certificate is re-issued by the same CA when it no longer names every address the CP
listens on (see `required_names`) or has less than `RENEW_BEFORE` left; both are checked at
each start. A lock file keeps two processes sharing a data directory from generating at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from zonemesh.config import CpConfig
from zonemesh.tls import certs
from zonemesh.tls.certs import Names
from zonemesh.tls.local_addresses import host_name, local_addresses

log = logging.getLogger("zonemesh.tls")

RENEW_BEFORE = timedelta(days=180)
CA_FILE = "ca.crt"
SERVER_CERT_FILE = "server.crt"
CA_KEY_FILE = "ca.key"
SERVER_KEY_FILE = "server.key"
_WILDCARDS = ("0.0.0.0", "::", "")


class TlsMaterialError(Exception):
    """Material that cannot be served; the message names the file and the problem."""


@dataclass(frozen=True)
class ServerTls:
    """What the servers serve: files for uvicorn, PEM bytes for gRPC."""

    cert_file: Path
    key_file: Path
    cert_pem: bytes  # the certificate chain as given (or the generated leaf)
    key_pem: bytes
    ca_file: Path | None  # the generated CA for clients; None when the files were given
    names: tuple[str, ...]  # the certificate's SANs, for logs and GET /config
    not_after: datetime

    @property
    def generated(self) -> bool:
        return self.ca_file is not None

    def describe(self) -> dict[str, object]:
        """For `GET /config`: where things are and what the certificate names; no key."""
        return {
            "source": "generated" if self.generated else "files",
            "certFile": str(self.cert_file),
            "keyFile": str(self.key_file),
            "caFile": str(self.ca_file) if self.ca_file else None,
            "subjectAltNames": list(self.names),
            "notAfter": self.not_after.isoformat().replace("+00:00", "Z"),
        }


def tls_dir(data_dir: Path) -> Path:
    return data_dir / "tls"


def keys_dir(data_dir: Path) -> Path:
    return data_dir / "tls-keys"


def load_server_tls(config: CpConfig, now: datetime | None = None) -> ServerTls:
    """The material `cp run` serves (raises TlsMaterialError naming the problem)."""
    tls = config.general.tls
    if tls.cert_file:
        return load_given(Path(tls.cert_file), Path(tls.key_file), now or datetime.now(UTC))
    return load_or_generate(config.data_dir, required_names(config.address), now)


def required_names(bind_address: str) -> Names:
    """Host name, localhost, 127.0.0.1, ::1, the bind address, and every local address when
    bound to a wildcard: each name a client on this host or beyond may dial us by."""
    dns = {host_name().lower(), "localhost"}
    ips: set[certs.IpAddress] = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    if bind_address in _WILDCARDS:
        ips |= local_addresses()
    else:
        try:
            ips.add(ipaddress.ip_address(bind_address))
        except ValueError:
            dns.add(bind_address.lower())
    return Names(frozenset(d for d in dns if d), frozenset(ips))


# --- given files --------------------------------------------------------------------------


def load_given(cert_file: Path, key_file: Path, now: datetime) -> ServerTls:
    cert_data = _read(cert_file, "general.tls.certFile (KUMA_GENERAL_TLS_CERT_FILE)")
    key_data = _read(key_file, "general.tls.keyFile (KUMA_GENERAL_TLS_KEY_FILE)")
    try:
        chain = certs.parse_certs(cert_data)
    except ValueError as e:
        raise TlsMaterialError(f"{cert_file}: not a PEM certificate: {e}") from None
    try:
        key = certs.parse_key(key_data)
    except ValueError as e:
        raise TlsMaterialError(f"{key_file}: not a PEM private key: {e}") from None
    leaf = chain[0]
    if not certs.key_matches(leaf, key):
        raise TlsMaterialError(
            f"{key_file}: this private key does not match the certificate in {cert_file}"
        )
    if leaf.not_valid_after_utc <= now:
        raise TlsMaterialError(
            f"{cert_file}: the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if leaf.not_valid_before_utc > now:
        raise TlsMaterialError(
            f"{cert_file}: the certificate is not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    names = certs.names_of(leaf)
    if not names.dns and not names.ips:
        raise TlsMaterialError(
            f"{cert_file}: the certificate names no host (no subject alternative name); "
            "clients verify the host they dial against them"
        )
    return ServerTls(
        cert_file=cert_file,
        key_file=key_file,
        cert_pem=cert_data,
        key_pem=key_data,
        ca_file=None,
        names=tuple(names.describe()),
        not_after=leaf.not_valid_after_utc,
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TlsMaterialError(f"{what} {path}: cannot read it: {e.strerror or e}") from None


# --- generated ----------------------------------------------------------------------------


def load_or_generate(data_dir: Path, wanted: Names, now: datetime | None = None) -> ServerTls:
    public, private = tls_dir(data_dir), keys_dir(data_dir)
    try:
        public.mkdir(parents=True, exist_ok=True)
        private.mkdir(mode=0o700, parents=True, exist_ok=True)
        private.chmod(0o700)
    except OSError as e:
        raise TlsMaterialError(f"{data_dir}: cannot create the TLS directories: {e}") from None
    with _locked(private / ".lock"):
        when = now or datetime.now(UTC)
        ca_cert, ca_key = _load_or_make_ca(public / CA_FILE, private / CA_KEY_FILE, when)
        cert, key_data = _load_or_issue_server(public, private, ca_cert, ca_key, wanted, when)
    return ServerTls(
        cert_file=public / SERVER_CERT_FILE,
        key_file=private / SERVER_KEY_FILE,
        cert_pem=certs.cert_pem(cert),
        key_pem=key_data,
        ca_file=public / CA_FILE,
        names=tuple(certs.names_of(cert).describe()),
        not_after=cert.not_valid_after_utc,
    )


def local_ca(data_dir: Path, now: datetime | None = None) -> tuple[bytes, bytes]:
    """The generated CA's (certificate, key) PEM, made first if there is none."""
    public, private = _tls_dirs(data_dir)
    with _locked(private / ".lock"):
        cert, key = _load_or_make_ca(
            public / CA_FILE, private / CA_KEY_FILE, now or datetime.now(UTC)
        )
    return certs.cert_pem(cert), certs.key_pem(key)


def install_ca(data_dir: Path, cert_pem: bytes, key_pem: bytes) -> bool:
    """Make the given CA this data directory's (instances sharing a database share one CA);
    True when it replaced another. The server certificate is re-issued by the next load."""
    public, private = _tls_dirs(data_dir)
    cert_path, key_path = public / CA_FILE, private / CA_KEY_FILE
    with _locked(private / ".lock"):
        if cert_path.exists() and key_path.exists():
            if cert_path.read_bytes() == cert_pem and key_path.read_bytes() == key_pem:
                return False
            replaced = True
        else:
            replaced = False
        _write(key_path, key_pem, 0o600)
        _write(cert_path, cert_pem, 0o644)
    return replaced


def _tls_dirs(data_dir: Path) -> tuple[Path, Path]:
    public, private = tls_dir(data_dir), keys_dir(data_dir)
    try:
        public.mkdir(parents=True, exist_ok=True)
        private.mkdir(mode=0o700, parents=True, exist_ok=True)
        private.chmod(0o700)
    except OSError as e:
        raise TlsMaterialError(f"{data_dir}: cannot create the TLS directories: {e}") from None
    return public, private


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load_or_make_ca(
    cert_path: Path, key_path: Path, now: datetime
) -> tuple[x509.Certificate, certs.CertificateIssuerPrivateKeyTypes]:
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if not have_cert and not have_key:
        cert, key = certs.new_ca(now)
        _write(key_path, certs.key_pem(key), 0o600)
        _write(cert_path, certs.cert_pem(cert), 0o644)
        log.info("generated the control plane's TLS CA: %s", cert_path)
        return cert, key
    if have_cert != have_key:
        present, absent = (cert_path, key_path) if have_cert else (key_path, cert_path)
        raise TlsMaterialError(
            f"{absent} is missing but {present} exists: the generated CA is incomplete; "
            f"restore it, or remove {present} to make a new CA (clients must then trust it)"
        )
    try:
        cert = certs.parse_certs(_read(cert_path, "the generated CA"))[0]
    except ValueError as e:
        raise TlsMaterialError(f"{cert_path}: not a PEM certificate: {e}") from None
    try:
        key = certs.parse_key(_read(key_path, "the generated CA's key"))
    except ValueError as e:
        raise TlsMaterialError(f"{key_path}: not a PEM private key: {e}") from None
    if not certs.is_ca(cert) or not certs.key_matches(cert, key):
        raise TlsMaterialError(f"{key_path} and {cert_path} are not a CA and its key")
    if cert.not_valid_after_utc <= now:
        raise TlsMaterialError(
            f"{cert_path}: the CA expired on {cert.not_valid_after_utc:%Y-%m-%d}; remove "
            f"{cert_path} and {key_path} to make a new one (clients must then trust it)"
        )
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        log.warning(
            "the TLS CA %s expires on %s", cert_path, f"{cert.not_valid_after_utc:%Y-%m-%d}"
        )
    _ensure_private(key_path)
    return cert, key  # type: ignore[return-value]


def _load_or_issue_server(
    public: Path,
    private: Path,
    ca_cert: x509.Certificate,
    ca_key: certs.CertificateIssuerPrivateKeyTypes,
    wanted: Names,
    now: datetime,
) -> tuple[x509.Certificate, bytes]:
    cert_path, key_path = public / SERVER_CERT_FILE, private / SERVER_KEY_FILE
    reason = _why_reissue(cert_path, key_path, ca_cert, wanted, now)
    if reason is None:
        _ensure_private(key_path)
        return certs.parse_certs(cert_path.read_bytes())[0], key_path.read_bytes()
    cert, key = certs.issue_server_cert(ca_cert, ca_key, wanted, now)
    key_data = certs.key_pem(key)
    _write(key_path, key_data, 0o600)
    _write(cert_path, certs.cert_pem(cert), 0o644)
    log.info(
        "issued the control plane's TLS certificate %s (%s) for: %s",
        cert_path,
        reason,
        ", ".join(wanted.describe()),
    )
    return cert, key_data


def _why_reissue(
    cert_path: Path, key_path: Path, ca: x509.Certificate, wanted: Names, now: datetime
) -> str | None:
    """None when the stored server certificate can be served again; else why not."""
    if not cert_path.exists() or not key_path.exists():
        return "none yet"
    try:
        cert = certs.parse_certs(cert_path.read_bytes())[0]
        key = certs.parse_key(key_path.read_bytes())
    except (OSError, ValueError) as e:
        return f"the stored one is unreadable: {e}"
    if not certs.signed_by(cert, ca) or not certs.key_matches(cert, key):
        return "the stored one does not belong to the CA"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"the stored one expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    missing = set(wanted.describe()) - set(certs.names_of(cert).describe())
    if missing:
        return f"the stored one does not name {', '.join(sorted(missing))}"
    return None


def _ensure_private(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically: a reader never sees half a file, a key is never readable by others."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)  # the umask may have taken bits away from a public file
        os.replace(tmp, path)
    except OSError as e:
        raise TlsMaterialError(f"{path}: cannot write it: {e.strerror or e}") from None
