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
from pathlib import Path

import aiomqtt
import nacl.public
import nacl.signing
import pytest

from gateway.outbox import Lane, Outbox, OutboxItem, open_outbox
from gateway.uplink import Uplink, UplinkSettings
from sim.broker import BrokerSecurity, MosquittoBroker, mosquitto_available
from sim.platform.brokerconf import write_broker_config
from sim.platform.ingest import IngestWorker, WorkerSettings
from sim.platform.storage import SqliteStorage
from sim.platform.wire import AlarmAck, HubWire, PlatformCodec, WireRecord

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

REPO = Path(__file__).resolve().parents[2]
BOUND = 30  # seconds: an upper bound for awaiting events, never a sleep


@dataclass
class Keys:
    platform_sign: nacl.signing.SigningKey
    platform_box: nacl.public.PrivateKey
    hubs: dict[str, nacl.signing.SigningKey]

    def hub_wire(self, hub: str) -> HubWire:
        return HubWire(hub, self.hubs[hub], self.platform_box.public_key, self.platform_sign.verify_key)

    def codec(self) -> PlatformCodec:
        return PlatformCodec(self.platform_sign, self.platform_box)


@pytest.fixture
def keys() -> Keys:
    return Keys(
        nacl.signing.SigningKey.generate(),
        nacl.public.PrivateKey.generate(),
        {h: nacl.signing.SigningKey.generate() for h in ("hubA", "hubB")},
    )


def measurement(n: int, device: str = "bp-1") -> WireRecord:
    # Made-up blood-pressure values, as a decoded 2A35 measurement would give them.
    return WireRecord(
        f"{device}:{n}", "measurement", device, {"systolic": 110 + n % 40, "diastolic": 70 + n % 20}, 1.7e9 + n
    )


async def put_records(
    ob: Outbox, wire: HubWire, records: list[WireRecord], lane: Lane = Lane.ROUTINE
) -> list[OutboxItem]:
    seqs = await ob.allocate_seqs(len(records))
    items = [
        OutboxItem(seq, wire.seal(seq, [rec]), lane, rec.kind, (rec.record_id,), 0.0)
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
        for hub, key in keys.hubs.items():
            await storage.enroll_hub(hub, bytes(key.verify_key))
        settings = WorkerSettings(broker.host, broker.port, share_group="ingest", **creds)  # type: ignore[arg-type]
        async with IngestWorker(settings, storage, keys.codec()) as worker:
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            yield storage, worker


def uplink_settings(broker: MosquittoBroker, hub: str = "hubA", **kw: object) -> UplinkSettings:
    base: dict[str, object] = {"backoff_base": 0.05, "backoff_cap": 0.5, "ack_timeout": 5.0}
    base.update(kw)
    return UplinkSettings(hub_id=hub, host=broker.host, port=broker.port, **base)  # type: ignore[arg-type]


async def test_records_arrive_exactly_once_with_identical_values(tmp_path, mosquitto, keys):
    wire = keys.hub_wire("hubA")
    records = [measurement(n) for n in range(120)]
    alarm = WireRecord("alarm:1", "alarm", "bp-1", {"rule": "systolic_high", "value": 190}, 1.7e9)
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, worker),
        open_outbox(tmp_path / "outbox.db") as ob,
    ):
        await put_records(ob, wire, records)
        async with Uplink(uplink_settings(mosquitto, frame_max_envelopes=16), ob, wire) as up:
            await put_records(ob, wire, [alarm], Lane.PRIORITY)
            async with asyncio.timeout(BOUND):
                await up.wait_acked("alarm:1")
                offered = await worker.alarms.get()
            assert offered.record_id == "alarm:1"
            await until(up.acked, lambda: _empty(ob))
            # The alarm overtook the backlog: it was not the last record stored.
            ids = await stored_ids(storage)
            assert ids.index("alarm:1") < len(ids) - 1
            assert up.metrics.delivered_priority == 1
            assert up.metrics.last_ack_at is not None
        stored = {r.record_id: r for r in await storage.readings("hubA")}
        assert sorted(stored) == sorted([r.record_id for r in records] + ["alarm:1"])
        assert len(await stored_ids(storage)) == len(stored)
        for rec in records:
            assert dict(stored[rec.record_id].values) == dict(rec.values)
            assert stored[rec.record_id].recorded_at == rec.at
        assert await storage.rejections() == {}


async def _empty(ob: Outbox) -> bool:
    return (await ob.stats()).rows == 0


