"""IEEE 11073-20601 (MDER) SFLOAT and FLOAT numbers, as carried by the Bluetooth SIG health characteristics.

Layouts (IEEE 11073-20601 Annex F.6/F.7, "Personal Health Devices Transcoding White Paper"):

* SFLOAT, 16 bit: bits 15..12 exponent (4-bit two's complement, -8..7), bits 11..0 mantissa (12-bit two's
  complement). Normal mantissas lie in -2045..+2045.
* FLOAT, 32 bit: byte 3 exponent (int8), bytes 0..2 mantissa (24-bit two's complement). Normal mantissas lie in
  -8388605..+8388605.

Special values are exact words with exponent 0 and the mantissas +max+2 (NaN), -max-3 (NRes), +max+1 (+INF),
-max-1 (-INF) and -max-2 (reserved), i.e. ``0x07FF``, ``0x0800``, ``0x07FE``, ``0x0802``, ``0x0801`` for SFLOAT.

Interpretations made here:

* **Reserved word** (``0x0801`` / ``0x00800001``) decodes to :attr:`MderSpecial.RESERVED` and encodes back to the same
  word, so this module round-trips it. The characteristic decoders in :mod:`protocols.gatt` reject it with a
  ``DecodeError``, because no health characteristic may carry it.
* **Ambiguous words**: a mantissa in the special band (``0x7FE..0x802`` for SFLOAT, ``0x7FFFFE..0x800002`` for FLOAT)
  with a **non-zero** exponent, e.g. ``0xF7FF``. Implementations disagree (204.7 versus NaN); the words lie outside
  the MDER mantissa range, so :func:`decode_sfloat` / :func:`decode_float` raise ``DecodeError`` and no encoder here
  ever emits them.
* Values keep their exact mantissa and exponent: ``MderFloat(1200, -1)`` and ``MderFloat(120, 0)`` are equal numbers
  but different values, so ``decode(encode(x)) == x`` holds bit for bit for every other word.
"""

from __future__ import annotations

import decimal
import enum
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Self

from protocols.errors import DecodeError, EncodeError

__all__ = [
    "FLOAT_MANTISSA_MAX",
    "NAN",
    "NEG_INF",
    "NRES",
    "POS_INF",
    "RESERVED",
    "SFLOAT_MANTISSA_MAX",
    "MderFloat",
    "MderSpecial",
    "decode_float",
    "decode_sfloat",
    "encode_float",
    "encode_sfloat",
]

SFLOAT_MANTISSA_MAX: Final = 0x07FD  # 2045
SFLOAT_EXPONENT_MIN: Final = -8
SFLOAT_EXPONENT_MAX: Final = 7
FLOAT_MANTISSA_MAX: Final = 0x007FFFFD  # 8388605
FLOAT_EXPONENT_MIN: Final = -128
FLOAT_EXPONENT_MAX: Final = 127


class MderSpecial(enum.Enum):
    """The special values of IEEE 11073-20601 numbers; the value is the JSON form."""

    NAN = "NaN"
    NRES = "NRes"
    POS_INF = "+INF"
    NEG_INF = "-INF"
    RESERVED = "reserved"


def _special_mantissa(special: MderSpecial, m_max: int) -> int:
    """The signed mantissa (exponent 0) of a special value, given the format's largest normal mantissa."""
    return {
        MderSpecial.NAN: m_max + 2,
        MderSpecial.POS_INF: m_max + 1,
        MderSpecial.NEG_INF: -(m_max + 1),
        MderSpecial.RESERVED: -(m_max + 2),
        MderSpecial.NRES: -(m_max + 3),
    }[special]


