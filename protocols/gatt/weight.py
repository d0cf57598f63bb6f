"""Weight Scale characteristics: Weight Measurement (0x2A9D) and Weight Scale Feature (0x2A9E), per Weight Scale
Service 1.0 §3.1-3.2 and the former SIG characteristic XMLs.

The weight, BMI and height fields are fixed-point unsigned integers, kept here as the raw integers
(``weight_raw`` etc.); the properties ``weight``, ``bmi`` and ``height`` scale them to the unit sent. The Weight Scale
Feature resolution bits describe the scale's real precision; the field resolution stays 0.005 kg / 0.01 lb.
"""

from __future__ import annotations

import datetime as _dt
import enum
import struct
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import ClassVar, Final, Self

from protocols.datetime_ import DateTime
from protocols.errors import EncodeError
from protocols.gatt.common import (
    U8,
    U16,
    U32,
    FeatureBits,
    JSONValue,
    Measurement,
    Reader,
    check_date_time,
    check_uint,
    decoding,
    iso,
)

__all__ = ["WEIGHT_UNSUCCESSFUL", "WeightMeasurement", "WeightScaleFeature", "WeightUnit"]

WEIGHT_UNSUCCESSFUL: Final = 0xFFFF
# ../shared/thresholds.md §6 BLE note: convert lb to kg with x 0.453592.
KG_PER_LB: Final = 0.453592


class WeightUnit(enum.IntEnum):
    """Flags bit 0 of 0x2A9D: SI (kg, m) or imperial (lb, in)."""

    SI = 0
    IMPERIAL = 1

    @property
    def symbol(self) -> str:
        """``"kg"`` or ``"lb"``."""
        return "kg" if self is WeightUnit.SI else "lb"

    @property
    def height_symbol(self) -> str:
        """``"m"`` or ``"in"``."""
        return "m" if self is WeightUnit.SI else "in"

    @property
    def weight_step(self) -> Decimal:
        """The weight field's resolution: 0.005 kg or 0.01 lb."""
        return Decimal("0.005") if self is WeightUnit.SI else Decimal("0.01")

    @property
    def height_step(self) -> Decimal:
        """The height field's resolution: 0.001 m or 0.1 in."""
        return Decimal("0.001") if self is WeightUnit.SI else Decimal("0.1")


BMI_STEP: Final = Decimal("0.1")

_IMPERIAL: Final = 0x01
_TIMESTAMP: Final = 0x02
_USER_ID: Final = 0x04
_BMI_HEIGHT: Final = 0x08
_KNOWN_FLAGS: Final = 0x0F  # bits 4-7 are RFU


def _steps(name: str, value: float | Decimal, step: Decimal) -> int:
    raw = int((Decimal(repr(value) if isinstance(value, float) else value) / step).to_integral_value(ROUND_HALF_UP))
    check_uint(name, raw, 16, optional=False)
    return raw


