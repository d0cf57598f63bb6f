"""The Bluetooth SIG Date Time value (org.bluetooth.characteristic.date_time, 0x2A08), 7 bytes.

It is embedded in Blood Pressure, Glucose, PLX, Temperature, Weight and Current Time, and in RACP user-facing-time
filters. Local time, no zone. A year, month or day of 0 means "not known"; :meth:`DateTime.iso` keeps those zeros
as the device sent them (``0000-04-17T20:41:59``) and :meth:`DateTime.to_datetime` returns ``None`` for them.

Interpretation: besides the per-field ranges of the XML (year 1582..9999, month 1..12, day 1..31, hours 0..23,
minutes 0..59, seconds 0..59), a day the calendar does not have (30 February, 31 April; 29 February outside a leap
year when the year is known) is rejected too.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import struct
from dataclasses import dataclass
from typing import Final, Self

from protocols.errors import DecodeError, EncodeError

__all__ = ["DATE_TIME", "DateTime"]

# year uint16 | month uint8 | day uint8 | hours uint8 | minutes uint8 | seconds uint8  (little-endian, 7 bytes)
DATE_TIME: Final = struct.Struct("<HBBBBB")


def _problem(fields: tuple[int, ...]) -> str | None:
    year, month, day, hours, minutes, seconds = fields
    if year != 0 and not 1582 <= year <= 9999:
        return f"year {year} outside 1582..9999 (0 = unknown)"
    if not 0 <= month <= 12:
        return f"month {month} outside 1..12 (0 = unknown)"
    if not 0 <= day <= 31:
        return f"day {day} outside 1..31 (0 = unknown)"
    if not 0 <= hours <= 23:
        return f"hours {hours} outside 0..23"
    if not 0 <= minutes <= 59:
        return f"minutes {minutes} outside 0..59"
    if not 0 <= seconds <= 59:
        return f"seconds {seconds} outside 0..59"
    if month and day:
        # An unknown year (0) allows 29 February: 2000 is a leap year.
        last = calendar.monthrange(year or 2000, month)[1]
        if day > last:
            return f"day {day} does not exist in month {month} of year {year}"
    return None


@dataclass(frozen=True, slots=True)
class DateTime:
    """A GATT Date Time (GATT Specification Supplement §3.70, former org.bluetooth.characteristic.date_time).

    ``year``, ``month`` and ``day`` may be 0 ("not known").
    """

    year: int
    month: int
    day: int
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        fields = (self.year, self.month, self.day, self.hours, self.minutes, self.seconds)
        if any(type(v) is not int for v in fields):
            raise EncodeError("DateTime components must be int")
        problem = _problem(fields)
        if problem is not None:
            raise EncodeError(problem)

    @classmethod
    def unpack_from(cls, data: bytes, offset: int = 0, *, what: str = "2A08") -> Self:
        """Read 7 bytes at ``offset``.

        Raises:
            DecodeError: too few bytes or an out-of-range component, naming ``what`` and the offset.
        """
        if len(data) - offset < DATE_TIME.size:
            raise DecodeError(what, offset, f"Date Time needs {DATE_TIME.size} bytes, {len(data) - offset} left")
        fields = DATE_TIME.unpack_from(data, offset)
        problem = _problem(fields)
        if problem is not None:
            raise DecodeError(what, offset, f"invalid Date Time: {problem}")
        return cls(*fields)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Exactly 7 bytes.

        Raises:
            DecodeError: wrong length or an out-of-range component.
        """
        if len(data) != DATE_TIME.size:
            raise DecodeError("2A08", min(len(data), DATE_TIME.size), f"Date Time is 7 bytes, got {len(data)}")
        return cls.unpack_from(data)

    @classmethod
    def from_datetime(cls, value: _dt.datetime) -> Self:
        """The components of a naive or aware datetime as it reads (its zone is dropped, sub-seconds truncated)."""
        return cls(value.year, value.month, value.day, value.hour, value.minute, value.second)

    def __bytes__(self) -> bytes:
        return DATE_TIME.pack(self.year, self.month, self.day, self.hours, self.minutes, self.seconds)

    @property
    def is_complete(self) -> bool:
        """True when year, month and day are all known."""
        return bool(self.year and self.month and self.day)

    def to_datetime(self) -> _dt.datetime | None:
        """A naive local datetime, or None when the year, month or day is unknown."""
        if not self.is_complete:
            return None
        return _dt.datetime(self.year, self.month, self.day, self.hours, self.minutes, self.seconds)  # noqa: DTZ001  device local time has no zone

    def iso(self) -> str:
        """``YYYY-MM-DDTHH:MM:SS`` exactly as reported, unknown components as zeros."""
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}T{self.hours:02d}:{self.minutes:02d}:{self.seconds:02d}"

    def __str__(self) -> str:
        return self.iso()
