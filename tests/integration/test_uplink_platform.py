"""Hub outbox -> uplink -> real Mosquitto -> platform ingest -> SQLite, with acks back: exactly once, end to end.

Invariants: 1 (nothing leaves the outbox before the platform's ack), 2 (exactly once at the platform, replays
rejected), 3 (only sealed envelopes on the wire and at rest; forged/tampered refused), 4 (alarms first, never
evicted, evictions reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiomqtt
import pytest

from community.brokerconf import write_broker_config
from community.ingest import IngestWorker, WorkerSettings
from community.samples import T0, alarm_record, bp_record, eviction_record, panic_record
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from gateway.outbox import Lane, Outbox, OutboxItem, open_outbox
from gateway.uplink import REFUSED_CURSOR_PREFIX, Uplink, UplinkSettings, refusal_counts
from gateway.wire import HubWire
from protocols.acks import Rejected
from protocols.errors import EnvelopeRejection
from protocols.keys import HubIdentity, PlatformIdentity, save_platform_identity
from protocols.messages import AlarmAcknowledgement, DownMessage, ThresholdUpdate
from protocols.record import AlarmBody, EvictionBody, MeasurementBody, PanicBody, Record
from sim.broker import BrokerSecurity, MosquittoBroker, mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

REPO = Path(__file__).resolve().parents[2]
BOUND = 30  # seconds: an upper bound for awaiting events, never a sleep


@dataclass
class Keys:
    platform: PlatformIdentity
    hubs: dict[str, HubIdentity]

    def hub_wire(self, hub: str) -> HubWire:
        return HubWire(self.hubs[hub], self.platform.public)

    def codec(self) -> PlatformCodec:
        return PlatformCodec(self.platform)


@pytest.fixture
def keys() -> Keys:
    return Keys(PlatformIdentity.generate(), {h: HubIdentity.generate(h) for h in ("hub-a", "hub-b")})


def measurement(n: int, device: str = "bp-1", hub: str = "hub-a") -> Record:
    return bp_record(hub, n, device=device)


def rid(record: Record) -> str:
    return record.record_id.hex()


async def put_records(ob: Outbox, wire: HubWire, records: list[Record], lane: Lane = Lane.ROUTINE) -> list[OutboxItem]:
    seqs = await ob.allocate_seqs(len(records))
    items = [
        OutboxItem(seq, wire.seal(seq, [rec], T0), lane, rec.kind.value, (rid(rec),), 0.0)
        for seq, rec in zip(seqs, records, strict=True)
    ]
    await ob.put_many(items)
    return items


async def until(event: asyncio.Event, predicate: Callable[[], object]) -> None:
    """Await ``event`` until the (async) predicate holds, bounded by BOUND seconds."""
    async with asyncio.timeout(BOUND):
        while True:
            event.clear()
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await event.wait()


async def stored_ids(storage: SqliteStorage, hub: str | None = None) -> list[str]:
    return [r.record_id for r in await storage.readings(hub)]


@contextlib.asynccontextmanager
async def platform(
    tmp_path: Path, broker: MosquittoBroker, keys: Keys, **creds: str
) -> AsyncIterator[tuple[SqliteStorage, IngestWorker]]:
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        for identity in keys.hubs.values():
            await storage.enroll_hub(identity.public)
        settings = WorkerSettings(broker.host, broker.port, share_group="ingest", **creds)  # type: ignore[arg-type]
        async with IngestWorker(settings, storage, keys.codec()) as worker:
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            yield storage, worker


def uplink_settings(broker: MosquittoBroker, hub: str = "hub-a", **kw: object) -> UplinkSettings:
    base: dict[str, object] = {"backoff_base": 0.05, "backoff_cap": 0.5, "ack_timeout": 5.0}
    base.update(kw)
    return UplinkSettings(hub_id=hub, host=broker.host, port=broker.port, **base)  # type: ignore[arg-type]


async def test_records_arrive_exactly_once_with_identical_values(tmp_path, mosquitto, keys):
    wire = keys.hub_wire("hub-a")
    records = [measurement(n) for n in range(120)]
    alarm = alarm_record("hub-a", "alarm-1", 1000)
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, worker),
        open_outbox(tmp_path / "outbox.db") as ob,
    ):
        await put_records(ob, wire, records)
        async with Uplink(uplink_settings(mosquitto, frame_max_envelopes=16), ob, wire) as up:
            await put_records(ob, wire, [alarm], Lane.PRIORITY)
            async with asyncio.timeout(BOUND):
                await up.wait_acked(rid(alarm))
                offered = await worker.alarms.get()
            assert offered == alarm
            await until(up.acked, lambda: _empty(ob))
            # The alarm overtook the backlog: it was not the last record stored.
            ids = await stored_ids(storage)
            assert ids.index(rid(alarm)) < len(ids) - 1
            assert up.metrics.delivered_priority == 1
            assert up.metrics.last_ack_at is not None
        stored = {r.record_id: r for r in await storage.readings("hub-a")}
        assert sorted(stored) == sorted([rid(r) for r in records] + [rid(alarm)])
        assert len(await stored_ids(storage)) == len(stored)
        for rec in records:
            row = stored[rid(rec)]
            assert isinstance(rec.body, MeasurementBody)
            assert (row.kind, row.device, row.record_seq) == ("measurement", "bp-1", rec.seq)
            assert row.values == rec.body.values
            assert row.body["raw"] == rec.body.raw.hex()
            assert (row.hub_time, row.device_time) == (rec.hub_time, rec.device_time)
        assert isinstance(alarm.body, AlarmBody)
        assert stored[rid(alarm)].body["condition"] == alarm.body.condition
        assert stored[rid(alarm)].values is None
        assert await storage.rejections() == {}


async def test_two_workers_sharing_the_subscription_store_each_record_once(tmp_path, mosquitto, keys):
    """The platform scales out: workers in one MQTT share group, each with its own database connection, split the
    frames between them; every record is stored once and every envelope acked."""
    wire = keys.hub_wire("hub-a")
    records = [measurement(n) for n in range(300)]
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        await storage.enroll_hub(keys.hubs["hub-a"].public)
    async with contextlib.AsyncExitStack() as stack:
        workers = []
        for n in range(2):
            own = await stack.enter_async_context(SqliteStorage(tmp_path / "platform.db"))
            settings = WorkerSettings(mosquitto.host, mosquitto.port, share_group="ingest", client_id=f"ingest-{n}")
            worker = await stack.enter_async_context(IngestWorker(settings, own, keys.codec()))
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            workers.append(worker)
        ob = await stack.enter_async_context(open_outbox(tmp_path / "outbox.db"))
        await put_records(ob, wire, records)
        up = await stack.enter_async_context(Uplink(uplink_settings(mosquitto, frame_max_envelopes=16), ob, wire))
        await until(up.acked, lambda: _empty(ob))
        assert all(w.stats.frames > 0 for w in workers)  # the broker shared the frames out
        assert sum(w.stats.records_stored for w in workers) == len(records)
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        ids = await stored_ids(storage)
    assert sorted(ids) == sorted(rid(r) for r in records)


async def _empty(ob: Outbox) -> bool:
    return (await ob.stats()).rows == 0


async def test_broker_outage_buffers_then_delivers_once(tmp_path, mosquitto, keys):
    wire = keys.hub_wire("hub-a")
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, _worker),
        open_outbox(tmp_path / "outbox.db") as ob,
        Uplink(uplink_settings(mosquitto), ob, wire) as up,
    ):
        await put_records(ob, wire, [measurement(n) for n in range(20)])
        await until(up.acked, lambda: _empty(ob))
        await mosquitto.stop()
        await until(up.connected, lambda: not up.connected.is_set())
        await put_records(ob, wire, [measurement(n) for n in range(20, 200)])
        assert (await ob.stats()).rows == 180  # nothing leaves the outbox without an ack
        await mosquitto.start()
        await until(up.acked, lambda: _empty(ob))
        ids = await stored_ids(storage)
        assert sorted(ids) == sorted(rid(measurement(n)) for n in range(200))
        assert up.metrics.connects >= 2


PLATFORM_CHILD = r"""
import asyncio, pathlib, sys
from protocols.keys import load_platform_identity
from community.ingest import IngestWorker, WorkerSettings
from community.storage import SqliteStorage
from community.wire import PlatformCodec

