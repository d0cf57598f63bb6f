"""Continuous Glucose Monitoring characteristics (CGM Service 1.0.x, service 0x181F), from the Bluetooth SIG CGMS
specification and its characteristic definitions (facts checked against the field layouts that open-source CGMS
collectors and sensors implement; no code taken from them):

* 0x2AA7 CGM Measurement: one or more records, each ``size uint8 | flags uint8 | glucose SFLOAT (mg/dL) | time
  offset uint16 (minutes since the session start) | [warning octet] | [cal/temp octet] | [status octet] | [trend
  SFLOAT ((mg/dL)/min)] | [quality SFLOAT (%)] | [E2E-CRC uint16]``. Flags: bit 0 trend present, bit 1 quality
  present, bits 2-4 reserved (RFU), bit 5 warning octet, bit 6 cal/temp octet, bit 7 status octet present. ``size``
  counts the whole record, its own byte included; a record is 2 bytes longer than its fields when it carries the
  E2E-CRC (the sensor's CGM Feature says whether it does, and then every value carries one).
* 0x2AA8 CGM Feature: ``features uint24 | type (low nibble) and sample location (high nibble) uint8 | E2E-CRC
  uint16`` (0xFFFF when the sensor does not support E2E-CRC, feature bit 12).
* 0x2AA9 CGM Status: ``time offset uint16 | sensor status annunciation uint24 | [E2E-CRC]``.
* 0x2AAA CGM Session Start Time: ``Date Time (7) | time zone sint8 (15-minute steps, -128 unknown) | DST offset uint8
  | [E2E-CRC]``.
* 0x2AAB CGM Session Run Time: ``hours uint16 | [E2E-CRC]``.
* 0x2AAC CGM Specific Ops Control Point: ``op code uint8 | operand (by op code) | [E2E-CRC]``.
* 0x2A52 Record Access Control Point: as for glucose (``protocols.gatt.racp``), except that CGMS filter type 0x01
  means *time offset* (uint16 minutes), where the Glucose Service's 0x01 is the sequence number. The encoding is the
  same, so the hub asks for records ">= time offset" with the same request.

The sensor status annunciation is 24 bits: status octet bits 0-7, cal/temp octet bits 8-15, warning octet bits
16-23 (:class:`CgmAnnunciation`); in a measurement the octets are sent warning first, then cal/temp, then status.

E2E-CRC is CRC-16 with the CCITT polynomial x^16+x^12+x^5+1, seed 0xFFFF, bits taken least significant first and no
final XOR (the variant also called CRC-16/MCRF4XX), over every byte before it; it is sent little-endian. A value whose
CRC does not match is refused (``DecodeError``): the hub keeps it as a raw reading.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from protocols.datetime_ import DateTime
from protocols.errors import EncodeError
from protocols.gatt.common import (
    U8,
    U16,
    JSONValue,
    Measurement,
    Reader,
    RfuFlagsError,
    TrailingBytesError,
    check_date_time,
    check_sfloat,
    check_uint,
    decoding,
    enum_name,
    iso,
    num,
    sfloat_bytes,
    u24_bytes,
)
from protocols.ieee11073 import MderFloat

__all__ = [
    "CGM_SERVICE",
    "CgmAnnunciation",
    "CgmFeature",
    "CgmFeatureBits",
    "CgmMeasurement",
    "CgmOpCode",
    "CgmRecord",
    "CgmSessionRunTime",
    "CgmSessionStartTime",
    "CgmSpecificOpsControlPoint",
    "CgmStatus",
    "e2e_crc",
]

CGM_SERVICE: Final = 0x181F

_TREND: Final = 0x01
_QUALITY: Final = 0x02
_WARNING: Final = 0x20
_CAL_TEMP: Final = 0x40
_STATUS: Final = 0x80
_KNOWN_FLAGS: Final = _TREND | _QUALITY | _WARNING | _CAL_TEMP | _STATUS  # bits 2-4 are RFU
_MIN_RECORD: Final = 6  # size, flags, glucose, time offset
_CRC: Final = 2
S8: Final = struct.Struct("<b")


def e2e_crc(data: bytes) -> int:
    """The CGMS E2E-CRC of `data` (CRC-16, CCITT polynomial, seed 0xFFFF, reflected, no final XOR)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def _with_crc(body: bytes, crc: bool) -> bytes:
    return body + U16.pack(e2e_crc(body)) if crc else body


