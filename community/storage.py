"""The reference platform's storage: a small Protocol and its SQLite implementation.

Exactly-once lives here (invariant 2): ``store_batch`` writes every envelope of one uplink frame in ONE transaction;
an envelope's ``(hub, seq)`` is its primary key, so a re-sent envelope is recognised and stores nothing; each
reading's ``(hub, record_id)`` is UNIQUE, so a record re-read from a meter and sealed into a new envelope is stored
once. The platform publishes acks only after ``store_batch`` has returned, i.e. after the commit. Readings are the
decoded fields of :class:`protocols.record.Record` (body as JSON). Down-message sequence numbers are allocated here
too, per hub, durably, so they keep increasing across platform restarts.

Envelopes the platform refuses for good go into a quarantine table in the same transaction as the frame's stored
envelopes (:class:`Refusal`), so an operator can see what was refused and why (``carehub platform rejected``).

Sequence numbers are unsigned 64-bit integers on the wire (``docs/protocol.md`` §4), SQLite's INTEGER is signed
64-bit: every sequence-number column holds ``value - 2**63`` (:mod:`community.storage_common`), which maps
``0..2**64-1`` onto SQLite's whole range one to one and keeps the order. A value no unsigned 64-bit integer can
hold, or text with a NUL character, raises :class:`UnstorableError` before any transaction starts; the ingest
worker refuses such an envelope as ``malformed``.

The database holds residents' health data: it is created mode 0600 (SQLite gives its ``-wal`` and ``-shm`` files
the database's mode), and an existing database this user owns that others could read is tightened to 0600.

SQLite work runs on one dedicated thread per store; the event loop never blocks on the disk.

:mod:`community.storage_pg` is the same interface on PostgreSQL (production), and
``tests/platform/test_storage_contract.py`` runs one set of tests against both. The platform's commands still open
this engine only: choosing PostgreSQL in the platform config is not built yet (``docs/platform-postgresql.md``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import enum
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeVar

import nacl.signing

from community.down_sql import SQLITE_DOWN_SCHEMA, SqliteDownStore
from community.down_types import DownState, QueuedDown
from community.storage_common import (
    EPOCH,
    StorageError,
    UnstorableError,
    body_json,
    check_text,
    make_private,
    micros,
    seq_from_db,
    seq_to_db,
)
from protocols.envelope import OpenedEnvelope
from protocols.errors import EnvelopeRejection
from protocols.keys import KEY_LEN, HubPublicKey
from protocols.record import AlarmBody, Body, MeasurementBody, PanicBody, RawReadingBody, Record, RecordKind
from protocols.topics import is_valid_hub_id

__all__ = [
    "MAX_DETAIL_CHARS",
    "SQLITE_SCHEMA_VERSION",
    "Enrolment",
    "EnvelopeOutcome",
    "EnvelopeToStore",
    "HubKeyChanges",
    "Outcome",
    "QuarantinedEnvelope",
    "Refusal",
    "SqliteStorage",
    "Storage",
    "StorageError",
    "StoredReading",
    "UnstorableError",
    "body_json",
]

_T = TypeVar("_T")
_log = logging.getLogger(__name__)

MAX_DETAIL_CHARS: Final = 512
"""A refusal's detail text is cut to this length in the quarantine (it may quote what a sender chose)."""
MAX_RESIDENT_CHARS: Final = 256
"""Resident ids are text of 1..256 characters, as in ``protocols.messages``."""


# One encoder for every body (json.dumps with options builds a new one per call: 2 us of 7 per reading).
_BODY_ENCODER: Final = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False)


def _encode_body(body: Mapping[str, Any]) -> str:
    try:
        return _BODY_ENCODER.encode(body)
    except (TypeError, ValueError) as exc:
        raise UnstorableError(f"record body cannot be stored as JSON: {exc}") from exc


def _resident_of(body: Body) -> str | None:
    return body.resident_id if isinstance(body, MeasurementBody | AlarmBody | RawReadingBody) else None