@dataclass(frozen=True, slots=True)
class MderFloat:
    """An exact IEEE-11073 number: ``mantissa x 10**exponent``, or a special value.

    Construct numbers exactly (``MderFloat(189, -1)``), from a Python number with :meth:`from_value`, or as a
    special with :meth:`of_special` / the module constants :data:`NAN`, :data:`NRES`, :data:`POS_INF`,
    :data:`NEG_INF`. Whether the value fits a 16-bit SFLOAT is checked when it is encoded.
    """

    mantissa: int = 0
    exponent: int = 0
    special: MderSpecial | None = None

    def __post_init__(self) -> None:
        if type(self.mantissa) is not int or type(self.exponent) is not int:
            raise EncodeError("MderFloat mantissa and exponent must be int")
        if self.special is not None:
            if self.mantissa or self.exponent:
                raise EncodeError("a special MderFloat has mantissa 0 and exponent 0")
            return
        if abs(self.mantissa) > FLOAT_MANTISSA_MAX:
            raise EncodeError(f"mantissa {self.mantissa} outside the MDER FLOAT range ±{FLOAT_MANTISSA_MAX}")
        if not FLOAT_EXPONENT_MIN <= self.exponent <= FLOAT_EXPONENT_MAX:
            raise EncodeError(f"exponent {self.exponent} outside -128..127")

    @classmethod
    def of_special(cls, special: MderSpecial) -> Self:
        """The given special value (NaN, NRes, ±INF, reserved)."""
        return cls(0, 0, special)

    @classmethod
    def from_value(cls, value: float | Decimal, *, sfloat: bool = True) -> Self:
        """The nearest representable number, keeping as many significant digits as the format allows.

        The exponent is the smallest that keeps the mantissa in range (ties round half away from zero), then
        trailing zeros are dropped: ``123.45 -> 1235e-1``, ``142 -> 142e0``, ``18.9 -> 189e-1``. NaN and infinities
        map to the specials. With ``sfloat=False`` the 32-bit FLOAT ranges apply.

        Raises:
            EncodeError: the magnitude is too large for the format.
        """
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise EncodeError(f"cannot encode {value!r} as an IEEE-11073 number")
        if isinstance(value, float):
            if math.isnan(value):
                return cls.of_special(MderSpecial.NAN)
            if math.isinf(value):
                return cls.of_special(MderSpecial.POS_INF if value > 0 else MderSpecial.NEG_INF)
            exact = Decimal(repr(value))
        else:
            exact = Decimal(value)
            if exact.is_nan():
                return cls.of_special(MderSpecial.NAN)
            if exact.is_infinite():
                return cls.of_special(MderSpecial.POS_INF if exact > 0 else MderSpecial.NEG_INF)
        m_max, e_min, e_max = (
            (SFLOAT_MANTISSA_MAX, SFLOAT_EXPONENT_MIN, SFLOAT_EXPONENT_MAX)
            if sfloat
            else (FLOAT_MANTISSA_MAX, FLOAT_EXPONENT_MIN, FLOAT_EXPONENT_MAX)
        )
        if exact.is_zero():
            return cls(0, 0)
        digits = len(str(m_max))
        exponent = max(e_min, exact.adjusted() - digits + 1)
        with decimal.localcontext() as ctx:
            ctx.prec = 100
            ctx.Emin = -999999
            ctx.Emax = 999999
            while True:
                if exponent > e_max:
                    raise EncodeError(f"{value!r} is too large for an IEEE-11073 {'SFLOAT' if sfloat else 'FLOAT'}")
                mantissa = int(exact.scaleb(-exponent).to_integral_value(rounding=decimal.ROUND_HALF_UP))
                if abs(mantissa) <= m_max:
                    break
                exponent += 1
        if mantissa == 0:
            return cls(0, 0)
        while mantissa % 10 == 0 and exponent < e_max:
            mantissa //= 10
            exponent += 1
        return cls(mantissa, exponent)

    @property
    def is_special(self) -> bool:
        """True for NaN, NRes, ±INF and reserved."""
        return self.special is not None

    @property
    def is_finite(self) -> bool:
        """True for an ordinary number."""
        return self.special is None

    def to_decimal(self) -> Decimal:
        """The exact value; specials become Decimal NaN or ±Infinity."""
        if self.special is MderSpecial.POS_INF:
            return Decimal("Infinity")
        if self.special is MderSpecial.NEG_INF:
            return Decimal("-Infinity")
        if self.special is not None:
            return Decimal("NaN")
        return Decimal(self.mantissa).scaleb(self.exponent, decimal.Context(prec=30, Emin=-999, Emax=999))

    def __float__(self) -> float:
        return float(self.to_decimal())

    def as_float(self) -> float | None:
        """The value as a float, or None for any special value (NaN, NRes, ±INF, reserved)."""
        return None if self.special is not None else float(self)

    def to_json(self) -> int | float | str:
        """A number (int when the exponent is not negative), or ``"NaN"``, ``"NRes"``, ``"+INF"``, ``"-INF"``."""
        if self.special is not None:
            return self.special.value
        if self.exponent >= 0:
            return int(self.mantissa * 10**self.exponent)
        return float(self)

    def __str__(self) -> str:
        if self.special is not None:
            return self.special.value
        return str(self.to_decimal())

    def to_sfloat(self) -> int:
        """The 16-bit SFLOAT word. Raises EncodeError when the value does not fit."""
        return encode_sfloat(self)

    def to_float32(self) -> int:
        """The 32-bit FLOAT word. Raises EncodeError when the value does not fit."""
        return encode_float(self)


