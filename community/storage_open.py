"""Which storage engine a platform runs on, chosen by its config, and the schema's state for `carehub platform migrate`.

``[storage]`` in ``platform.toml`` names the engine:

- ``database = "platform.db"`` alone: SQLite (the embedded default: the demo, tests, a one-clinic install);
- ``url = "postgresql://carehub@db.example/carehub"``: PostgreSQL (a district; ``docs/platform-postgresql.md``).
  ``database`` then only places the console's own local files (accounts, audit log, care plans) beside it.

Both engines migrate their schema when they open (PostgreSQL under an advisory lock, so several workers starting at
once apply each migration once). :func:`schema_status` reads the version without changing anything, for an operator
who wants to see a pending migration first and apply it as its own step (:func:`migrate`).
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from community.config import PlatformConfig
from community.storage import SQLITE_SCHEMA_VERSION, SqliteStorage, Storage
from community.storage_common import StorageError

__all__ = ["SchemaStatus", "migrate", "open_storage", "schema_status"]


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """A platform database's schema version and the newest this carehub knows.

    Attributes:
        engine: ``sqlite`` or ``postgresql``.
        name: the database as shown to people (a file path, or a URL without its password).
        current: the version in force (0: a new, empty database).
        latest: the newest version this carehub migrates to.
    """

    engine: str
    name: str
    current: int
    latest: int

    @property
    def pending(self) -> int:
        """How many versions opening the database would apply."""
        return max(0, self.latest - self.current)


def open_storage(cfg: PlatformConfig) -> AbstractAsyncContextManager[Storage]:
    """The platform's storage as ``cfg`` names it, opened (and migrated) by ``async with``."""
    if cfg.postgres_url is not None:
        from community.storage_pg import PostgresStorage  # noqa: PLC0415  psycopg only when PostgreSQL is used

        return PostgresStorage(cfg.postgres_url)
    return SqliteStorage(cfg.database)


async def schema_status(cfg: PlatformConfig) -> SchemaStatus:
    """The schema version of ``cfg``'s database, read without migrating or creating anything.

    Raises:
        StorageError: the database cannot be reached or read (one line, no password).
    """
    if cfg.postgres_url is not None:
        import psycopg  # noqa: PLC0415  only when PostgreSQL is used

        from community.storage_pg import display_url  # noqa: PLC0415
        from community.storage_pg_schema import MIGRATIONS, current_version  # noqa: PLC0415

        name = display_url(cfg.postgres_url)
        try:
            async with await psycopg.AsyncConnection.connect(cfg.postgres_url, autocommit=True) as conn:
                current = await current_version(conn)
        except psycopg.Error as exc:
            raise StorageError(f"platform database {name}: {' '.join(str(exc).split())}") from exc
        return SchemaStatus("postgresql", name, current, MIGRATIONS[-1].version)
    path = cfg.database
    current = 0
    if path.exists():
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                current = int(db.execute("PRAGMA user_version").fetchone()[0])
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StorageError(f"platform database {path}: {exc}") from exc
    return SchemaStatus("sqlite", str(path), current, SQLITE_SCHEMA_VERSION)


async def migrate(cfg: PlatformConfig) -> tuple[SchemaStatus, SchemaStatus]:
    """Bring ``cfg``'s database to the newest schema (creating it if new); returns the status before and after.

    Raises:
        StorageError: the database cannot be reached, or its schema is newer than this carehub knows.
    """
    before = await schema_status(cfg)
    if before.current > before.latest:
        raise StorageError(
            f"platform database {before.name}: schema {before.current} is newer than this carehub knows"
            f" ({before.latest}); upgrade carehub"
        )
    async with open_storage(cfg):
        pass
    return before, await schema_status(cfg)