@dataclass(frozen=True, slots=True)
class WeightMeasurement(Measurement):
    """Weight Measurement, 0x2A9D (WSS 1.0 §3.1; 3..15 bytes).

    Layout: ``flags uint8 | weight uint16 (x0.005 kg or x0.01 lb) | [Date Time (7)] | [user id uint8]
    | [BMI uint16 x0.1 | height uint16 (x0.001 m or x0.1 in)]``. ``weight_raw`` 0xFFFF means "measurement
    unsuccessful" (``weight`` is then None and JSON shows "NaN"). RFU flag bits (4-7) are refused (``decode_tolerant``
    ignores them) and never emitted. Build from real values with :meth:`of`.
    """

    UUID: ClassVar[int] = 0x2A9D
    weight_raw: int
    unit: WeightUnit = WeightUnit.SI
    timestamp: DateTime | None = None
    user_id: int | None = None
    bmi_raw: int | None = None
    height_raw: int | None = None

    # BMI uint16 (0.1) | height uint16
    _BMI_HEIGHT: ClassVar[struct.Struct] = struct.Struct("<HH")

    def __post_init__(self) -> None:
        check_uint("weight_raw", self.weight_raw, 16, optional=False)
        if not isinstance(self.unit, WeightUnit):
            raise EncodeError(f"unit must be a WeightUnit, not {self.unit!r}")
        check_date_time("timestamp", self.timestamp)
        check_uint("user_id", self.user_id, 8)
        check_uint("bmi_raw", self.bmi_raw, 16)
        check_uint("height_raw", self.height_raw, 16)
        if (self.bmi_raw is None) != (self.height_raw is None):
            raise EncodeError("BMI and height are sent together or not at all")

    @classmethod
    def of(
        cls,
        weight: float | Decimal | None,
        unit: WeightUnit = WeightUnit.SI,
        *,
        timestamp: DateTime | None = None,
        user_id: int | None = None,
        bmi: float | Decimal | None = None,
        height: float | Decimal | None = None,
    ) -> Self:
        """A measurement from values in ``unit`` (kg/m or lb/in), rounded to the field resolution.

        ``weight=None`` encodes "measurement unsuccessful" (0xFFFF).

        Raises:
            EncodeError: a value beyond the uint16 field after scaling, or BMI without height.
        """
        weight_raw = WEIGHT_UNSUCCESSFUL if weight is None else _steps("weight", weight, unit.weight_step)
        if weight_raw == WEIGHT_UNSUCCESSFUL and weight is not None:
            raise EncodeError("weight too large: 0xFFFF means measurement unsuccessful")
        return cls(
            weight_raw,
            unit,
            timestamp,
            user_id,
            None if bmi is None else _steps("bmi", bmi, BMI_STEP),
            None if height is None else _steps("height", height, unit.height_step),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A9D indication."""
        r = Reader("2A9D", data)
        flags = r.flags(_KNOWN_FLAGS)
        weight = r.u16("Weight")
        timestamp = r.date_time("Time Stamp") if flags & _TIMESTAMP else None
        user_id = r.u8("User ID") if flags & _USER_ID else None
        bmi = height = None
        if flags & _BMI_HEIGHT:
            bmi, height = r.unpack(cls._BMI_HEIGHT, "BMI and Height")
        r.finish()
        with decoding("2A9D"):
            unit = WeightUnit.IMPERIAL if flags & _IMPERIAL else WeightUnit.SI
            return cls(weight, unit, timestamp, user_id, bmi, height)

    def __bytes__(self) -> bytes:
        flags = (
            (_IMPERIAL if self.unit is WeightUnit.IMPERIAL else 0)
            | (_TIMESTAMP if self.timestamp is not None else 0)
            | (_USER_ID if self.user_id is not None else 0)
            | (_BMI_HEIGHT if self.bmi_raw is not None else 0)
        )
        out = bytearray(U8.pack(flags) + U16.pack(self.weight_raw))
        if self.timestamp is not None:
            out += bytes(self.timestamp)
        if self.user_id is not None:
            out += U8.pack(self.user_id)
        if self.bmi_raw is not None and self.height_raw is not None:
            out += self._BMI_HEIGHT.pack(self.bmi_raw, self.height_raw)
        return bytes(out)

    @property
    def successful(self) -> bool:
        """False when the scale reported "measurement unsuccessful" (0xFFFF)."""
        return self.weight_raw != WEIGHT_UNSUCCESSFUL

    @property
    def weight(self) -> float | None:
        """The weight in ``unit`` (kg or lb), None when the measurement was unsuccessful."""
        return float(self.weight_raw * self.unit.weight_step) if self.successful else None

    @property
    def kg(self) -> float | None:
        """The weight in kilograms (lb x 0.453592), None when unsuccessful."""
        weight = self.weight
        if weight is None or self.unit is WeightUnit.SI:
            return weight
        return weight * KG_PER_LB

    @property
    def bmi(self) -> float | None:
        """BMI in kg/m², None when absent."""
        return None if self.bmi_raw is None else float(self.bmi_raw * BMI_STEP)

    @property
    def height(self) -> float | None:
        """Height in ``unit.height_symbol`` (m or in), None when absent."""
        return None if self.height_raw is None else float(self.height_raw * self.unit.height_step)

    @property
    def device_time(self) -> _dt.datetime | None:
        """The time stamp as a naive datetime; None when absent or a date component is unknown."""
        return None if self.timestamp is None else self.timestamp.to_datetime()

    def as_dict(self) -> dict[str, JSONValue]:
        """See ``protocols/README.md``; an unsuccessful weight is "NaN"."""
        return {
            "weight": "NaN" if self.weight is None else self.weight,
            "unit": self.unit.symbol,
            "timestamp": iso(self.timestamp),
            "user_id": self.user_id,
            "bmi": self.bmi,
            "height": self.height,
            "height_unit": None if self.height_raw is None else self.unit.height_symbol,
        }


@dataclass(frozen=True, slots=True)
class WeightScaleFeature(FeatureBits):
    """Weight Scale Feature, 0x2A9E (WSS 1.0 §3.2): a uint32 kept verbatim (RFU bits included).

    Bits: 0 time stamp supported · 1 multiple users · 2 BMI supported · 3-6 weight resolution · 7-9 height resolution.
    """

    UUID: ClassVar[int] = 0x2A9E
    _NAME: ClassVar[str] = "Weight Scale Feature"
    # features uint32
    _LAYOUT: ClassVar[struct.Struct] = U32
    features: int

    @property
    def time_stamp_supported(self) -> bool:
        """Bit 0."""
        return bool(self.features & 0x01)

    @property
    def multiple_users_supported(self) -> bool:
        """Bit 1."""
        return bool(self.features & 0x02)

    @property
    def bmi_supported(self) -> bool:
        """Bit 2."""
        return bool(self.features & 0x04)

    @property
    def weight_resolution(self) -> int:
        """Bits 3-6 (0 = not specified, 1 = 0.5 kg / 1 lb, ... 7 = 0.005 kg / 0.01 lb)."""
        return (self.features >> 3) & 0x0F

    @property
    def height_resolution(self) -> int:
        """Bits 7-9 (0 = not specified, 1 = 0.01 m / 1 in, 2 = 0.005 m / 0.5 in, 3 = 0.001 m / 0.1 in)."""
        return (self.features >> 7) & 0x07

    def as_dict(self) -> dict[str, JSONValue]:
        """``features`` (raw) and the decoded bits."""
        return {
            "features": self.features,
            "time_stamp_supported": self.time_stamp_supported,
            "multiple_users_supported": self.multiple_users_supported,
            "bmi_supported": self.bmi_supported,
            "weight_resolution": self.weight_resolution,
            "height_resolution": self.height_resolution,
        }
