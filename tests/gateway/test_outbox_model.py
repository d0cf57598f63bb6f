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