def _alarm_of(body: Body) -> str | None:
    return body.alarm_id if isinstance(body, AlarmBody | PanicBody) else None


@dataclass(frozen=True, slots=True)
class StoredReading:
    """One record as the platform keeps it: the fields of a :class:`protocols.record.Record`, decoded.

    Attributes:
        hub: the hub that signed the envelope (and produced the record).
        record_id: the record's stable id as 32 lowercase hex digits (unique per hub).
        kind: the record kind (:class:`protocols.record.RecordKind` value: ``"measurement"``, ``"alarm"``...).
        record_seq: the hub's record sequence number (unsigned 64-bit).
        device: the device the record is about, if any.
        body: the record body as JSON (:func:`body_json`).
        hub_time: when the hub received or created the record (UTC).
        device_time: the device's own timestamp as it reported it, if any.
        envelope_seq: the envelope that carried it (unsigned 64-bit).
        received_at: when the platform stored it (seconds since the epoch).
        resident_id: the resident a measurement or alarm is about, if named.
        alarm_id: the alarm an alarm or panic record is about, if any.

    Raises:
        UnstorableError: a sequence number outside ``0..2**64-1`` or a body JSON cannot carry (NaN, infinity, a
            set...).
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
    resident_id: str | None = None
    alarm_id: str | None = None
    _body_text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seq_to_db(self.record_seq, "record seq")
        seq_to_db(self.envelope_seq, "envelope seq")
        for what, text in (
            ("device id", self.device),
            ("device time", self.device_time),
            ("resident id", self.resident_id),
            ("alarm id", self.alarm_id),
        ):
            check_text(text, what)
        object.__setattr__(self, "_body_text", _encode_body(self.body))

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Self:
        """A reading as every engine selects it: ``hub, record_id, kind, record_seq, device, body (JSON text),
        hub_time (microseconds since the epoch), device_time, envelope_seq, received_at, resident, alarm_id``, the
        sequence numbers as :func:`community.storage_common.seq_to_db` stored them."""
        h, rid, kind, rseq, device, body, hub_us, dtime, seq, recv, resident, alarm = row
        return cls(
            hub=str(h),
            record_id=str(rid),
            kind=str(kind),
            record_seq=seq_from_db(rseq),
            device=None if device is None else str(device),
            body=json.loads(body),
            hub_time=EPOCH + _dt.timedelta(microseconds=int(hub_us)),
            device_time=None if dtime is None else str(dtime),
            envelope_seq=seq_from_db(seq),
            received_at=float(recv),
            resident_id=None if resident is None else str(resident),
            alarm_id=None if alarm is None else str(alarm),
        )

    @property
    def body_text(self) -> str:
        """The body as the JSON text stored (sorted keys, no NaN)."""
        return self._body_text

    @property
    def values(self) -> Mapping[str, Any] | None:
        """A measurement's decoded values (``body.values``); ``None`` for other kinds."""
        if self.kind != RecordKind.MEASUREMENT.value:
            return None
        values: Mapping[str, Any] = self.body["values"]
        return values

    @classmethod
    def from_record(cls, record: Record, envelope_seq: int, received_at: float) -> Self:
        """The stored form of a verified record.

        Raises:
            UnstorableError: see the class.
        """
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
            resident_id=_resident_of(record.body),
            alarm_id=_alarm_of(record.body),
        )


@dataclass(frozen=True, slots=True)
class EnvelopeToStore:
    """One opened, verified envelope and its records."""

    hub: str
    envelope_seq: int
    readings: tuple[StoredReading, ...]

    def __post_init__(self) -> None:
        seq_to_db(self.envelope_seq, "envelope seq")

    @classmethod
    def from_opened(cls, envelope: OpenedEnvelope, received_at: float) -> Self:
        """The stored form of an envelope :func:`protocols.envelope.open_envelope` accepted.

        Raises:
            UnstorableError: a value the database cannot hold (the envelope is to be refused as malformed).
        """
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


