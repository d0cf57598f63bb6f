"""Shared pieces of the GATT codecs, and the three generic characteristics: Battery Level (0x2A19), Current Time
(0x2A2B) and Date Time (0x2A08).

Every decoder reads through :class:`Reader`, which bounds-checks each field and raises
:class:`~protocols.errors.DecodeError` naming the characteristic, the offset and the field; ``struct.error`` and
``IndexError`` cannot escape it.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as _dt
import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self, TypeAlias, TypeVar

from protocols.datetime_ import DateTime
from protocols.errors import DecodeError, EncodeError
from protocols.ieee11073 import MderFloat, MderSpecial, decode_float, decode_sfloat, encode_float, encode_sfloat

__all__ = [
    "BatteryLevel",
    "CurrentTime",
    "DateTimeCharacteristic",
    "DayOfWeek",
    "JSONValue",
    "Measurement",
    "Reader",
    "RfuFlagsError",
    "TrailingBytesError",
]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None

U8: Final = struct.Struct("<B")
U16: Final = struct.Struct("<H")
S16: Final = struct.Struct("<h")
U24: Final = struct.Struct("<HB")  # low 16 bits | high 8 bits
U32: Final = struct.Struct("<I")

_E = TypeVar("_E", bound=enum.IntEnum)


class TrailingBytesError(DecodeError):
    """Bytes after the last field the flags call for (padding, as some meters send): the strict decoders refuse
    them; :func:`protocols.gatt.decode_tolerant` decodes the value without them and says so.

    Attributes:
        end: the offset where the value the flags describe ends (where the padding starts).
        count: how many bytes follow it.
    """

    def __init__(self, what: str, end: int, count: int) -> None:
        self.end = end
        self.count = count
        super().__init__(what, end, f"{count} trailing byte(s) after the last field")


class RfuFlagsError(DecodeError):
    """Flag bits the specification reserves (RFU) are set: the strict decoders refuse them;
    :func:`protocols.gatt.decode_tolerant` ignores them (they select no field) and says so.

    Attributes:
        bits: the reserved bits that were set (a mask of the Flags byte).
        at: the offset of the Flags byte (0, except where a size field comes first, as in CGM Measurement).
    """

    def __init__(self, what: str, bits: int, at: int = 0) -> None:
        self.bits = bits
        self.at = at
        super().__init__(what, at, f"reserved (RFU) flag bits 0x{bits:02X} are set")


class Measurement(abc.ABC):
    """What :func:`protocols.gatt.decode` returns: a typed, frozen value of one SIG characteristic.

    Subclasses are ``@dataclass(frozen=True, slots=True)`` classes with ``UUID``, ``from_bytes``, ``__bytes__`` and
    ``as_dict``.
    """

    __slots__ = ()

    UUID: ClassVar[int]

    @classmethod
    @abc.abstractmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode one notification, indication or read value; raises only ``DecodeError``."""

    @abc.abstractmethod
    def __bytes__(self) -> bytes:
        """The value as the peripheral sends it."""

    @abc.abstractmethod
    def as_dict(self) -> dict[str, JSONValue]:
        """JSON-ready values under the field names documented in ``protocols/README.md``."""

    @classmethod
    def uuid_hex(cls) -> str:
        """The 16-bit UUID as four upper-case hex digits, e.g. ``"2A35"``."""
        return f"{cls.UUID:04X}"