def _check_crc(r: Reader, body: bytes, field: str = "E2E-CRC") -> None:
    at = r.pos
    sent = r.u16(field)
    if sent != e2e_crc(body):
        raise r.fail(f"{field} 0x{sent:04X} does not match the value (0x{e2e_crc(body):04X})", at)


class CgmAnnunciation(enum.IntFlag):
    """The 24-bit Sensor Status Annunciation: status octet (bits 0-7), cal/temp octet (8-15), warning octet (16-23)."""

    SESSION_STOPPED = 1 << 0
    DEVICE_BATTERY_LOW = 1 << 1
    SENSOR_TYPE_INCORRECT = 1 << 2
    SENSOR_MALFUNCTION = 1 << 3
    DEVICE_SPECIFIC_ALERT = 1 << 4
    GENERAL_DEVICE_FAULT = 1 << 5
    TIME_SYNC_REQUIRED = 1 << 8
    CALIBRATION_NOT_ALLOWED = 1 << 9
    CALIBRATION_RECOMMENDED = 1 << 10
    CALIBRATION_REQUIRED = 1 << 11
    TEMPERATURE_TOO_HIGH = 1 << 12
    TEMPERATURE_TOO_LOW = 1 << 13
    BELOW_PATIENT_LOW = 1 << 16
    ABOVE_PATIENT_HIGH = 1 << 17
    BELOW_HYPO = 1 << 18
    ABOVE_HYPER = 1 << 19
    RATE_OF_DECREASE_EXCEEDED = 1 << 20
    RATE_OF_INCREASE_EXCEEDED = 1 << 21
    BELOW_DEVICE_RANGE = 1 << 22
    ABOVE_DEVICE_RANGE = 1 << 23


#: Annunciation bits that make the glucose value itself doubtful (the sensor cannot vouch for it). "Battery low",
#: the calibration advice and the patient/hypo/hyper/rate warnings (which restate the value) do not.
DOUBTFUL: Final = (
    CgmAnnunciation.SESSION_STOPPED
    | CgmAnnunciation.SENSOR_TYPE_INCORRECT
    | CgmAnnunciation.SENSOR_MALFUNCTION
    | CgmAnnunciation.GENERAL_DEVICE_FAULT
    | CgmAnnunciation.CALIBRATION_REQUIRED
    | CgmAnnunciation.TEMPERATURE_TOO_HIGH
    | CgmAnnunciation.TEMPERATURE_TOO_LOW
    | CgmAnnunciation.BELOW_DEVICE_RANGE
    | CgmAnnunciation.ABOVE_DEVICE_RANGE
)


def _names(bits: int) -> list[JSONValue]:
    return [f.name.lower() for f in CgmAnnunciation if f & bits and f.name]