async def test_broker_outage_buffers_then_delivers_once(tmp_path, mosquitto, keys):
    wire = keys.hub_wire("hubA")
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
        assert sorted(ids) == sorted(f"bp-1:{n}" for n in range(200))
        assert up.metrics.connects >= 2


PLATFORM_CHILD = r"""
import asyncio, sys
import nacl.public, nacl.signing
from sim.platform.ingest import IngestWorker, WorkerSettings
from sim.platform.storage import SqliteStorage
from sim.platform.wire import PlatformCodec

async def main():
    db, port, sign, box = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])
    codec = PlatformCodec(nacl.signing.SigningKey(sign), nacl.public.PrivateKey(box))
    async with SqliteStorage(__import__("pathlib").Path(db)) as storage:
        async with IngestWorker(WorkerSettings("127.0.0.1", port, client_id="child"), storage, codec) as worker:
            await worker.connected.wait()
            print("ready", flush=True)
            await asyncio.Event().wait()

asyncio.run(main())
"""


async def spawn_platform(tmp_path: Path, broker: MosquittoBroker, keys: Keys) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PLATFORM_CHILD,
        str(tmp_path / "platform.db"),
        str(broker.port),
        bytes(keys.platform_sign).hex(),
        bytes(keys.platform_box).hex(),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    async with asyncio.timeout(BOUND):
        assert (await proc.stdout.readline()).strip() == b"ready"
    return proc


async def test_platform_killed_mid_stream_loses_and_duplicates_nothing(tmp_path, mosquitto, keys):
    wire = keys.hub_wire("hubA")
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        await storage.enroll_hub("hubA", bytes(keys.hubs["hubA"].verify_key))
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
        assert set(ids) == {f"bp-1:{n}" for n in range(600)}


async def test_hub_cannot_publish_on_another_hubs_topic(tmp_path, keys):
    files = write_broker_config(tmp_path / "conf", ["hubA", "hubB"])
    pw = files.passwords
    security = BrokerSecurity(files.password_file, files.acl_file)
    async with (
        MosquittoBroker(tmp_path / "broker", security=security) as broker,
        platform(tmp_path, broker, keys, username="platform", password=pw["platform"]) as (storage, worker),
    ):
        wire_a = keys.hub_wire("hubA")
        async with aiomqtt.Client(broker.host, broker.port, username="hubA", password=pw["hubA"]) as hub_a:
            forged = wire_a.encode_frame([wire_a.seal(1, [measurement(1, "a")])])
            await hub_a.publish("carehub/v1/hubB/up", forged, qos=1)  # dropped by the ACL, silently
            own = wire_a.encode_frame([wire_a.seal(2, [measurement(2, "a")])])
            await hub_a.publish("carehub/v1/hubA/up", own, qos=1)
            await until(worker.stored, lambda: stored_ids(storage))
        # Per-publisher order: had the ACL passed the first frame, it would have been handled first.
        assert await stored_ids(storage) == ["a:2"]
        assert await storage.rejections() == {}


async def test_without_acl_hub_mismatch_is_rejected_and_counted(tmp_path, mosquitto, keys):
    wire_a = keys.hub_wire("hubA")
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, worker),
        aiomqtt.Client(mosquitto.host, mosquitto.port) as hub_a,
    ):
        frame = wire_a.encode_frame([wire_a.seal(1, [measurement(1, "a")])])
        await hub_a.publish("carehub/v1/hubB/up", frame, qos=1)
        await until(worker.rejected, lambda: worker.stats.rejections.get("hub_mismatch"))
        assert await stored_ids(storage) == []
        assert await storage.rejections() == {"hub_mismatch": 1}


