"""The PostgreSQL store's settings: Kuma's names, libpq's parameters, refusals that say why."""

from __future__ import annotations

import pytest

from zonemesh.config import ConfigError, load_config
from zonemesh.store.postgres_connection import connection_kwargs, describe, explain

KUMA_ENV = {
    "KUMA_STORE_TYPE": "postgres",
    "KUMA_STORE_POSTGRES_HOST": "db.internal",
    "KUMA_STORE_POSTGRES_PORT": "5432",
    "KUMA_STORE_POSTGRES_USER": "mesh",
    "KUMA_STORE_POSTGRES_PASSWORD": "hunter2",
    "KUMA_STORE_POSTGRES_DB_NAME": "meshdb",
    "KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT": "7",
    "KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS": "20",
    "KUMA_STORE_POSTGRES_TLS_MODE": "verifyFull",
    "KUMA_STORE_POSTGRES_TLS_CA_PATH": "/etc/db/ca.crt",
    "KUMA_STORE_POSTGRES_TLS_CERT_PATH": "/etc/db/client.crt",
    "KUMA_STORE_POSTGRES_TLS_KEY_PATH": "/etc/db/client.key",
    "KUMA_STORE_POSTGRES_TLS_DISABLE_SSLSNI": "true",
}


def test_kuma_env_names_become_libpq_parameters() -> None:
    config = load_config(env=KUMA_ENV)
    assert config.store.type == "postgres"

    params = connection_kwargs(config.store.postgres, "zonemesh-cp")

    assert {k: params[k] for k in ("host", "port", "user", "password", "dbname")} == {
        "host": "db.internal",
        "port": 5432,
        "user": "mesh",
        "password": "hunter2",
        "dbname": "meshdb",
    }
    assert params["connect_timeout"] == 7
    assert (params["sslmode"], params["sslrootcert"]) == ("verify-full", "/etc/db/ca.crt")
    assert (params["sslcert"], params["sslkey"], params["sslsni"]) == (
        "/etc/db/client.crt",
        "/etc/db/client.key",
        "0",
    )
    assert config.store.postgres.max_open_connections == 20
    assert describe(config.store.postgres) == (
        'PostgreSQL at db.internal:5432 (database "meshdb", user "mesh")'
    )


def test_kuma_defaults_and_the_password_never_shown() -> None:
    config = load_config(env={"KUMA_STORE_TYPE": "postgres", "KUMA_STORE_POSTGRES_PASSWORD": "p"})
    pg = config.store.postgres
    assert (pg.host, pg.port, pg.user, pg.db_name, pg.tls.mode) == (
        "127.0.0.1",
        15432,
        "kuma",
        "kuma",
        "disable",
    )
    assert connection_kwargs(pg, "x")["sslmode"] == "disable"
    assert config.effective()["store"]["postgres"]["password"] == "**********"
    assert "'p'" not in repr(config)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"KUMA_STORE_POSTGRES_TLS_MODE": "verifyCa"},
            "mode verifyCa verifies the server's certificate: give the CA that signed it in "
            "caPath (KUMA_STORE_POSTGRES_TLS_CA_PATH)",
        ),
        ({"KUMA_STORE_POSTGRES_TLS_CERT_PATH": "/c.crt"}, "certPath and keyPath go together"),
        ({"KUMA_STORE_POSTGRES_TLS_MODE": "require"}, "store.postgres.tls.mode"),
        ({"KUMA_STORE_POSTGRES_PORT": "0"}, "store.postgres.port"),
    ],
)
def test_bad_settings_are_refused_naming_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as e:
        load_config(env={"KUMA_STORE_TYPE": "postgres", **env})
    assert message in str(e.value)


def test_driver_errors_read_as_one_line_without_repeating_the_address() -> None:
    raw = (
        'connection failed: connection to server at "127.0.0.1", port 5999 failed: '
        "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
        "connections?"
    )
    assert explain(Exception(raw)) == (
        "Connection refused Is the server running on that host and accepting TCP/IP connections?"
    )
    assert explain(Exception('FATAL:  password authentication failed for user "kuma"')) == (
        'password authentication failed for user "kuma"'
    )
