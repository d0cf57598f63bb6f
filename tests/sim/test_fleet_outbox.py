"""The fleet's in-memory outbox (sim.fleet_outbox) against the real SQLite outbox: the same operations, the same
answers. A stateful hypothesis run drives both with puts (either lane, any order of sequence numbers), peeks with
limits, byte caps and exclusions, acks, sequence allocations and cursors, and compares every result."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import OutboxClosedError, OutboxError
from gateway.outbox import Lane, Outbox, OutboxItem, open_outbox
from sim.fleet_outbox import MemoryOutbox

_put = st.tuples(
    st.just("put"),
    st.lists(st.tuples(st.integers(0, 40), st.sampled_from(Lane), st.integers(1, 300)), min_size=1, max_size=4),
)
_peek = st.tuples(
    st.just("peek"), st.integers(0, 10), st.integers(1, 1200), st.frozensets(st.integers(0, 40), max_size=6)
)
_ack = st.tuples(st.just("ack"), st.lists(st.integers(0, 45), max_size=6))
_alloc = st.tuples(st.just("alloc"), st.integers(1, 5))
_cursor = st.tuples(st.just("cursor"), st.sampled_from(["a", "b"]), st.integers(-5, 5) | st.text(max_size=4))
_stats = st.tuples(st.just("stats"))
_ops = st.lists(st.one_of(_put, _peek, _ack, _alloc, _cursor, _stats), max_size=30)


def _item(seq: int, lane: Lane, size: int) -> OutboxItem:
    return OutboxItem(seq, bytes([seq % 256]) * size, lane, "measurement", (f"r{seq}",), 1.0)


async def _apply(outbox: Outbox, op: tuple[object, ...]) -> object:
    match op:
        case ("put", rows):
            assert isinstance(rows, list)
            try:
                await outbox.put_many([_item(*row) for row in rows])
            except (ValueError, OutboxError):  # a seq already there or twice in the put: nothing is stored
                return "refused"
            return "stored"
        case ("peek", int() as limit, int() as max_bytes, frozenset() as exclude):
            return [
                (i.envelope_seq, i.lane, i.envelope) for i in await outbox.peek_batch(limit, max_bytes, exclude=exclude)
            ]
        case ("ack", list() as seqs):
            return await outbox.ack(seqs)
        case ("alloc", int() as count):
            return list(await outbox.allocate_seqs(count))
        case ("cursor", str() as key, value):
            assert isinstance(value, int | str)
            before = await outbox.get_cursor(key)
            await outbox.set_cursor(key, value)
            return before, await outbox.get_cursor(key, "none")
        case ("stats",):
            s = await outbox.stats()
            return s.rows, s.priority_rows, s.routine_rows, s.total_bytes, s.over_limit
    raise AssertionError(op)


@contextlib.asynccontextmanager
async def _real(path: Path) -> AsyncIterator[Outbox]:
    async with open_outbox(path, reserve_bytes=0) as outbox:
        yield outbox


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_the_memory_outbox_answers_as_the_real_one(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[object, ...]]
) -> None:
    path = tmp_path_factory.mktemp("outbox") / "outbox.db"

    async def run() -> None:
        memory = MemoryOutbox("hub")
        async with _real(path) as real:
            for op in ops:
                assert await _apply(memory, op) == await _apply(real, op), op
            assert await memory.peek_batch(100, 1 << 20) == await real.peek_batch(100, 1 << 20)

    asyncio.run(run())


async def test_puts_set_the_events_the_uplink_waits_on_and_a_closed_outbox_refuses() -> None:
    outbox = MemoryOutbox("hub")
    await outbox.put(_item(1, Lane.ROUTINE, 10))
    assert outbox.item_put.is_set()
    assert not outbox.priority_put.is_set()
    await outbox.put(_item(2, Lane.PRIORITY, 10))
    assert outbox.priority_put.is_set()
    assert [i.envelope_seq for i in await outbox.peek_batch(5, 100)] == [2, 1]
    outbox.close()
    with pytest.raises(OutboxClosedError):
        await outbox.peek_batch(5, 100)


async def test_cursor_rules_are_the_real_ones() -> None:
    outbox = MemoryOutbox("hub")
    with pytest.raises(ValueError, match="reserved"):
        await outbox.set_cursor("outbox.next_envelope_seq", 3)
    with pytest.raises(TypeError):
        await outbox.set_cursor("k", True)
    with pytest.raises(ValueError, match="64-bit"):
        await outbox.set_cursor("k", 2**63)
    assert await outbox.allocate_seqs(3) == range(3)
    with pytest.raises(ValueError, match="count"):
        await outbox.allocate_seqs(0)
