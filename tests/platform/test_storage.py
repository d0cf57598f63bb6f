"""The platform's SQLite storage: one transaction per batch, envelope replay and record-id dedup, counters, hubs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.platform.storage import EnvelopeToStore, Outcome, SqliteStorage, StorageError, StoredReading


def reading(hub: str, rid: str, seq: int, value: float = 120.0) -> StoredReading:
    return StoredReading(hub, rid, "measurement", "bp-1", {"systolic": value}, 1.7e9, seq, 1.7e9 + 1)


async def test_store_replay_and_dedup(tmp_path: Path):
    async with SqliteStorage(tmp_path / "p.db") as db:
        first = await db.store_batch(
            [
                EnvelopeToStore("hubA", 1, (reading("hubA", "r1", 1), reading("hubA", "r2", 1))),
                EnvelopeToStore("hubA", 2, (reading("hubA", "r3", 2),)),
            ]
        )
        assert [o.outcome for o in first] == [Outcome.STORED, Outcome.STORED]
        assert first[0].new_record_ids == ("r1", "r2")
        again = await db.store_batch(
            [
                EnvelopeToStore("hubA", 2, (reading("hubA", "r3", 2),)),
                EnvelopeToStore("hubA", 3, (reading("hubA", "r1", 3), reading("hubA", "r4", 3))),
                EnvelopeToStore("hubB", 2, (reading("hubB", "b1", 2),)),
            ]
        )
        assert again[0].outcome is Outcome.REPLAYED
        assert (again[1].new_record_ids, again[1].duplicate_record_ids) == (("r4",), ("r1",))
        assert again[2].outcome is Outcome.STORED
        stored = await db.readings("hubA")
        assert [r.record_id for r in stored] == ["r1", "r2", "r3", "r4"]
        assert stored[0] == reading("hubA", "r1", 1)
        assert len(await db.readings()) == 5


async def test_batch_is_one_transaction(tmp_path: Path):
    async with SqliteStorage(tmp_path / "p.db") as db:
        bad = StoredReading("hubA", "r2", "measurement", None, {"x": {1, 2}}, None, 1, 0.0)  # type: ignore[dict-item]
        with pytest.raises(TypeError):
            await db.store_batch([EnvelopeToStore("hubA", 1, (reading("hubA", "r1", 1), bad))])
        assert await db.readings() == []
        # The envelope was not recorded either, so a correct re-send is stored.
        ok = await db.store_batch([EnvelopeToStore("hubA", 1, (reading("hubA", "r1", 1),))])
        assert ok[0].outcome is Outcome.STORED


async def test_counters_and_hubs_survive_reopen(tmp_path: Path):
    async with SqliteStorage(tmp_path / "p.db") as db:
        await db.count_rejection("replayed", "hubA")
        await db.count_rejection("replayed", "hubB", 2)
        await db.count_rejection("malformed", None)
        await db.enroll_hub("hubA", b"\x01" * 32)
        with pytest.raises(ValueError, match="32 bytes"):
            await db.enroll_hub("hubB", b"short")
    async with SqliteStorage(tmp_path / "p.db") as db:
        assert await db.rejections() == {"replayed": 3, "malformed": 1}
        assert await db.hubs() == {"hubA": b"\x01" * 32}


async def test_unopenable_database_is_a_storage_error(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="platform database"):
        async with SqliteStorage(tmp_path / "file" / "p.db"):
            pass