@dataclass(frozen=True, slots=True)
class CgmRecord:
    """One CGM Measurement record.

    Attributes:
        glucose: the glucose concentration in mg/dL (SFLOAT; may be a special value such as NaN).
        time_offset: minutes since the session start (uint16).
        warning, cal_temp, status: the annunciation octets sent (None: not sent).
        trend: the rate of change in (mg/dL)/min, if sent.
        quality: the sensor's quality figure in %, if sent.
        e2e_crc: whether the record carries the E2E-CRC.
    """

    glucose: MderFloat
    time_offset: int
    warning: int | None = None
    cal_temp: int | None = None
    status: int | None = None
    trend: MderFloat | None = None
    quality: MderFloat | None = None
    e2e_crc: bool = False

    def __post_init__(self) -> None:
        check_sfloat("glucose", self.glucose, optional=False)
        check_uint("time_offset", self.time_offset, 16, optional=False)
        check_uint("warning", self.warning, 8)
        check_uint("cal_temp", self.cal_temp, 8)
        check_uint("status", self.status, 8)
        check_sfloat("trend", self.trend)
        check_sfloat("quality", self.quality)
        if not isinstance(self.e2e_crc, bool):
            raise EncodeError(f"e2e_crc must be a bool, not {self.e2e_crc!r}")

    @property
    def flags(self) -> int:
        """The Flags byte this record is sent with."""
        return (
            (_TREND if self.trend is not None else 0)
            | (_QUALITY if self.quality is not None else 0)
            | (_WARNING if self.warning is not None else 0)
            | (_CAL_TEMP if self.cal_temp is not None else 0)
            | (_STATUS if self.status is not None else 0)
        )

    @property
    def annunciation(self) -> int:
        """The 24-bit Sensor Status Annunciation (octets not sent count as 0)."""
        return (self.status or 0) | (self.cal_temp or 0) << 8 | (self.warning or 0) << 16

    @property
    def mg_dl(self) -> float | None:
        """The glucose in mg/dL; None for a special value (NaN, NRes, ±INFINITY)."""
        return self.glucose.as_float() if self.glucose.is_finite else None

    @property
    def doubtful(self) -> bool:
        """The sensor flagged the value as not trustworthy (:data:`DOUBTFUL` bits)."""
        return bool(self.annunciation & DOUBTFUL)

    def __bytes__(self) -> bytes:
        fields = bytearray(U8.pack(self.flags) + sfloat_bytes(self.glucose) + U16.pack(self.time_offset))
        for octet in (self.warning, self.cal_temp, self.status):
            if octet is not None:
                fields += U8.pack(octet)
        for value in (self.trend, self.quality):
            if value is not None:
                fields += sfloat_bytes(value)
        size = 1 + len(fields) + (_CRC if self.e2e_crc else 0)
        return _with_crc(U8.pack(size) + bytes(fields), self.e2e_crc)

    @classmethod
    def read(cls, r: Reader, data: bytes, index: int) -> Self:
        """Read the record starting at the cursor (`data` is the whole value, for the CRC)."""
        start = r.pos
        size = r.u8("Size")
        at = r.pos
        flags = r.u8("Flags")
        reserved = flags & ~_KNOWN_FLAGS
        if reserved:
            raise RfuFlagsError(r.what, reserved, at)
        glucose = r.sfloat("CGM Glucose Concentration")
        time_offset = r.u16("Time Offset")
        warning = r.u8("Sensor Status Warning-Octet") if flags & _WARNING else None
        cal_temp = r.u8("Sensor Status Cal/Temp-Octet") if flags & _CAL_TEMP else None
        status = r.u8("Sensor Status Status-Octet") if flags & _STATUS else None
        trend = r.sfloat("CGM Trend Information") if flags & _TREND else None
        quality = r.sfloat("CGM Quality") if flags & _QUALITY else None
        fields = r.pos - start
        if size == fields + _CRC:
            _check_crc(r, data[start : r.pos])
            crc = True
        elif size == fields:
            crc = False
        else:
            raise r.fail(f"record {index}: Size {size} fits neither its fields ({fields}) nor them with E2E-CRC", start)
        with decoding(r.what):
            return cls(glucose, time_offset, warning, cal_temp, status, trend, quality, crc)

    def as_dict(self) -> dict[str, JSONValue]:
        """The record's fields (``glucose`` in mg/dL, ``time_offset_min``, ``annunciation`` and its names)."""
        return {
            "glucose": num(self.glucose),
            "unit": "mg/dL",
            "time_offset_min": self.time_offset,
            "trend": num(self.trend),
            "quality": num(self.quality),
            "annunciation": self.annunciation,
            "annunciation_names": _names(self.annunciation),
            "e2e_crc": self.e2e_crc,
        }