@dataclass(frozen=True, slots=True)
class Refusal:
    """An envelope (or a whole frame) the platform refused, as kept in the quarantine.

    Attributes:
        topic_hub: the hub whose uplink topic it arrived on (``None``: not an uplink topic).
        claimed_hub: the hub its signed content names, when the envelope could be opened far enough to read it.
        envelope_seq: the sequence number its content names, when readable; ``None`` for a frame that could not be
            split or an envelope that could not be opened (it then cannot be named in an ack).
        reason: why.
        detail: a sentence for the operator (cut to :data:`MAX_DETAIL_CHARS`).
        size: the refused bytes' length.
        digest: SHA-256 of the refused bytes, lowercase hex (the bytes themselves are not kept).
        received_at: when it arrived (seconds since the epoch).
    """

    topic_hub: str | None
    claimed_hub: str | None
    envelope_seq: int | None
    reason: EnvelopeRejection
    detail: str
    size: int
    digest: str
    received_at: float

    def __post_init__(self) -> None:
        if not isinstance(self.reason, EnvelopeRejection):
            raise TypeError("reason must be an EnvelopeRejection")
        if self.envelope_seq is not None:
            seq_to_db(self.envelope_seq, "envelope seq")
        # A refusal is always kept: text a sender chose loses its NULs (see community.storage_common) and is cut.
        if self.claimed_hub is not None and "\x00" in self.claimed_hub:
            object.__setattr__(self, "claimed_hub", self.claimed_hub.replace("\x00", "\ufffd"))
        detail = self.detail.replace("\x00", "\ufffd")
        if len(detail) > MAX_DETAIL_CHARS:
            detail = detail[: MAX_DETAIL_CHARS - 1] + "…"
        object.__setattr__(self, "detail", detail)


@dataclass(frozen=True, slots=True)
class Enrolment:
    """One hub to enrol: its public key and the residents it serves.

    Raises:
        ValueError: an invalid hub id, key or resident id (text of 1..256 characters).
    """

    hub: HubPublicKey
    residents: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not is_valid_hub_id(self.hub.hub_id):
            raise ValueError(f"{self.hub.hub_id!r} is not a valid hub id")
        if len(bytes(self.hub.verify_key)) != KEY_LEN:
            raise ValueError(f"an Ed25519 verify key is {KEY_LEN} bytes, got {len(bytes(self.hub.verify_key))}")
        for name in self.residents:
            if not isinstance(name, str) or not 0 < len(name) <= MAX_RESIDENT_CHARS:
                shown = name if not isinstance(name, str) or len(name) <= 40 else name[:40] + "…"
                raise ValueError(f"resident id {shown!r} must be text of 1..{MAX_RESIDENT_CHARS} characters")


@dataclass(frozen=True, slots=True)
class HubKeyChanges:
    """What :meth:`Storage.hub_key_changes` read.

    Attributes:
        generation: the hub registry's generation when it was read; it grows with every enrolment (one step per
            :meth:`Storage.enroll_hubs` call), so a worker that saw it can ask for what changed after it.
        keys: the hubs enrolled or re-enrolled after the generation asked about, with their current verify keys
            (empty when asked for the generation alone).
    """

    generation: int
    keys: Mapping[str, nacl.signing.VerifyKey]


@dataclass(frozen=True, slots=True)
class QuarantinedEnvelope:
    """One row of the quarantine: its id (increasing) and the refusal."""

    row_id: int
    refusal: Refusal

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Self:
        """A quarantine row as every engine selects it: ``id, received_at, topic_hub, claimed_hub, seq, reason,
        detail, size, digest`` (``seq`` as :func:`community.storage_common.seq_to_db` stored it)."""
        row_id, received, topic, claimed, seq, reason, detail, size, digest = row
        refusal = Refusal(
            topic_hub=None if topic is None else str(topic),
            claimed_hub=None if claimed is None else str(claimed),
            envelope_seq=None if seq is None else seq_from_db(seq),
            reason=EnvelopeRejection(reason),
            detail=str(detail),
            size=int(size),
            digest=str(digest),
            received_at=float(received),
        )
        return cls(int(row_id), refusal)