async def test_forged_tampered_and_replayed_envelopes_are_rejected(tmp_path, mosquitto, keys):
    wire_a = keys.hub_wire("hubA")
    stranger = HubWire(
        "hubA", nacl.signing.SigningKey.generate(), keys.platform_box.public_key, keys.platform_sign.verify_key
    )
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, worker),
        aiomqtt.Client(mosquitto.host, mosquitto.port) as client,
    ):
        await client.subscribe("carehub/v1/hubA/ack", qos=1)
        up = "carehub/v1/hubA/up"
        good = wire_a.seal(1, [measurement(1)])
        await client.publish(up, wire_a.encode_frame([good]), qos=1)
        await until(worker.stored, lambda: stored_ids(storage))
        forged = stranger.seal(2, [measurement(2)])  # claims to be hubA, signed by another key
        tampered = bytearray(wire_a.seal(3, [measurement(3)]))
        tampered[-5] ^= 0x01
        unknown = HubWire(
            "hubZ", nacl.signing.SigningKey.generate(), keys.platform_box.public_key, keys.platform_sign.verify_key
        ).seal(4, [measurement(4)])
        for payload in (forged, bytes(tampered), good, unknown):
            await client.publish(up, wire_a.encode_frame([payload]), qos=1)
        await client.publish(up, b"\xff not a frame", qos=1)
        expected = {"bad_signature": 1, "cannot_open": 1, "replayed": 1, "unknown_hub": 1, "malformed": 1}
        await until(worker.rejected, lambda: worker.stats.rejections == expected)
        assert await storage.rejections() == expected
        assert await stored_ids(storage) == ["bp-1:1"]
        # The replay is acked as stored (its content is), so an honest re-send empties the outbox.
        acks = [wire_a.open_ack(bytes(m.payload)) async for m in _take(client, 2)]
        assert [a.stored for a in acks] == [(1,), (1,)]


async def _take(client: aiomqtt.Client, n: int) -> AsyncIterator[aiomqtt.Message]:
    async with asyncio.timeout(BOUND):
        count = 0
        async for message in client.messages:
            yield message
            count += 1
            if count == n:
                return


async def test_full_outbox_evicts_routine_keeps_alarms_and_reports(tmp_path, mosquitto, keys):
    wire = keys.hub_wire("hubA")
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, _worker),
        open_outbox(tmp_path / "outbox.db", max_bytes=20_000) as ob,
    ):
        # The broker is "down" for the hub: nothing is sent while the outbox overflows.
        routine = await put_records(ob, wire, [measurement(n) for n in range(100)])
        alarms = await put_records(
            ob, wire, [WireRecord(f"alarm:{n}", "alarm", "bp-1", {"n": n}, None) for n in range(5)], Lane.PRIORITY
        )
        stats = await ob.stats()
        assert stats.evicted_rows_total > 0
        pending = await ob.pending_evictions()
        assert pending is not None
        # Oldest routine first; no alarm ever evicted.
        assert pending.seqs == tuple(i.envelope_seq for i in routine[: pending.count])
        assert not set(pending.seqs) & {i.envelope_seq for i in alarms}
        report = WireRecord(
            "eviction:1",
            "eviction_report",
            None,
            {
                "count": pending.count,
                "first_seq": pending.first_seq,
                "last_seq": pending.last_seq,
                "bytes": pending.size,
                "record_ids": list(pending.record_ids),
            },
            None,
        )
        seq = (await ob.allocate_seqs(1))[0]
        await ob.put_many(
            [OutboxItem(seq, wire.seal(seq, [report]), Lane.PRIORITY, "eviction_report", ("eviction:1",), 0.0)],
            settle=pending,
        )
        # The report is cleared with its settle; the report's own bytes may have evicted more, reported next time.
        later = await ob.pending_evictions()
        evicted = set(pending.seqs) | set(later.seqs if later else ())
        assert not set(later.seqs if later else ()) & set(pending.seqs)
        async with Uplink(uplink_settings(mosquitto), ob, wire) as up:
            await until(up.acked, lambda: _empty(ob))
        stored = {r.record_id: r for r in await storage.readings()}
        assert {f"alarm:{n}" for n in range(5)} <= set(stored)
        assert stored["eviction:1"].values["count"] == pending.count
        assert not {i.record_ids[0] for i in routine if i.envelope_seq in evicted} & set(stored)
        kept = {i.record_ids[0] for i in routine if i.envelope_seq not in evicted}
        assert kept <= set(stored)
        assert len(stored) == len(kept) + 5 + 1


async def test_caregiver_alarm_ack_reaches_the_hub_verified(tmp_path, mosquitto, keys):
    wire = keys.hub_wire("hubA")
    async with (
        platform(tmp_path, mosquitto, keys) as (storage, worker),
        open_outbox(tmp_path / "outbox.db") as ob,
        Uplink(uplink_settings(mosquitto), ob, wire) as up,
    ):
        await put_records(
            ob, wire, [WireRecord("panic:7", "panic", "pendant-1", {"press": "long"}, None)], Lane.PRIORITY
        )
        async with asyncio.timeout(BOUND):
            offered = await worker.alarms.get()
            await worker.ack_alarm(offered.hub, offered.record_id, "Mei (daughter)", 1.7e9)
            down = await up.down.get()
        assert down == AlarmAck("hubA", "panic:7", "Mei (daughter)", 1.7e9)
        assert await stored_ids(storage) == ["panic:7"]
