"""The platform's SQLite storage: one transaction per batch, envelope replay and record-id dedup, counters, hubs,
decoded protocol v1 records, durable down-message sequence numbers."""

from __future__ import annotations

import dataclasses
import itertools
import math
import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from community.samples import alarm_record, bp_record
from community.storage import (
    MAX_DETAIL_CHARS,
    EnvelopeToStore,
    Outcome,
    Refusal,
    SqliteStorage,
    StorageError,
    StoredReading,
    UnstorableError,
)
from protocols.errors import EnvelopeRejection
from protocols.keys import HubIdentity
from protocols.record import MeasurementBody


def reading(hub: str, n: int, seq: int) -> StoredReading:
    return StoredReading.from_record(bp_record(hub, n), seq, 1.7e9 + 1)


def rid(hub: str, n: int) -> str:
    return bp_record(hub, n).record_id.hex()


async def test_store_replay_and_dedup(tmp_path: Path):
    async with SqliteStorage(tmp_path / "p.db") as db:
        first = await db.store_batch(
            [
                EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1), reading("hub-a", 2, 1))),
                EnvelopeToStore("hub-a", 2, (reading("hub-a", 3, 2),)),
            ]
        )
        assert [o.outcome for o in first] == [Outcome.STORED, Outcome.STORED]
        assert first[0].new_record_ids == (rid("hub-a", 1), rid("hub-a", 2))
        again = await db.store_batch(
            [
                EnvelopeToStore("hub-a", 2, (reading("hub-a", 3, 2),)),
                EnvelopeToStore("hub-a", 3, (reading("hub-a", 1, 3), reading("hub-a", 4, 3))),
                EnvelopeToStore("hub-b", 2, (reading("hub-b", 1, 2),)),
            ]
        )
        assert again[0].outcome is Outcome.REPLAYED
        assert (again[1].new_record_ids, again[1].duplicate_record_ids) == ((rid("hub-a", 4),), (rid("hub-a", 1),))
        assert again[2].outcome is Outcome.STORED
        stored = await db.readings("hub-a")
        assert [r.record_id for r in stored] == [rid("hub-a", n) for n in (1, 2, 3, 4)]
        assert stored[0] == reading("hub-a", 1, 1)
        # hub-b's reading has the same record id (same device id, bytes and time): ids are unique per hub.
        assert rid("hub-b", 1) == rid("hub-a", 1)
        assert len(await db.readings()) == 5


async def test_readings_keep_the_decoded_record_fields(tmp_path: Path):
    record = bp_record("hub-a", 7)
    alarm = alarm_record("hub-a", "alarm-1", 8)
    async with SqliteStorage(tmp_path / "p.db") as db:
        env = EnvelopeToStore(
            "hub-a", 5, (StoredReading.from_record(record, 5, 1.7e9), StoredReading.from_record(alarm, 5, 1.7e9))
        )
        await db.store_batch([env])
        row, alarm_row = await db.readings("hub-a")
    assert isinstance(record.body, MeasurementBody)
    assert (row.kind, row.record_id, row.record_seq, row.device) == ("measurement", record.record_id.hex(), 7, "bp-1")
    assert row.values == record.body.values
    assert row.values["systolic"] == 117
    assert row.body["raw"] == record.body.raw.hex()
    assert row.body["uuid"] == 0x2A35
    assert (row.hub_time, row.device_time) == (record.hub_time, "2025-03-01T07:07:00")
    assert (alarm_row.kind, alarm_row.device, alarm_row.values) == ("alarm", None, None)
    assert alarm_row.body["tier"] == "critical"
    assert alarm_row.body["state"] == "raised"


async def test_batch_is_one_transaction(tmp_path: Path):
    async with SqliteStorage(tmp_path / "p.db") as db:
        # A database failure in the middle of a batch (the second reading's insert aborts).
        second = reading("hub-a", 2, 1).record_id
        conn = sqlite3.connect(tmp_path / "p.db")
        conn.execute(
            f"CREATE TRIGGER fail BEFORE INSERT ON readings WHEN NEW.record_id = '{second}'"
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        conn.commit()
        with pytest.raises(StorageError, match="injected failure"):
            await db.store_batch([EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1), reading("hub-a", 2, 1)))])
        assert await db.readings() == []
        conn.execute("DROP TRIGGER fail")
        conn.commit()
        conn.close()
        # The envelope was not recorded either, so a correct re-send is stored.
        ok = await db.store_batch([EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1),))])
        assert ok[0].outcome is Outcome.STORED


def test_a_body_json_cannot_carry_is_unstorable_before_any_transaction():
    with pytest.raises(UnstorableError, match="JSON"):
        dataclasses.replace(reading("hub-a", 2, 1), body={"x": {1, 2}})
    with pytest.raises(UnstorableError, match="JSON"):
        dataclasses.replace(reading("hub-a", 2, 1), body={"x": math.nan})


