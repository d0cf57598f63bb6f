"""The durable outbox: durability, group commit, lanes, eviction, cursors and typed errors at open."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import ManualClock
from gateway.errors import OutboxCorruptError, OutboxError, OutboxSchemaError, OutboxUnwritableError
from gateway.outbox import SCHEMA_VERSION, Eviction, Lane, OutboxItem, open_outbox
from gateway.outbox_schema import MIGRATIONS, SEND_ORDER, json_ids


def item(seq: int, lane: Lane = Lane.ROUTINE, size: int = 10, kind: str = "measurement") -> OutboxItem:
    return OutboxItem(
        envelope_seq=seq,
        envelope=bytes([seq % 256]) * size,
        lane=lane,
        kind=kind,
        record_ids=(f"rec-{seq}",),
        created=1_700_000_000.0 + seq,
    )


async def test_rows_and_cursors_survive_close_and_reopen(tmp_path: Path):
    path = tmp_path / "outbox.db"
    async with open_outbox(path) as ob:
        seqs = await ob.allocate_seqs(3)
        for seq in seqs:
            await ob.put(item(seq), cursors={"racp:meter-1": seq})
        await ob.set_cursor("pendant:counter", b"\x00\x07")
    async with open_outbox(path) as ob:
        batch = await ob.peek_batch(10, 10_000)
        assert [i.envelope_seq for i in batch] == list(seqs)
        assert batch[1] == item(seqs[1])
        assert await ob.get_cursor("racp:meter-1") == seqs[-1]
        assert await ob.get_cursor("pendant:counter") == b"\x00\x07"
        assert await ob.get_cursor("missing", default=-1) == -1
        # Sequence numbers are never handed out twice, even across restarts.
        assert (await ob.allocate_seqs(2))[0] == seqs[-1] + 1
        stats = await ob.stats()
        assert (stats.rows, stats.total_bytes) == (3, 30)


async def test_group_commit_batches_concurrent_puts(tmp_path: Path):
    commits: list[int] = []
    release = threading.Event()
    holding = threading.Event()

    def hook(writes: int) -> None:
        commits.append(writes)
        if len(commits) == 1:
            holding.set()
            # Hold the database thread after the first commit until every other put is queued behind it.
            release.wait(timeout=30)

    async with open_outbox(tmp_path / "o.db", commit_hook=hook) as ob:
        first = asyncio.create_task(ob.put(item(0)))
        assert await asyncio.to_thread(holding.wait, 30)
        rest = [asyncio.create_task(ob.put(item(seq))) for seq in range(1, 100)]
        await asyncio.sleep(0)  # let every task reach its queued job (a yield, not a wait for time)
        release.set()
        await asyncio.gather(first, *rest)
        assert commits == [1, 99]
        assert (await ob.stats()).commits == 2


async def test_one_commit_per_row_when_idle(tmp_path: Path):
    commits: list[int] = []
    async with open_outbox(tmp_path / "o.db", commit_hook=commits.append) as ob:
        for seq in range(5):
            await ob.put(item(seq))
    assert commits == [1, 1, 1, 1, 1]


async def test_naive_mode_commits_every_row_even_under_load(tmp_path: Path):
    commits: list[int] = []
    async with open_outbox(tmp_path / "o.db", group_commit=False, commit_hook=commits.append) as ob:
        await asyncio.gather(*(ob.put(item(seq)) for seq in range(50)))
    assert commits == [1] * 50


async def test_priority_lane_first_then_oldest(tmp_path: Path):
    async with open_outbox(tmp_path / "o.db") as ob:
        for seq in range(6):
            await ob.put(item(seq, Lane.PRIORITY if seq in {2, 5} else Lane.ROUTINE))
        assert ob.priority_put.is_set()
        batch = await ob.peek_batch(10, 10_000)
        assert [i.envelope_seq for i in batch] == [2, 5, 0, 1, 3, 4]
        assert [i.envelope_seq for i in await ob.peek_batch(10, 10_000, exclude={2, 0})] == [5, 1, 3, 4]
        assert [i.envelope_seq for i in await ob.peek_batch(3, 10_000)] == [2, 5, 0]
        assert [i.envelope_seq for i in await ob.peek_batch(10, 25)] == [2, 5]
        # One item is always returned, however large.
        assert [i.envelope_seq for i in await ob.peek_batch(10, 1)] == [2]
        assert await ob.ack([2, 0, 99]) == 2
        assert [i.envelope_seq for i in await ob.peek_batch(10, 10_000)] == [5, 1, 3, 4]


async def test_routine_put_alone_does_not_signal_priority(tmp_path: Path):
    async with open_outbox(tmp_path / "o.db") as ob:
        await ob.put(item(0))
        assert ob.item_put.is_set()
        assert not ob.priority_put.is_set()


async def test_eviction_drops_oldest_routine_never_priority(tmp_path: Path):
    clock = ManualClock()
    async with open_outbox(tmp_path / "o.db", max_bytes=100, clock=clock) as ob:
        await ob.put(item(0, Lane.PRIORITY, size=30))
        for seq in range(1, 8):
            result = await ob.put(item(seq, size=10))
            assert result.evicted is None
        assert (await ob.stats()).total_bytes == 100
        result = await ob.put(item(8, size=25))
        assert result.evicted is not None
        assert result.evicted.seqs == (1, 2, 3)
        assert result.evicted.record_ids == ("rec-1", "rec-2", "rec-3")
        assert (result.evicted.count, result.evicted.size) == (3, 30)
        assert not result.over_limit
        assert ob.evicted.is_set()
        # Only priority rows may remain: alarms are accepted over the budget, never dropped.
        for seq in range(9, 13):
            result = await ob.put(item(seq, Lane.PRIORITY, size=30))
        assert result.over_limit
        stats = await ob.stats()
        assert stats.routine_rows == 0
        assert stats.priority_rows == 5
        assert stats.over_limit
        assert stats.evicted_rows_total == 8
        pending = await ob.pending_evictions()
        assert pending is not None
        assert pending.seqs == (1, 2, 3, 4, 5, 6, 7, 8)
        assert (pending.first_seq, pending.last_seq, pending.size) == (1, 8, 95)


async def test_eviction_log_survives_restart_and_is_settled_atomically(tmp_path: Path):
    path = tmp_path / "o.db"
    async with open_outbox(path, max_bytes=20) as ob:
        for seq in range(4):
            await ob.put(item(seq))
    async with open_outbox(path, max_bytes=100) as ob:
        pending = await ob.pending_evictions()
        assert pending is not None
        assert pending.seqs == (0, 1)
        assert (await ob.stats()).evicted_rows_total == 2
        report = item(10, Lane.PRIORITY, kind="eviction_report")
        await ob.put_many([report], settle=pending, cursors={"reported": pending.last_seq})
        assert await ob.pending_evictions() is None
        assert await ob.get_cursor("reported") == 1


async def test_failed_put_stores_nothing_and_others_in_the_group_commit(tmp_path: Path):
    async with open_outbox(tmp_path / "o.db") as ob:
        await ob.put(item(1))
        results = await asyncio.gather(
            ob.put_many([item(2), item(1)], cursors={"k": 5}), ob.put(item(3)), return_exceptions=True
        )
        assert isinstance(results[0], ValueError)
        assert not isinstance(results[1], BaseException)
        assert [i.envelope_seq for i in await ob.peek_batch(10, 10_000)] == [1, 3]
        assert await ob.get_cursor("k") is None
        assert (await ob.stats()).rows == 2


async def test_cursor_rules(tmp_path: Path):
    async with open_outbox(tmp_path / "o.db") as ob:
        with pytest.raises(ValueError, match="reserved"):
            await ob.set_cursor("outbox.next_envelope_seq", 0)
        with pytest.raises(TypeError):
            await ob.set_cursor("x", 1.5)  # type: ignore[arg-type]
        await ob.set_cursor("x", "text")
        assert await ob.get_cursor("x") == "text"
        with pytest.raises(ValueError, match="64-bit"):
            await ob.set_cursor("down", 2**63)  # a uint64 sequence number goes in as text instead
        await ob.set_cursor("down", 2**63 - 1)
        assert await ob.get_cursor("down") == 2**63 - 1


async def test_corrupt_file_is_a_typed_error(tmp_path: Path):
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not an SQLite database at all, just some bytes" * 100)
    with pytest.raises(OutboxCorruptError) as info:
        async with open_outbox(path):
            pass
    assert info.value.path == path
    assert str(path) in str(info.value)


async def test_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "o.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(OutboxSchemaError, match="newer"):
        async with open_outbox(path):
            pass


async def test_unwritable_location_is_a_typed_error(tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(OutboxUnwritableError) as info:
        async with open_outbox(blocker / "o.db"):
            pass
    assert info.value.path == blocker / "o.db"
    assert isinstance(info.value, OutboxError)


async def test_database_is_wal_with_full_sync(tmp_path: Path):
    path = tmp_path / "o.db"
    async with open_outbox(path) as ob:
        await ob.put(item(0))
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()


async def test_use_after_close_is_a_typed_error(tmp_path: Path):
    async with open_outbox(tmp_path / "o.db") as ob:
        pass
    with pytest.raises(OutboxError, match="closed"):
        await ob.stats()


def test_eviction_counts_records_and_their_sequence_numbers_in_shared_envelopes():
    # Envelope 2 holds records 2-3, envelope 5 records 5-7 (numbered consecutively from the envelope's seq).
    eviction = Eviction.merge([(5, ("c", "d", "e"), 30), (2, ("a", "b"), 20)])
    assert eviction is not None
    assert (eviction.count, eviction.first_seq, eviction.last_seq) == (5, 2, 7)
    assert (eviction.seqs, eviction.record_ids, eviction.size) == ((2, 5), ("a", "b", "c", "d", "e"), 50)


async def test_version_1_database_is_migrated_with_its_rows(tmp_path: Path):
    # A database as carehub wrote it before schema version 2 (one index over both lanes).
    path = tmp_path / "o.db"
    conn = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    for seq, lane in [(1, Lane.ROUTINE), (2, Lane.PRIORITY), (3, Lane.ROUTINE), (4, Lane.PRIORITY)]:
        i = item(seq, lane)
        conn.execute(
            "INSERT INTO outbox (seq, lane, kind, record_ids, created, size, envelope) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, int(lane), i.kind, f'["{i.record_ids[0]}"]', i.created, i.size, i.envelope),
        )
    conn.close()
    async with open_outbox(path) as ob:
        assert await ob.peek_batch(10, 10_000) == [item(2, Lane.PRIORITY), item(4, Lane.PRIORITY), item(1), item(3)]
        stats = await ob.stats()
        assert (stats.priority_rows, stats.routine_rows) == (2, 2)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "outbox_lane_seq" not in indexes
    assert "outbox_priority" in indexes
    conn.close()


async def test_lanes_are_read_in_seq_order_without_sorting(tmp_path: Path):
    # Routine rows are read in the table's own (rowid = seq) order and priority rows through the partial index, so
    # neither query sorts the lane it reads: a peek over a large backlog stops after `limit` rows.
    path = tmp_path / "o.db"
    async with open_outbox(path):
        pass
    conn = sqlite3.connect(path)
    plans = {query: conn.execute(f"EXPLAIN QUERY PLAN {query}").fetchall() for query in SEND_ORDER}
    conn.close()
    priority, routine = (" ".join(str(step[3]) for step in plans[query]) for query in SEND_ORDER)
    assert "USING INDEX outbox_priority" in priority
    assert routine == "SCAN outbox"
    assert not any("TEMP B-TREE" in str(step[3]) for steps in plans.values() for step in steps)


async def test_a_committed_row_is_signalled_even_if_its_caller_was_cancelled(tmp_path: Path):
    async with open_outbox(tmp_path / "o.db") as ob:
        putter = asyncio.create_task(ob.put(item(0, Lane.PRIORITY)))
        cancelled = asyncio.Event()

        def cancel() -> None:
            putter.cancel()
            cancelled.set()

        # The loop runs callbacks in order: the task's first step (up to its wait for the commit), then the cancel.
        asyncio.get_running_loop().call_soon(cancel)
        await cancelled.wait()
        stats = await ob.stats()  # handed to the database thread after the put, so settled after it
        assert stats.priority_rows == 1
        assert ob.item_put.is_set()
        assert ob.priority_put.is_set()
        with pytest.raises(asyncio.CancelledError):
            await putter


@given(st.lists(st.text(), max_size=5).map(tuple))
def test_record_ids_are_stored_as_the_json_list_json_dumps_writes(ids: tuple[str, ...]):
    assert json_ids(ids) == json.dumps(list(ids))
    assert tuple(json.loads(json_ids(ids))) == ids