@dataclass(frozen=True, slots=True)
class CgmMeasurement(Measurement):
    """CGM Measurement, 0x2AA7: one value holding one or more :class:`CgmRecord` (CGMS §3.1).

    A sensor sends one record per notification as it measures; a RACP transfer may pack several into one value.
    The measurement's own fields (``mg_dl``, ``time_offset``...) are those of its *latest* record (the highest time
    offset); ``as_dict`` gives them at the top level and every record under ``records`` when there is more than one.

    Strict decoding refuses reserved flag bits and bytes after the last whole record that cannot start another
    (``decode_tolerant`` accepts both and says so).
    """

    UUID: ClassVar[int] = 0x2AA7
    records: tuple[CgmRecord, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.records, tuple) or not self.records:
            raise EncodeError("a CGM Measurement holds at least one record")
        if not all(isinstance(r, CgmRecord) for r in self.records):
            raise EncodeError("records must be CgmRecord values")
        if len(bytes(self)) > 512:
            raise EncodeError("a CGM Measurement value is at most 512 bytes (a GATT attribute's limit)")

    @classmethod
    def of(cls, mg_dl: float, time_offset: int, **fields: object) -> Self:
        """One record from a value in mg/dL (rounded to the SFLOAT's precision); `fields` as :class:`CgmRecord`'s."""
        return cls((CgmRecord(MderFloat.from_value(mg_dl), time_offset, **fields),))  # type: ignore[arg-type]

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2AA7 notification (one or more records)."""
        r = Reader("2AA7", data)
        records = [CgmRecord.read(r, data, 0)]
        while r.remaining:
            size = data[r.pos]
            if size < _MIN_RECORD or size > r.remaining:
                raise TrailingBytesError(r.what, r.pos, r.remaining)  # padding, not another record
            records.append(CgmRecord.read(r, data, len(records)))
        return cls(tuple(records))

    def __bytes__(self) -> bytes:
        return b"".join(bytes(r) for r in self.records)

    @property
    def latest(self) -> CgmRecord:
        """The record with the highest time offset (the last such one)."""
        return max(reversed(self.records), key=lambda r: r.time_offset)

    @property
    def mg_dl(self) -> float | None:
        """The latest record's glucose in mg/dL (None for a special value)."""
        return self.latest.mg_dl

    @property
    def time_offset(self) -> int:
        """The latest record's time offset in minutes since the session start."""
        return self.latest.time_offset

    @property
    def doubtful(self) -> bool:
        """The sensor flagged the latest record's value as not trustworthy."""
        return self.latest.doubtful

    def as_dict(self) -> dict[str, JSONValue]:
        """The latest record's fields; ``records`` lists every record when the value holds several."""
        out = self.latest.as_dict()
        if len(self.records) > 1:
            out["records"] = [r.as_dict() for r in self.records]
        return out


class CgmFeatureBits(enum.IntFlag):
    """CGM Feature bits 0-16 (17-23 are RFU)."""

    CALIBRATION = 1 << 0
    PATIENT_HIGH_LOW_ALERTS = 1 << 1
    HYPO_ALERTS = 1 << 2
    HYPER_ALERTS = 1 << 3
    RATE_ALERTS = 1 << 4
    DEVICE_SPECIFIC_ALERT = 1 << 5
    SENSOR_MALFUNCTION_DETECTION = 1 << 6
    SENSOR_TEMPERATURE_DETECTION = 1 << 7
    SENSOR_RESULT_DETECTION = 1 << 8
    LOW_BATTERY_DETECTION = 1 << 9
    SENSOR_TYPE_ERROR_DETECTION = 1 << 10
    GENERAL_DEVICE_FAULT = 1 << 11
    E2E_CRC = 1 << 12
    MULTIPLE_BOND = 1 << 13
    MULTIPLE_SESSIONS = 1 << 14
    TREND_INFORMATION = 1 << 15
    QUALITY = 1 << 16