@pytest.mark.parametrize("seq", [-1, 2**64, 2**70])
def test_sequence_numbers_outside_uint64_are_unstorable(seq: int):
    with pytest.raises(UnstorableError, match="unsigned 64-bit"):
        dataclasses.replace(reading("hub-a", 1, 1), record_seq=seq)
    with pytest.raises(UnstorableError, match="unsigned 64-bit"):
        EnvelopeToStore("hub-a", seq, ())


_db_numbers = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seqs=st.lists(
        st.one_of(st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]), st.integers(0, 2**64 - 1)),
        min_size=1,
        max_size=6,
        unique=True,
    )
)
async def test_every_uint64_sequence_number_is_stored_exactly_and_replays_are_recognised(tmp_path: Path, seqs):
    """The protocol allows envelope and record seqs up to 2**64-1; SQLite's INTEGER is signed: nothing overflows,
    nothing is rounded, and (hub, seq) still identifies a replay."""
    path = tmp_path / f"p{next(_db_numbers)}.db"  # hypothesis runs every example in the same tmp_path
    async with SqliteStorage(path) as db:
        envs = [
            EnvelopeToStore("hub-a", s, (dataclasses.replace(reading("hub-a", n, s), record_seq=s),))
            for n, s in enumerate(seqs)
        ]
        first = await db.store_batch(envs)
        assert [o.outcome for o in first] == [Outcome.STORED] * len(seqs)
        again = await db.store_batch(envs)
        assert [o.outcome for o in again] == [Outcome.REPLAYED] * len(seqs)
        rows = await db.readings("hub-a")
    assert [(r.record_seq, r.envelope_seq) for r in rows] == [(s, s) for s in seqs]


def _refusal(seq: int | None, reason: EnvelopeRejection = EnvelopeRejection.BAD_SIGNATURE) -> Refusal:
    return Refusal("hub-a", "hub-a" if seq is not None else None, seq, reason, "why", 300, "ab" * 32, 1.7e9)


async def test_refusals_are_quarantined_and_counted_with_the_batch(tmp_path: Path):
    async with SqliteStorage(tmp_path / "p.db") as db:
        refused = [_refusal(2**64 - 1), _refusal(None, EnvelopeRejection.CANNOT_OPEN)]
        await db.store_batch([EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1),))], refused)
        long = dataclasses.replace(_refusal(7, EnvelopeRejection.MALFORMED), detail="x" * 100_000)
        await db.store_batch([], [long])
    async with SqliteStorage(tmp_path / "p.db") as db:
        rows = await db.quarantine()
        assert [r.refusal for r in rows[:2]] == refused
        assert len(rows[2].refusal.detail) == MAX_DETAIL_CHARS
        assert [r.row_id for r in rows] == sorted(r.row_id for r in rows)
        assert await db.quarantine("hub-b") == []
        assert await db.rejections() == {"bad_signature": 1, "cannot_open": 1, "malformed": 1}


async def test_a_failed_batch_quarantines_nothing(tmp_path: Path):
    """A database failure is never a refusal: the refusals of a frame that could not be committed are not kept."""
    async with SqliteStorage(tmp_path / "p.db") as db:
        conn = sqlite3.connect(tmp_path / "p.db")
        conn.execute("CREATE TRIGGER fail BEFORE INSERT ON quarantine BEGIN SELECT RAISE(ABORT, 'disk'); END")
        conn.commit()
        conn.close()
        with pytest.raises(StorageError):
            await db.store_batch([EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1),))], [_refusal(3)])
        assert await db.readings() == []
        assert await db.rejections() == {}


async def test_residents_and_alarms_are_known_from_enrolment_and_records(tmp_path: Path):
    hub = HubIdentity.generate("hub-a")
    async with SqliteStorage(tmp_path / "p.db") as db:
        await db.enroll_hub(hub.public, residents=["resident-9"])
        with pytest.raises(ValueError, match=r"1\.\.256 characters"):
            await db.enroll_hub(hub.public, residents=["r" * 100_000])
        assert await db.knows_resident("hub-a", "resident-9")
        assert not await db.knows_resident("hub-a", "resident-1")
        assert not await db.knows_alarm("hub-a", "alarm-1")
        alarm = StoredReading.from_record(alarm_record("hub-a", "alarm-1", 2), 1, 1.7e9)
        await db.store_batch([EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1), alarm))])
        assert await db.knows_resident("hub-a", "resident-1")  # bp_record's resident
        assert not await db.knows_resident("hub-b", "resident-1")
        assert await db.knows_alarm("hub-a", "alarm-1")
        assert not await db.knows_alarm("hub-b", "alarm-1")