class Storage(Protocol):
    """What the ingest worker and the operator's commands need from a database."""

    async def store_batch(
        self, envelopes: Sequence[EnvelopeToStore], refused: Sequence[Refusal] = ()
    ) -> list[EnvelopeOutcome]:
        """Store all envelopes, quarantine and count all refusals, in one transaction; return after it committed."""
        ...

    async def count_rejection(self, reason: str, hub: str | None, count: int = 1) -> None:
        """Add to the rejection counter for ``(reason, hub)``."""
        ...

    async def count_rejections(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add to several rejection counters, keyed ``(reason, hub)`` (hub ``""`` when unknown), in one write."""
        ...

    async def rejections(self) -> dict[str, int]:
        """Rejection totals per reason."""
        ...

    async def quarantine(self, hub: str | None = None) -> list[QuarantinedEnvelope]:
        """Refused envelopes, oldest first; of one hub (by topic) if given."""
        ...

    async def readings(self, hub: str | None = None) -> list[StoredReading]:
        """Stored readings, oldest first; of one hub if given."""
        ...

    async def enroll_hub(self, hub: HubPublicKey, residents: Sequence[str] = ()) -> None:
        """Register (or replace) a hub's Ed25519 verify key, and the residents it serves."""
        ...

    async def enroll_hubs(self, enrolments: Sequence[Enrolment]) -> None:
        """Register (or replace) many hubs in one transaction (one registry generation)."""
        ...

    async def hubs(self) -> dict[str, nacl.signing.VerifyKey]:
        """Every enrolled hub and its verify key (for operators: reads the whole registry)."""
        ...

    async def hub_key(self, hub: str) -> nacl.signing.VerifyKey | None:
        """One hub's verify key, ``None`` if it is not enrolled (reads one row)."""
        ...

    async def hub_key_changes(self, since: int | None) -> HubKeyChanges:
        """The registry's generation and the hubs (re-)enrolled after generation ``since`` (``None``: the
        generation alone); reads one row plus one per changed hub, however many hubs are enrolled."""
        ...

    async def knows_resident(self, hub: str, resident_id: str) -> bool:
        """Whether ``resident_id`` was registered for ``hub`` or named in one of its records."""
        ...

    async def knows_alarm(self, hub: str, alarm_id: str) -> bool:
        """Whether one of ``hub``'s alarm or panic records named ``alarm_id``."""
        ...

    async def next_down_seq(self, hub: str) -> int:
        """Allocate the next down-message sequence number for ``hub`` (1, 2, ...), durably, never reused."""
        ...

    async def schema_version(self) -> int:
        """The version of the database schema in force (each engine numbers its own migrations)."""
        ...

    async def queue_down(self, down: QueuedDown) -> None:
        """Store a down-message before it is first published (``queued``); refuse a ``(hub, seq)`` stored before."""
        ...

    async def mark_down_sent(self, hub: str, seq: int, at: _dt.datetime) -> None:
        """Count a publish of an open down-message (it becomes ``sent``)."""
        ...

    async def confirm_down(
        self,
        hub: str,
        seq: int,
        state: DownState,
        *,
        at: _dt.datetime,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        """The hub applied or refused message ``seq``; open earlier messages of the hub become ``expired``."""
        ...

    async def down_messages(
        self, hub: str | None = None, *, open_only: bool = False, sent_before: _dt.datetime | None = None
    ) -> list[QueuedDown]:
        """Stored down-messages by hub and seq (see :mod:`community.down_types`)."""
        ...

    async def open_down_hubs(self) -> list[str]:
        """The hubs with open (``queued`` or ``sent``) down-messages, each once."""
        ...


# Schema 3 (4 adds _MIGRATE_3_TO_4). Sequence-number columns hold value - 2**63 (see the module docstring).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hubs (hub TEXT PRIMARY KEY, verify_key BLOB NOT NULL, enrolled_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS envelopes (hub TEXT NOT NULL, seq INTEGER NOT NULL, received_at REAL NOT NULL,"
    " PRIMARY KEY (hub, seq))",
    # Record ids are unique per hub: a measurement's id covers the device, not the hub (protocol §3.7).
    "CREATE TABLE IF NOT EXISTS readings (id INTEGER PRIMARY KEY, hub TEXT NOT NULL, record_id TEXT NOT NULL,"
    " kind TEXT NOT NULL, record_seq INTEGER NOT NULL, device TEXT, body_json TEXT NOT NULL,"
    " hub_time_us INTEGER NOT NULL, device_time TEXT, envelope_seq INTEGER NOT NULL, received_at REAL NOT NULL,"
    " resident TEXT, alarm_id TEXT, UNIQUE (hub, record_id))",
    "CREATE INDEX IF NOT EXISTS readings_hub ON readings (hub, id)",
    "CREATE TABLE IF NOT EXISTS rejections (reason TEXT NOT NULL, hub TEXT NOT NULL, count INTEGER NOT NULL,"
    " PRIMARY KEY (reason, hub))",
    "CREATE TABLE IF NOT EXISTS down_seqs (hub TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
)
_SCHEMA_3 = (
    "CREATE INDEX IF NOT EXISTS readings_resident ON readings (hub, resident) WHERE resident IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS readings_alarm ON readings (hub, alarm_id) WHERE alarm_id IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS residents (hub TEXT NOT NULL, resident TEXT NOT NULL, registered_at REAL NOT NULL,"
    " PRIMARY KEY (hub, resident))",
    "CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY, received_at REAL NOT NULL, topic_hub TEXT,"
    " claimed_hub TEXT, seq INTEGER, reason TEXT NOT NULL, detail TEXT NOT NULL, size INTEGER NOT NULL,"
    " digest TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS quarantine_hub ON quarantine (topic_hub, id)",
)
# Schema 2 -> 3: sequence numbers move into SQLite's signed range (seq - 2**63, written so that no intermediate
# overflows), readings gain the resident and alarm they name (read once from their JSON bodies).
_MIGRATE_2_TO_3 = (
    "UPDATE envelopes SET seq = seq - 9223372036854775807 - 1",
    "ALTER TABLE readings ADD COLUMN resident TEXT",
    "ALTER TABLE readings ADD COLUMN alarm_id TEXT",
    "UPDATE readings SET record_seq = record_seq - 9223372036854775807 - 1,"
    " envelope_seq = envelope_seq - 9223372036854775807 - 1,"
    " resident = json_extract(body_json, '$.resident_id'),"
    " alarm_id = CASE WHEN kind IN ('alarm', 'panic') THEN json_extract(body_json, '$.alarm_id') END",
)
# Schema 3 -> 4 (and a new database): the hub registry's generation, so ingest workers that cache verify keys can
# read what changed since they last looked instead of the whole registry.
_MIGRATE_3_TO_4 = (
    "ALTER TABLE hubs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX hubs_generation ON hubs (generation)",
    "CREATE TABLE hub_registry (id INTEGER PRIMARY KEY CHECK (id = 0), generation INTEGER NOT NULL)",
    "INSERT INTO hub_registry (id, generation) VALUES (0, 0)",
)
_SCHEMA_VERSION = 5  # 5: down_messages (community.down_sql), created if missing
SQLITE_SCHEMA_VERSION = _SCHEMA_VERSION
"""The schema version :class:`SqliteStorage` migrates a file to (``PRAGMA user_version``)."""
_INTERIM_SCHEMA = 1  # written by the interim wire codec; its readings are not protocol v1 records


class SqliteStorage(SqliteDownStore):
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

    async def _run_db(self, fn: Callable[[], _T]) -> _T:
        try:
            return await self._run(fn)
        except sqlite3.Error as exc:
            raise StorageError(f"platform database {self.path}: {exc}") from exc

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"platform database {self.path} is not open")
        return self._conn

    def _open(self) -> None:
        try:
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True)
            make_private(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")  # several ingest workers may share the file
            conn.execute("BEGIN IMMEDIATE")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version == _INTERIM_SCHEMA:
                conn.execute("ROLLBACK")
                conn.close()
                raise StorageError(
                    f"platform database {self.path} was written by the interim wire codec (schema 1) and holds no"
                    " protocol v1 records; start a new database"
                )
            if version > _SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                conn.close()
                raise StorageError(f"platform database {self.path}: schema {version} is newer than {_SCHEMA_VERSION}")
            if version == 2:
                for statement in _MIGRATE_2_TO_3:
                    conn.execute(statement)
                _log.warning("platform database %s migrated from schema 2 to %d", self.path, _SCHEMA_VERSION)
            for statement in (*_SCHEMA, *_SCHEMA_3, *SQLITE_DOWN_SCHEMA):
                conn.execute(statement)
            if version < 4:
                for statement in _MIGRATE_3_TO_4:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
            # Not make_private(self.path) again here: opening and closing the database file while this connection
            # is open drops the POSIX locks it holds on it (fcntl locks belong to the process), so another process
            # closing its last connection would checkpoint and delete the WAL this one still writes to (acked
            # readings invisible, lost on SIGKILL). SQLite creates -wal/-shm with the database file's mode (0600).
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"platform database {self.path}: {exc}") from exc
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _store(self, envelopes: Sequence[EnvelopeToStore], refused: Sequence[Refusal]) -> list[EnvelopeOutcome]:
        conn = self._db()
        outcomes: list[EnvelopeOutcome] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for env in envelopes:
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO envelopes (hub, seq, received_at) VALUES (?, ?, strftime('%s', 'now'))",
                    (env.hub, seq_to_db(env.envelope_seq, "envelope seq")),
                ).rowcount
                if inserted == 0:
                    outcomes.append(EnvelopeOutcome(env.hub, env.envelope_seq, Outcome.REPLAYED, (), ()))
                    continue
                new: list[str] = []
                dup: list[str] = []
                for r in env.readings:
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO readings (hub, record_id, kind, record_seq, device, body_json,"
                        " hub_time_us, device_time, envelope_seq, received_at, resident, alarm_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            r.hub,
                            r.record_id,
                            r.kind,
                            seq_to_db(r.record_seq, "record seq"),
                            r.device,
                            r.body_text,
                            micros(r.hub_time),
                            r.device_time,
                            seq_to_db(r.envelope_seq, "envelope seq"),
                            r.received_at,
                            r.resident_id,
                            r.alarm_id,
                        ),
                    )
                    (new if cur.rowcount == 1 else dup).append(r.record_id)
                outcomes.append(EnvelopeOutcome(env.hub, env.envelope_seq, Outcome.STORED, tuple(new), tuple(dup)))
            for refusal in refused:
                conn.execute(
                    "INSERT INTO quarantine (received_at, topic_hub, claimed_hub, seq, reason, detail, size, digest)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        refusal.received_at,
                        refusal.topic_hub,
                        refusal.claimed_hub,
                        None if refusal.envelope_seq is None else seq_to_db(refusal.envelope_seq, "envelope seq"),
                        refusal.reason.value,
                        refusal.detail,
                        refusal.size,
                        refusal.digest,
                    ),
                )
                self._bump(conn, refusal.reason.value, refusal.topic_hub, 1)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return outcomes

    async def store_batch(
        self, envelopes: Sequence[EnvelopeToStore], refused: Sequence[Refusal] = ()
    ) -> list[EnvelopeOutcome]:
        """Store all envelopes, quarantine and count every refusal, in one transaction; return after it committed
        (fsynced).

        Raises:
            StorageError: the database failed; nothing of the batch was written.
        """
        batch, refusals = tuple(envelopes), tuple(refused)
        return await self._run_db(lambda: self._store(batch, refusals))

    @staticmethod
    def _bump(conn: sqlite3.Connection, reason: str, hub: str | None, count: int) -> None:
        conn.execute(
            "INSERT INTO rejections (reason, hub, count) VALUES (?, ?, ?)"
            " ON CONFLICT (reason, hub) DO UPDATE SET count = count + excluded.count",
            (reason, hub or "", count),
        )

    async def count_rejection(self, reason: str, hub: str | None, count: int = 1) -> None:
        """Add to the rejection counter for ``(reason, hub)`` (hub ``""`` when unknown)."""
        await self._run_db(lambda: self._bump(self._db(), reason, hub, count))

    async def count_rejections(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add to several rejection counters, keyed ``(reason, hub)`` (hub ``""`` when unknown), in one transaction."""
        items = sorted(counts.items())

        def bump() -> None:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for (reason, hub), count in items:
                    self._bump(conn, reason, hub, count)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        if items:
            await self._run_db(bump)

    async def rejections(self) -> dict[str, int]:
        """Rejection totals per reason."""

        def read() -> dict[str, int]:
            rows = self._db().execute("SELECT reason, SUM(count) FROM rejections GROUP BY reason")
            return {str(reason): int(total) for reason, total in rows}

        return await self._run_db(read)

    async def quarantine(self, hub: str | None = None) -> list[QuarantinedEnvelope]:
        """Refused envelopes and frames, oldest first; of one hub (the topic's) if given."""

        def read() -> list[QuarantinedEnvelope]:
            query = "SELECT id, received_at, topic_hub, claimed_hub, seq, reason, detail, size, digest FROM quarantine"
            params: tuple[str, ...] = ()
            if hub is not None:
                query += " WHERE topic_hub = ?"
                params = (hub,)
            return [QuarantinedEnvelope.from_row(row) for row in self._db().execute(query + " ORDER BY id", params)]

        return await self._run_db(read)

    async def readings(self, hub: str | None = None) -> list[StoredReading]:
        """Stored readings, oldest first; of one hub if given."""

        def read() -> list[StoredReading]:
            query = (
                "SELECT hub, record_id, kind, record_seq, device, body_json, hub_time_us, device_time, envelope_seq,"
                " received_at, resident, alarm_id FROM readings"
            )
            params: tuple[str, ...] = ()
            if hub is not None:
                query += " WHERE hub = ?"
                params = (hub,)
            return [StoredReading.from_row(row) for row in self._db().execute(query + " ORDER BY id", params)]

        return await self._run_db(read)

    async def enroll_hub(self, hub: HubPublicKey, residents: Sequence[str] = ()) -> None:
        """Register (or replace) a hub's Ed25519 verify key (from its :func:`protocols.keys.load_hub_public_key`),
        and the residents it serves (so thresholds can be sent for them before their first reading arrives).

        Raises:
            ValueError: an invalid hub id, key or resident id (text of 1..256 characters).
        """
        await self.enroll_hubs([Enrolment(hub, tuple(residents))])

    async def enroll_hubs(self, enrolments: Sequence[Enrolment]) -> None:
        """Register (or replace) many hubs and their residents in one transaction.

        The registry's generation steps once and every hub written carries the new value, so a worker caching verify
        keys sees each of them as changed (:meth:`hub_key_changes`).
        """
        rows = [(e.hub.hub_id, bytes(e.hub.verify_key)) for e in enrolments]
        residents = [(e.hub.hub_id, name) for e in enrolments for name in e.residents]
        if not rows:
            return

        def enroll() -> None:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                (generation,) = conn.execute(
                    "UPDATE hub_registry SET generation = generation + 1 WHERE id = 0 RETURNING generation"
                ).fetchone()
                conn.executemany(
                    "INSERT INTO hubs (hub, verify_key, enrolled_at, generation)"
                    " VALUES (?, ?, strftime('%s', 'now'), ?)"
                    " ON CONFLICT (hub) DO UPDATE SET verify_key = excluded.verify_key,"
                    " generation = excluded.generation",
                    [(hub, key, generation) for hub, key in rows],
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO residents (hub, resident, registered_at)"
                    " VALUES (?, ?, strftime('%s', 'now'))",
                    residents,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run_db(enroll)

    async def hubs(self) -> dict[str, nacl.signing.VerifyKey]:
        """Every enrolled hub and its verify key (for operators; ingest reads one hub at a time, see
        :meth:`hub_key` and :meth:`hub_key_changes`)."""

        def read() -> dict[str, nacl.signing.VerifyKey]:
            rows = self._db().execute("SELECT hub, verify_key FROM hubs")
            return {str(h): nacl.signing.VerifyKey(bytes(k)) for h, k in rows}

        return await self._run_db(read)

    async def hub_key(self, hub: str) -> nacl.signing.VerifyKey | None:
        """One hub's verify key, ``None`` if it is not enrolled (one row, by primary key)."""

        def read() -> nacl.signing.VerifyKey | None:
            row = self._db().execute("SELECT verify_key FROM hubs WHERE hub = ?", (hub,)).fetchone()
            return None if row is None else nacl.signing.VerifyKey(bytes(row[0]))

        return await self._run_db(read)

    async def hub_keys(self, hubs: Sequence[str]) -> dict[str, nacl.signing.VerifyKey]:
        """The verify keys of those of ``hubs`` that are enrolled (by primary key, 500 a statement)."""
        names = list(hubs)

        def read() -> dict[str, nacl.signing.VerifyKey]:
            keys: dict[str, nacl.signing.VerifyKey] = {}
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db().execute(f"SELECT hub, verify_key FROM hubs WHERE hub IN ({marks})", chunk)  # noqa: S608 - only "?" marks
                keys.update((str(h), nacl.signing.VerifyKey(bytes(k))) for h, k in rows)
            return keys

        return await self._run_db(read)

    async def hub_key_changes(self, since: int | None) -> HubKeyChanges:
        """The registry's generation and the hubs (re-)enrolled after generation ``since``, read in one snapshot
        (``None``: the generation alone). One row, plus one per changed hub (by index on the generation)."""

        def read() -> HubKeyChanges:
            conn = self._db()
            conn.execute("BEGIN")
            try:
                (generation,) = conn.execute("SELECT generation FROM hub_registry WHERE id = 0").fetchone()
                keys: dict[str, nacl.signing.VerifyKey] = {}
                if since is not None and generation > since:
                    rows = conn.execute("SELECT hub, verify_key FROM hubs WHERE generation > ?", (since,))
                    keys = {str(h): nacl.signing.VerifyKey(bytes(k)) for h, k in rows}
            finally:
                conn.execute("COMMIT")
            return HubKeyChanges(int(generation), keys)

        return await self._run_db(read)

    async def knows_resident(self, hub: str, resident_id: str) -> bool:
        """Whether ``resident_id`` was registered for ``hub`` at enrolment or named in one of its records."""

        def read() -> bool:
            row = (
                self._db()
                .execute(
                    "SELECT EXISTS (SELECT 1 FROM residents WHERE hub = ? AND resident = ?)"
                    " OR EXISTS (SELECT 1 FROM readings WHERE hub = ? AND resident = ?)",
                    (hub, resident_id, hub, resident_id),
                )
                .fetchone()
            )
            return bool(row[0])

        return await self._run_db(read)

    async def knows_alarm(self, hub: str, alarm_id: str) -> bool:
        """Whether one of ``hub``'s alarm or panic records named ``alarm_id``."""

        def read() -> bool:
            row = (
                self._db()
                .execute("SELECT EXISTS (SELECT 1 FROM readings WHERE hub = ? AND alarm_id = ?)", (hub, alarm_id))
                .fetchone()
            )
            return bool(row[0])

        return await self._run_db(read)

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

        return await self._run_db(bump)

    async def schema_version(self) -> int:
        """SQLite's ``user_version``: the schema this store migrated the file to when it opened it."""
        return await self._run_db(lambda: int(self._db().execute("PRAGMA user_version").fetchone()[0]))
