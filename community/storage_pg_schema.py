"""The PostgreSQL schema of the platform, as numbered migrations, and the code that applies them.

Each :class:`Migration` runs once, in order, in one transaction that also records it in ``schema_migrations``
(version, name, when). Every connection that migrates first takes one transaction-scoped advisory lock, so workers
starting together (or ``carehub platform migrate`` beside them) apply each migration exactly once; the others wait
and then find nothing left to do. A database whose schema is newer than this code knows is refused (an older
worker must not write to a schema it does not understand).

Layout (schema 1), with the same meaning as the SQLite engine's tables (:mod:`community.storage`):

* ``readings`` and ``envelopes`` are hash-partitioned on the hub id (:data:`PARTITIONS` partitions each). The
  exactly-once keys, ``(hub, record_id)`` and ``(hub, seq)``, include the partition key, so PostgreSQL enforces them
  across the whole table and ``INSERT ... ON CONFLICT DO NOTHING`` stays the one dedup rule. Partitioning by time
  could not: a record re-read from a meter and re-sealed later carries the same record id with another time, and a
  unique key on a time-partitioned table must include the time.
* sequence-number columns are BIGINT holding ``value - 2**63`` (:mod:`community.storage_common`);
  ``readings.hub_time`` is a ``timestamptz`` (microseconds, as the record's), ``readings.body`` ``json`` (the exact
  text stored, so a float reads back as the float it was).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import psycopg
from psycopg.rows import TupleRow

from community.down_sql import PG_DOWN_SCHEMA

__all__ = ["MIGRATIONS", "PARTITIONS", "Migration", "SchemaError", "apply_migrations", "current_version"]

PARTITIONS: Final = 16
"""Hash partitions of ``readings`` and ``envelopes`` (fixed by migration 1: changing it means a new migration)."""

_LOCK_KEY: Final = 0x0CA2E_4B5  # advisory lock id: "migrating the carehub platform schema"


class SchemaError(RuntimeError):
    """The database's schema cannot be used by this code (newer than it knows)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: applied once, in one transaction, in version order."""

    version: int
    name: str
    statements: tuple[str, ...]


def _partitions(table: str) -> tuple[str, ...]:
    return tuple(
        f"CREATE TABLE {table}_p{r:02d} PARTITION OF {table} FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {r})"
        for r in range(PARTITIONS)
    )


_INITIAL: Final = (
    "CREATE TABLE hub_registry (id integer PRIMARY KEY CHECK (id = 0), generation bigint NOT NULL)",
    "INSERT INTO hub_registry (id, generation) VALUES (0, 0)",
    "CREATE TABLE hubs (hub text PRIMARY KEY, verify_key bytea NOT NULL CHECK (length(verify_key) = 32),"
    " enrolled_at timestamptz NOT NULL DEFAULT now(), generation bigint NOT NULL)",
    "CREATE INDEX hubs_generation ON hubs (generation)",
    "CREATE TABLE residents (hub text NOT NULL, resident text NOT NULL,"
    " registered_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (hub, resident))",
    "CREATE TABLE envelopes (hub text NOT NULL, seq bigint NOT NULL, received_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (hub, seq)) PARTITION BY HASH (hub)",
    *_partitions("envelopes"),
    # Identity columns on partitioned tables need PostgreSQL 17; Debian 12 ships 15: a sequence as the default.
    "CREATE SEQUENCE readings_id_seq AS bigint",
    "CREATE TABLE readings (id bigint NOT NULL DEFAULT nextval('readings_id_seq'), hub text NOT NULL,"
    " record_id text NOT NULL, kind text NOT NULL, record_seq bigint NOT NULL, device text, body json NOT NULL,"
    " hub_time timestamptz NOT NULL, device_time text, envelope_seq bigint NOT NULL,"
    " received_at double precision NOT NULL, resident text, alarm_id text, PRIMARY KEY (hub, record_id))"
    " PARTITION BY HASH (hub)",
    *_partitions("readings"),
    "CREATE INDEX readings_hub ON readings (hub, id)",
    "CREATE INDEX readings_id ON readings (id)",
    "CREATE INDEX readings_resident ON readings (hub, resident) WHERE resident IS NOT NULL",
    "CREATE INDEX readings_alarm ON readings (hub, alarm_id) WHERE alarm_id IS NOT NULL",
    "CREATE TABLE rejections (reason text NOT NULL, hub text NOT NULL, count bigint NOT NULL,"
    " PRIMARY KEY (reason, hub))",
    "CREATE TABLE quarantine (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " received_at double precision NOT NULL, topic_hub text, claimed_hub text, seq bigint, reason text NOT NULL,"
    " detail text NOT NULL, size bigint NOT NULL, digest text NOT NULL)",
    "CREATE INDEX quarantine_hub ON quarantine (topic_hub, id)",
    "CREATE TABLE down_seqs (hub text PRIMARY KEY, seq bigint NOT NULL)",
)

MIGRATIONS: Final = (
    Migration(1, "platform tables; readings and envelopes hash-partitioned by hub", _INITIAL),
    Migration(2, "down-messages kept until the hub confirms them", PG_DOWN_SCHEMA),
)
"""Every migration this code knows, in version order."""

_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())"
)


async def current_version(conn: psycopg.AsyncConnection[TupleRow]) -> int:
    """The highest migration applied (0: none, or no ``schema_migrations`` table yet)."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def apply_migrations(
    conn: psycopg.AsyncConnection[TupleRow], migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[Migration]:
    """Apply the migrations ``conn``'s database lacks, each in its own transaction; return those applied.

    ``conn`` must be in autocommit mode (each migration is its own transaction); ``migrations`` is not empty.

    Raises:
        SchemaError: the database has a migration newer than the last of ``migrations``.
        psycopg.Error: the database failed; the migration that failed left nothing behind.
    """
    known = migrations[-1].version
    applied: list[Migration] = []
    for migration in migrations:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            await conn.execute(_TABLE)
            version = await current_version(conn)
            if version > known:
                raise SchemaError(f"schema version {version} is newer than this carehub knows ({known})")
            if migration.version <= version:
                continue
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
            )
        applied.append(migration)
    return applied