async def test_the_database_is_private_and_a_readable_one_is_tightened(tmp_path: Path):
    path = tmp_path / "new" / "platform.db"
    async with SqliteStorage(path) as db:
        await db.store_batch([EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1),))])
        for side in (path, path.with_name("platform.db-wal")):
            assert stat.S_IMODE(side.stat().st_mode) == 0o600, side
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.chmod(0o644)
    async with SqliteStorage(path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


_SCHEMA_2 = (
    "CREATE TABLE hubs (hub TEXT PRIMARY KEY, verify_key BLOB NOT NULL, enrolled_at REAL NOT NULL)",
    "CREATE TABLE envelopes (hub TEXT NOT NULL, seq INTEGER NOT NULL, received_at REAL NOT NULL,"
    " PRIMARY KEY (hub, seq))",
    "CREATE TABLE readings (id INTEGER PRIMARY KEY, hub TEXT NOT NULL, record_id TEXT NOT NULL,"
    " kind TEXT NOT NULL, record_seq INTEGER NOT NULL, device TEXT, body_json TEXT NOT NULL,"
    " hub_time_us INTEGER NOT NULL, device_time TEXT, envelope_seq INTEGER NOT NULL, received_at REAL NOT NULL,"
    " UNIQUE (hub, record_id))",
    "CREATE INDEX readings_hub ON readings (hub, id)",
    "CREATE TABLE rejections (reason TEXT NOT NULL, hub TEXT NOT NULL, count INTEGER NOT NULL,"
    " PRIMARY KEY (reason, hub))",
    "CREATE TABLE down_seqs (hub TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "PRAGMA user_version = 2",
)


async def test_a_schema_2_database_is_migrated_in_place(tmp_path: Path):
    bp, alarm = StoredReading.from_record(bp_record("hub-a", 1), 5, 1.7e9), alarm_record("hub-a", "alarm-1", 6)
    conn = sqlite3.connect(tmp_path / "p.db")
    for statement in _SCHEMA_2:
        conn.execute(statement)
    insert = (
        "INSERT INTO readings (hub, record_id, kind, record_seq, device, body_json, hub_time_us, device_time,"
        " envelope_seq, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    al = StoredReading.from_record(alarm, 5, 1.7e9)
    for r in (bp, al):
        us = int(r.hub_time.timestamp()) * 1_000_000
        conn.execute(
            insert, (r.hub, r.record_id, r.kind, r.record_seq, r.device, r.body_text, us, r.device_time, 5, 1.7e9)
        )
    conn.execute("INSERT INTO envelopes VALUES ('hub-a', 5, 1.7e9)")
    conn.commit()
    conn.close()
    async with SqliteStorage(tmp_path / "p.db") as db:
        rows = await db.readings()
        assert [(r.record_id, r.record_seq, r.envelope_seq) for r in rows] == [
            (bp.record_id, 1, 5),
            (al.record_id, 6, 5),
        ]
        assert [(r.resident_id, r.alarm_id) for r in rows] == [("resident-1", None), (al.resident_id, "alarm-1")]
        assert await db.knows_alarm("hub-a", "alarm-1")
        replay = await db.store_batch([EnvelopeToStore("hub-a", 5, (bp,))])
        assert replay[0].outcome is Outcome.REPLAYED
    async with SqliteStorage(tmp_path / "p.db") as db:  # opening a migrated database again changes nothing
        assert [r.record_seq for r in await db.readings()] == [1, 6]


async def test_counters_hubs_and_down_seqs_survive_reopen(tmp_path: Path):
    hub = HubIdentity.generate("hub-a")
    async with SqliteStorage(tmp_path / "p.db") as db:
        await db.count_rejection("replayed", "hub-a")
        await db.count_rejection("replayed", "hub-b", 2)
        await db.count_rejection("malformed", None)
        await db.enroll_hub(hub.public)
        with pytest.raises(ValueError, match="not a valid hub id"):
            await db.enroll_hub(dataclasses.replace(hub.public, hub_id="Hub A"))
        assert [await db.next_down_seq("hub-a") for _ in range(3)] == [1, 2, 3]
        assert await db.next_down_seq("hub-b") == 1
    async with SqliteStorage(tmp_path / "p.db") as db:
        assert await db.rejections() == {"replayed": 3, "malformed": 1}
        assert await db.hubs() == {"hub-a": hub.verify_key}
        assert await db.next_down_seq("hub-a") == 4


async def test_unopenable_database_is_a_storage_error(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="platform database"):
        async with SqliteStorage(tmp_path / "file" / "p.db"):
            pass


async def test_interim_codec_database_is_refused_by_name(tmp_path: Path):
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(StorageError, match="interim wire codec"):
        async with SqliteStorage(tmp_path / "old.db"):
            pass
