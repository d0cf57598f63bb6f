"""The outbox's SQLite schema: migrations, connection set-up, the statements and row encodings the store uses.

* The schema is versioned with ``PRAGMA user_version``; each migration takes the database from version N to N+1
  inside one transaction, and a database written by a newer carehub is refused (:class:`OutboxSchemaError`).
* :func:`prepare` puts a fresh connection in WAL mode with ``synchronous=FULL`` (a commit returns only after the
  WAL is fsynced), checks the file's integrity, migrates it and proves it writable.
* SD-card wear (issue 17 item 7; figures from ``carehub sim soak`` in the README): a hub commits a few rows at a time
  (a reading, its ack), and each commit appends one WAL frame per changed page (page size + 24 bytes) and fsyncs it.
  With 4096-byte pages every frame straddles two 4 KiB pages of the file system, so a one-page commit costs the card
  8 KiB; with :data:`PAGE_SIZE` (1024) a frame mostly lands in one. Measured on ext4 (``/proc/self/io``): an insert
  and its ack cost 16.5 KB with 4096-byte pages, 10.3 KB with 1024. The page size is set for new databases only (an
  existing file keeps its own; changing it needs a VACUUM outside WAL, not worth a risk at start-up). The WAL is
  checkpointed every :data:`WAL_AUTOCHECKPOINT_PAGES` pages (256 KiB), not SQLite's 1000: the bytes written barely
  change (a checkpoint writes the few distinct pages back once), and the WAL file stays small. ``synchronous=FULL``
  stays: a record acknowledged to a meter or a pendant must survive a power cut, and NORMAL would let the last
  commits of a WAL be lost to one (SQLite syncs the WAL only at checkpoints then).
* Functions here run on the outbox's database thread (:mod:`gateway.outbox_store`); nothing here awaits.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, Final

from gateway.errors import OutboxCorruptError, OutboxError, OutboxSchemaError, OutboxUnwritableError
from gateway.outbox_rows import CursorValue, Eviction, OutboxItem

__all__ = [
    "INSERT",
    "MIGRATIONS",
    "PAGE_SIZE",
    "ROUTINE_OLDEST_FIRST",
    "SCHEMA_VERSION",
    "SEND_ORDER",
    "SEQ_KEY",
    "WAL_AUTOCHECKPOINT_PAGES",
    "classify_open_error",
    "encode_row",
    "json_ids",
    "prepare",
    "read_cursor",
    "read_eviction_log",
    "rows_to_send",
    "write_cursor",
]

_log = logging.getLogger(__name__)

PAGE_SIZE: Final = 1024
"""The page size of a new outbox database (see the module docstring: fewer bytes per small commit)."""
WAL_AUTOCHECKPOINT_PAGES: Final = 256
"""Checkpoint the WAL once it holds this many pages (SQLite's default is 1000)."""

SEQ_KEY: Final = "outbox.next_envelope_seq"
"""The cursor holding the next envelope sequence number (reserved: :func:`write_cursor` refuses it)."""


# Schema version 1. Each migration takes the database from version N to N+1 inside one transaction.
def _migrate_to_1(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE outbox ("
        " seq INTEGER PRIMARY KEY,"  # the envelope sequence number; unique per hub
        " lane INTEGER NOT NULL,"
        " kind TEXT NOT NULL,"
        " record_ids TEXT NOT NULL,"  # JSON list of strings
        " created REAL NOT NULL,"
        " size INTEGER NOT NULL,"
        " envelope BLOB NOT NULL)"
    )
    conn.execute("CREATE INDEX outbox_lane_seq ON outbox (lane, seq)")
    conn.execute("CREATE TABLE cursors (key TEXT PRIMARY KEY, value NOT NULL)")
    conn.execute(
        "CREATE TABLE eviction_log (seq INTEGER PRIMARY KEY, record_ids TEXT NOT NULL, size INTEGER NOT NULL,"
        " evicted_at REAL NOT NULL)"
    )
    conn.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")


def _migrate_to_2(conn: sqlite3.Connection) -> None:
    # Only priority rows (lane 0) are indexed: routine rows, nearly all of them, are found in seq order by the
    # table itself (seq is its rowid). Each routine insert then writes one B-tree instead of two, which cut a
    # 64-row group commit by about a tenth here and writes one page less per commit to the SD card.
    conn.execute("DROP INDEX outbox_lane_seq")
    conn.execute("CREATE INDEX outbox_priority ON outbox (seq) WHERE lane = 0")


MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (_migrate_to_1, _migrate_to_2)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def classify_open_error(path: Path, exc: sqlite3.Error | OSError) -> OutboxError:
    """The typed outbox error for a failure to open or prepare ``path``."""
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return OutboxCorruptError(path, f"not a usable SQLite database ({text})")
    return OutboxUnwritableError(path, f"cannot open for writing ({text})")


def prepare(conn: sqlite3.Connection, path: Path) -> None:
    """Set up a fresh connection to ``path``: page size (new files), WAL, full sync, checkpoint policy, integrity
    check, migrations, a proving write.

    Raises:
        OutboxUnwritableError: WAL mode cannot be enabled.
        OutboxCorruptError: the integrity check fails.
        OutboxSchemaError: the file was written by a newer schema.
        sqlite3.Error: anything else SQLite refused (the caller classifies it).
    """
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only while the file is still empty
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise OutboxUnwritableError(path, f"cannot switch to WAL journal mode (got {mode!r})")
    conn.execute("PRAGMA synchronous=FULL")  # durability of acknowledged records; see the module docstring
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    conn.execute("PRAGMA foreign_keys=ON")
    check = conn.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise OutboxCorruptError(path, f"integrity check failed: {check}")
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise OutboxSchemaError(
            path, f"schema version {version} is newer than this carehub understands ({SCHEMA_VERSION})"
        )
    for target in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[target](conn)
            conn.execute(f"PRAGMA user_version = {target + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        _log.info("outbox %s migrated to schema version %d", path, target + 1)
    # A write proves the file and its directory are writable now, not at the first reading.
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT OR IGNORE INTO cursors (key, value) VALUES (?, 0)", (SEQ_KEY,))
    conn.execute("COMMIT")


# Lane 0 is Lane.PRIORITY and lane 1 Lane.ROUTINE (stored values, never renumbered). They are literals, not
# parameters, so that SQLite sees the priority query is covered by the partial index outbox_priority.
SEND_ORDER: Final = (
    "SELECT seq, lane, kind, record_ids, created, size, envelope FROM outbox WHERE lane = 0 ORDER BY seq",
    "SELECT seq, lane, kind, record_ids, created, size, envelope FROM outbox WHERE lane = 1 ORDER BY seq",
)
ROUTINE_OLDEST_FIRST: Final = "SELECT seq, record_ids, size FROM outbox WHERE lane = 1 ORDER BY seq"

INSERT: Final = "INSERT INTO outbox (seq, lane, kind, record_ids, created, size, envelope) VALUES (?, ?, ?, ?, ?, ?, ?)"


def rows_to_send(conn: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    """Every stored row in sending order: the priority lane, then the routine lane, each oldest first."""
    for query in SEND_ORDER:
        yield from conn.execute(query)


def encode_row(item: OutboxItem) -> tuple[int, int, str, str, float, int, bytes]:
    """The :data:`INSERT` parameters for ``item``."""
    return (
        item.envelope_seq,
        int(item.lane),
        item.kind,
        json_ids(item.record_ids),
        item.created,
        item.size,
        item.envelope,
    )


def json_ids(ids: tuple[str, ...]) -> str:
    """``json.dumps(list(ids))``, five times faster (the C string encoder, without the generic dispatch)."""
    if len(ids) == 1:  # most envelopes under load: one reading each
        return "[" + encode_basestring_ascii(ids[0]) + "]"
    return "[" + ", ".join(map(encode_basestring_ascii, ids)) + "]"


def read_cursor(conn: sqlite3.Connection, key: str, default: CursorValue | None) -> CursorValue | None:
    """A cursor's committed value, or ``default``."""
    found = conn.execute("SELECT value FROM cursors WHERE key = ?", (key,)).fetchone()
    if found is None:
        return default
    value = found[0]
    if isinstance(value, int | str | bytes):
        return value
    raise TypeError(f"cursor {key!r} holds an unexpected {type(value).__name__}")


def write_cursor(conn: sqlite3.Connection, key: str, value: CursorValue) -> None:
    """Set one cursor (in the caller's transaction).

    Raises:
        ValueError: ``key`` is the reserved sequence counter, or an integer does not fit 64 bits.
        TypeError: ``value`` is not int, str or bytes.
    """
    if key == SEQ_KEY:
        raise ValueError(f"{key!r} is reserved for the envelope sequence counter")
    if not isinstance(value, int | str | bytes) or isinstance(value, bool):
        raise TypeError(f"cursor values are int, str or bytes, not {type(value).__name__}")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        # SQLite integers are signed 64-bit; store larger numbers (a uint64 sequence number) as decimal text.
        raise ValueError(f"cursor {key!r}: {value} does not fit a signed 64-bit integer")
    conn.execute(
        "INSERT INTO cursors (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def read_eviction_log(conn: sqlite3.Connection) -> Eviction | None:
    """Every logged eviction not yet settled by an eviction report, merged; ``None`` if there is none."""
    rows = [
        (int(seq), tuple(json.loads(ids)), int(size))
        for seq, ids, size in conn.execute("SELECT seq, record_ids, size FROM eviction_log ORDER BY seq")
    ]
    return Eviction.merge(rows)