class FeatureBits(Measurement):
    """A feature characteristic: one unsigned bit field read from the peripheral, kept verbatim (RFU bits included).

    Subclasses are frozen dataclasses declaring ``features: int`` and set ``UUID``, ``_NAME`` (used in errors),
    ``_LAYOUT`` (``U16`` or ``U32``) and, where the profile names the bits, ``_BITS`` and ``_KNOWN`` (the mask of named
    bits) for :attr:`flags` and the ``feature_names`` of :meth:`as_dict`.
    """

    __slots__ = ()

    features: int
    _NAME: ClassVar[str]
    _LAYOUT: ClassVar[struct.Struct] = U16
    _BITS: ClassVar[type[enum.IntFlag] | None] = None
    _KNOWN: ClassVar[int] = 0

    def __post_init__(self) -> None:
        check_uint("features", self.features, 8 * self._LAYOUT.size, optional=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly the field's width."""
        r = Reader(cls.uuid_hex(), data)
        (features,) = r.unpack(cls._LAYOUT, cls._NAME)
        r.finish()
        return cls(features)  # type: ignore[call-arg]  # subclasses are dataclasses whose one field is `features`

    def __bytes__(self) -> bytes:
        return self._LAYOUT.pack(self.features)

    def as_dict(self) -> dict[str, JSONValue]:
        """``features`` (raw int), and ``feature_names`` where the profile names the bits."""
        out: dict[str, JSONValue] = {"features": self.features}
        if self._BITS is not None:
            out["feature_names"] = [f.name.lower() for f in self._BITS if f & self.features and f.name]
        return out


class Reader:
    """A bounds-checked cursor over untrusted bytes of one characteristic."""

    __slots__ = ("_data", "_pos", "what")

    def __init__(self, what: str, data: bytes) -> None:
        self.what = what
        self._data = bytes(data)
        self._pos = 0

    @property
    def pos(self) -> int:
        """The offset of the next unread byte."""
        return self._pos

    @property
    def remaining(self) -> int:
        """How many bytes are left."""
        return len(self._data) - self._pos

    def fail(self, reason: str, offset: int | None = None) -> DecodeError:
        """A DecodeError for this characteristic at ``offset`` (default: the cursor)."""
        return DecodeError(self.what, self._pos if offset is None else offset, reason)

    def unpack(self, layout: struct.Struct, field: str) -> tuple[Any, ...]:
        """Read one fixed-size layout."""
        if self.remaining < layout.size:
            raise self.fail(f"{field} needs {layout.size} byte(s), {self.remaining} left")
        values = layout.unpack_from(self._data, self._pos)
        self._pos += layout.size
        return values

    def u8(self, field: str) -> int:
        """An unsigned byte."""
        return int(self.unpack(U8, field)[0])

    def u16(self, field: str) -> int:
        """A little-endian uint16."""
        return int(self.unpack(U16, field)[0])

    def s16(self, field: str) -> int:
        """A little-endian sint16."""
        return int(self.unpack(S16, field)[0])

    def u24(self, field: str) -> int:
        """A little-endian uint24."""
        low, high = self.unpack(U24, field)
        return int(low) | int(high) << 16

    def u32(self, field: str) -> int:
        """A little-endian uint32."""
        return int(self.unpack(U32, field)[0])

    def sfloat(self, field: str) -> MderFloat:
        """An SFLOAT; the reserved word and ambiguous words are rejected."""
        at = self._pos
        value = decode_sfloat(self.u16(field), what=self.what, offset=at)
        if value.special is MderSpecial.RESERVED:
            raise self.fail(f"{field} holds the reserved SFLOAT word 0x0801", at)
        return value

    def float32(self, field: str) -> MderFloat:
        """A 32-bit FLOAT; the reserved word and ambiguous words are rejected."""
        at = self._pos
        value = decode_float(self.u32(field), what=self.what, offset=at)
        if value.special is MderSpecial.RESERVED:
            raise self.fail(f"{field} holds the reserved FLOAT word 0x00800001", at)
        return value

    def date_time(self, field: str) -> DateTime:
        """A 7-byte Date Time."""
        if self.remaining < 7:
            raise self.fail(f"{field} needs 7 bytes, {self.remaining} left")
        value = DateTime.unpack_from(self._data, self._pos, what=self.what)
        self._pos += 7
        return value

    def flags(self, known: int) -> int:
        """The Flags byte (the first one); raises :class:`RfuFlagsError` when a bit outside ``known`` is set."""
        at = self._pos
        value = self.u8("Flags")
        reserved = value & ~known & 0xFF
        if reserved:
            if at:
                raise self.fail("Flags are not the first byte", at)  # a decoder bug, never the device's
            raise RfuFlagsError(self.what, reserved)
        return value

    def rest(self) -> bytes:
        """Everything not yet read."""
        value = self._data[self._pos :]
        self._pos = len(self._data)
        return value

    def finish(self) -> None:
        """Raise unless every byte has been read (the layout is fixed by the flags)."""
        if self.remaining:
            raise TrailingBytesError(self.what, self._pos, self.remaining)


@contextlib.contextmanager
def decoding(what: str) -> Iterator[None]:
    """Turn an invariant violated by decoded values (``EncodeError``) into a ``DecodeError`` for ``what``."""
    try:
        yield
    except EncodeError as exc:
        raise DecodeError(what, None, str(exc)) from None


def enum_or_int(enum_type: type[_E], value: int) -> _E | int:
    """The enum member for ``value``, or the raw int for values the spec reserves (RFU)."""
    try:
        return enum_type(value)
    except ValueError:
        return value


def enum_name(enum_type: type[_E], value: int | None) -> str | None:
    """The lower-case member name for ``value``; None when absent or not a known member."""
    if value is None:
        return None
    member = enum_or_int(enum_type, value)
    return member.name.lower() if isinstance(member, enum_type) else None


def check_uint(name: str, value: int | None, bits: int, *, optional: bool = True) -> None:
    """Raise EncodeError unless ``value`` is an int in ``0..2**bits-1`` (or None when optional)."""
    if value is None:
        if optional:
            return
        raise EncodeError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise EncodeError(f"{name}={value!r} is not a uint{bits}")


def check_sfloat(name: str, value: MderFloat | None, *, optional: bool = True, sfloat: bool = True) -> None:
    """Raise EncodeError unless ``value`` is an MderFloat that the format can carry (never the reserved word)."""
    if value is None:
        if optional:
            return
        raise EncodeError(f"{name} is required")
    if not isinstance(value, MderFloat):
        raise EncodeError(f"{name} must be an MderFloat, not {type(value).__name__}")
    if value.special is MderSpecial.RESERVED:
        raise EncodeError(f"{name} must not be the reserved IEEE-11073 value")
    if sfloat:
        encode_sfloat(value)
    else:
        encode_float(value)


def check_date_time(name: str, value: DateTime | None) -> None:
    """Raise EncodeError unless ``value`` is a DateTime or None."""
    if value is not None and not isinstance(value, DateTime):
        raise EncodeError(f"{name} must be a DateTime, not {type(value).__name__}")


def num(value: MderFloat | None) -> JSONValue:
    """The JSON form of an optional IEEE-11073 number."""
    return None if value is None else value.to_json()


def iso(value: DateTime | None) -> str | None:
    """The JSON form of an optional Date Time."""
    return None if value is None else value.iso()


def sfloat_bytes(value: MderFloat) -> bytes:
    """Two little-endian bytes of an SFLOAT."""
    return U16.pack(encode_sfloat(value))


def float32_bytes(value: MderFloat) -> bytes:
    """Four little-endian bytes of a FLOAT."""
    return U32.pack(encode_float(value))


def u24_bytes(value: int) -> bytes:
    """Three little-endian bytes."""
    return U24.pack(value & 0xFFFF, value >> 16)


# ---------------------------------------------------------------------------------------------------------------
# Battery Level 0x2A19


@dataclass(frozen=True, slots=True)
class BatteryLevel(Measurement):
    """Battery Level (Battery Service 1.0 §3.1; GSS §3.27): one uint8, 0..100 %.

    Values above 100 are reserved; this decoder rejects them, and any length other than 1.
    """

    UUID: ClassVar[int] = 0x2A19
    battery_level: int

    def __post_init__(self) -> None:
        check_uint("battery_level", self.battery_level, 8, optional=False)
        if self.battery_level > 100:
            raise EncodeError(f"battery_level {self.battery_level} above 100 %")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode one byte."""
        r = Reader("2A19", data)
        level = r.u8("Battery Level")
        r.finish()
        if level > 100:
            raise r.fail(f"battery level {level} above 100 % is reserved", 0)
        return cls(level)

    def __bytes__(self) -> bytes:
        return U8.pack(self.battery_level)

    def as_dict(self) -> dict[str, JSONValue]:
        """``battery_level`` in percent."""
        return {"battery_level": self.battery_level}


# ---------------------------------------------------------------------------------------------------------------
# Date Time 0x2A08


@dataclass(frozen=True, slots=True)
class DateTimeCharacteristic(Measurement):
    """Date Time (GSS §3.70, org.bluetooth.characteristic.date_time): one 7-byte :class:`DateTime`."""

    UUID: ClassVar[int] = 0x2A08
    timestamp: DateTime

    def __post_init__(self) -> None:
        if not isinstance(self.timestamp, DateTime):
            raise EncodeError("timestamp must be a DateTime")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly 7 bytes."""
        r = Reader("2A08", data)
        value = r.date_time("Date Time")
        r.finish()
        return cls(value)

    def __bytes__(self) -> bytes:
        return bytes(self.timestamp)

    @property
    def device_time(self) -> _dt.datetime | None:
        """The reported time as a naive datetime, None when a date component is unknown."""
        return self.timestamp.to_datetime()

    def as_dict(self) -> dict[str, JSONValue]:
        """``timestamp`` as ``YYYY-MM-DDTHH:MM:SS``."""
        return {"timestamp": self.timestamp.iso()}


# ---------------------------------------------------------------------------------------------------------------
# Current Time 0x2A2B


class DayOfWeek(enum.IntEnum):
    """Day of Week (GSS §3.72): 0 = unknown, 1 = Monday .. 7 = Sunday; 8..255 RFU (kept as int)."""

    UNKNOWN = 0
    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7


class AdjustReason(enum.IntFlag):
    """Adjust Reason bits of Current Time (GSS §3.63); bits 4..7 RFU."""

    MANUAL_TIME_UPDATE = 0x01
    EXTERNAL_REFERENCE_TIME_UPDATE = 0x02
    CHANGE_OF_TIME_ZONE = 0x04
    CHANGE_OF_DST = 0x08


@dataclass(frozen=True, slots=True)
class CurrentTime(Measurement):
    """Current Time (Current Time Service 1.1 §3.1; GSS §3.62), 10 bytes.

    Layout: ``Date Time (7) | Day of Week uint8 | Fractions256 uint8 | Adjust Reason uint8``. The day of week is
    transmitted, never computed on decode; ``adjust_reason`` is kept verbatim (RFU bits included).
    """

    UUID: ClassVar[int] = 0x2A2B
    timestamp: DateTime
    day_of_week: DayOfWeek | int = DayOfWeek.UNKNOWN
    fractions256: int = 0
    adjust_reason: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.timestamp, DateTime):
            raise EncodeError("timestamp must be a DateTime")
        check_uint("day_of_week", self.day_of_week, 8, optional=False)
        check_uint("fractions256", self.fractions256, 8, optional=False)
        check_uint("adjust_reason", self.adjust_reason, 8, optional=False)

    # Date Time (7) | day of week uint8 | fractions256 uint8 | adjust reason uint8
    _TAIL: ClassVar[struct.Struct] = struct.Struct("<BBB")

    @classmethod
    def from_datetime(cls, value: _dt.datetime, *, adjust_reason: int = 0) -> Self:
        """The wall-clock reading of ``value`` (its zone is dropped), with the day of week it falls on."""
        return cls(
            DateTime.from_datetime(value),
            DayOfWeek(value.isoweekday()),
            value.microsecond * 256 // 1_000_000,
            adjust_reason,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode exactly 10 bytes."""
        r = Reader("2A2B", data)
        timestamp = r.date_time("Date Time")
        day, fractions, reason = r.unpack(cls._TAIL, "Day of Week, Fractions256 and Adjust Reason")
        r.finish()
        return cls(timestamp, enum_or_int(DayOfWeek, day), fractions, reason)

    def __bytes__(self) -> bytes:
        return bytes(self.timestamp) + self._TAIL.pack(self.day_of_week, self.fractions256, self.adjust_reason)

    @property
    def device_time(self) -> _dt.datetime | None:
        """The device's clock as a naive datetime (fractions included), None when a date component is unknown."""
        base = self.timestamp.to_datetime()
        if base is None:
            return None
        return base + _dt.timedelta(microseconds=self.fractions256 * 1_000_000 // 256)

    @property
    def datetime(self) -> _dt.datetime | None:
        """Same as :attr:`device_time`."""
        return self.device_time

    def as_dict(self) -> dict[str, JSONValue]:
        """``timestamp``, ``day_of_week`` (int), ``fractions256``, ``adjust_reason`` (int)."""
        return {
            "timestamp": self.timestamp.iso(),
            "day_of_week": int(self.day_of_week),
            "day_of_week_name": enum_name(DayOfWeek, self.day_of_week),
            "fractions256": self.fractions256,
            "adjust_reason": self.adjust_reason,
        }
