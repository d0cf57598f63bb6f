"""The reference platform's storage: a small Protocol and its SQLite implementation.

Exactly-once lives here (invariant 2): ``store_batch`` writes every envelope of one uplink frame in ONE transaction;
an envelope's ``(hub, seq)`` is its primary key, so a re-sent envelope is recognised and stores nothing; each
reading's ``record_id`` is UNIQUE, so a record re-read from a meter and sealed into a new envelope is stored once.
The platform publishes acks only after ``store_batch`` has returned, i.e. after the commit.

SQLite work runs on one dedicated thread per store; the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

__all__ = [
    "EnvelopeOutcome",
    "EnvelopeToStore",
    "Outcome",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "StoredReading",
]

_T = TypeVar("_T")


class StorageError(RuntimeError):
    """The platform database cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class StoredReading:
    """One record as the platform keeps it.

    Attributes:
        hub: the hub that signed the envelope.
        record_id: the record's stable id (unique across the platform).
        kind: record kind (``"measurement"``, ``"alarm"``, ``"panic"``, ``"eviction_report"``...).
        device: the device the record is about, if any.
        values: the record's JSON-ready contents.
        recorded_at: when the hub says it happened (seconds since the epoch), if known.
        envelope_seq: the envelope that carried it.
        received_at: when the platform stored it.
    """

    hub: str
    record_id: str
    kind: str
    device: str | None
    values: Mapping[str, Any]
    recorded_at: float | None
    envelope_seq: int
    received_at: float


@dataclass(frozen=True, slots=True)
class EnvelopeToStore:
    """One opened, verified envelope and its records."""

    hub: str
    envelope_seq: int
    readings: tuple[StoredReading, ...]


class Outcome(enum.Enum):
    """What storing one envelope did."""

    STORED = "stored"  # new envelope; its new records stored, already-known record ids skipped
    REPLAYED = "replayed"  # this (hub, seq) was stored before; nothing written


@dataclass(frozen=True, slots=True)
class EnvelopeOutcome:
    """Per-envelope result of :meth:`Storage.store_batch`."""

    hub: str
    envelope_seq: int
    outcome: Outcome
    new_record_ids: tuple[str, ...]
    duplicate_record_ids: tuple[str, ...]


