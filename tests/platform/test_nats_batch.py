"""The JetStream worker's transport-free core (community.nats_batch) on a real SQLite storage and the real codec:
one transaction per batch, each envelope stored once however often it appears, acks only after the commit, refusals
named in the ack of the topic's hub, nothing acked on a database failure (issue 15 item 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from community.ingest import IngestStats
from community.nats_batch import BatchIngest, Frame, subject_to_topic, topic_to_subject
from community.samples import T0, alarm_record, bp_record
from community.storage import EnvelopeOutcome, EnvelopeToStore, Refusal, SqliteStorage, StorageError
from community.wire import PlatformCodec
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.record import Record

PLATFORM = PlatformIdentity.generate()
HUBS = {h: HubIdentity.generate(h) for h in ("hub-a", "hub-b")}


def wire(hub: str) -> HubWire:
    return HubWire(HUBS[hub], PLATFORM.public)


def frame(hub: str, seqs: Sequence[int], kind: str = "up") -> Frame:
    w = wire(hub)
    return Frame(f"carehub.v1.{hub}.{kind}", w.encode_frame([w.seal(s, [bp_record(hub, s)], T0) for s in seqs]))


class FailingOnce(SqliteStorage):
    """The real SQLite storage whose next store_batch fails as a database outage would (nothing written)."""

    fail_next = False

    async def store_batch(
        self, envelopes: Sequence[EnvelopeToStore], refused: Sequence[Refusal] = ()
    ) -> list[EnvelopeOutcome]:
        if self.fail_next:
            self.fail_next = False
            raise StorageError("disk I/O error (injected)")
        return await super().store_batch(envelopes, refused)


async def core(storage: SqliteStorage) -> tuple[BatchIngest, IngestStats, asyncio.Queue[Record]]:
    for identity in HUBS.values():
        await storage.enroll_hub(identity.public)
    stats = IngestStats()
    alarms: asyncio.Queue[Record] = asyncio.Queue()
    return BatchIngest(storage, PlatformCodec(PLATFORM), stats, alarms), stats, alarms


def test_subjects_and_topics_map_both_ways() -> None:
    assert topic_to_subject("carehub/v1/hub-a/alarm") == "carehub.v1.hub-a.alarm"
    assert subject_to_topic("carehub.v1.hub-a.up") == "carehub/v1/hub-a/up"


async def test_a_batch_is_one_commit_and_one_ack_per_hub(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path / "p.db") as storage:
        batch, stats, alarms = await core(storage)
        alarm = alarm_record("hub-b", "alarm-1", 9)
        wb = wire("hub-b")
        frames = [
            frame("hub-a", [1, 2]),
            frame("hub-b", [1]),
            frame("hub-a", [3]),
            Frame("carehub.v1.hub-b.alarm", wb.encode_frame([wb.seal(9, [alarm], T0)])),
        ]
        acks = await batch.handle(frames)
        assert stats.commits == 1
        assert {a.hub_id: a.stored for a in acks} == {"hub-a": (1, 2, 3), "hub-b": (1, 9)}
        assert alarms.get_nowait() == alarm
        assert len(await storage.readings()) == 5


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=4), min_size=1, max_size=4))
async def test_every_envelope_is_stored_once_however_often_it_arrives(tmp_path: Path, batches: list[list[int]]) -> None:
    """Batches of frames with any repetition of envelopes (resends, redeliveries, within and across batches): each
    envelope is stored once, every occurrence is acked as stored."""
    db = tmp_path / f"p-{abs(hash(str(batches)))}.db"
    db.unlink(missing_ok=True)
    async with SqliteStorage(db) as storage:
        batch, stats, _ = await core(storage)
        for seqs in batches:
            acks = await batch.handle([frame("hub-a", [s]) for s in seqs])
            [ack] = acks
            assert sorted(ack.stored) == sorted(set(seqs))  # each once, in any order (acks are sets to a hub)
        sent = {s for seqs in batches for s in seqs}
        readings = await storage.readings("hub-a")
        assert sorted(r.envelope_seq for r in readings) == sorted(sent)
        assert stats.envelopes_stored == len(sent)


async def test_refusals_are_named_in_the_topic_hubs_ack_and_quarantined(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path / "p.db") as storage:
        batch, stats, _ = await core(storage)
        wa = wire("hub-a")
        good = wa.seal(1, [bp_record("hub-a", 1)], T0)
        forged = bytearray(wa.seal(2, [bp_record("hub-a", 2)], T0))
        forged[-1] ^= 1  # the seal no longer opens: cannot_open, names nothing
        on_b = wire("hub-b").seal(5, [bp_record("hub-b", 5)], T0)  # hub-b's envelope on hub-a's topic
        frames = [
            Frame("carehub.v1.hub-a.up", wa.encode_frame([good, bytes(forged), on_b])),
            Frame("carehub.v1.hub-a.up", b"not cbor"),
            Frame("carehub.v1.hub-a.sideways", wa.encode_frame([good])),
        ]
        [ack] = await batch.handle(frames)
        assert ack.hub_id == "hub-a"
        assert ack.stored == (1,)
        assert ack.rejected == ()  # neither refused envelope names hub-a and a seq it could trust
        reasons = sorted(q.refusal.reason.value for q in await storage.quarantine())
        assert reasons == ["cannot_open", "hub_mismatch", "malformed", "malformed"]
        assert stats.rejections["malformed"] == 2


async def test_a_database_failure_acks_nothing_and_the_redelivery_stores_once(tmp_path: Path) -> None:
    async with FailingOnce(tmp_path / "p.db") as storage:
        batch, stats, _ = await core(storage)
        frames = [frame("hub-a", [1, 2])]
        storage.fail_next = True
        with pytest.raises(StorageError):
            await batch.handle(frames)
        assert stats.acks_sent == 0
        assert await storage.readings() == []
        [ack] = await batch.handle(frames)  # JetStream delivers the nak'ed frames again
        assert ack.stored == (1, 2)
        assert len(await storage.readings()) == 2
