"""CGM Service characteristics (issue 14 item 7): round trips, E2E-CRC, strict and tolerant decoding, vectors."""

from __future__ import annotations

import json

import pytest
from cgm_strategies import cgm_measurement, cgm_records, cgm_run_time, cgm_socp, cgm_start_time, cgm_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import gatt
from protocols.errors import DecodeError
from protocols.gatt.cgm import (
    CgmAnnunciation,
    CgmFeature,
    CgmFeatureBits,
    CgmMeasurement,
    CgmOpCode,
    CgmRecord,
    CgmResponseCode,
    CgmSpecificOpsControlPoint,
    CgmStatus,
    e2e_crc,
)
from protocols.ieee11073 import MderFloat

FAST = settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow], deadline=None)


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_the_crc_is_crc16_mcrf4xx() -> None:
    # The catalogued check value of CRC-16/MCRF4XX (poly 0x1021 reflected, init 0xFFFF, no final XOR).
    assert e2e_crc(b"123456789") == 0x6F91


def test_a_hypo_reading_vector() -> None:
    # size 7 | flags 0x20 (warning octet) | 52 mg/dL (SFLOAT 0x0034) | offset 35 min | warning: below hypo level.
    m = gatt.decode("2AA7", hx("07 20 3400 2300 04"))
    assert isinstance(m, CgmMeasurement)
    assert (m.mg_dl, m.time_offset, m.doubtful) == (52.0, 35, False)
    assert m.as_dict()["annunciation_names"] == ["below_hypo"]
    assert m.as_dict()["unit"] == "mg/dL"


def test_a_crc_protected_record_vector() -> None:
    # size 12 | flags: trend, quality | 110 mg/dL | 5 min | trend -16 (SFLOAT 0x0FF0) | quality 100 % | E2E-CRC
    body = hx("0c 03 6e00 0500 f00f 6400")
    wire = body + e2e_crc(body).to_bytes(2, "little")
    m = gatt.decode("2AA7", wire)
    assert isinstance(m, CgmMeasurement)
    record = m.records[0]
    assert (record.e2e_crc, record.mg_dl, record.time_offset) == (True, 110, 5)
    assert (record.trend, record.quality) == (MderFloat(-16, 0), MderFloat(100, 0))
    broken = wire[:-1] + bytes([wire[-1] ^ 0x01])
    with pytest.raises(DecodeError, match="E2E-CRC"):
        gatt.decode("2AA7", broken)
    with pytest.raises(DecodeError, match="E2E-CRC"):
        gatt.decode_tolerant("2AA7", broken)  # a corrupted value is never tolerated: the hub keeps it raw


@FAST
@given(record=cgm_records(), wrong=st.integers(0, 255))
def test_a_size_that_fits_neither_layout_is_refused(record: CgmRecord, wrong: int) -> None:
    wire = bytes(record)
    fields = len(wire) - (2 if record.e2e_crc else 0)
    if wrong in (fields, fields + 2):
        return
    with pytest.raises(DecodeError):
        gatt.decode("2AA7", bytes([wrong]) + wire[1:])


@FAST
@given(m=cgm_measurement())
def test_records_and_the_latest(m: CgmMeasurement) -> None:
    assert gatt.decode("2AA7", bytes(m)) == m
    assert m.time_offset == max(r.time_offset for r in m.records)
    out = m.as_dict()
    json.dumps(out, allow_nan=False)
    assert ("records" in out) == (len(m.records) > 1)


@FAST
@given(m=cgm_measurement(), padding=st.binary(min_size=1, max_size=8))
def test_padding_that_starts_no_record_is_trailing(m: CgmMeasurement, padding: bytes) -> None:
    if 6 <= padding[0] <= len(padding):
        padding = bytes([0]) + padding[1:]  # a first byte that could be a record's Size is another test's matter
    wire = bytes(m) + padding
    with pytest.raises(gatt.TrailingBytesError):
        gatt.decode("2AA7", wire)
    tolerated = gatt.decode_tolerant("2AA7", wire)
    assert tolerated.measurement == m
    assert tolerated.padding == padding
    assert tolerated.tolerances == {gatt.DecodeTolerance.TRAILING_BYTES}


