"""Tolerant decoding in the hub (issue 14 item 5), through the real gateway over the simulated radio.

Quirk cuffs of :mod:`sim.devices.quirks` pad their indications or set reserved flag bits: every reading is stored
exactly once, decoded, flagged with what was tolerated and counted. A cuff whose indications are cut short sends
values no decoder can read: each is kept as a raw reading, sealed, and stored by the platform.
"""

from __future__ import annotations

import pytest
from test_ble_manager import BP, START, Rig, options, rig

from community.storage import EnvelopeToStore, SqliteStorage
from gateway.decode_counts import DecodeCounts, decode_cursor_key
from gateway.events import Misbehaviour
from protocols import gatt
from protocols.envelope import open_envelope
from protocols.record import MeasurementBody, RawReadingBody, Record, RecordKind
from sim.clock import ManualClock
from sim.devices.base import Produced
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.quirks import QUIRKS, PaddingCuff, RfuFlagsCuff, TruncatingCuff

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

READINGS = [(131, 84, 68), (142, 91, 72), (128, 79, 64)]


async def _take_readings(cuff: BloodPressureCuff, r: Rig) -> list[Produced]:
    """Three readings taken out of range, then the cuff comes back and delivers them."""
    await cuff.set_in_range(False)
    produced = [await cuff.measure(s, d, pulse=p) for s, d, p in READINGS]
    await cuff.set_in_range(True)
    await r.probe.until(lambda: len(r.probe.readings_of(BP)) == len(produced))
    await cuff.wait_for(lambda: cuff.stored_count() == 0)
    return produced


def _measurements(records: list[Record]) -> list[MeasurementBody]:
    return [rec.body for rec in records if rec.device_id == BP and isinstance(rec.body, MeasurementBody)]


@pytest.mark.parametrize(
    ("quirk", "tolerance"),
    [(PaddingCuff, gatt.DecodeTolerance.TRAILING_BYTES), (RfuFlagsCuff, gatt.DecodeTolerance.RFU_FLAGS)],
    ids=["padding", "rfu-flags"],
)
async def test_every_reading_of_a_quirky_cuff_is_stored_once_decoded_and_flagged(
    tmp_path, mosquitto, quirk: type[BloodPressureCuff], tolerance: gatt.DecodeTolerance
) -> None:
    clock = ManualClock(START)
    cuff = quirk(options(BP), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        produced = await _take_readings(cuff, r)
        for made in produced:
            with pytest.raises(gatt.DecodeError):
                gatt.decode(0x2A35, made.raw)  # what the cuff sends is not what the specification allows
        bodies = _measurements(await r.records())
        assert sorted(b.raw for b in bodies) == sorted(p.raw for p in produced)  # every reading, exactly once
        by_raw = {b.raw: b for b in bodies}
        for made, (systolic, diastolic, pulse) in zip(produced, READINGS, strict=True):
            body = by_raw[made.raw]
            assert body.tolerated == {tolerance}
            assert (body.values["systolic"], body.values["diastolic"]) == (systolic, diastolic)
            assert body.values["pulse_rate"] == pulse
            assert body.resident_id == "r1"
        assert r.gw.hub.counters.tolerated_readings == len(produced)
        assert r.gw.hub.counters.raw_readings == 0
        stored_tally = await r.gw.outbox.get_cursor(decode_cursor_key(BP))  # committed with the readings
        assert DecodeCounts.parse(stored_tally) == DecodeCounts(tolerated=len(produced), raw=0)
        assert r.probe.status_with(BP, Misbehaviour) == []
        assert r.gw.ble is not None
        assert r.gw.ble.stats.malformed == 0


async def test_a_plain_cuffs_readings_carry_no_tolerance(tmp_path, mosquitto) -> None:
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        produced = await _take_readings(cuff, r)
        bodies = _measurements(await r.records())
        assert sorted(b.raw for b in bodies) == sorted(p.raw for p in produced)
        assert all(b.tolerated == frozenset() for b in bodies)
        assert r.gw.hub.counters.tolerated_readings == 0
        assert await r.gw.outbox.get_cursor(decode_cursor_key(BP)) is None


async def test_undecodable_readings_are_kept_raw_sealed_and_stored_by_the_platform(tmp_path, mosquitto) -> None:
    clock = ManualClock(START)
    cuff = TruncatingCuff(options(BP), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        produced = await _take_readings(cuff, r)
        for made in produced:
            with pytest.raises(gatt.DecodeError):
                gatt.decode_tolerant(0x2A35, made.raw)
        assert r.gw.hub.counters.raw_readings == len(produced)
        assert r.gw.hub.counters.readings == 0
        assert r.gw.ble is not None
        assert r.gw.ble.stats.malformed == len(produced)
        stored_tally = await r.gw.outbox.get_cursor(decode_cursor_key(BP))
        assert DecodeCounts.parse(stored_tally) == DecodeCounts(tolerated=0, raw=len(produced))
        items = await r.gw.outbox.peek_batch(10_000, 1 << 30)
        known = {r.hub.hub_id: r.hub.verify_key}
        opened = [open_envelope(item.envelope, r.platform.box_key, known) for item in items]
    raws = [rec for env in opened for rec in env.decoded if isinstance(rec.body, RawReadingBody)]
    assert sorted(rec.body.raw for rec in raws) == sorted(p.raw for p in produced)  # every reading, exactly once
    assert {(rec.device_id, rec.body.uuid, rec.body.resident_id) for rec in raws} == {(BP, 0x2A35, "r1")}
    assert all("Measurement Status needs 2 byte(s)" in rec.body.reason for rec in raws)
    assert not [rec for env in opened for rec in env.decoded if isinstance(rec.body, MeasurementBody)]

    async with SqliteStorage(tmp_path / "platform.sqlite") as platform:
        envelopes = [EnvelopeToStore.from_opened(env, received_at=START.timestamp()) for env in opened]
        await platform.store_batch(envelopes)
        await platform.store_batch(envelopes)  # a re-sent frame stores nothing twice
        stored = [s for s in await platform.readings(r.hub.hub_id) if s.kind == RecordKind.RAW_READING.value]
    assert sorted(bytes.fromhex(s.body["raw"]) for s in stored) == sorted(p.raw for p in produced)
    assert {(s.device, s.body["uuid"], s.resident_id) for s in stored} == {(BP, 0x2A35, "r1")}
    assert {s.hub_time for s in stored} == {rec.hub_time for rec in raws}


def test_the_quirks_are_listed_by_name() -> None:
    assert QUIRKS["padding-cuff"].build is PaddingCuff
    assert QUIRKS["rfu-flags-cuff"].build is RfuFlagsCuff
    assert QUIRKS["truncating-cuff"].build is TruncatingCuff
