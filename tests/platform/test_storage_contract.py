"""One contract for both storage engines: every test runs against SQLite and a real PostgreSQL server.

PostgreSQL is one server per test worker (the ``pg_server`` fixture of ``tests/conftest.py``), each database
new. The tests skip only when PostgreSQL's server is not installed at all (scripts/test installs it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from community.hubkeys import HubKeyBatchSource
from community.samples import alarm_record, bp_record
from community.storage import Enrolment, EnvelopeToStore, Outcome, Refusal, Storage, StoredReading
from protocols.errors import EnvelopeRejection
from protocols.keys import HubIdentity

Opener = Callable[[], AbstractAsyncContextManager[Storage]]


@pytest.fixture
def fresh(new_database: Callable[[], Opener]) -> Callable[[], Opener]:
    """New, empty databases of each engine (tests/platform/conftest.py)."""
    return new_database


@asynccontextmanager
async def opened(fresh: Callable[[], Opener]) -> AsyncIterator[Storage]:
    async with fresh()() as db:
        yield db


def reading(hub: str, n: int, seq: int) -> StoredReading:
    return StoredReading.from_record(bp_record(hub, n), seq, 1.7e9 + 1)


async def test_store_replay_dedup_and_decoded_fields(fresh):
    async with opened(fresh) as db:
        alarm = StoredReading.from_record(alarm_record("hub-a", "alarm-1", 9), 1, 1.7e9)
        first = await db.store_batch(
            [
                EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1), alarm)),
                EnvelopeToStore("hub-a", 1, (reading("hub-a", 1, 1),)),  # the same envelope twice in one batch
                EnvelopeToStore("hub-a", 2**64 - 1, (reading("hub-a", 1, 2**64 - 1), reading("hub-a", 2, 7))),
            ]
        )
        assert [o.outcome for o in first] == [Outcome.STORED, Outcome.REPLAYED, Outcome.STORED]
        assert first[2].duplicate_record_ids == (reading("hub-a", 1, 1).record_id,)
        again = await db.store_batch(
            [EnvelopeToStore("hub-a", 1, ()), EnvelopeToStore("hub-b", 1, (reading("hub-b", 1, 1),))]
        )
        assert [o.outcome for o in again] == [Outcome.REPLAYED, Outcome.STORED]
        assert await db.readings("hub-a") == [reading("hub-a", 1, 1), alarm, reading("hub-a", 2, 7)]
        assert len(await db.readings()) == 4
        assert await db.knows_alarm("hub-a", "alarm-1")
        assert not await db.knows_alarm("hub-b", "alarm-1")
        assert await db.knows_resident("hub-a", "resident-1")


async def test_the_same_envelope_object_twice_in_a_batch_is_stored_at_its_first_place(fresh):
    async with opened(fresh) as db:
        env = EnvelopeToStore("hub-a", 3, (reading("hub-a", 3, 3),))
        outcomes = await db.store_batch([env, env])
        assert [o.outcome for o in outcomes] == [Outcome.STORED, Outcome.REPLAYED]
        assert outcomes[0].new_record_ids == (reading("hub-a", 3, 3).record_id,)


async def test_refusals_counters_hubs_and_down_seqs_survive_reopen(fresh):
    open_db = fresh()
    hub = HubIdentity.generate("hub-a")
    refusal = Refusal("hub-a", "hub-a", 5, EnvelopeRejection.BAD_SIGNATURE, "why\x00", 300, "ab" * 32, 1.7e9)
    async with open_db() as db:
        await db.store_batch([], [refusal, refusal])
        await db.count_rejection("replayed", None, 2)
        await db.enroll_hub(hub.public, residents=["resident-9"])
        generation = (await db.hub_key_changes(None)).generation
        assert [await db.next_down_seq("hub-a") for _ in range(3)] == [1, 2, 3]
    async with open_db() as db:
        assert await db.rejections() == {"bad_signature": 2, "replayed": 2}
        rows = await db.quarantine("hub-a")
        assert [r.refusal for r in rows] == [refusal, refusal]
        assert rows[0].refusal.detail == "why\ufffd"
        assert await db.hubs() == {"hub-a": hub.verify_key}
        assert await db.hub_key("hub-a") == hub.verify_key
        assert await db.hub_key("hub-b") is None
        assert await db.knows_resident("hub-a", "resident-9")
        other = HubIdentity.generate("hub-a")
        await db.enroll_hub(other.public)
        changes = await db.hub_key_changes(generation)
        assert changes.generation == generation + 1
        assert dict(changes.keys) == {"hub-a": other.verify_key}
        assert await db.next_down_seq("hub-a") == 4
        assert await db.schema_version() >= 1


batches = st.lists(
    st.lists(st.tuples(st.integers(0, 5), st.lists(st.integers(0, 7), max_size=4)), max_size=6), min_size=1, max_size=4
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches)
async def test_random_batches_with_duplicates_store_each_record_exactly_once(fresh, batches):
    """Envelopes and records repeat within and across batches: the outcomes follow the model, each record is
    stored once, in the order it was first stored."""
    seen_envelopes: set[int] = set()
    seen_records: list[str] = []
    async with opened(fresh) as db:
        for batch in batches:
            envs = [EnvelopeToStore("hub-a", s, tuple(reading("hub-a", n, s) for n in ns)) for s, ns in batch]
            outcomes = await db.store_batch(envs)
            for env, outcome in zip(envs, outcomes, strict=True):
                if env.envelope_seq in seen_envelopes:
                    assert outcome.outcome is Outcome.REPLAYED
                    continue
                seen_envelopes.add(env.envelope_seq)
                assert outcome.outcome is Outcome.STORED
                for r in env.readings:
                    expect_new = r.record_id not in seen_records
                    assert (r.record_id in outcome.new_record_ids) == expect_new or not expect_new
                    if expect_new:
                        seen_records.append(r.record_id)
        assert [r.record_id for r in await db.readings("hub-a")] == seen_records


async def test_many_hub_keys_in_one_read(fresh):
    keys = {f"hub-{n}": HubIdentity.generate(f"hub-{n}").public for n in range(0, 1400, 2)}
    async with opened(fresh) as db:
        assert isinstance(db, HubKeyBatchSource)  # the ingest worker's cache reads a batch's new hubs at once
        await db.enroll_hubs([Enrolment(k) for k in keys.values()])
        found = await db.hub_keys([f"hub-{n}" for n in range(1400)])
        assert found == {name: k.verify_key for name, k in keys.items()}
        assert await db.hub_keys([]) == {}


async def test_several_rejection_counters_in_one_write(fresh):
    async with opened(fresh) as db:
        await db.count_rejections({})
        await db.count_rejection("replayed", "hub-a")
        await db.count_rejections({("replayed", "hub-a"): 2, ("replayed", "hub-b"): 3, ("malformed", ""): 1})
        assert await db.rejections() == {"replayed": 6, "malformed": 1}
