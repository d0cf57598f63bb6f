"""The platform's SQLite storage: one transaction per batch, envelope replay and record-id dedup, counters, hubs,
decoded protocol v1 records, durable down-message sequence numbers."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from protocols.keys import HubIdentity
from protocols.record import MeasurementBody
from sim.platform.samples import alarm_record, bp_record
from sim.platform.storage import EnvelopeToStore, Outcome, SqliteStorage, StorageError, StoredReading


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
        bad = dataclasses.replace(reading("hub-a", 2, 1), body={"x": {1, 2}})
        with pytest.raises(TypeError):
            await db.store_batch([EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1), bad))])
        assert await db.readings() == []
        # The envelope was not recorded either, so a correct re-send is stored.
        ok = await db.store_batch([EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1),))])
        assert ok[0].outcome is Outcome.STORED


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
