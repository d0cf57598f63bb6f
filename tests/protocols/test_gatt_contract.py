"""The decode contract for every characteristic: round trips, truncation, hostile bytes, UUID forms."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import MEASUREMENT_STRATEGIES

from protocols import gatt
from protocols.errors import DecodeError, UnknownCharacteristicError

UUIDS = sorted(MEASUREMENT_STRATEGIES)
FAST = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)

# Characteristics whose layout is fully fixed by the leading bytes: every strict prefix must fail. Heart Rate (a
# trailing list of RR intervals) and RACP (raw operands, 1/2/4-byte counts) are covered by their own tests, and so
# are CGM Measurement (several whole records in one value: a prefix ending at a record's end is a valid value) and
# CGM Status, Session Start Time, Session Run Time and Specific Ops Control Point, whose optional E2E-CRC only the
# value's length reveals (tests/protocols/test_gatt_cgm.py).
FIXED_LAYOUT = [u for u in UUIDS if u not in (0x2A37, 0x2A52, 0x2AA7, 0x2AA9, 0x2AAA, 0x2AAB, 0x2AAC)]


def test_every_characteristic_has_a_decoder_and_a_strategy() -> None:
    assert set(gatt.DECODERS) == set(MEASUREMENT_STRATEGIES)


@pytest.mark.parametrize("number", UUIDS, ids=lambda u: f"{u:04X}")
@FAST
@given(data=st.data())
def test_round_trip(number: int, data: st.DataObject) -> None:
    m = data.draw(MEASUREMENT_STRATEGIES[number])
    assert number == m.UUID
    wire = gatt.encode(m)
    assert wire == bytes(m)
    assert gatt.decode(number, wire) == m
    assert type(m).from_bytes(wire) == m
    assert gatt.decode(number, wire).as_dict() == m.as_dict()
    json.dumps(m.as_dict(), allow_nan=False)


@pytest.mark.parametrize("number", FIXED_LAYOUT, ids=lambda u: f"{u:04X}")
@FAST
@given(data=st.data())
def test_every_strict_prefix_fails(number: int, data: st.DataObject) -> None:
    wire = bytes(data.draw(MEASUREMENT_STRATEGIES[number]))
    for length in range(len(wire)):
        with pytest.raises(DecodeError) as info:
            gatt.decode(number, wire[:length])
        assert info.value.what == f"{number:04X}"
        assert info.value.offset is not None
        assert info.value.offset <= length


@pytest.mark.parametrize("number", FIXED_LAYOUT, ids=lambda u: f"{u:04X}")
@FAST
@given(data=st.data(), extra=st.binary(min_size=1, max_size=4))
def test_trailing_bytes_fail(number: int, data: st.DataObject, extra: bytes) -> None:
    wire = bytes(data.draw(MEASUREMENT_STRATEGIES[number]))
    with pytest.raises(DecodeError, match="trailing"):
        gatt.decode(number, wire + extra)


@pytest.mark.parametrize("number", UUIDS, ids=lambda u: f"{u:04X}")
@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=24))
def test_random_bytes_raise_only_decode_error(number: int, blob: bytes) -> None:
    outcome: gatt.Measurement | DecodeError
    try:
        outcome = gatt.decode(number, blob)
    except DecodeError as exc:
        outcome = exc
    if isinstance(outcome, DecodeError):
        assert outcome.what == f"{number:04X}"
    else:
        json.dumps(outcome.as_dict(), allow_nan=False)
        assert gatt.decode(number, bytes(outcome)) == outcome


@pytest.mark.parametrize(
    "form",
    ["2A35", "2a35", " 2A35 ", "0x2A35", 0x2A35, "00002a35-0000-1000-8000-00805f9b34fb",
     "00002A35-0000-1000-8000-00805F9B34FB", uuid.UUID("00002a35-0000-1000-8000-00805f9b34fb")],
)  # fmt: skip
def test_uuid_forms(form: str | int | uuid.UUID) -> None:
    assert gatt.normalize_uuid(form) == 0x2A35
    m = gatt.decode(form, bytes.fromhex("00 7800 5000 6400"))
    assert isinstance(m, gatt.BloodPressureMeasurement)


@pytest.mark.parametrize(
    "form", [0x2A00, "2A00", "00002a00-0000-1000-8000-00805f9b34fb", "12345678-1234-5678-1234-567812345678"]
)
def test_unknown_uuid_raises_the_subclass(form: str | int) -> None:
    with pytest.raises(UnknownCharacteristicError):
        gatt.decode(form, b"\x00")


@pytest.mark.parametrize("form", ["", "2A3", "zz35", "0x", -1, 1 << 40, True, 2.5])
def test_malformed_uuid_is_unknown(form: object) -> None:
    with pytest.raises(UnknownCharacteristicError):
        gatt.normalize_uuid(form)  # type: ignore[arg-type]


def test_unknown_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        gatt.decode("FFFF", b"")


def test_decode_accepts_bytearray_and_memoryview() -> None:
    raw = bytes.fromhex("64")
    assert gatt.decode(0x2A19, bytearray(raw)) == gatt.decode(0x2A19, memoryview(raw)) == gatt.BatteryLevel(100)


@pytest.mark.parametrize("number", UUIDS, ids=lambda u: f"{u:04X}")
def test_empty_input_is_a_decode_error(number: int) -> None:
    with pytest.raises(DecodeError) as info:
        gatt.decode(number, b"")
    assert info.value.offset == 0
