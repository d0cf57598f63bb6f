"""Blood Pressure Profile characteristics: Blood Pressure Measurement (0x2A35), Intermediate Cuff Pressure (0x2A36)
and Blood Pressure Feature (0x2A49), per Blood Pressure Service 1.0 §3.1-3.3 and the former SIG characteristic XMLs.
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
    U16,
    FeatureBits,
    JSONValue,
    Measurement,
    Reader,
    check_date_time,
    check_sfloat,
    check_uint,
    decoding,
    iso,
    num,
    sfloat_bytes,
)
from protocols.ieee11073 import NAN, MderFloat

__all__ = [
    "BloodPressureFeature",
    "BloodPressureFeatureBits",
    "BloodPressureMeasurement",
    "BpMeasurementStatus",
    "IntermediateCuffPressure",
    "PressureUnit",
    "PulseRateRange",
]

# ../shared/thresholds.md, "Units": 1 kPa = 7.50062 mmHg.
MMHG_PER_KPA: Final = 7.50062

_UNITS_KPA: Final = 0x01
_TIMESTAMP: Final = 0x02
_PULSE_RATE: Final = 0x04
_USER_ID: Final = 0x08
_STATUS: Final = 0x10
_KNOWN_FLAGS: Final = 0x1F  # bits 5-7 are RFU


class PressureUnit(enum.IntEnum):
    """Flags bit 0 of 0x2A35/0x2A36."""

    MMHG = 0
    KPA = 1

    @property
    def symbol(self) -> str:
        """``"mmHg"`` or ``"kPa"``."""
        return "mmHg" if self is PressureUnit.MMHG else "kPa"


class BpMeasurementStatus(enum.IntFlag):
    """Single-bit flags of the Blood Pressure Measurement Status (bits 3-4 are :class:`PulseRateRange`)."""

    BODY_MOVEMENT = 0x0001
    CUFF_TOO_LOOSE = 0x0002
    IRREGULAR_PULSE = 0x0004
    IMPROPER_MEASUREMENT_POSITION = 0x0020


class PulseRateRange(enum.IntEnum):
    """Bits 3-4 of the Measurement Status (3 is RFU)."""

    WITHIN_RANGE = 0
    EXCEEDS_UPPER_LIMIT = 1
    BELOW_LOWER_LIMIT = 2


class BloodPressureFeatureBits(enum.IntFlag):
    """Blood Pressure Feature bits (BLS 1.0 §3.3; bits 6-8 from BLS 1.1); the rest are RFU."""

    BODY_MOVEMENT_DETECTION = 0x0001
    CUFF_FIT_DETECTION = 0x0002
    IRREGULAR_PULSE_DETECTION = 0x0004
    PULSE_RATE_RANGE_DETECTION = 0x0008
    MEASUREMENT_POSITION_DETECTION = 0x0010
    MULTIPLE_BONDS = 0x0020
    E2E_CRC = 0x0040
    USER_DATA_SERVICE = 0x0080
    USER_FACING_TIME = 0x0100


def _to_mmhg(value: MderFloat | None, unit: PressureUnit) -> float | None:
    if value is None:
        return None
    number = value.as_float()
    if number is None:
        return None
    return number if unit is PressureUnit.MMHG else number * MMHG_PER_KPA


@dataclass(frozen=True, slots=True)
class _BpFrame:
    """The shared wire form of 0x2A35 and 0x2A36 (BLS 1.0 §3.1.1 / §3.2.1).

    Layout: ``flags uint8 | systolic SFLOAT | diastolic SFLOAT | MAP SFLOAT | [Date Time (7)] | [pulse SFLOAT]
    | [user id uint8] | [measurement status uint16]``.
    """

    flags: int
    compound: tuple[MderFloat, MderFloat, MderFloat]
    timestamp: DateTime | None
    pulse_rate: MderFloat | None
    user_id: int | None
    measurement_status: int | None

    @classmethod
    def read(cls, what: str, data: bytes, *, strict_compound: bool) -> _BpFrame:
        r = Reader(what, data)
        flags = r.flags(_KNOWN_FLAGS)
        systolic = r.sfloat("Systolic")
        if strict_compound:
            diastolic = r.sfloat("Diastolic")
            mean_arterial = r.sfloat("Mean Arterial Pressure")
        else:
            # 0x2A36: the diastolic and MAP sub-fields are unused; devices send NaN or 0. Ignore both words.
            r.u16("Diastolic (unused)")
            r.u16("Mean Arterial Pressure (unused)")
            diastolic = mean_arterial = NAN
        timestamp = r.date_time("Time Stamp") if flags & _TIMESTAMP else None
        pulse_rate = r.sfloat("Pulse Rate") if flags & _PULSE_RATE else None
        user_id = r.u8("User ID") if flags & _USER_ID else None
        status = r.u16("Measurement Status") if flags & _STATUS else None
        r.finish()
        return cls(flags, (systolic, diastolic, mean_arterial), timestamp, pulse_rate, user_id, status)

    def write(self) -> bytes:
        out = bytearray(U8.pack(self.flags))
        for value in self.compound:
            out += sfloat_bytes(value)
        if self.timestamp is not None:
            out += bytes(self.timestamp)
        if self.pulse_rate is not None:
            out += sfloat_bytes(self.pulse_rate)
        if self.user_id is not None:
            out += U8.pack(self.user_id)
        if self.measurement_status is not None:
            out += U16.pack(self.measurement_status)
        return bytes(out)


def _flags(
    unit: PressureUnit, timestamp: object, pulse_rate: object, user_id: object, measurement_status: object
) -> int:
    return (
        (_UNITS_KPA if unit is PressureUnit.KPA else 0)
        | (_TIMESTAMP if timestamp is not None else 0)
        | (_PULSE_RATE if pulse_rate is not None else 0)
        | (_USER_ID if user_id is not None else 0)
        | (_STATUS if measurement_status is not None else 0)
    )


def _check_common(
    unit: object, timestamp: DateTime | None, pulse_rate: MderFloat | None, user_id: int | None, status: int | None
) -> None:
    if not isinstance(unit, PressureUnit):
        raise EncodeError(f"unit must be a PressureUnit, not {unit!r}")
    check_date_time("timestamp", timestamp)
    check_sfloat("pulse_rate", pulse_rate)
    check_uint("user_id", user_id, 8)
    check_uint("measurement_status", status, 16)


def _common_dict(
    unit: PressureUnit,
    timestamp: DateTime | None,
    pulse_rate: MderFloat | None,
    user_id: int | None,
    status: int | None,
) -> dict[str, JSONValue]:
    return {
        "unit": unit.symbol,
        "timestamp": iso(timestamp),
        "pulse_rate": num(pulse_rate),
        "user_id": user_id,
        "measurement_status": status,
    }


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement(Measurement):
    """Blood Pressure Measurement, 0x2A35 (BLS 1.0 §3.1; 7..19 bytes).

    The three pressures are in ``unit`` as sent; NaN is allowed for any of them. ``user_id`` 255 means "unknown
    user". ``measurement_status`` is kept as the raw uint16 (see :attr:`status_flags`, :attr:`pulse_rate_range`).
    RFU flag bits (5-7) are refused (``decode_tolerant`` ignores them) and never emitted.
    """

    UUID: ClassVar[int] = 0x2A35
    systolic: MderFloat
    diastolic: MderFloat
    mean_arterial: MderFloat
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTime | None = None
    pulse_rate: MderFloat | None = None
    user_id: int | None = None
    measurement_status: int | None = None

    def __post_init__(self) -> None:
        check_sfloat("systolic", self.systolic, optional=False)
        check_sfloat("diastolic", self.diastolic, optional=False)
        check_sfloat("mean_arterial", self.mean_arterial, optional=False)
        _check_common(self.unit, self.timestamp, self.pulse_rate, self.user_id, self.measurement_status)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A35 indication."""
        frame = _BpFrame.read("2A35", data, strict_compound=True)
        with decoding("2A35"):
            return cls(
                *frame.compound,
                unit=PressureUnit(frame.flags & _UNITS_KPA),
                timestamp=frame.timestamp,
                pulse_rate=frame.pulse_rate,
                user_id=frame.user_id,
                measurement_status=frame.measurement_status,
            )

    def __bytes__(self) -> bytes:
        flags = _flags(self.unit, self.timestamp, self.pulse_rate, self.user_id, self.measurement_status)
        compound = (self.systolic, self.diastolic, self.mean_arterial)
        return _BpFrame(flags, compound, self.timestamp, self.pulse_rate, self.user_id, self.measurement_status).write()

    @property
    def systolic_mmhg(self) -> float | None:
        """Systolic pressure in mmHg (kPa converted), None for a special value."""
        return _to_mmhg(self.systolic, self.unit)

    @property
    def diastolic_mmhg(self) -> float | None:
        """Diastolic pressure in mmHg, None for a special value."""
        return _to_mmhg(self.diastolic, self.unit)

    @property
    def mean_arterial_mmhg(self) -> float | None:
        """Mean arterial pressure in mmHg, None for a special value."""
        return _to_mmhg(self.mean_arterial, self.unit)

    @property
    def pulse_rate_bpm(self) -> float | None:
        """Pulse rate in beats per minute, None when absent or special."""
        return None if self.pulse_rate is None else self.pulse_rate.as_float()

    @property
    def device_time(self) -> _dt.datetime | None:
        """The time stamp as a naive local datetime; None when absent or a date component is unknown."""
        return None if self.timestamp is None else self.timestamp.to_datetime()

    @property
    def status_flags(self) -> BpMeasurementStatus | None:
        """The single-bit measurement status flags, None when no status was sent."""
        if self.measurement_status is None:
            return None
        return BpMeasurementStatus(self.measurement_status & 0x0027)

    @property
    def pulse_rate_range(self) -> PulseRateRange | int | None:
        """Bits 3-4 of the measurement status (3 = RFU, kept as int), None when no status was sent."""
        if self.measurement_status is None:
            return None
        raw = (self.measurement_status >> 3) & 0x3
        return PulseRateRange(raw) if raw < 3 else raw

    def as_dict(self) -> dict[str, JSONValue]:
        """See ``protocols/README.md``: pressures in the unit sent, specials as strings."""
        return {
            "systolic": num(self.systolic),
            "diastolic": num(self.diastolic),
            "mean_arterial": num(self.mean_arterial),
            **_common_dict(self.unit, self.timestamp, self.pulse_rate, self.user_id, self.measurement_status),
        }