class Storage(Protocol):
    """What the ingest worker needs from a database."""

    async def store_batch(self, envelopes: Sequence[EnvelopeToStore]) -> list[EnvelopeOutcome]:
        """Store all envelopes in one transaction; return after it committed."""
        ...

    async def count_rejection(self, reason: str, hub: str | None, count: int = 1) -> None:
        """Add to the rejection counter for ``(reason, hub)``."""
        ...

    async def rejections(self) -> dict[str, int]:
        """Rejection totals per reason."""
        ...

    async def readings(self, hub: str | None = None) -> list[StoredReading]:
        """Stored readings, oldest first; of one hub if given."""
        ...

    async def enroll_hub(self, hub: str, verify_key: bytes) -> None:
        """Register (or replace) a hub's Ed25519 verify key."""
        ...

    async def hubs(self) -> dict[str, bytes]:
        """Every enrolled hub and its verify key."""
        ...


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hubs (hub TEXT PRIMARY KEY, verify_key BLOB NOT NULL, enrolled_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS envelopes (hub TEXT NOT NULL, seq INTEGER NOT NULL, received_at REAL NOT NULL,"
    " PRIMARY KEY (hub, seq))",
    "CREATE TABLE IF NOT EXISTS readings (id INTEGER PRIMARY KEY, hub TEXT NOT NULL, record_id TEXT NOT NULL UNIQUE,"
    " kind TEXT NOT NULL, device TEXT, values_json TEXT NOT NULL, recorded_at REAL, envelope_seq INTEGER NOT NULL,"
    " received_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS readings_hub ON readings (hub, id)",
    "CREATE TABLE IF NOT EXISTS rejections (reason TEXT NOT NULL, hub TEXT NOT NULL, count INTEGER NOT NULL,"
    " PRIMARY KEY (reason, hub))",
)
_SCHEMA_VERSION = 1


class SqliteStorage:
    """:class:`Storage` on one SQLite file (WAL, ``synchronous=FULL``), all work on one thread.

    Use as ``async with SqliteStorage(path) as storage``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="platform-db")
        self._conn: sqlite3.Connection | None = None

    async def __aenter__(self) -> Self:
        await self._run(self._open)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"platform database {self.path} is not open")
        return self._conn

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")  # several ingest workers may share the file
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > _SCHEMA_VERSION:
                conn.close()
                raise StorageError(f"platform database {self.path}: schema {version} is newer than {_SCHEMA_VERSION}")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"platform database {self.path}: {exc}") from exc
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _store(self, envelopes: Sequence[EnvelopeToStore]) -> list[EnvelopeOutcome]:
        conn = self._db()
        outcomes: list[EnvelopeOutcome] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for env in envelopes:
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO envelopes (hub, seq, received_at) VALUES (?, ?, strftime('%s', 'now'))",
                    (env.hub, env.envelope_seq),
                ).rowcount
                if inserted == 0:
                    outcomes.append(EnvelopeOutcome(env.hub, env.envelope_seq, Outcome.REPLAYED, (), ()))
                    continue
                new: list[str] = []
                dup: list[str] = []
                for r in env.readings:
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO readings (hub, record_id, kind, device, values_json, recorded_at,"
                        " envelope_seq, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            r.hub,
                            r.record_id,
                            r.kind,
                            r.device,
                            json.dumps(r.values, sort_keys=True, ensure_ascii=False),
                            r.recorded_at,
                            r.envelope_seq,
                            r.received_at,
                        ),
                    )
                    (new if cur.rowcount == 1 else dup).append(r.record_id)
                outcomes.append(EnvelopeOutcome(env.hub, env.envelope_seq, Outcome.STORED, tuple(new), tuple(dup)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return outcomes

    async def store_batch(self, envelopes: Sequence[EnvelopeToStore]) -> list[EnvelopeOutcome]:
        """Store all envelopes in one transaction; return after it committed (fsynced)."""
        batch = tuple(envelopes)
        try:
            return await self._run(lambda: self._store(batch))
        except sqlite3.Error as exc:
            raise StorageError(f"platform database {self.path}: {exc}") from exc

    async def count_rejection(self, reason: str, hub: str | None, count: int = 1) -> None:
        """Add to the rejection counter for ``(reason, hub)`` (hub ``""`` when unknown)."""

        def bump() -> None:
            self._db().execute(
                "INSERT INTO rejections (reason, hub, count) VALUES (?, ?, ?)"
                " ON CONFLICT (reason, hub) DO UPDATE SET count = count + excluded.count",
                (reason, hub or "", count),
            )

        await self._run(bump)

    async def rejections(self) -> dict[str, int]:
        """Rejection totals per reason."""

        def read() -> dict[str, int]:
            rows = self._db().execute("SELECT reason, SUM(count) FROM rejections GROUP BY reason")
            return {str(reason): int(total) for reason, total in rows}

        return await self._run(read)

    async def readings(self, hub: str | None = None) -> list[StoredReading]:
        """Stored readings, oldest first; of one hub if given."""

        def read() -> list[StoredReading]:
            query = (
                "SELECT hub, record_id, kind, device, values_json, recorded_at, envelope_seq, received_at FROM readings"
            )
            params: tuple[str, ...] = ()
            if hub is not None:
                query += " WHERE hub = ?"
                params = (hub,)
            rows = self._db().execute(query + " ORDER BY id", params)
            return [
                StoredReading(
                    hub=str(h),
                    record_id=str(rid),
                    kind=str(kind),
                    device=None if device is None else str(device),
                    values=json.loads(values),
                    recorded_at=None if rec is None else float(rec),
                    envelope_seq=int(seq),
                    received_at=float(recv),
                )
                for h, rid, kind, device, values, rec, seq, recv in rows
            ]

        return await self._run(read)

    async def enroll_hub(self, hub: str, verify_key: bytes) -> None:
        """Register (or replace) a hub's Ed25519 verify key."""
        if len(verify_key) != 32:
            raise ValueError(f"an Ed25519 verify key is 32 bytes, got {len(verify_key)}")
        await self._run(
            lambda: self._db().execute(
                "INSERT INTO hubs (hub, verify_key, enrolled_at) VALUES (?, ?, strftime('%s', 'now'))"
                " ON CONFLICT (hub) DO UPDATE SET verify_key = excluded.verify_key",
                (hub, verify_key),
            )
        )

    async def hubs(self) -> dict[str, bytes]:
        """Every enrolled hub and its verify key."""
        return await self._run(
            lambda: {str(h): bytes(k) for h, k in self._db().execute("SELECT hub, verify_key FROM hubs")}
        )