NAN: Final = MderFloat.of_special(MderSpecial.NAN)
NRES: Final = MderFloat.of_special(MderSpecial.NRES)
POS_INF: Final = MderFloat.of_special(MderSpecial.POS_INF)
NEG_INF: Final = MderFloat.of_special(MderSpecial.NEG_INF)
RESERVED: Final = MderFloat.of_special(MderSpecial.RESERVED)


@dataclass(frozen=True, slots=True)
class _Format:
    """The bit widths and ranges of SFLOAT or FLOAT."""

    name: str
    m_bits: int
    e_bits: int
    m_max: int
    e_min: int
    e_max: int


_SFLOAT: Final = _Format("SFLOAT", 12, 4, SFLOAT_MANTISSA_MAX, SFLOAT_EXPONENT_MIN, SFLOAT_EXPONENT_MAX)
_FLOAT: Final = _Format("FLOAT", 24, 8, FLOAT_MANTISSA_MAX, FLOAT_EXPONENT_MIN, FLOAT_EXPONENT_MAX)


def _encode(value: MderFloat, fmt: _Format) -> int:
    m_mask = (1 << fmt.m_bits) - 1
    e_mask = (1 << fmt.e_bits) - 1
    if value.special is not None:
        return _special_mantissa(value.special, fmt.m_max) & m_mask
    if abs(value.mantissa) > fmt.m_max:
        raise EncodeError(f"mantissa {value.mantissa} outside the MDER {fmt.name} range ±{fmt.m_max}")
    if not fmt.e_min <= value.exponent <= fmt.e_max:
        raise EncodeError(f"exponent {value.exponent} outside the {fmt.name} range {fmt.e_min}..{fmt.e_max}")
    return ((value.exponent & e_mask) << fmt.m_bits) | (value.mantissa & m_mask)


def _decode(word: int, fmt: _Format, what: str, offset: int | None) -> MderFloat:
    if not 0 <= word < 1 << (fmt.m_bits + fmt.e_bits):
        raise DecodeError(what, offset, f"word {word:#x} does not fit {fmt.m_bits + fmt.e_bits} bits")
    mantissa = word & ((1 << fmt.m_bits) - 1)
    exponent = word >> fmt.m_bits
    if mantissa >= 1 << (fmt.m_bits - 1):
        mantissa -= 1 << fmt.m_bits
    if exponent >= 1 << (fmt.e_bits - 1):
        exponent -= 1 << fmt.e_bits
    if abs(mantissa) <= fmt.m_max:
        return MderFloat(mantissa, exponent)
    if exponent != 0:
        raise DecodeError(what, offset, f"ambiguous IEEE-11073 word {word:#x}: special mantissa with non-zero exponent")
    special = next(s for s in MderSpecial if _special_mantissa(s, fmt.m_max) == mantissa)
    return MderFloat.of_special(special)


def encode_sfloat(value: MderFloat) -> int:
    """The 16-bit SFLOAT word of ``value``.

    Raises:
        EncodeError: mantissa beyond ±2045 or exponent beyond -8..7.
    """
    return _encode(value, _SFLOAT)


def encode_float(value: MderFloat) -> int:
    """The 32-bit FLOAT word of ``value`` (always representable: the constructor enforces the FLOAT range)."""
    return _encode(value, _FLOAT)


def decode_sfloat(word: int, *, what: str = "SFLOAT", offset: int | None = None) -> MderFloat:
    """The value of a 16-bit SFLOAT word (``b0 | b1 << 8``).

    Raises:
        DecodeError: an ambiguous word (special mantissa with non-zero exponent), or a word beyond 16 bits; the
            error names ``what`` and ``offset``.
    """
    return _decode(word, _SFLOAT, what, offset)


def decode_float(word: int, *, what: str = "FLOAT", offset: int | None = None) -> MderFloat:
    """The value of a 32-bit FLOAT word (little-endian bytes 0..3 as an unsigned int).

    Raises:
        DecodeError: an ambiguous word, or a word beyond 32 bits.
    """
    return _decode(word, _FLOAT, what, offset)