_NO_CRC: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class CgmFeature(Measurement):
    """CGM Feature, 0x2AA8 (6 bytes): the feature bits (kept verbatim, RFU included), the sample type (low nibble:
    9 is interstitial fluid, as in the Glucose Service) and location (high nibble), and the E2E-CRC, which must
    match when :attr:`CgmFeatureBits.E2E_CRC` is set and is 0xFFFF otherwise."""

    UUID: ClassVar[int] = 0x2AA8
    features: int
    sample_type: int = 9
    sample_location: int = 0

    def __post_init__(self) -> None:
        check_uint("features", self.features, 24, optional=False)
        check_uint("sample_type", self.sample_type, 4, optional=False)
        check_uint("sample_location", self.sample_location, 4, optional=False)

    @property
    def e2e_crc_supported(self) -> bool:
        """Bit 12: every CGM value carries an E2E-CRC."""
        return bool(self.features & CgmFeatureBits.E2E_CRC)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2AA8 read."""
        r = Reader("2AA8", data)
        features = r.u24("CGM Feature")
        nibbles = r.u8("Type-Sample Location")
        body = data[: r.pos]
        if features & CgmFeatureBits.E2E_CRC:
            _check_crc(r, body)
        else:
            at = r.pos
            crc = r.u16("E2E-CRC")
            if crc != _NO_CRC:
                raise r.fail(f"E2E-CRC is 0x{crc:04X} but the sensor supports none (0xFFFF expected)", at)
        r.finish()
        return cls(features, nibbles & 0x0F, nibbles >> 4)

    def __bytes__(self) -> bytes:
        body = u24_bytes(self.features) + U8.pack(self.sample_type | self.sample_location << 4)
        return body + U16.pack(e2e_crc(body) if self.e2e_crc_supported else _NO_CRC)

    def as_dict(self) -> dict[str, JSONValue]:
        """``features`` (raw), their names, the sample type and location."""
        return {
            "features": self.features,
            "feature_names": [f.name.lower() for f in CgmFeatureBits if f & self.features and f.name],
            "sample_type": self.sample_type,
            "sample_location": self.sample_location,
        }


@dataclass(frozen=True, slots=True)
class CgmStatus(Measurement):
    """CGM Status, 0x2AA9: the time offset and the 24-bit annunciation now, with an optional E2E-CRC."""

    UUID: ClassVar[int] = 0x2AA9
    time_offset: int
    annunciation: int
    e2e_crc: bool = False

    def __post_init__(self) -> None:
        check_uint("time_offset", self.time_offset, 16, optional=False)
        check_uint("annunciation", self.annunciation, 24, optional=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2AA9 read (5 bytes, or 7 with E2E-CRC)."""
        r = Reader("2AA9", data)
        time_offset = r.u16("Time Offset")
        annunciation = r.u24("Status")
        crc = r.remaining == _CRC
        if crc:
            _check_crc(r, data[:5])
        r.finish()
        return cls(time_offset, annunciation, crc)

    def __bytes__(self) -> bytes:
        return _with_crc(U16.pack(self.time_offset) + u24_bytes(self.annunciation), self.e2e_crc)

    def as_dict(self) -> dict[str, JSONValue]:
        """The time offset and the annunciation with its names."""
        return {
            "time_offset_min": self.time_offset,
            "annunciation": self.annunciation,
            "annunciation_names": _names(self.annunciation),
            "e2e_crc": self.e2e_crc,
        }


_TZ_UNKNOWN: Final = -128
_DST_VALUES: Final = frozenset({0, 2, 4, 8, 255})  # standard, +0.5 h, +1 h, +2 h (in 15-minute steps), unknown


