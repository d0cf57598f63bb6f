"""IEEE 11073-20601 SFLOAT and FLOAT: known answers, exhaustive round trip, specials, the encoder from numbers."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import DecodeError, EncodeError
from protocols.ieee11073 import (
    NAN,
    NEG_INF,
    NRES,
    POS_INF,
    RESERVED,
    MderFloat,
    MderSpecial,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
)

# Hand-derived from ../shared/gatt-formats.md: exponent in bits 15..12, mantissa in bits 11..0, both two's complement.
SFLOAT_VECTORS = [
    (0xF0BD, MderFloat(189, -1), 18.9),  # exponent 0xF = -1, mantissa 0x0BD = 189
    (0x0078, MderFloat(120, 0), 120.0),
    (0xB046, MderFloat(70, -5), 0.0007),  # 70 mg/dL as kg/L
    (0xC027, MderFloat(39, -4), 0.0039),  # 3.9 mmol/L as mol/L
    (0x0FFF, MderFloat(-1, 0), -1.0),
    (0xFE01, MderFloat(-511, -1), -51.1),
    (0x77FD, MderFloat(2045, 7), 2045e7),
    (0x8803, MderFloat(-2045, -8), -2045e-8),
]

FLOAT_VECTORS = [
    (bytes.fromhex("B00E00FE"), MderFloat(3760, -2), 37.6),
    (bytes.fromhex("7BEFFFFF"), MderFloat(-4229, -1), -422.9),
    (bytes.fromhex("87D612FE"), MderFloat(1234567, -2), 12345.67),
]


@pytest.mark.parametrize(("word", "value", "number"), SFLOAT_VECTORS)
def test_sfloat_known_answers(word: int, value: MderFloat, number: float) -> None:
    assert decode_sfloat(word) == value
    assert encode_sfloat(value) == word
    assert float(value) == pytest.approx(number, rel=1e-12)


@pytest.mark.parametrize(("raw", "value", "number"), FLOAT_VECTORS)
def test_float_known_answers(raw: bytes, value: MderFloat, number: float) -> None:
    word = int.from_bytes(raw, "little")
    assert decode_float(word) == value
    assert encode_float(value) == word
    assert float(value) == pytest.approx(number, rel=1e-12)


@pytest.mark.parametrize(
    ("sfloat", "float32", "special", "json"),
    [
        (0x07FF, 0x007FFFFF, MderSpecial.NAN, "NaN"),
        (0x0800, 0x00800000, MderSpecial.NRES, "NRes"),
        (0x07FE, 0x007FFFFE, MderSpecial.POS_INF, "+INF"),
        (0x0802, 0x00800002, MderSpecial.NEG_INF, "-INF"),
        (0x0801, 0x00800001, MderSpecial.RESERVED, "reserved"),
    ],
)
def test_specials(sfloat: int, float32: int, special: MderSpecial, json: str) -> None:
    value = MderFloat.of_special(special)
    assert decode_sfloat(sfloat) == value
    assert decode_float(float32) == value
    assert encode_sfloat(value) == sfloat
    assert encode_float(value) == float32
    assert value.to_json() == json
    assert value.as_float() is None
    assert value.is_special
    assert not value.is_finite


def test_special_float_conversions() -> None:
    assert math.isnan(float(NAN))
    assert math.isnan(float(NRES))
    assert math.isnan(float(RESERVED))
    assert float(POS_INF) == math.inf
    assert float(NEG_INF) == -math.inf


def test_every_sfloat_word_round_trips_or_is_ambiguous() -> None:
    ambiguous = []
    for word in range(1 << 16):
        try:
            value = decode_sfloat(word)
        except DecodeError:
            ambiguous.append(word)
            continue
        assert encode_sfloat(value) == word
    # 5 special mantissas x 15 non-zero exponents.
    assert len(ambiguous) == 75
    assert all((w & 0x0FFF) in range(0x7FE, 0x803) and w >> 12 for w in ambiguous)
    assert 0xF7FF in ambiguous


@settings(max_examples=500)
@given(word=st.integers(0, 0xFFFFFFFF))
def test_float_words_round_trip_unless_ambiguous(word: int) -> None:
    mantissa, exponent = word & 0xFFFFFF, word >> 24
    in_special_band = mantissa >= 0x7FFFFE and mantissa <= 0x800002
    if in_special_band and exponent:
        with pytest.raises(DecodeError, match="ambiguous"):
            decode_float(word)
    else:
        assert encode_float(decode_float(word)) == word


def test_ambiguous_error_names_what_and_offset() -> None:
    with pytest.raises(DecodeError) as info:
        decode_sfloat(0xF7FF, what="2A35", offset=1)
    assert (info.value.what, info.value.offset) == ("2A35", 1)


@pytest.mark.parametrize("word", [-1, 1 << 16])
def test_sfloat_word_out_of_range(word: int) -> None:
    with pytest.raises(DecodeError):
        decode_sfloat(word)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (123.45, MderFloat(1235, -1)),  # 3.3 significant digits, ties away from zero
        (142, MderFloat(142, 0)),
        (18.9, MderFloat(189, -1)),
        (-51.1, MderFloat(-511, -1)),
        (0.0007, MderFloat(7, -4)),
        (Decimal("37.60"), MderFloat(376, -1)),
        (0.0, MderFloat(0, 0)),
        (-0.0, MderFloat(0, 0)),
        (1e-12, MderFloat(0, 0)),
        (2045e7, MderFloat(2045, 7)),
        (12000, MderFloat(12, 3)),
        (float("nan"), NAN),
        (float("inf"), POS_INF),
        (float("-inf"), NEG_INF),
        (Decimal("NaN"), NAN),
        (Decimal("-Infinity"), NEG_INF),
    ],
)
def test_from_value_sfloat(value: float | Decimal, expected: MderFloat) -> None:
    assert MderFloat.from_value(value) == expected


def test_from_value_float32_keeps_more_digits() -> None:
    assert MderFloat.from_value(123.45, sfloat=False) == MderFloat(12345, -2)
    assert MderFloat.from_value(36.6, sfloat=False) == MderFloat(366, -1)


@pytest.mark.parametrize("value", [2046e7, 1e30, -3e10])
def test_from_value_too_large(value: float) -> None:
    with pytest.raises(EncodeError):
        MderFloat.from_value(value)


@pytest.mark.parametrize("value", [True, "1.5", None])
def test_from_value_rejects_non_numbers(value: object) -> None:
    with pytest.raises(EncodeError):
        MderFloat.from_value(value)  # type: ignore[arg-type]


@settings(max_examples=400)
@given(value=st.floats(min_value=-2045e7, max_value=2045e7, allow_nan=False))
def test_from_value_is_nearest_within_half_a_step(value: float) -> None:
    encoded = MderFloat.from_value(value)
    word = encode_sfloat(encoded)  # never an ambiguous or out-of-range word
    assert decode_sfloat(word) == encoded
    error = abs(encoded.to_decimal() - Decimal(repr(value)))
    # Stripping trailing zeros keeps the value, so the error is within half a unit of the final exponent.
    assert error <= Decimal(10) ** encoded.exponent / 2


@settings(max_examples=200)
@given(value=st.floats(min_value=-8388605e127, max_value=8388605e127, allow_nan=False))
def test_from_value_float32_encodes(value: float) -> None:
    encoded = MderFloat.from_value(value, sfloat=False)
    assert decode_float(encode_float(encoded)) == encoded


@pytest.mark.parametrize(
    "args",
    [(1, 0, MderSpecial.NAN), (0, 1, MderSpecial.NRES), (8388606, 0, None), (0, 128, None), (0, -129, None)],
)
def test_constructor_invariants(args: tuple[int, int, MderSpecial | None]) -> None:
    with pytest.raises(EncodeError):
        MderFloat(*args)


def test_constructor_rejects_non_int() -> None:
    with pytest.raises(EncodeError):
        MderFloat(1.5, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [MderFloat(2046, 0), MderFloat(-2046, 0), MderFloat(1, 8), MderFloat(1, -9)])
def test_sfloat_encoder_refuses_out_of_range(value: MderFloat) -> None:
    with pytest.raises(EncodeError):
        encode_sfloat(value)
    assert decode_float(encode_float(value)) == value


def test_exact_values_are_distinct_from_equal_numbers() -> None:
    assert MderFloat(1200, -1) != MderFloat(120, 0)
    assert float(MderFloat(1200, -1)) == float(MderFloat(120, 0))


@pytest.mark.parametrize(
    ("value", "json"),
    [(MderFloat(120, 0), 120), (MderFloat(12, 1), 120), (MderFloat(189, -1), 18.9), (MderFloat(-5, 0), -5)],
)
def test_json_form(value: MderFloat, json: float) -> None:
    assert value.to_json() == json
    assert type(value.to_json()) is type(json)


def test_str_and_decimal() -> None:
    assert str(MderFloat(3760, -2)) == "37.60"
    assert str(NRES) == "NRes"
    assert MderFloat(3760, -2).to_decimal() == Decimal("37.6")
    assert MderFloat(376, -1).to_sfloat() == 0xF178
    assert MderFloat(3760, -2).to_float32() == 0xFE000EB0
