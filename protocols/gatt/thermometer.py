"""Health Thermometer characteristics: Temperature Measurement (0x2A1C) and Intermediate Temperature (0x2A1E), per
Health Thermometer Service 1.0 §3.1 and §3.3 and the former SIG characteristic XMLs.
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from protocols.datetime_ import DateTime
from protocols.errors import EncodeError
from protocols.gatt.common import (
    U8,
    JSONValue,
    Measurement,
    Reader,
    check_date_time,
    check_sfloat,
    check_uint,
    decoding,
    enum_name,
    enum_or_int,
    float32_bytes,
    iso,
    num,
)
from protocols.ieee11073 import MderFloat

__all__ = ["IntermediateTemperature", "TemperatureMeasurement", "TemperatureType", "TemperatureUnit"]


class TemperatureUnit(enum.IntEnum):
    """Flags bit 0 of 0x2A1C/0x2A1E."""

    CELSIUS = 0
    FAHRENHEIT = 1

    @property
    def symbol(self) -> str:
        """``"C"`` or ``"F"``."""
        return "C" if self is TemperatureUnit.CELSIUS else "F"


class TemperatureType(enum.IntEnum):
    """Temperature Type (HTS 1.0 §3.2); 0 and 10..255 RFU (kept as int)."""

    ARMPIT = 1
    BODY = 2
    EAR = 3
    FINGER = 4
    GASTROINTESTINAL_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9


_FAHRENHEIT: Final = 0x01
_TIMESTAMP: Final = 0x02
_TYPE: Final = 0x04
_KNOWN_FLAGS: Final = 0x07  # bits 3-7 are RFU


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement(Measurement):
    """Temperature Measurement, 0x2A1C (HTS 1.0 §3.1; 5..13 bytes).

    Layout: ``flags uint8 | temperature FLOAT (32-bit) | [Date Time (7)] | [temperature type uint8]``. RFU flag bits
    (3-7) are refused (``decode_tolerant`` ignores them) and never emitted.
    """

    UUID: ClassVar[int] = 0x2A1C
    value: MderFloat
    unit: TemperatureUnit = TemperatureUnit.CELSIUS
    timestamp: DateTime | None = None
    temperature_type: TemperatureType | int | None = None

    def __post_init__(self) -> None:
        check_sfloat("value", self.value, optional=False, sfloat=False)
        if not isinstance(self.unit, TemperatureUnit):
            raise EncodeError(f"unit must be a TemperatureUnit, not {self.unit!r}")
        check_date_time("timestamp", self.timestamp)
        check_uint("temperature_type", self.temperature_type, 8)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A1C indication (or 0x2A1E notification for :class:`IntermediateTemperature`)."""
        r = Reader(f"{cls.UUID:04X}", data)
        flags = r.flags(_KNOWN_FLAGS)
        value = r.float32("Temperature Measurement Value")
        timestamp = r.date_time("Time Stamp") if flags & _TIMESTAMP else None
        kind = enum_or_int(TemperatureType, r.u8("Temperature Type")) if flags & _TYPE else None
        r.finish()
        with decoding(f"{cls.UUID:04X}"):
            unit = TemperatureUnit.FAHRENHEIT if flags & _FAHRENHEIT else TemperatureUnit.CELSIUS
            return cls(value, unit, timestamp, kind)

    def __bytes__(self) -> bytes:
        flags = (
            (_FAHRENHEIT if self.unit is TemperatureUnit.FAHRENHEIT else 0)
            | (_TIMESTAMP if self.timestamp is not None else 0)
            | (_TYPE if self.temperature_type is not None else 0)
        )
        out = bytearray(U8.pack(flags) + float32_bytes(self.value))
        if self.timestamp is not None:
            out += bytes(self.timestamp)
        if self.temperature_type is not None:
            out += U8.pack(self.temperature_type)
        return bytes(out)

    @property
    def celsius(self) -> float | None:
        """The temperature in °C (°F converted: thresholds.md "Units", °F = °C x 9/5 + 32); None for specials."""
        number = self.value.as_float()
        if number is None or self.unit is TemperatureUnit.CELSIUS:
            return number
        return (number - 32.0) * 5.0 / 9.0

    @property
    def device_time(self) -> _dt.datetime | None:
        """The time stamp as a naive datetime; None when absent or a date component is unknown."""
        return None if self.timestamp is None else self.timestamp.to_datetime()

    def as_dict(self) -> dict[str, JSONValue]:
        """``value``, ``unit`` ("C"|"F"), ``timestamp``, ``temperature_type`` (+ ``temperature_type_name``)."""
        return {
            "value": num(self.value),
            "unit": self.unit.symbol,
            "timestamp": iso(self.timestamp),
            "temperature_type": None if self.temperature_type is None else int(self.temperature_type),
            "temperature_type_name": enum_name(TemperatureType, self.temperature_type),
        }


@dataclass(frozen=True, slots=True)
class IntermediateTemperature(TemperatureMeasurement):
    """Intermediate Temperature, 0x2A1E (HTS 1.0 §3.3): the 0x2A1C layout, sent as notifications while measuring."""

    UUID: ClassVar[int] = 0x2A1E
