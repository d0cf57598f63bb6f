"""Tolerant decoding (issue 14 item 5): ``gatt.decode_tolerant`` against the strict decoders, as properties.

* whatever the strict decoder accepts, the tolerant one decodes to the same value with no tolerance;
* a strict value with padding appended decodes to the same value, flagged ``trailing_bytes``, padding kept;
* a strict value with reserved flag bits set decodes to the same value, flagged ``rfu_flags``, bits kept;
* whatever the strict decoder refuses for another reason, the tolerant one refuses too; nothing but DecodeError
  leaves it.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import MEASUREMENT_STRATEGIES

from protocols import gatt
from protocols.errors import DecodeError, UnknownCharacteristicError

UUIDS = sorted(MEASUREMENT_STRATEGIES)
FAST = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
# Layouts fixed by their leading bytes: Heart Rate's RR-Intervals fill the value to its end, RACP has raw operands;
# padding after a CGM value can read as another record or as an E2E-CRC (tests/protocols/test_gatt_cgm.py).
FIXED_LAYOUT = [u for u in UUIDS if u not in (0x2A37, 0x2A52, 0x2AA7, 0x2AA9, 0x2AAA, 0x2AAB, 0x2AAC)]
# The reserved bits of each measurement's Flags byte (/work/shared/gatt-formats.md, the "Flags" rows).
RFU_FLAG_BITS = {
    0x2A35: 0xE0,
    0x2A36: 0xE0,
    0x2A18: 0xE0,
    0x2A5E: 0xE0,
    0x2A5F: 0xE0,
    0x2A1C: 0xF8,
    0x2A1E: 0xF8,
    0x2A9D: 0xF0,
    0x2A37: 0xE0,
}
# CGM Measurement's Flags byte follows its Size byte: its reserved bits (2-4) are tested in test_gatt_cgm.py.


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("number", UUIDS, ids=lambda u: f"{u:04X}")
@FAST
@given(data=st.data())
def test_a_strict_value_decodes_the_same_with_no_tolerance(number: int, data: st.DataObject) -> None:
    wire = bytes(data.draw(MEASUREMENT_STRATEGIES[number]))
    tolerated = gatt.decode_tolerant(number, wire)
    assert tolerated.measurement == gatt.decode(number, wire)
    assert tolerated.tolerances == frozenset()
    assert tolerated.strict
    assert (tolerated.padding, tolerated.rfu_flags, tolerated.describe()) == (b"", 0, "")


@pytest.mark.parametrize("number", FIXED_LAYOUT, ids=lambda u: f"{u:04X}")
@FAST
@given(data=st.data(), padding=st.binary(min_size=1, max_size=8))
def test_padding_is_dropped_and_flagged(number: int, data: st.DataObject, padding: bytes) -> None:
    wire = bytes(data.draw(MEASUREMENT_STRATEGIES[number]))
    with pytest.raises(gatt.TrailingBytesError) as refused:
        gatt.decode(number, wire + padding)
    assert (refused.value.end, refused.value.count) == (len(wire), len(padding))
    tolerated = gatt.decode_tolerant(number, wire + padding)
    assert tolerated.measurement == gatt.decode(number, wire)
    assert tolerated.tolerances == {gatt.DecodeTolerance.TRAILING_BYTES}
    assert tolerated.padding == padding
    assert f"{len(padding)} trailing byte(s)" in tolerated.describe()


@pytest.mark.parametrize("number", sorted(RFU_FLAG_BITS), ids=lambda u: f"{u:04X}")
@FAST
@given(data=st.data(), padded=st.booleans())
def test_reserved_flag_bits_are_ignored_and_flagged(number: int, data: st.DataObject, padded: bool) -> None:
    wire = bytes(data.draw(MEASUREMENT_STRATEGIES[number]))
    reserved = RFU_FLAG_BITS[number]
    bits = data.draw(st.integers(1, 0xFF).map(lambda b: b & reserved).filter(bool))
    padding = b"\x00\x00" if padded and number != 0x2A37 else b""
    sent = bytes([wire[0] | bits]) + wire[1:] + padding
    with pytest.raises(gatt.RfuFlagsError) as refused:
        gatt.decode(number, sent)
    assert refused.value.bits == bits
    tolerated = gatt.decode_tolerant(number, sent)
    assert tolerated.measurement == gatt.decode(number, wire)
    assert tolerated.rfu_flags == bits
    expected = {gatt.DecodeTolerance.RFU_FLAGS} | ({gatt.DecodeTolerance.TRAILING_BYTES} if padding else set())
    assert tolerated.tolerances == expected
    assert bytes(tolerated.measurement) == wire  # the reserved bits are never re-emitted


def test_every_measurement_with_flags_refuses_its_reserved_bits() -> None:
    # The table above is the spec's; a decoder that tolerates reserved bits strictly would make the properties vacuous.
    for number, reserved in RFU_FLAG_BITS.items():
        for bit in range(8):
            if reserved & (1 << bit):
                with pytest.raises(gatt.RfuFlagsError):
                    gatt.decode(number, bytes([1 << bit]) + bytes(40))


@pytest.mark.parametrize("number", FIXED_LAYOUT, ids=lambda u: f"{u:04X}")
@FAST
@given(data=st.data())
def test_what_is_truncated_is_refused_by_both(number: int, data: st.DataObject) -> None:
    wire = bytes(data.draw(MEASUREMENT_STRATEGIES[number]))
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(DecodeError) as strict:
        gatt.decode(number, wire[:cut])
    assert not isinstance(strict.value, gatt.TrailingBytesError | gatt.RfuFlagsError)
    with pytest.raises(DecodeError) as tolerant:
        gatt.decode_tolerant(number, wire[:cut])
    assert str(tolerant.value) == str(strict.value)


@pytest.mark.parametrize("number", UUIDS, ids=lambda u: f"{u:04X}")
@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=32))
def test_any_bytes_give_a_flagged_value_or_a_decode_error(number: int, blob: bytes) -> None:
    outcome: gatt.Tolerated | DecodeError
    try:
        outcome = gatt.decode_tolerant(number, blob)
    except DecodeError as exc:
        outcome = exc
    if isinstance(outcome, DecodeError):
        assert outcome.what == f"{number:04X}"
        with pytest.raises(DecodeError):
            gatt.decode(number, blob)  # the strict decoder refuses what the tolerant one refuses
        return
    tolerated = outcome
    json.dumps(tolerated.measurement.as_dict(), allow_nan=False)
    corrected = blob[: len(blob) - len(tolerated.padding)]
    if tolerated.rfu_flags:
        at = tolerated.rfu_at  # the Flags byte: first, but second in a CGM Measurement (after its Size)
        corrected = corrected[:at] + bytes([corrected[at] & ~tolerated.rfu_flags & 0xFF]) + corrected[at + 1 :]
    assert gatt.decode(number, corrected) == tolerated.measurement
    assert (gatt.DecodeTolerance.TRAILING_BYTES in tolerated.tolerances) == bool(tolerated.padding)
    assert (gatt.DecodeTolerance.RFU_FLAGS in tolerated.tolerances) == bool(tolerated.rfu_flags)


def test_a_padded_cuff_reading_vector() -> None:
    # 120/80/100 mmHg, pulse 72, padded with two zero bytes as some cuffs send it.
    sent = hx("04 7800 5000 6400 4800 0000")
    with pytest.raises(DecodeError, match="2A35 at offset 9: 2 trailing byte"):
        gatt.decode("2A35", sent)
    tolerated = gatt.decode_tolerant("2A35", sent)
    assert tolerated.measurement.as_dict()["systolic"] == 120
    assert tolerated.measurement.as_dict()["pulse_rate"] == 72
    assert tolerated.tolerances == {gatt.DecodeTolerance.TRAILING_BYTES}
    assert tolerated.describe() == "2 trailing byte(s) 0000 ignored"


def test_unknown_uuid_and_wrong_type_are_refused_as_by_the_strict_decoder() -> None:
    with pytest.raises(UnknownCharacteristicError):
        gatt.decode_tolerant("2A99", b"\x00")
    with pytest.raises(DecodeError, match="expected bytes"):
        gatt.decode_tolerant("2A35", "00")  # type: ignore[arg-type]


def test_tolerance_names_round_trip_and_unknown_names_are_refused() -> None:
    names = [t.value for t in gatt.DecodeTolerance]
    assert gatt.tolerances_from_names(names) == frozenset(gatt.DecodeTolerance)
    for bad in (["padding"], [1], [None]):
        with pytest.raises(ValueError, match="unknown decode tolerance"):
            gatt.tolerances_from_names(bad)
