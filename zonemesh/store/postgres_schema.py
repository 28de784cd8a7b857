"""The PostgreSQL store's schema: numbered migrations, applied by `zonemesh cp migrate up`.

`schema_version` holds one row per applied migration. `cp run` never changes the schema: it
checks that the database is at exactly the newest version this zonemesh knows and refuses to
start otherwise, naming the fix (`migrate up`, or a newer zonemesh). `migrate_up` applies the
missing migrations in one transaction under an advisory lock, so two instances upgrading at
once take turns and a failed upgrade leaves the schema as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from zonemesh.config import PostgresConfig
from zonemesh.store.postgres_connection import SchemaError, connect, describe, explain

# Any constant serves; it only has to be the same for every zonemesh (hashtext is stable).
_MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('zonemesh schema migrations'))"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "resources, their change log, the store revision and internal values",
        """
        CREATE TABLE resources (
            type              text        NOT NULL,
            mesh              text        NOT NULL,  -- '' for global-scoped types
            name              text        NOT NULL,
            version           bigint      NOT NULL,
            document          text        NOT NULL,  -- the resource as JSON (its wire form)
            creation_time     timestamptz NOT NULL,
            modification_time timestamptz NOT NULL,
            revision          bigint      NOT NULL,  -- of the write that left it like this
            PRIMARY KEY (type, mesh, name)
        );
        -- One row per write, in revision order: what every instance replays.
        CREATE TABLE resource_events (
            revision          bigint      PRIMARY KEY,
            kind              text        NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
            type              text        NOT NULL,
            mesh              text        NOT NULL,
            name              text        NOT NULL,
            version           bigint      NOT NULL,
            document          text        NOT NULL,  -- after the write; for a delete, before
            creation_time     timestamptz NOT NULL,
            modification_time timestamptz NOT NULL
        );
        -- The last revision handed out. Every write increments it first: that row lock
        -- orders writers, so revisions follow commit order and have no gaps.
        CREATE TABLE store_revision (
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            revision bigint  NOT NULL
        );
        INSERT INTO store_revision (revision) VALUES (0);
        CREATE TABLE internal_values (
            name  text PRIMARY KEY,
            value text NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "VIP claims: one row per virtual IP handed out, unique per IP and per resource",
        """
        -- The database, not the leader's memory, decides who holds a VIP: two instances that
        -- both believe they lead (a lock lost on a cut connection, not yet noticed) can then
        -- never hand one address to two resources. `pool` is the CIDR allocated from.
        CREATE TABLE vip_claims (
            pool       text        NOT NULL,
            ip         text        NOT NULL,
            owner_type text        NOT NULL,
            owner_mesh text        NOT NULL,
            owner_name text        NOT NULL,
            claimed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (pool, ip),
            UNIQUE (pool, owner_type, owner_mesh, owner_name)
        );
        """,
    ),
)

KNOWN_VERSION = MIGRATIONS[-1].version

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     integer     PRIMARY KEY,
    description text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def schema_version(conn: psycopg.AsyncConnection) -> int | None:
    """The database's schema version; None when it has no zonemesh schema at all."""
    cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return None
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def too_new(found: int) -> SchemaError:
    return SchemaError(
        f"the database schema is version {found}, this zonemesh knows up to "
        f"{KNOWN_VERSION}: upgrade zonemesh"
    )


async def check_schema(conn: psycopg.AsyncConnection, where: str) -> None:
    """Refuse a database whose schema is not exactly the one this zonemesh writes."""
    found = await schema_version(conn)
    if found is None or found == 0:
        raise SchemaError(f"{where} has no zonemesh schema: run `zonemesh cp migrate up`")
    if found > KNOWN_VERSION:
        raise too_new(found)
    if found < KNOWN_VERSION:
        raise SchemaError(
            f"the database schema is version {found}, this zonemesh needs {KNOWN_VERSION}: "
            "run `zonemesh cp migrate up`"
        )


async def migrate_up(conn: psycopg.AsyncConnection) -> tuple[int, int]:
    """Apply every missing migration; (version before, version after). Refuses a newer schema."""
    async with conn.transaction():
        await conn.execute(_MIGRATE_LOCK)
        await conn.execute(_CREATE_VERSION_TABLE)
        found = await schema_version(conn) or 0
        if found > KNOWN_VERSION:
            raise too_new(found)
        for migration in MIGRATIONS:
            if migration.version <= found:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )
    return found, max(found, KNOWN_VERSION)


async def migrate_database(config: PostgresConfig) -> str:
    """`zonemesh cp migrate up`: connect, migrate, and say what was done (or raise StoreError)."""
    where = describe(config)
    conn = await connect(config, "zonemesh migrate")
    try:
        before, after = await migrate_up(conn)
    except psycopg.Error as e:
        raise SchemaError(f"migrating {where} failed: {explain(e)}") from None
    finally:
        await conn.close()
    if before == after:
        return f"{where}: the schema is up to date (version {after})"
    return f"{where}: schema migrated from version {before} to {after}"