async def main():
    db, port, key_file = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    codec = PlatformCodec(load_platform_identity(key_file))
    async with SqliteStorage(db) as storage:
        async with IngestWorker(WorkerSettings("127.0.0.1", port, client_id="child"), storage, codec) as worker:
            await worker.connected.wait()
            print("ready", flush=True)
            await asyncio.Event().wait()

asyncio.run(main())
"""


async def spawn_platform(tmp_path: Path, broker: MosquittoBroker, keys: Keys) -> asyncio.subprocess.Process:
    key_file = tmp_path / "platform.key"
    if not key_file.exists():
        save_platform_identity(key_file, keys.platform)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PLATFORM_CHILD,
        str(tmp_path / "platform.db"),
        str(broker.port),
        str(key_file),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    async with asyncio.timeout(BOUND):
        assert (await proc.stdout.readline()).strip() == b"ready"
    return proc


async def test_platform_killed_mid_stream_loses_and_duplicates_nothing(tmp_path, mosquitto, keys):
    wire = keys.hub_wire("hub-a")
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        await storage.enroll_hub(keys.hubs["hub-a"].public)
        proc = await spawn_platform(tmp_path, mosquitto, keys)
        async with open_outbox(tmp_path / "outbox.db") as ob:
            settings = uplink_settings(mosquitto, ack_timeout=1.0, frame_max_envelopes=8, max_inflight_frames=4)
            async with Uplink(settings, ob, wire) as up:
                await put_records(ob, wire, [measurement(n) for n in range(600)])
                await until(up.acked, lambda: up.metrics.delivered_envelopes >= 40)
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                delivered_at_kill = up.metrics.delivered_envelopes
                assert delivered_at_kill < 600, "the kill came too late to be mid-stream"
                proc = await spawn_platform(tmp_path, mosquitto, keys)
                try:
                    await until(up.acked, lambda: _empty(ob))
                finally:
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
        ids = await stored_ids(storage)
        assert len(ids) == len(set(ids)) == 600
        assert set(ids) == {rid(measurement(n)) for n in range(600)}


async def test_hub_cannot_publish_on_another_hubs_topic(tmp_path, keys):
    files = write_broker_config(tmp_path / "conf", ["hub-a", "hub-b"])
    pw = files.passwords
    security = BrokerSecurity(files.password_file, files.acl_file)
    async with (
        MosquittoBroker(tmp_path / "broker", security=security) as broker,
        platform(tmp_path, broker, keys, username="platform", password=pw["platform"]) as (storage, worker),
    ):
        wire_a = keys.hub_wire("hub-a")
        async with aiomqtt.Client(broker.host, broker.port, username="hub-a", password=pw["hub-a"]) as hub_a:
            forged = wire_a.encode_frame([wire_a.seal(1, [measurement(1, "a")], T0)])
            await hub_a.publish("carehub/v1/hub-b/up", forged, qos=1)  # dropped by the ACL, silently
            own = wire_a.encode_frame([wire_a.seal(2, [measurement(2, "a")], T0)])
            await hub_a.publish("carehub/v1/hub-a/up", own, qos=1)
            await until(worker.stored, lambda: stored_ids(storage))
        # Per-publisher order: had the ACL passed the first frame, it would have been handled first.
        assert await stored_ids(storage) == [rid(measurement(2, "a"))]
        assert await storage.rejections() == {}


async def test_without_acl_hub_mismatch_is_rejected_and_counted(tmp_path, mosquitto, keys):
    wire_a = keys.hub_wire("hub-a")
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, worker),
        aiomqtt.Client(mosquitto.host, mosquitto.port) as hub_a,
    ):
        frame = wire_a.encode_frame([wire_a.seal(1, [measurement(1, "a")], T0)])
        await hub_a.publish("carehub/v1/hub-b/up", frame, qos=1)
        await until(worker.rejected, lambda: worker.stats.rejections.get("hub_mismatch"))
        assert await stored_ids(storage) == []
        assert await storage.rejections() == {"hub_mismatch": 1}


async def test_forged_tampered_and_replayed_envelopes_are_rejected(tmp_path, mosquitto, keys):
    wire_a = keys.hub_wire("hub-a")
    stranger = HubWire(HubIdentity.generate("hub-a"), keys.platform.public)  # claims hub-a, signs with another key
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, worker),
        aiomqtt.Client(mosquitto.host, mosquitto.port) as client,
    ):
        await client.subscribe("carehub/v1/hub-a/ack", qos=1)
        up = "carehub/v1/hub-a/up"
        good = wire_a.seal(1, [measurement(1)], T0)
        await client.publish(up, wire_a.encode_frame([good]), qos=1)
        await until(worker.stored, lambda: stored_ids(storage))
        forged = stranger.seal(2, [measurement(2)], T0)
        tampered = bytearray(wire_a.seal(3, [measurement(3)], T0))
        tampered[-5] ^= 0x01
        unknown = HubWire(HubIdentity.generate("hub-z"), keys.platform.public).seal(
            4, [measurement(4, hub="hub-z")], T0
        )
        for payload in (forged, bytes(tampered), good, unknown):
            await client.publish(up, wire_a.encode_frame([payload]), qos=1)
        await client.publish(up, b"\xff not a frame", qos=1)
        expected = {"bad_signature": 1, "cannot_open": 1, "replayed": 1, "unknown_hub": 1, "malformed": 1}
        await until(worker.rejected, lambda: worker.stats.rejections == expected)
        assert await storage.rejections() == expected
        assert await stored_ids(storage) == [rid(measurement(1))]
        # The replay is acked as stored (its content is), so an honest re-send empties the outbox. The forgery names
        # hub-a and a seq: refused in hub-a's ack (final). What cannot be opened, or names another hub, names no
        # envelope of hub-a's: it is only quarantined.
        acks = [wire_a.open_ack(bytes(m.payload)) async for m in _take(client, 3)]
        assert [(a.hub_id, a.stored, a.rejected) for a in acks] == [
            ("hub-a", (1,), ()),
            ("hub-a", (), (Rejected(2, EnvelopeRejection.BAD_SIGNATURE),)),
            ("hub-a", (1,), ()),
        ]
        assert acks[0].ack_seq < acks[1].ack_seq < acks[2].ack_seq


async def _take(client: aiomqtt.Client, n: int) -> AsyncIterator[aiomqtt.Message]:
    async with asyncio.timeout(BOUND):
        count = 0
        async for message in client.messages:
            yield message
            count += 1
            if count == n:
                return


async def test_full_outbox_evicts_routine_keeps_alarms_and_reports(tmp_path, mosquitto, keys):
    wire = keys.hub_wire("hub-a")
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, _worker),
        open_outbox(tmp_path / "outbox.db", max_bytes=40_000) as ob,
    ):
        # The broker is "down" for the hub: nothing is sent while the outbox overflows.
        routine = await put_records(ob, wire, [measurement(n) for n in range(100)])
        alarm_records = [alarm_record("hub-a", f"alarm-{n}", 1000 + n) for n in range(5)]
        alarms = await put_records(ob, wire, alarm_records, Lane.PRIORITY)
        stats = await ob.stats()
        assert stats.evicted_rows_total > 0
        pending = await ob.pending_evictions()
        assert pending is not None
        # Oldest routine first; no alarm ever evicted.
        assert pending.seqs == tuple(i.envelope_seq for i in routine[: pending.count])
        assert not set(pending.seqs) & {i.envelope_seq for i in alarms}
        seq = (await ob.allocate_seqs(1))[0]
        report = eviction_record(
            "hub-a", 2000, pending.count, pending.first_seq, pending.last_seq, pending.size, pending.record_ids
        )
        await ob.put_many(
            [OutboxItem(seq, wire.seal(seq, [report], T0), Lane.PRIORITY, "eviction", (rid(report),), 0.0)],
            settle=pending,
        )
        # The report is cleared with its settle; the report's own bytes may have evicted more, reported next time.
        later = await ob.pending_evictions()
        evicted = set(pending.seqs) | set(later.seqs if later else ())
        assert not set(later.seqs if later else ()) & set(pending.seqs)
        async with Uplink(uplink_settings(mosquitto), ob, wire) as up:
            await until(up.acked, lambda: _empty(ob))
        stored = {r.record_id: r for r in await storage.readings()}
        assert {rid(a) for a in alarm_records} <= set(stored)
        assert isinstance(report.body, EvictionBody)
        assert stored[rid(report)].kind == "eviction"
        assert stored[rid(report)].body["count"] == pending.count
        assert stored[rid(report)].body["oldest_record_id"] == pending.record_ids[0]
        assert not {i.record_ids[0] for i in routine if i.envelope_seq in evicted} & set(stored)
        kept = {i.record_ids[0] for i in routine if i.envelope_seq not in evicted}
        assert kept <= set(stored)
        assert len(stored) == len(kept) + 5 + 1


async def test_caregiver_ack_and_thresholds_reach_the_hub_verified(tmp_path, mosquitto, keys):
    wire = keys.hub_wire("hub-a")
    panic = panic_record("hub-a", "pendant-1", 7, "panic-7", 1)
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, worker),
        open_outbox(tmp_path / "outbox.db") as ob,
        Uplink(uplink_settings(mosquitto), ob, wire) as up,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as eavesdropper,
    ):
        await eavesdropper.subscribe("carehub/v1/hub-a/down", qos=1)
        await put_records(ob, wire, [panic], Lane.PRIORITY)
        async with asyncio.timeout(BOUND):
            offered = await worker.alarms.get()
            assert isinstance(offered.body, PanicBody)
            assert offered.body.alarm_id is not None
            answered = T0 + timedelta(seconds=40)
            sent = await worker.ack_alarm(offered.hub_id, offered.body.alarm_id, "Mei Lin", answered, role="daughter")
            down = await up.down.get()
            [captured] = [bytes(m.payload) async for m in _take(eavesdropper, 1)]
            update = await worker.update_thresholds("hub-a", "resident-1", {"bp.systolic.critical": 175.0})
            second = await up.down.get()
        assert down == sent
        assert down == DownMessage(
            "hub-a", 1, down.issued_at, AlarmAcknowledgement("panic-7", "Mei Lin", answered, "daughter")
        )
        assert second == update
        assert second.seq == 2
        assert second.body == ThresholdUpdate("resident-1", {"bp.systolic.critical": 175.0})
        assert await stored_ids(storage) == [rid(panic)]
        # A captured acknowledgement published again is refused by the hub as a replay.
        await eavesdropper.publish("carehub/v1/hub-a/down", captured, qos=1)
        forged = PlatformCodec(PlatformIdentity.generate()).encode_down(
            DownMessage("hub-a", 99, T0, AlarmAcknowledgement("panic-7", "Stranger", T0))
        )
        await eavesdropper.publish("carehub/v1/hub-a/down", forged, qos=1)
        # Both were PUBACKed by the broker, so they reach the hub before this genuine third message does.
        third = await worker.update_thresholds("hub-a", "resident-1", {"bp.systolic.critical": None})
        async with asyncio.timeout(BOUND):
            assert await up.down.get() == third
        assert up.metrics.bad_downs == 2
        assert wire.last_down_seq == third.seq == 3
    # Down-message sequence numbers survive a platform restart (durable in the platform database).
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        assert await storage.next_down_seq("hub-a") == 4


async def test_a_refused_envelope_leaves_the_hub_outbox_in_one_ack_round(tmp_path, mosquitto, keys):
    """Issue 15.6: an envelope the platform refuses for good (here: not signed by the hub's enrolled key) is named in
    ``Ack.rejected``; the hub drops it from its outbox at once, counts it by reason, and delivers the rest."""
    wire = keys.hub_wire("hub-a")
    impostor = HubWire(HubIdentity.generate("hub-a"), keys.platform.public)
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, _worker),
        open_outbox(tmp_path / "outbox.db") as ob,
    ):
        good = await put_records(ob, wire, [measurement(1)])
        [bad] = await put_records(ob, impostor, [measurement(2)])
        await put_records(ob, wire, [measurement(3)])
        # One frame, one ack round, a long ack wait: the outbox can only empty through that ack.
        async with Uplink(uplink_settings(mosquitto, ack_timeout=60.0), ob, wire) as up:
            await until(up.acked, lambda: _empty(ob))
            assert up.metrics.refused == {EnvelopeRejection.BAD_SIGNATURE: 1}
            assert up.metrics.resends == 0
            assert up.metrics.frames_sent == 1
        assert refusal_counts({k: await ob.get_cursor(k, 0) for k in [REFUSED_CURSOR_PREFIX + "bad_signature"]}) == {
            EnvelopeRejection.BAD_SIGNATURE: 1
        }
        assert sorted(await stored_ids(storage)) == sorted([good[0].record_ids[0], rid(measurement(3))])
        assert bad.envelope_seq == 1
