"""How the PostgreSQL store connects: libpq parameters from the config, and errors in words.

One home for what a connection looks like (TLS, timeouts, keepalives, time zone) so that the
pool, the listening connection and `cp migrate up` connect identically, and for turning a
driver error into a message that names the server and the user, never the password.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from zonemesh.config import PostgresConfig
from zonemesh.store.base import StoreError, StoreUnavailableError

# Kuma's TLS modes, as libpq's sslmode (the same mapping Kuma's driver uses).
SSLMODES = {
    "disable": "disable",
    "verifyNone": "require",
    "verifyCa": "verify-ca",
    "verifyFull": "verify-full",
}

# A database that vanishes without closing the socket (a dead host, a cut cable) is noticed
# by TCP after about idle + interval * count seconds, and a stuck send after the user timeout.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


class SchemaError(StoreError):
    """The database has no zonemesh schema, an older one, or one newer than this zonemesh."""


def connection_kwargs(config: PostgresConfig, application_name: str) -> dict[str, Any]:
    """Keyword arguments for `psycopg.AsyncConnection.connect` (libpq parameters)."""
    tls = config.tls
    kwargs: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "user": config.user,
        "password": config.password.get_secret_value(),
        "dbname": config.db_name,
        "connect_timeout": config.connection_timeout,
        "application_name": application_name,
        "sslmode": SSLMODES[tls.mode],
        # Timestamps come back in UTC whatever the server's default time zone is.
        "options": "-c TimeZone=UTC",
        **_KEEPALIVES,
    }
    if tls.ca_path:
        kwargs["sslrootcert"] = tls.ca_path
    if tls.cert_path:
        kwargs["sslcert"] = tls.cert_path
        kwargs["sslkey"] = tls.key_path
    if tls.disable_sslsni:
        kwargs["sslsni"] = "0"
    return kwargs


def describe(config: PostgresConfig) -> str:
    """`PostgreSQL at HOST:PORT (database "D", user "U")`: where, and as whom."""
    return (
        f'PostgreSQL at {config.host}:{config.port} (database "{config.db_name}", '
        f'user "{config.user}")'
    )


_LIBPQ_PREFIX = re.compile(
    r"^(connection failed: )?(connection to server at \"[^\"]*\"( \([^)]*\))?, port \d+ failed: )?"
)


def explain(error: BaseException) -> str:
    """The driver's reason on one line, without the host and port libpq repeats."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = _LIBPQ_PREFIX.sub("", text)
    return text.removeprefix("FATAL: ").strip()


async def connect(config: PostgresConfig, application_name: str) -> psycopg.AsyncConnection:
    """One autocommit connection, or a `StoreUnavailableError` saying where and why."""
    try:
        return await psycopg.AsyncConnection.connect(
            autocommit=True, **connection_kwargs(config, application_name)
        )
    except psycopg.Error as e:
        raise StoreUnavailableError(f"cannot connect to {describe(config)}: {explain(e)}") from None
