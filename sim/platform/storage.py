"""The reference platform's storage: a small Protocol and its SQLite implementation.

Exactly-once lives here (invariant 2): ``store_batch`` writes every envelope of one uplink frame in ONE transaction;
an envelope's ``(hub, seq)`` is its primary key, so a re-sent envelope is recognised and stores nothing; each
reading's ``(hub, record_id)`` is UNIQUE, so a record re-read from a meter and sealed into a new envelope is stored
once. The platform publishes acks only after ``store_batch`` has returned, i.e. after the commit. Readings are the
decoded fields of :class:`protocols.record.Record` (body as JSON). Down-message sequence numbers are allocated here
too, per hub, durably, so they keep increasing across platform restarts.

SQLite work runs on one dedicated thread per store; the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as _dt
import enum
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import nacl.signing

from protocols.envelope import OpenedEnvelope
from protocols.keys import KEY_LEN, HubPublicKey
from protocols.record import Body, Record, RecordKind
from protocols.topics import is_valid_hub_id

__all__ = [
    "EnvelopeOutcome",
    "EnvelopeToStore",
    "Outcome",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "StoredReading",
    "body_json",
]

_T = TypeVar("_T")


class StorageError(RuntimeError):
    """The platform database cannot be opened or written."""


def _jsonable(value: object) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def body_json(body: Body) -> dict[str, Any]:
    """A record body as JSON-ready data: its field names, enums as their values, bytes (raw GATT values, record
    ids) as lowercase hex, times as ISO 8601 in UTC; a measurement's ``values`` exactly as decoded on the hub."""
    out: dict[str, Any] = _jsonable(dataclasses.asdict(body))
    return out


@dataclass(frozen=True, slots=True)
class StoredReading:
    """One record as the platform keeps it: the fields of a :class:`protocols.record.Record`, decoded.

    Attributes:
        hub: the hub that signed the envelope (and produced the record).
        record_id: the record's stable id as 32 lowercase hex digits (unique per hub).
        kind: the record kind (:class:`protocols.record.RecordKind` value: ``"measurement"``, ``"alarm"``...).
        record_seq: the hub's record sequence number.
        device: the device the record is about, if any.
        body: the record body as JSON (:func:`body_json`).
        hub_time: when the hub received or created the record (UTC).
        device_time: the device's own timestamp as it reported it, if any.
        envelope_seq: the envelope that carried it.
        received_at: when the platform stored it (seconds since the epoch).
    """

    hub: str
    record_id: str
    kind: str
    record_seq: int
    device: str | None
    body: Mapping[str, Any]
    hub_time: _dt.datetime
    device_time: str | None
    envelope_seq: int
    received_at: float

    @property
    def values(self) -> Mapping[str, Any] | None:
        """A measurement's decoded values (``body.values``); ``None`` for other kinds."""
        if self.kind != RecordKind.MEASUREMENT.value:
            return None
        values: Mapping[str, Any] = self.body["values"]
        return values

    @classmethod
    def from_record(cls, record: Record, envelope_seq: int, received_at: float) -> Self:
        """The stored form of a verified record."""
        return cls(
            hub=record.hub_id,
            record_id=record.record_id.hex(),
            kind=record.kind.value,
            record_seq=record.seq,
            device=record.device_id,
            body=body_json(record.body),
            hub_time=record.hub_time.astimezone(_dt.UTC),
            device_time=record.device_time,
            envelope_seq=envelope_seq,
            received_at=received_at,
        )


