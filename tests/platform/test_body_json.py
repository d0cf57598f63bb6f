"""A record body's stored JSON (:func:`community.storage_common.body_json`) is what ``dataclasses.asdict`` and a
conversion of each value gave before it was rewritten as one walk without ``asdict``'s deep copies (issue 15: a third
of the ingest worker's CPU beyond opening the envelope): the same keys, values and JSON text, for a body of every kind.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Mapping
from typing import Any

import pytest

from community.samples import T0, alarm_record, bp_record, eviction_record, panic_record
from community.storage import StoredReading
from community.storage_common import body_json
from protocols.gatt.tolerant import DecodeTolerance
from protocols.record import (
    ClockCorrection,
    DeviceStatusBody,
    DownAppliedBody,
    DownRefusal,
    DownRefusedBody,
    LinkFailure,
    LinkState,
    MeasurementBody,
    RawReadingBody,
)

HUB = "hub-1"


def _asdict_then_convert(value: object) -> Any:  # the former conversion: the oracle
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_asdict_then_convert(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_asdict_then_convert(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _asdict_then_convert(v) for k, v in value.items()}
    return value


BODIES = [
    bp_record(HUB, 3).body,
    alarm_record(HUB, "alarm-1", 7).body,
    panic_record(HUB, "pendant-1", 4, "alarm-2", 9).body,
    eviction_record(HUB, 5, 2, 10, 11, 4096, ("00" * 16, "ff" * 16)).body,
    MeasurementBody(
        0x2A35,
        b"\x00\x01",
        {"systolic": 120.5, "flags": [1, 2, {"nested": None}], "ok": True},
        resident_id="resident-1",
        clock_corrected=True,
        corrected_time=T0,
        unreliable=True,
        tolerated=frozenset({DecodeTolerance.TRAILING_BYTES, DecodeTolerance.RFU_FLAGS}),
        installation_test=True,
    ),
    DeviceStatusBody(
        battery=41,
        clock_correction=ClockCorrection("2025-03-01T06:59:00", T0, -60.5),
        raw=b"\xff",
        detail="clock was late",
    ),
    DeviceStatusBody(link=LinkState.FAILED, failure=LinkFailure.GONE, detail="gone"),
    DownRefusedBody(3, "thresholds", DownRefusal.INVALID_THRESHOLD, "systolic too low", key="bp_systolic_high"),
    DownAppliedBody(4, "alarm_ack"),
    RawReadingBody(0x2A18, b"\x01\x02\x03", "undecodable", resident_id="resident-2"),
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_body_json_is_what_asdict_gave(body: object) -> None:
    expected = _asdict_then_convert(dataclasses.asdict(body))  # type: ignore[call-overload]  # a body dataclass
    got = body_json(body)
    assert got == expected
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_stored_reading_keeps_the_body_as_json() -> None:
    record = bp_record(HUB, 3)
    stored = StoredReading.from_record(record, envelope_seq=1, received_at=0.0)
    assert json.loads(stored.body_text) == _asdict_then_convert(dataclasses.asdict(record.body))
