"""A real PostgreSQL server for tests: `initdb` into a temporary directory, `postgres` on a free
loopback port (TLS offered, with a CA of its own in `ca_file`), stopped and removed at the end.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user
(Debian's package creates it) or else as `nobody`, in a directory that user owns. Clients use
TCP on 127.0.0.1 with a password (scram-sha-256), as a control plane would; the tests' own
administration uses the Unix socket in the same directory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import ipaddress
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import SecretStr
from support.processes import free_port

from zonemesh.config import PostgresConfig
from zonemesh.store.postgres_connection import connect
from zonemesh.store.postgres_schema import migrate_up
from zonemesh.tls.certs import Names, cert_pem, issue_server_cert, key_pem, new_ca

ROLE = "zonemesh"
PASSWORD = "s3cret-test-password"
TEMPLATE = "zonemesh_migrated"


def find_bindir() -> Path | None:
    """Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<major>/bin."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def _run_user() -> str | None:
    """Who the server runs as: None = us (not root); else a system user that may own files."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


class PostgresServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = _run_user()
        self.root = Path(tempfile.mkdtemp(prefix="zonemesh-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._databases = 0
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    # -- lifecycle ------------------------------------------------------------------------

    def init(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text("postgres-admin\n")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        pwfile.unlink()
        self._write_tls_material()

    def _write_tls_material(self) -> None:
        """A CA and a certificate for localhost/127.0.0.1, so clients may choose TLS."""
        now = datetime.now(UTC)
        ca, ca_key = new_ca(now)
        names = Names(frozenset({"localhost"}), frozenset({ipaddress.ip_address("127.0.0.1")}))
        cert, key = issue_server_cert(ca, ca_key, names, now)
        self.ca_file.write_bytes(cert_pem(ca))
        (self.root / "server.crt").write_bytes(cert_pem(cert))
        key_file = self.root / "server.key"
        key_file.write_bytes(key_pem(key))
        key_file.chmod(0o600)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.root / "server.crt", key_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.crt"

    def start(self, timeout: float = 30) -> None:
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    # No fsync: a stopped or killed server loses nothing (the kernel keeps what
                    # was written); only an OS crash could, and tests do not crash the OS.
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "ssl=on",
                    "-c",
                    f"ssl_cert_file={self.root / 'server.crt'}",
                    "-c",
                    f"ssl_key_file={self.root / 'server.key'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.user,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.logfile.read_text()}")
            try:
                with self.admin():
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres did not accept connections:\n{self.logfile.read_text()}"
                    ) from None
                time.sleep(0.05)

    def stop(self, immediate: bool = False, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT: sessions end, checkpoint) or immediate (SIGQUIT: a crash)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- administration -------------------------------------------------------------------

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host=str(self.root), port=self.port, user="postgres", dbname=dbname, autocommit=True
        )

    def prepare(self) -> None:
        """The role the control planes log in as, and a migrated template database."""
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(PASSWORD)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(TEMPLATE), sql.Identifier(ROLE)
                )
            )
        _in_fresh_loop(_migrate(self.config(TEMPLATE)))

    def config(self, db_name: str, **changes: object) -> PostgresConfig:
        """How a control plane reaches `db_name` over TCP, as the test role."""
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": ROLE,
            "password": SecretStr(PASSWORD),
            "db_name": db_name,
            "connection_timeout": 2,
            **changes,
        }
        return PostgresConfig(**values)  # type: ignore[arg-type]

    def env(self, db_name: str) -> dict[str, str]:
        """The same as Kuma's environment variables, for `zonemesh cp ...` processes."""
        return {
            "KUMA_STORE_TYPE": "postgres",
            "KUMA_STORE_POSTGRES_HOST": "127.0.0.1",
            "KUMA_STORE_POSTGRES_PORT": str(self.port),
            "KUMA_STORE_POSTGRES_USER": ROLE,
            "KUMA_STORE_POSTGRES_PASSWORD": PASSWORD,
            "KUMA_STORE_POSTGRES_DB_NAME": db_name,
            "KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT": "2",
        }

    def new_database(self, migrated: bool = True) -> str:
        """A database of its own for one test: a copy of the migrated template, or empty."""
        self._databases += 1
        name = f"test_{self._databases}"
        template = TEMPLATE if migrated else "template0"
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(template), sql.Identifier(ROLE)
                )
            )
        return name

    def execute(self, db_name: str, query: str) -> list[tuple[object, ...]]:
        with self.admin(db_name) as conn:
            cur = conn.execute(query)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def terminate_listener(self, db_name: str, store_name: str) -> int:
        """pg_terminate_backend on a store's LISTENing session: a lost connection."""
        rows = self.execute(
            db_name,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{db_name}' AND application_name = '{store_name} listener'",
        )
        return len(rows)

    def add_member_role(self) -> str:
        """Another login with the test role's rights, so one instance's logins can be refused
        (`allow_login`) while its open sessions and the other instances carry on."""
        self._databases += 1
        name = f"member_{self._databases}"
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                    sql.Identifier(name), sql.Literal(PASSWORD), sql.Identifier(ROLE)
                )
            )
        return name

    def allow_login(self, role: str, allowed: bool) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} {}").format(
                    sql.Identifier(role), sql.SQL("LOGIN" if allowed else "NOLOGIN")
                )
            )

    def _run(self, *argv: str) -> None:
        result = subprocess.run(
            argv, user=self.user, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed:\n{result.stdout}\n{result.stderr}")


async def _migrate(config: PostgresConfig) -> None:
    conn = await connect(config, "test setup")
    try:
        await migrate_up(conn)
    finally:
        await conn.close()


def _in_fresh_loop(coro: object) -> None:
    """Run a coroutine to completion from sync code, even when a test's loop is running."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]