@dataclass(frozen=True, slots=True)
class EnvelopeToStore:
    """One opened, verified envelope and its records."""

    hub: str
    envelope_seq: int
    readings: tuple[StoredReading, ...]

    @classmethod
    def from_opened(cls, envelope: OpenedEnvelope, received_at: float) -> Self:
        """The stored form of an envelope :func:`protocols.envelope.open_envelope` accepted."""
        readings = tuple(StoredReading.from_record(r, envelope.seq, received_at) for r in envelope.decoded)
        return cls(envelope.hub_id, envelope.seq, readings)


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

    async def enroll_hub(self, hub: HubPublicKey) -> None:
        """Register (or replace) a hub's Ed25519 verify key."""
        ...

    async def hubs(self) -> dict[str, nacl.signing.VerifyKey]:
        """Every enrolled hub and its verify key."""
        ...

    async def next_down_seq(self, hub: str) -> int:
        """Allocate the next down-message sequence number for ``hub`` (1, 2, ...), durably, never reused."""
        ...


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hubs (hub TEXT PRIMARY KEY, verify_key BLOB NOT NULL, enrolled_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS envelopes (hub TEXT NOT NULL, seq INTEGER NOT NULL, received_at REAL NOT NULL,"
    " PRIMARY KEY (hub, seq))",
    # Record ids are unique per hub: a measurement's id covers the device, not the hub (protocol §3.7).
    "CREATE TABLE IF NOT EXISTS readings (id INTEGER PRIMARY KEY, hub TEXT NOT NULL, record_id TEXT NOT NULL,"
    " kind TEXT NOT NULL, record_seq INTEGER NOT NULL, device TEXT, body_json TEXT NOT NULL,"
    " hub_time_us INTEGER NOT NULL, device_time TEXT, envelope_seq INTEGER NOT NULL, received_at REAL NOT NULL,"
    " UNIQUE (hub, record_id))",
    "CREATE INDEX IF NOT EXISTS readings_hub ON readings (hub, id)",
    "CREATE TABLE IF NOT EXISTS rejections (reason TEXT NOT NULL, hub TEXT NOT NULL, count INTEGER NOT NULL,"
    " PRIMARY KEY (reason, hub))",
    "CREATE TABLE IF NOT EXISTS down_seqs (hub TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
)
_SCHEMA_VERSION = 2
_INTERIM_SCHEMA = 1  # written by the interim wire codec; its readings are not protocol v1 records
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _micros(t: _dt.datetime) -> int:
    return (t - _EPOCH) // _dt.timedelta(microseconds=1)


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
            if version == _INTERIM_SCHEMA:
                conn.close()
                raise StorageError(
                    f"platform database {self.path} was written by the interim wire codec (schema 1) and holds no"
                    " protocol v1 records; start a new database"
                )
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
                        "INSERT OR IGNORE INTO readings (hub, record_id, kind, record_seq, device, body_json,"
                        " hub_time_us, device_time, envelope_seq, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            r.hub,
                            r.record_id,
                            r.kind,
                            r.record_seq,
                            r.device,
                            json.dumps(r.body, sort_keys=True, ensure_ascii=False, allow_nan=False),
                            _micros(r.hub_time),
                            r.device_time,
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
                "SELECT hub, record_id, kind, record_seq, device, body_json, hub_time_us, device_time, envelope_seq,"
                " received_at FROM readings"
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
                    record_seq=int(rseq),
                    device=None if device is None else str(device),
                    body=json.loads(body),
                    hub_time=_EPOCH + _dt.timedelta(microseconds=int(hub_us)),
                    device_time=None if dtime is None else str(dtime),
                    envelope_seq=int(seq),
                    received_at=float(recv),
                )
                for h, rid, kind, rseq, device, body, hub_us, dtime, seq, recv in rows
            ]

        return await self._run(read)

    async def enroll_hub(self, hub: HubPublicKey) -> None:
        """Register (or replace) a hub's Ed25519 verify key (from its :func:`protocols.keys.load_hub_public_key`)."""
        if not is_valid_hub_id(hub.hub_id):
            raise ValueError(f"{hub.hub_id!r} is not a valid hub id")
        raw = bytes(hub.verify_key)
        if len(raw) != KEY_LEN:
            raise ValueError(f"an Ed25519 verify key is {KEY_LEN} bytes, got {len(raw)}")
        await self._run(
            lambda: self._db().execute(
                "INSERT INTO hubs (hub, verify_key, enrolled_at) VALUES (?, ?, strftime('%s', 'now'))"
                " ON CONFLICT (hub) DO UPDATE SET verify_key = excluded.verify_key",
                (hub.hub_id, raw),
            )
        )

    async def hubs(self) -> dict[str, nacl.signing.VerifyKey]:
        """Every enrolled hub and its verify key."""

        def read() -> dict[str, nacl.signing.VerifyKey]:
            rows = self._db().execute("SELECT hub, verify_key FROM hubs")
            return {str(h): nacl.signing.VerifyKey(bytes(k)) for h, k in rows}

        return await self._run(read)

    async def next_down_seq(self, hub: str) -> int:
        """Allocate the next down-message sequence number for ``hub`` (1, 2, ...); committed before it returns."""

        def bump() -> int:
            row = (
                self._db()
                .execute(
                    "INSERT INTO down_seqs (hub, seq) VALUES (?, 1)"
                    " ON CONFLICT (hub) DO UPDATE SET seq = seq + 1 RETURNING seq",
                    (hub,),
                )
                .fetchone()
            )
            return int(row[0])

        try:
            return await self._run(bump)
        except sqlite3.Error as exc:
            raise StorageError(f"platform database {self.path}: {exc}") from exc