@dataclass(frozen=True, slots=True)
class CgmSessionStartTime(Measurement):
    """CGM Session Start Time, 0x2AAA: when the sensor session started (local Date Time), the time zone in 15-minute
    steps (-48..56, -128 unknown) and the DST offset (0, 2, 4, 8 quarter hours; 255 unknown). A record's time is this
    start plus its time offset."""

    UUID: ClassVar[int] = 0x2AAA
    start: DateTime
    time_zone: int = _TZ_UNKNOWN
    dst_offset: int = 255
    e2e_crc: bool = False

    def __post_init__(self) -> None:
        check_date_time("start", self.start)
        if isinstance(self.time_zone, bool) or not isinstance(self.time_zone, int):
            raise EncodeError(f"time_zone must be an int, not {self.time_zone!r}")
        if self.time_zone != _TZ_UNKNOWN and not -48 <= self.time_zone <= 56:
            raise EncodeError(f"time_zone={self.time_zone} is outside -48..56 (or -128, unknown)")
        if self.dst_offset not in _DST_VALUES:
            raise EncodeError(f"dst_offset={self.dst_offset!r} is not one of {sorted(_DST_VALUES)}")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2AAA read (9 bytes, or 11 with E2E-CRC)."""
        r = Reader("2AAA", data)
        start = r.date_time("Session Start Time")
        (time_zone,) = r.unpack(S8, "Time Zone")
        dst = r.u8("DST-Offset")
        crc = r.remaining == _CRC
        if crc:
            _check_crc(r, data[:9])
        r.finish()
        with decoding("2AAA"):
            return cls(start, int(time_zone), dst, crc)

    def __bytes__(self) -> bytes:
        return _with_crc(bytes(self.start) + S8.pack(self.time_zone) + U8.pack(self.dst_offset), self.e2e_crc)

    def as_dict(self) -> dict[str, JSONValue]:
        """The start (ISO, local), the zone in minutes and the DST offset in minutes (None when unknown)."""
        return {
            "session_start": iso(self.start),
            "time_zone_min": None if self.time_zone == _TZ_UNKNOWN else self.time_zone * 15,
            "dst_offset_min": None if self.dst_offset == 255 else self.dst_offset * 15,
            "e2e_crc": self.e2e_crc,
        }


@dataclass(frozen=True, slots=True)
class CgmSessionRunTime(Measurement):
    """CGM Session Run Time, 0x2AAB: the hours a session is expected to run."""

    UUID: ClassVar[int] = 0x2AAB
    hours: int
    e2e_crc: bool = False

    def __post_init__(self) -> None:
        check_uint("hours", self.hours, 16, optional=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2AAB read (2 bytes, or 4 with E2E-CRC)."""
        r = Reader("2AAB", data)
        hours = r.u16("CGM Session Run Time")
        crc = r.remaining == _CRC
        if crc:
            _check_crc(r, data[:2])
        r.finish()
        return cls(hours, crc)

    def __bytes__(self) -> bytes:
        return _with_crc(U16.pack(self.hours), self.e2e_crc)

    def as_dict(self) -> dict[str, JSONValue]:
        """The run time in hours."""
        return {"run_time_h": self.hours, "e2e_crc": self.e2e_crc}


class CgmOpCode(enum.IntEnum):
    """CGM Specific Ops Control Point op codes."""

    SET_COMMUNICATION_INTERVAL = 1
    GET_COMMUNICATION_INTERVAL = 2
    COMMUNICATION_INTERVAL_RESPONSE = 3
    SET_CALIBRATION_VALUE = 4
    GET_CALIBRATION_VALUE = 5
    CALIBRATION_VALUE_RESPONSE = 6
    SET_PATIENT_HIGH_ALERT = 7
    GET_PATIENT_HIGH_ALERT = 8
    PATIENT_HIGH_ALERT_RESPONSE = 9
    SET_PATIENT_LOW_ALERT = 10
    GET_PATIENT_LOW_ALERT = 11
    PATIENT_LOW_ALERT_RESPONSE = 12
    SET_HYPO_ALERT = 13
    GET_HYPO_ALERT = 14
    HYPO_ALERT_RESPONSE = 15
    SET_HYPER_ALERT = 16
    GET_HYPER_ALERT = 17
    HYPER_ALERT_RESPONSE = 18
    SET_RATE_OF_DECREASE_ALERT = 19
    GET_RATE_OF_DECREASE_ALERT = 20
    RATE_OF_DECREASE_ALERT_RESPONSE = 21
    SET_RATE_OF_INCREASE_ALERT = 22
    GET_RATE_OF_INCREASE_ALERT = 23
    RATE_OF_INCREASE_ALERT_RESPONSE = 24
    RESET_DEVICE_SPECIFIC_ALERT = 25
    START_SESSION = 26
    STOP_SESSION = 27
    RESPONSE_CODE = 28


