"""Property test: random put/ack sequences against a plain in-memory model of the outbox's lanes and budget."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.outbox import Lane, Outbox, OutboxItem, open_outbox

MAX_BYTES = 200


@dataclass
class Model:
    rows: dict[int, tuple[Lane, int]] = field(default_factory=dict)
    evicted: list[int] = field(default_factory=list)

    def put(self, seq: int, lane: Lane, size: int) -> list[int]:
        self.rows[seq] = (lane, size)
        excess = sum(s for _, s in self.rows.values()) - MAX_BYTES
        victims: list[int] = []
        for victim in sorted(s for s, (ln, _) in self.rows.items() if ln is Lane.ROUTINE):
            if excess <= 0:
                break
            excess -= self.rows.pop(victim)[1]
            victims.append(victim)
        self.evicted.extend(victims)
        return victims

    def order(self) -> list[int]:
        return sorted(self.rows, key=lambda s: (self.rows[s][0], s))


put_op = st.tuples(st.just("put"), st.sampled_from(list(Lane)), st.integers(min_value=1, max_value=90))
ack_op = st.tuples(st.just("ack"), st.integers(min_value=0, max_value=2**16), st.integers(min_value=0, max_value=4))
reopen_op = st.tuples(st.just("reopen"), st.just(0), st.just(0))
ops_strategy = st.lists(st.one_of(put_op, put_op, ack_op, reopen_op), max_size=40)


async def check(ob: Outbox, model: Model, priority_seqs: set[int]) -> None:
    stats = await ob.stats()
    assert stats.rows == len(model.rows)
    assert stats.total_bytes == sum(s for _, s in model.rows.values())
    assert stats.priority_rows == sum(1 for ln, _ in model.rows.values() if ln is Lane.PRIORITY)
    assert [i.envelope_seq for i in await ob.peek_batch(1000, 10**9)] == model.order()
    pending = await ob.pending_evictions()
    evicted = pending.seqs if pending else ()
    assert evicted == tuple(sorted(model.evicted))
    assert not priority_seqs.intersection(evicted)


async def run(ops: list[tuple[str, object, int]], path: Path) -> None:
    model = Model()
    priority_seqs: set[int] = set()
    seq = 0
    async with contextlib.AsyncExitStack() as stack:
        ob = await stack.enter_async_context(open_outbox(path, max_bytes=MAX_BYTES))
        for op, arg, n in ops:
            if op == "put":
                assert isinstance(arg, Lane)
                result = await ob.put(OutboxItem(seq, b"e" * n, arg, "k", (f"r{seq}",), 0.0))
                if arg is Lane.PRIORITY:
                    priority_seqs.add(seq)
                victims = model.put(seq, arg, n)
                assert (result.evicted.seqs if result.evicted else ()) == tuple(victims)
                assert result.over_limit == (sum(s for _, s in model.rows.values()) > MAX_BYTES)
                seq += 1
            elif op == "ack":
                assert isinstance(arg, int)
                present = model.order()
                chosen = {present[(arg + k) % len(present)] for k in range(n)} if present else set()
                assert await ob.ack([*sorted(chosen), 10**9]) == len(chosen)
                for s in chosen:
                    del model.rows[s]
            else:
                await stack.aclose()
                ob = await stack.enter_async_context(open_outbox(path, max_bytes=MAX_BYTES))
            await check(ob, model, priority_seqs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy)
def test_outbox_matches_model(ops: list[tuple[str, object, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(ops, Path(tmp) / "o.db"))


# -- concurrent puts share one commit and one eviction pass -----------------------------------------------------

group_strategy = st.lists(
    st.lists(st.tuples(st.sampled_from(list(Lane)), st.integers(min_value=1, max_value=90)), min_size=1, max_size=8),
    max_size=12,
)


async def run_groups(groups: list[list[tuple[Lane, int]]], path: Path) -> None:
    lanes: dict[int, Lane] = {}
    seq = 0
    async with open_outbox(path, max_bytes=MAX_BYTES) as ob:
        for group in groups:
            before = {i.envelope_seq for i in await ob.peek_batch(1000, 10**9)}
            items = []
            for lane, size in group:
                items.append(OutboxItem(seq, b"g" * size, lane, "k", (f"r{seq}",), 0.0))
                lanes[seq] = lane
                seq += 1
            # Gathered puts are handed to the database thread together: one transaction, one eviction pass.
            results = await asyncio.gather(*(ob.put(item) for item in items))
            present = {i.envelope_seq for i in await ob.peek_batch(1000, 10**9)}
            evicted = {s for r in results if r.evicted for s in r.evicted.seqs}
            # Nothing vanishes without a record: every row is present or in this group's eviction report.
            assert before | {i.envelope_seq for i in items} == present | evicted
            assert not evicted & present
            assert all(lanes[s] is Lane.ROUTINE for s in evicted)
            # Oldest routine rows go first.
            routine_left = [s for s in present if lanes[s] is Lane.ROUTINE]
            assert not evicted or not routine_left or max(evicted) < min(routine_left)
            stats = await ob.stats()
            assert stats.over_limit == (stats.total_bytes > MAX_BYTES)
            if stats.over_limit:
                assert stats.routine_rows == 0
            pending = await ob.pending_evictions()
            assert set(pending.seqs if pending else ()) >= evicted


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=group_strategy)
def test_concurrent_puts_keep_the_eviction_rules(groups: list[list[tuple[Lane, int]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run_groups(groups, Path(tmp) / "o.db"))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.lists(st.tuples(st.text(max_size=12)), min_size=1, max_size=5))
def test_record_ids_round_trip_whatever_their_characters(ids: list[tuple[str, ...]]) -> None:
    async def go(path: Path) -> None:
        async with open_outbox(path) as ob:
            items = [OutboxItem(n, b"x", Lane.ROUTINE, "k", rid, 0.0) for n, rid in enumerate(ids)]
            await asyncio.gather(*(ob.put(i) for i in items))
            assert [i.record_ids for i in await ob.peek_batch(100, 10**9)] == ids

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(go(Path(tmp) / "o.db"))
