"""Heart Rate Measurement, 0x2A37 (Heart Rate Service 1.0 §3.1 and the former SIG characteristic XML)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, Self

from protocols.errors import EncodeError
from protocols.gatt.common import U8, U16, JSONValue, Measurement, Reader, check_uint, decoding

__all__ = ["HeartRateMeasurement"]

_UINT16_FORMAT: Final = 0x01
_CONTACT_SUPPORTED: Final = 0x04
_CONTACT_DETECTED: Final = 0x02
_ENERGY: Final = 0x08
_RR: Final = 0x10
_KNOWN_FLAGS: Final = 0x1F  # bits 5-7 are RFU


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement(Measurement):
    """Heart Rate Measurement, 0x2A37 (HRS 1.0 §3.1).

    Layout: ``flags uint8 | heart rate uint8 or uint16 | [energy expended uint16 kJ] | [RR-interval uint16 x n,
    1/1024 s, oldest first]``.

    ``sensor_contact`` is None when the feature is not supported (flag values 0 and 1; the encoder writes 0), False
    when supported but not detected (2), True when detected (3). ``uint16_format`` records the heart-rate field width
    so that re-encoding gives the same bytes. ``rr_intervals`` is None when the flag is clear, else the raw
    1/1024 s units (possibly empty). RFU flag bits (5-7) are refused (``decode_tolerant`` ignores
    them) and never emitted.
    """

    UUID: ClassVar[int] = 0x2A37
    heart_rate: int
    sensor_contact: bool | None = None
    energy_expended: int | None = None
    rr_intervals: tuple[int, ...] | None = None
    uint16_format: bool = False

    def __post_init__(self) -> None:
        check_uint("heart_rate", self.heart_rate, 16 if self.uint16_format else 8, optional=False)
        if self.sensor_contact is not None and not isinstance(self.sensor_contact, bool):
            raise EncodeError("sensor_contact must be a bool or None")
        check_uint("energy_expended", self.energy_expended, 16)
        if self.rr_intervals is not None:
            if not isinstance(self.rr_intervals, tuple):
                raise EncodeError("rr_intervals must be a tuple")
            for interval in self.rr_intervals:
                check_uint("rr_interval", interval, 16, optional=False)
        if not isinstance(self.uint16_format, bool):
            raise EncodeError("uint16_format must be a bool")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A37 notification."""
        r = Reader("2A37", data)
        flags = r.flags(_KNOWN_FLAGS)
        wide = bool(flags & _UINT16_FORMAT)
        rate = r.u16("Heart Rate Measurement Value") if wide else r.u8("Heart Rate Measurement Value")
        contact = bool(flags & _CONTACT_DETECTED) if flags & _CONTACT_SUPPORTED else None
        energy = r.u16("Energy Expended") if flags & _ENERGY else None
        intervals: tuple[int, ...] | None = None
        if flags & _RR:
            if r.remaining % 2:
                raise r.fail(f"RR-Interval list has an odd length ({r.remaining} bytes)")
            intervals = tuple(r.u16("RR-Interval") for _ in range(r.remaining // 2))
        r.finish()
        with decoding("2A37"):
            return cls(rate, contact, energy, intervals, wide)

    def __bytes__(self) -> bytes:
        contact = 0 if self.sensor_contact is None else _CONTACT_SUPPORTED | (_CONTACT_DETECTED * self.sensor_contact)
        flags = (
            (_UINT16_FORMAT if self.uint16_format else 0)
            | contact
            | (_ENERGY if self.energy_expended is not None else 0)
            | (_RR if self.rr_intervals is not None else 0)
        )
        out = bytearray(U8.pack(flags))
        out += U16.pack(self.heart_rate) if self.uint16_format else U8.pack(self.heart_rate)
        if self.energy_expended is not None:
            out += U16.pack(self.energy_expended)
        for interval in self.rr_intervals or ():
            out += U16.pack(interval)
        return bytes(out)

    @property
    def bpm(self) -> float:
        """The heart rate in beats per minute."""
        return float(self.heart_rate)

    @property
    def skin_contact_lost(self) -> bool:
        """True when the sensor supports contact detection and reports no contact (the HR is not trustworthy)."""
        return self.sensor_contact is False

    @property
    def rr_intervals_s(self) -> tuple[float, ...] | None:
        """RR intervals in seconds."""
        return None if self.rr_intervals is None else tuple(i / 1024 for i in self.rr_intervals)

    def as_dict(self) -> dict[str, JSONValue]:
        """``heart_rate``, ``sensor_contact``, ``energy_expended`` (kJ), ``rr_intervals`` (seconds)."""
        seconds = self.rr_intervals_s
        return {
            "heart_rate": self.heart_rate,
            "sensor_contact": self.sensor_contact,
            "energy_expended": self.energy_expended,
            "rr_intervals": None if seconds is None else list(seconds),
        }
