"""Console analytics reads a measurement the hub decoded tolerantly (issue 14 item 5): a padded cuff reading and
one with reserved flag bits count in the figures; a value no decoder reads stays out, as before."""

from __future__ import annotations

import datetime as dt

from community.console.analytics import Vital, undecodable, vital_readings
from community.storage import StoredReading
from protocols import gatt
from protocols.record import MeasurementBody, Record, measurement_record_id

T = dt.datetime(2026, 3, 14, 9, 26, 53, tzinfo=dt.UTC)
EXACT = bytes.fromhex("047800500064004800")  # 120/80/100 mmHg, pulse 72
PADDED = EXACT + b"\x00\x00"
RFU = bytes([EXACT[0] | 0xE0]) + EXACT[1:]
CUT = EXACT[:-2]  # the flags promise a pulse rate that is not there


def _stored(raw: bytes, seq: int) -> StoredReading:
    try:
        tolerated = gatt.decode_tolerant(0x2A35, raw)
        values, tolerances = tolerated.measurement.as_dict(), tolerated.tolerances
    except gatt.DecodeError:
        values, tolerances = {}, frozenset()
    body = MeasurementBody(0x2A35, raw, values, "r1", tolerated=tolerances)
    rid = measurement_record_id("cuff", 0x2A35, raw, None, None, T + dt.timedelta(minutes=seq))
    record = Record(rid, "home-1", seq, T + dt.timedelta(minutes=seq), body, "cuff", None)
    return StoredReading.from_record(record, seq, 1.7e9)


def test_tolerated_readings_count_and_an_undecodable_one_is_left_out() -> None:
    stored = [_stored(raw, seq) for seq, raw in enumerate((EXACT, PADDED, RFU, CUT), start=1)]
    assert stored[1].body["tolerated"] == ["trailing_bytes"]
    assert stored[2].body["tolerated"] == ["rfu_flags"]
    readings = vital_readings(stored)
    assert [r.values[Vital.SYSTOLIC] for r in readings] == [120.0, 120.0, 120.0]
    assert [r.values[Vital.PULSE] for r in readings] == [72.0, 72.0, 72.0]
    assert undecodable(stored) == (stored[3].record_id,)
