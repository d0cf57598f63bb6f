"""What the hub is handed in one loop turn is one commit: routine readings share envelopes, alarms have their own.

Each envelope opens at the platform to its records, numbered consecutively from the envelope's sequence number (what
the outbox's eviction reports rely on), and every reading is in exactly one envelope.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.app import Gateway, open_gateway
from gateway.ble import Reading
from gateway.clock import ManualClock
from gateway.config import parse_config, render_config
from gateway.feedback import RecordingFeedback
from gateway.outbox import Lane, OutboxItem
from protocols.datetime_ import DateTime
from protocols.envelope import OpenedEnvelope, open_envelope
from protocols.gatt import BloodPressureMeasurement
from protocols.ieee11073 import MderFloat
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
from protocols.record import MeasurementBody, RecordKind
from sim.broker import free_port

HUB = "seal-hub"
METERS = tuple(f"C0:00:00:00:02:{n:02X}" for n in range(1, 5))
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
BP = BloodPressureMeasurement.UUID


@asynccontextmanager
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Gateway, PlatformIdentity, HubIdentity]]:
    platform = PlatformIdentity.generate()
    identity = HubIdentity.generate(HUB)
    save_platform_public_keys(tmp_path / "platform.pub", platform.public)
    save_hub_identity(tmp_path / "hub.key", identity)
    data: dict[str, object] = {
        "hub": {"id": HUB, "key_file": "hub.key"},
        "platform": {"public_key_file": "platform.pub"},
        "broker": {"url": f"mqtt://127.0.0.1:{free_port()}"},  # nobody listens: everything stays in the outbox
        "storage": {"path": "outbox.sqlite"},
        "residents": [{"id": "r1", "language": "en", "profiles": ["hypertension"]}],
        "devices": [{"address": a, "kind": "blood_pressure", "resident": "r1"} for a in METERS],
    }
    config = parse_config(render_config(data), tmp_path / "hub.toml")
    async with open_gateway(config, feedback=RecordingFeedback(), ble=False, clock=ManualClock(NOW)) as gw:
        yield gw, platform, identity


def normal(n: int) -> bytes:
    """The ``n``-th of distinct readings (by their meter time stamps) that raise no alarm."""
    at = NOW + timedelta(minutes=n)
    stamp = DateTime(at.year, at.month, at.day, at.hour, at.minute, at.second)
    return bytes(BloodPressureMeasurement(MderFloat(112), MderFloat(72), MderFloat(85), timestamp=stamp))


def reading(gw: Gateway, n: int, raw: bytes | None = None) -> Reading:
    device = gw.config.devices[n % len(METERS)]
    return Reading(device, BP, raw if raw is not None else normal(n), NOW)


async def rows(gw: Gateway) -> list[OutboxItem]:
    return await gw.outbox.peek_batch(10_000, 1 << 30)


def opened(item: OutboxItem, platform: PlatformIdentity, identity: HubIdentity) -> OpenedEnvelope:
    return open_envelope(item.envelope, platform.box_key, {HUB: identity.public.verify_key})


async def test_readings_of_one_turn_share_an_envelope_numbered_from_its_seq(tmp_path: Path) -> None:
    async with hub(tmp_path) as (gw, platform, identity):
        await asyncio.gather(*(gw.hub.store_readings([reading(gw, n)]) for n in range(10)))
        (item,) = await rows(gw)
        envelope = opened(item, platform, identity)
        assert [r.seq for r in envelope.decoded] == list(range(item.envelope_seq, item.envelope_seq + 10))
        assert item.record_ids == tuple(r.record_id.hex() for r in envelope.decoded)
        bodies = [r.body for r in envelope.decoded]
        assert sorted(b.raw for b in bodies if isinstance(b, MeasurementBody)) == sorted(normal(n) for n in range(10))
        assert (item.lane, item.kind) == (Lane.ROUTINE, "measurement")


async def test_a_large_turn_is_split_within_the_envelope_bounds(tmp_path: Path) -> None:
    async with hub(tmp_path) as (gw, platform, identity):
        await asyncio.gather(*(gw.hub.store_readings([reading(gw, n)]) for n in range(150)))
        items = await rows(gw)
        assert [len(i.record_ids) for i in items] == [64, 64, 22]
        ids = [rid for i in items for rid in i.record_ids]
        assert len(set(ids)) == 150
        seqs = [r.seq for i in items for r in opened(i, platform, identity).decoded]
        assert seqs == list(range(seqs[0], seqs[0] + 150))


async def test_an_alarm_has_its_own_priority_envelope_in_the_same_commit(tmp_path: Path) -> None:
    crisis = bytes(BloodPressureMeasurement(MderFloat(195), MderFloat(125), MderFloat(148)))
    async with hub(tmp_path) as (gw, platform, identity):
        calls = [gw.hub.store_readings([reading(gw, n)]) for n in range(5)]
        calls.insert(2, gw.hub.store_readings([reading(gw, 99, crisis)]))
        await asyncio.gather(*calls)
        assert (await gw.outbox.stats()).commits == 2  # the outbox's opening write, then this turn's one commit
        items = await rows(gw)
        alarms = [i for i in items if i.lane is Lane.PRIORITY]
        routine = [i for i in items if i.lane is Lane.ROUTINE]
        assert alarms
        assert all(len(i.record_ids) == 1 for i in alarms)
        assert [r.kind for i in alarms for r in opened(i, platform, identity).decoded] == [RecordKind.ALARM] * len(
            alarms
        )
        (shared,) = routine  # the crisis reading shares the five others' envelope
        assert len(opened(shared, platform, identity).decoded) == 6


async def test_cursors_of_every_caller_commit_with_the_shared_envelope(tmp_path: Path) -> None:
    async with hub(tmp_path) as (gw, _, _):
        await asyncio.gather(
            *(gw.hub.store_readings([reading(gw, n)], cursor=(f"racp:{METERS[n]}", 10 + n)) for n in range(3))
        )
        assert len(await rows(gw)) == 1
        assert [await gw.hub.get_cursor(f"racp:{METERS[n]}") for n in range(3)] == [10, 11, 12]


async def test_a_commit_under_way_at_shutdown_is_finished(tmp_path: Path) -> None:
    async with hub(tmp_path) as (gw, _, _):
        storing = asyncio.create_task(gw.hub.store_readings([reading(gw, 1)]))
        handed_over = asyncio.Event()
        asyncio.get_running_loop().call_soon(handed_over.set)  # runs after the store's first step (FIFO)
        await handed_over.wait()  # the reading is handed over, its commit not finished
        storing.cancel()  # the meter's session ends with the hub
    async with hub(tmp_path) as (gw, _, _):
        assert len(await rows(gw)) == 1