class CgmResponseCode(enum.IntEnum):
    """Response codes of op code 28 (request op code, then this)."""

    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERAND = 3
    PROCEDURE_NOT_COMPLETED = 4
    PARAMETER_OUT_OF_RANGE = 5


# Operand length by op code: an interval (uint8 minutes), a calibration record (10 bytes: SFLOAT value, uint16 time,
# type/location nibbles, uint16 next calibration, uint16 record number, uint8 status), a record number (uint16), an
# alert level (SFLOAT), a response (request op code, response code), or nothing.
_OPERAND: Final[dict[CgmOpCode, int]] = {
    CgmOpCode.SET_COMMUNICATION_INTERVAL: 1,
    CgmOpCode.COMMUNICATION_INTERVAL_RESPONSE: 1,
    CgmOpCode.SET_CALIBRATION_VALUE: 10,
    CgmOpCode.GET_CALIBRATION_VALUE: 2,
    CgmOpCode.CALIBRATION_VALUE_RESPONSE: 10,
    **{op: 2 for op in CgmOpCode if op.name.startswith("SET_") and op.name.endswith("_ALERT")},
    **{op: 2 for op in CgmOpCode if op.name.endswith("_ALERT_RESPONSE")},
    CgmOpCode.RESPONSE_CODE: 2,
}


@dataclass(frozen=True, slots=True)
class CgmSpecificOpsControlPoint(Measurement):
    """CGM Specific Ops Control Point, 0x2AAC: an op code, its operand (length fixed by the op code) and an optional
    E2E-CRC. The operand is kept as bytes; :meth:`as_dict` reads the response code of op code 28."""

    UUID: ClassVar[int] = 0x2AAC
    op_code: CgmOpCode
    operand: bytes = b""
    e2e_crc: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.op_code, CgmOpCode):
            raise EncodeError(f"op_code must be a CgmOpCode, not {self.op_code!r}")
        want = _OPERAND.get(self.op_code, 0)
        if not isinstance(self.operand, bytes) or len(self.operand) != want:
            raise EncodeError(f"op code {self.op_code.name} takes a {want}-byte operand, not {self.operand!r}")

    @classmethod
    def response(cls, request: CgmOpCode, code: CgmResponseCode, *, e2e_crc: bool = False) -> Self:
        """The sensor's answer to `request`."""
        return cls(CgmOpCode.RESPONSE_CODE, bytes([request, code]), e2e_crc)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2AAC write or indication."""
        r = Reader("2AAC", data)
        at = r.pos
        raw = r.u8("Op Code")
        try:
            op = CgmOpCode(raw)
        except ValueError:
            raise r.fail(f"op code {raw} is reserved", at) from None
        length = _OPERAND.get(op, 0)
        if r.remaining < length:
            raise r.fail(f"{op.name} needs a {length}-byte operand, {r.remaining} left")
        operand = data[r.pos : r.pos + length]
        r.unpack(struct.Struct(f"<{length}s"), "Operand")
        crc = r.remaining == _CRC
        if crc:
            _check_crc(r, data[: 1 + length])
        r.finish()
        return cls(op, operand, crc)

    def __bytes__(self) -> bytes:
        return _with_crc(U8.pack(self.op_code) + self.operand, self.e2e_crc)

    def as_dict(self) -> dict[str, JSONValue]:
        """The op code's name, the operand (hex) and, for a response, the request and the response code's names."""
        out: dict[str, JSONValue] = {
            "op_code": self.op_code.name.lower(),
            "operand": self.operand.hex(),
            "e2e_crc": self.e2e_crc,
        }
        if self.op_code is CgmOpCode.RESPONSE_CODE:
            request, code = self.operand
            out["request_op_code"] = enum_name(CgmOpCode, request) or request
            out["response_code"] = enum_name(CgmResponseCode, code) or code
        return out
