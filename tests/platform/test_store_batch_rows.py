"""``store_batch`` on both engines with large batches (700 envelopes) and repeats: each envelope's outcome and each
record's new/duplicate attribution follow an exact model, in order, within an envelope, a batch and across
batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from community.samples import bp_record
from community.storage import EnvelopeOutcome, EnvelopeToStore, Outcome, Storage, StoredReading

Opener = Callable[[], AbstractAsyncContextManager[Storage]]


@pytest.fixture
def fresh(new_database: Callable[[], Opener]) -> Callable[[], Opener]:
    """New, empty databases of each engine (tests/platform/conftest.py)."""
    return new_database


def reading(hub: str, n: int, seq: int) -> StoredReading:
    return StoredReading.from_record(bp_record(hub, n), seq, 1.7e9 + 1)


class Model:
    """What storing batches must do: an envelope ``(hub, seq)`` stored before is replayed whole; a record id stored
    before (earlier in the batch included, within the same envelope too) is a duplicate."""

    def __init__(self) -> None:
        self.envelopes: set[tuple[str, int]] = set()
        self.records: list[tuple[str, str]] = []

    def store(self, batch: Sequence[EnvelopeToStore]) -> list[EnvelopeOutcome]:
        outcomes: list[EnvelopeOutcome] = []
        for env in batch:
            if (env.hub, env.envelope_seq) in self.envelopes:
                outcomes.append(EnvelopeOutcome(env.hub, env.envelope_seq, Outcome.REPLAYED, (), ()))
                continue
            self.envelopes.add((env.hub, env.envelope_seq))
            new: list[str] = []
            dup: list[str] = []
            for r in env.readings:
                if (r.hub, r.record_id) in self.records:
                    dup.append(r.record_id)
                else:
                    self.records.append((r.hub, r.record_id))
                    new.append(r.record_id)
            outcomes.append(EnvelopeOutcome(env.hub, env.envelope_seq, Outcome.STORED, tuple(new), tuple(dup)))
        return outcomes


async def test_a_batch_of_many_chunks_with_repeats_follows_the_model(fresh: Callable[[], Opener]) -> None:
    # 700 envelopes of two hubs (chunks of 256, 256, 128, 32, 16, 8, 4), records repeated within an envelope, across
    # envelopes of the batch and across batches; envelopes repeated within and across batches.
    first: list[EnvelopeToStore] = []
    for seq in range(1, 351):
        for hub in ("hub-a", "hub-b"):
            readings = [reading(hub, seq % 300, seq)]
            if seq % 7 == 0:
                readings.append(reading(hub, seq % 300, seq))  # the same record twice in one envelope
            if seq % 11 == 0:
                readings.append(reading(hub, 1000 + seq, seq))
            first.append(EnvelopeToStore(hub, seq, tuple(readings)))
    first.insert(400, EnvelopeToStore(first[3].hub, first[3].envelope_seq, first[3].readings))  # again, later
    second = [
        EnvelopeToStore("hub-a", seq, (reading("hub-a", seq, seq), reading("hub-a", 2000 + seq, seq)))
        for seq in range(340, 620)
    ]
    model = Model()
    async with fresh()() as db:
        for batch in (first, second, first[:300]):
            assert await db.store_batch(batch) == model.store(batch)
        stored = [(r.hub, r.record_id) for r in await db.readings()]
    assert sorted(stored) == sorted(model.records)
    assert len(stored) == len(set(stored))
    for hub in ("hub-a", "hub-b"):  # in the order each was first stored
        assert [rid for h, rid in stored if h == hub] == [rid for h, rid in model.records if h == hub]


batches = st.lists(
    st.lists(
        st.tuples(st.sampled_from(["hub-a", "hub-b"]), st.integers(0, 40), st.lists(st.integers(0, 30), max_size=3)),
        max_size=70,
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches)
async def test_random_batches_follow_the_model_exactly(fresh: Callable[[], Opener], batches) -> None:
    model = Model()
    async with fresh()() as db:
        for spec in batches:
            batch = [EnvelopeToStore(h, s, tuple(reading(h, n, s) for n in ns)) for h, s, ns in spec]
            assert await db.store_batch(batch) == model.store(batch)
        stored = [(r.hub, r.record_id) for r in await db.readings()]
    assert sorted(stored) == sorted(model.records)