@FAST
@given(record=cgm_records(e2e_crc=False), bits=st.integers(1, 7))
def test_reserved_flag_bits_strict_and_tolerant(record: CgmRecord, bits: int) -> None:
    wire = bytearray(bytes(record))
    rfu = bits << 2  # flags bits 2-4
    wire[1] |= rfu
    with pytest.raises(gatt.RfuFlagsError):
        gatt.decode("2AA7", bytes(wire))
    tolerated = gatt.decode_tolerant("2AA7", bytes(wire))
    assert tolerated.measurement == CgmMeasurement((record,))
    assert (tolerated.rfu_flags, tolerated.rfu_at) == (rfu, 1)


@pytest.mark.parametrize(
    ("number", "strategy"),
    [(0x2AA9, cgm_status()), (0x2AAA, cgm_start_time()), (0x2AAB, cgm_run_time()), (0x2AAC, cgm_socp())],
    ids=["2AA9", "2AAA", "2AAB", "2AAC"],
)
@FAST
@given(data=st.data())
def test_optional_crc_values(number: int, strategy: st.SearchStrategy[gatt.Measurement], data: st.DataObject) -> None:
    m = data.draw(strategy)
    wire = bytes(m)
    assert gatt.decode(number, wire) == m
    has_crc = m.as_dict()["e2e_crc"]
    if has_crc:
        with pytest.raises(DecodeError, match="E2E-CRC"):
            gatt.decode(number, wire[:-1] + bytes([wire[-1] ^ 0x80]))
    for length in range(len(wire) - (2 if has_crc else 0)):  # short of the fields: always refused
        with pytest.raises(DecodeError):
            gatt.decode(number, wire[:length])


def test_feature_crc_rules() -> None:
    with_crc = CgmFeature(int(CgmFeatureBits.E2E_CRC | CgmFeatureBits.TREND_INFORMATION), 9, 0)
    wire = bytes(with_crc)
    assert gatt.decode("2AA8", wire) == with_crc
    with pytest.raises(DecodeError, match="E2E-CRC"):
        gatt.decode("2AA8", wire[:-1] + bytes([wire[-1] ^ 1]))
    without = CgmFeature(int(CgmFeatureBits.LOW_BATTERY_DETECTION))
    assert bytes(without)[-2:] == b"\xff\xff"
    with pytest.raises(DecodeError, match="supports none"):
        gatt.decode("2AA8", bytes(without)[:-2] + b"\x00\x00")


def test_status_and_socp_names() -> None:
    status = CgmStatus(60, int(CgmAnnunciation.DEVICE_BATTERY_LOW | CgmAnnunciation.CALIBRATION_REQUIRED))
    assert gatt.decode("2AA9", bytes(status)).as_dict()["annunciation_names"] == [
        "device_battery_low",
        "calibration_required",
    ]
    answer = CgmSpecificOpsControlPoint.response(CgmOpCode.START_SESSION, CgmResponseCode.SUCCESS)
    assert gatt.decode("2AAC", hx("1c 1a 01")) == answer
    assert answer.as_dict()["request_op_code"] == "start_session"
    with pytest.raises(DecodeError, match="reserved"):
        gatt.decode("2AAC", hx("00"))


def test_doubtful_bits_make_a_reading_unreliable() -> None:
    fine = CgmMeasurement.of(100, 5, status=int(CgmAnnunciation.DEVICE_BATTERY_LOW))
    assert not fine.doubtful
    broken = CgmMeasurement.of(100, 5, status=int(CgmAnnunciation.SENSOR_MALFUNCTION))
    assert broken.doubtful
    cold = CgmMeasurement.of(100, 5, cal_temp=int(CgmAnnunciation.TEMPERATURE_TOO_LOW) >> 8)
    assert cold.doubtful