@dataclass(frozen=True, slots=True)
class IntermediateCuffPressure(Measurement):
    """Intermediate Cuff Pressure, 0x2A36 (BLS 1.0 §3.2): the 0x2A35 layout with the current cuff pressure in the
    systolic sub-field.

    Diastolic and MAP are unused: the decoder skips both words whatever they hold (NaN, or 0 as some devices send);
    the encoder writes NaN (0x07FF) there.
    """

    UUID: ClassVar[int] = 0x2A36
    cuff_pressure: MderFloat
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTime | None = None
    pulse_rate: MderFloat | None = None
    user_id: int | None = None
    measurement_status: int | None = None

    def __post_init__(self) -> None:
        check_sfloat("cuff_pressure", self.cuff_pressure, optional=False)
        _check_common(self.unit, self.timestamp, self.pulse_rate, self.user_id, self.measurement_status)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A36 notification."""
        frame = _BpFrame.read("2A36", data, strict_compound=False)
        with decoding("2A36"):
            return cls(
                frame.compound[0],
                unit=PressureUnit(frame.flags & _UNITS_KPA),
                timestamp=frame.timestamp,
                pulse_rate=frame.pulse_rate,
                user_id=frame.user_id,
                measurement_status=frame.measurement_status,
            )

    def __bytes__(self) -> bytes:
        flags = _flags(self.unit, self.timestamp, self.pulse_rate, self.user_id, self.measurement_status)
        compound = (self.cuff_pressure, NAN, NAN)
        return _BpFrame(flags, compound, self.timestamp, self.pulse_rate, self.user_id, self.measurement_status).write()

    @property
    def cuff_pressure_mmhg(self) -> float | None:
        """The current cuff pressure in mmHg, None for a special value."""
        return _to_mmhg(self.cuff_pressure, self.unit)

    @property
    def pulse_rate_bpm(self) -> float | None:
        """Pulse rate in beats per minute, None when absent or special."""
        return None if self.pulse_rate is None else self.pulse_rate.as_float()

    @property
    def device_time(self) -> _dt.datetime | None:
        """The time stamp as a naive local datetime; None when absent or a date component is unknown."""
        return None if self.timestamp is None else self.timestamp.to_datetime()

    def as_dict(self) -> dict[str, JSONValue]:
        """``cuff_pressure`` plus the optional fields of 0x2A35 (no systolic/diastolic/MAP)."""
        return {
            "cuff_pressure": num(self.cuff_pressure),
            **_common_dict(self.unit, self.timestamp, self.pulse_rate, self.user_id, self.measurement_status),
        }


@dataclass(frozen=True, slots=True)
class BloodPressureFeature(FeatureBits):
    """Blood Pressure Feature, 0x2A49 (BLS 1.0 §3.3): a uint16 bit field, kept verbatim (RFU bits included)."""

    UUID: ClassVar[int] = 0x2A49
    _NAME: ClassVar[str] = "Blood Pressure Feature"
    _BITS: ClassVar[type[enum.IntFlag] | None] = BloodPressureFeatureBits
    _KNOWN: ClassVar[int] = 0x01FF
    features: int

    @property
    def flags(self) -> BloodPressureFeatureBits:
        """The known feature bits."""
        return BloodPressureFeatureBits(self.features & self._KNOWN)
