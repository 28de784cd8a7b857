"""One generated TLS CA for every instance sharing a PostgreSQL database.

Instances of one zone (or of global) on one database must be interchangeable to clients: one
CA file (`<data-dir>/tls/ca.crt`) verifies any of them. The first instance to start puts its
generated CA (certificate and key) in the store's internal values, under an advisory lock so
two first starts do not both do it; every instance then installs that CA in its data
directory and issues its own server certificate from it (each names its own addresses).
Internal values are never served by the API. Given certificate files are left alone.
"""

from __future__ import annotations

import asyncio
import json
import logging

from zonemesh.config import CpConfig
from zonemesh.store.base import Store, StoreUnavailableError
from zonemesh.store.postgres_connection import connect, explain
from zonemesh.tls.material import install_ca, local_ca

log = logging.getLogger("zonemesh.tls")

VALUE_NAME = "tls/generated-ca"
LOCK_NAME = "zonemesh-tls-ca"


def shares_ca(config: CpConfig) -> bool:
    return config.store.type == "postgres" and not config.general.tls.cert_file


async def share_generated_ca(config: CpConfig, store: Store) -> None:
    """Make this data directory's CA the database's (storing ours if it has none)."""
    conn = await connect(config.store.postgres, "zonemesh-cp tls")
    try:
        await asyncio.wait_for(
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOCK_NAME,)), timeout=30
        )
        stored = await store.get_value(VALUE_NAME)
        if stored is None:
            cert_pem, key_pem = await asyncio.to_thread(local_ca, config.data_dir)
            value = {"cert": cert_pem.decode(), "key": key_pem.decode()}
            await store.set_value(VALUE_NAME, json.dumps(value))
            log.info("TLS: stored this instance's CA for the others sharing the database")
            return
        value = json.loads(stored)
        replaced = await asyncio.to_thread(
            install_ca, config.data_dir, value["cert"].encode(), value["key"].encode()
        )
        if replaced:
            log.warning(
                "TLS: %s/tls/ca.crt was replaced by the CA the instances sharing the database "
                "use; clients must trust that one",
                config.data_dir,
            )
    except TimeoutError:
        raise StoreUnavailableError("TLS: waited 30s for the shared CA's lock") from None
    except Exception as e:
        if isinstance(e, StoreUnavailableError):
            raise
        import psycopg

        if isinstance(e, psycopg.Error):
            raise StoreUnavailableError(f"TLS: sharing the CA failed: {explain(e)}") from None
        raise
    finally:
        await conn.close()  # the lock goes with the session
