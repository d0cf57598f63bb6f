"""Pulse Oximeter Profile characteristics: PLX Spot-check Measurement (0x2A5E), PLX Continuous Measurement (0x2A5F)
and PLX Features (0x2A60), per Pulse Oximeter Service 1.0 §3.1-3.3 and the former SIG characteristic XMLs.

Measurement Status (uint16) and Device and Sensor Status (uint24) are kept as raw ints, RFU bits included; the
named bits are in :class:`PlxMeasurementStatus` and :class:`PlxDeviceSensorStatus`.
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
    JSONValue,
    Measurement,
    Reader,
    check_date_time,
    check_sfloat,
    check_uint,
    decoding,
    num,
    sfloat_bytes,
    u24_bytes,
)
from protocols.ieee11073 import MderFloat

__all__ = [
    "PlxContinuousMeasurement",
    "PlxDeviceSensorStatus",
    "PlxFeatures",
    "PlxMeasurementStatus",
    "PlxSpotCheckMeasurement",
    "PlxSupportedFeatures",
]


class PlxMeasurementStatus(enum.IntFlag):
    """PLX Measurement Status bits (PLXS 1.0 §3.1.1.4); bits 0..4 RFU."""

    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATED_DATA = 1 << 6
    VALIDATED_DATA = 1 << 7
    FULLY_QUALIFIED_DATA = 1 << 8
    DATA_FROM_MEASUREMENT_STORAGE = 1 << 9
    DATA_FOR_DEMONSTRATION = 1 << 10
    DATA_FOR_TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    MEASUREMENT_UNAVAILABLE = 1 << 13
    QUESTIONABLE_MEASUREMENT = 1 << 14
    INVALID_MEASUREMENT = 1 << 15


class PlxDeviceSensorStatus(enum.IntFlag):
    """PLX Device and Sensor Status bits (PLXS 1.0 §3.1.1.5); bits 16..23 RFU."""

    EXTENDED_DISPLAY_UPDATE_ONGOING = 1 << 0
    EQUIPMENT_MALFUNCTION_DETECTED = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY = 1 << 2
    INADEQUATE_SIGNAL = 1 << 3
    POOR_SIGNAL = 1 << 4
    LOW_PERFUSION = 1 << 5
    ERRATIC_SIGNAL = 1 << 6
    NON_PULSATILE_SIGNAL = 1 << 7
    QUESTIONABLE_PULSE = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE = 1 << 10
    SENSOR_UNCONNECTED_TO_USER = 1 << 11
    UNKNOWN_SENSOR_CONNECTED = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


class PlxSupportedFeatures(enum.IntFlag):
    """PLX Features, Supported Features bits (PLXS 1.0 §3.3); bits 8..15 RFU."""

    MEASUREMENT_STATUS_SUPPORT_PRESENT = 1 << 0
    DEVICE_SENSOR_STATUS_SUPPORT_PRESENT = 1 << 1
    SPOT_CHECK_MEASUREMENT_STORAGE = 1 << 2
    SPOT_CHECK_TIMESTAMP = 1 << 3
    SPO2PR_FAST = 1 << 4
    SPO2PR_SLOW = 1 << 5
    PULSE_AMPLITUDE_INDEX = 1 << 6
    MULTIPLE_BONDS = 1 << 7


# ../shared/thresholds.md §3 BLE note: measurement status bits 13 (unavailable), 14 (questionable), 15 (invalid);
# device and sensor status bits 5 (low perfusion), 13 (sensor displaced), 15 (sensor disconnected).
UNRELIABLE_MEASUREMENT_STATUS: Final = (
    PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE
    | PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT
    | PlxMeasurementStatus.INVALID_MEASUREMENT
)
UNRELIABLE_DEVICE_STATUS: Final = (
    PlxDeviceSensorStatus.LOW_PERFUSION
    | PlxDeviceSensorStatus.SENSOR_DISPLACED
    | PlxDeviceSensorStatus.SENSOR_DISCONNECTED
)


def _unreliable(measurement_status: int | None, device_status: int | None) -> bool:
    return bool((measurement_status or 0) & UNRELIABLE_MEASUREMENT_STATUS) or bool(
        (device_status or 0) & UNRELIABLE_DEVICE_STATUS
    )


def _status_dict(
    measurement_status: int | None, device_status: int | None, pai: MderFloat | None
) -> dict[str, JSONValue]:
    return {
        "measurement_status": measurement_status,
        "device_and_sensor_status": device_status,
        "pulse_amplitude_index": num(pai),
        "is_unreliable": _unreliable(measurement_status, device_status),
    }


def _check_status(measurement_status: int | None, device_status: int | None, pai: MderFloat | None) -> None:
    check_uint("measurement_status", measurement_status, 16)
    check_uint("device_and_sensor_status", device_status, 24)
    check_sfloat("pulse_amplitude_index", pai)


# Both PLX measurements end with the same three optional fields, each present when its flag bit is set (PLXS 1.0
# §3.1.1.4-6 and §3.2.1.4-6): ``[measurement status uint16] | [device and sensor status uint24] | [PAI SFLOAT]``.
_Status = tuple[int | None, int | None, MderFloat | None]


def _read_status(r: Reader, flags: int, status_bit: int, device_bit: int, pai_bit: int) -> _Status:
    status = r.u16("Measurement Status") if flags & status_bit else None
    device = r.u24("Device and Sensor Status") if flags & device_bit else None
    pai = r.sfloat("Pulse Amplitude Index") if flags & pai_bit else None
    return status, device, pai


def _status_bytes(measurement_status: int | None, device_status: int | None, pai: MderFloat | None) -> bytes:
    return (
        (b"" if measurement_status is None else U16.pack(measurement_status))
        + (b"" if device_status is None else u24_bytes(device_status))
        + (b"" if pai is None else sfloat_bytes(pai))
    )


_SC_TIMESTAMP: Final = 0x01
_SC_STATUS: Final = 0x02
_SC_DEVICE: Final = 0x04
_SC_PAI: Final = 0x08
_SC_CLOCK_NOT_SET: Final = 0x10
_SC_KNOWN: Final = 0x1F  # bits 5-7 are RFU


@dataclass(frozen=True, slots=True)
class PlxSpotCheckMeasurement(Measurement):
    """PLX Spot-check Measurement, 0x2A5E (PLXS 1.0 §3.1; 5..19 bytes).

    Layout: ``flags uint8 | SpO2 SFLOAT % | PR SFLOAT bpm | [Date Time (7)] | [measurement status uint16]
    | [device and sensor status uint24] | [pulse amplitude index SFLOAT %]``. Flags bit 4 "device clock not set" is
    kept in ``device_clock_not_set``; RFU flag bits (5-7) are refused (``decode_tolerant`` ignores them) and
    never emitted.
    """

    UUID: ClassVar[int] = 0x2A5E
    spo2: MderFloat
    pulse_rate: MderFloat
    timestamp: DateTime | None = None
    measurement_status: int | None = None
    device_and_sensor_status: int | None = None
    pulse_amplitude_index: MderFloat | None = None
    device_clock_not_set: bool = False

    def __post_init__(self) -> None:
        check_sfloat("spo2", self.spo2, optional=False)
        check_sfloat("pulse_rate", self.pulse_rate, optional=False)
        check_date_time("timestamp", self.timestamp)
        _check_status(self.measurement_status, self.device_and_sensor_status, self.pulse_amplitude_index)
        if not isinstance(self.device_clock_not_set, bool):
            raise EncodeError("device_clock_not_set must be a bool")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A5E indication."""
        r = Reader("2A5E", data)
        flags = r.flags(_SC_KNOWN)
        spo2 = r.sfloat("SpO2")
        pulse = r.sfloat("PR")
        timestamp = r.date_time("Timestamp") if flags & _SC_TIMESTAMP else None
        status, device, pai = _read_status(r, flags, _SC_STATUS, _SC_DEVICE, _SC_PAI)
        r.finish()
        with decoding("2A5E"):
            return cls(spo2, pulse, timestamp, status, device, pai, bool(flags & _SC_CLOCK_NOT_SET))

    def __bytes__(self) -> bytes:
        flags = (
            (_SC_TIMESTAMP if self.timestamp is not None else 0)
            | (_SC_STATUS if self.measurement_status is not None else 0)
            | (_SC_DEVICE if self.device_and_sensor_status is not None else 0)
            | (_SC_PAI if self.pulse_amplitude_index is not None else 0)
            | (_SC_CLOCK_NOT_SET if self.device_clock_not_set else 0)
        )
        out = bytearray(U8.pack(flags) + sfloat_bytes(self.spo2) + sfloat_bytes(self.pulse_rate))
        if self.timestamp is not None:
            out += bytes(self.timestamp)
        out += _status_bytes(self.measurement_status, self.device_and_sensor_status, self.pulse_amplitude_index)
        return bytes(out)

    @property
    def spo2_percent(self) -> float | None:
        """SpO2 in percent, None for a special value."""
        return self.spo2.as_float()

    @property
    def pulse_bpm(self) -> float | None:
        """Pulse rate in beats per minute, None for a special value."""
        return self.pulse_rate.as_float()

    @property
    def is_unreliable(self) -> bool:
        """True when a status bit named in thresholds.md §3 says the reading must be ignored or flagged."""
        return _unreliable(self.measurement_status, self.device_and_sensor_status)

    @property
    def device_time(self) -> _dt.datetime | None:
        """The time stamp as a naive datetime; None when absent, incomplete, or the device clock is not set."""
        if self.timestamp is None or self.device_clock_not_set:
            return None
        return self.timestamp.to_datetime()

    def as_dict(self) -> dict[str, JSONValue]:
        """See ``protocols/README.md``."""
        return {
            "spo2": num(self.spo2),
            "pulse_rate": num(self.pulse_rate),
            "timestamp": None if self.timestamp is None else self.timestamp.iso(),
            "device_clock_not_set": self.device_clock_not_set,
            **_status_dict(self.measurement_status, self.device_and_sensor_status, self.pulse_amplitude_index),
        }


_C_FAST: Final = 0x01
_C_SLOW: Final = 0x02
_C_STATUS: Final = 0x04
_C_DEVICE: Final = 0x08
_C_PAI: Final = 0x10
_C_KNOWN: Final = 0x1F  # bits 5-7 are RFU


@dataclass(frozen=True, slots=True)
class PlxContinuousMeasurement(Measurement):
    """PLX Continuous Measurement, 0x2A5F (PLXS 1.0 §3.2; 5..20 bytes). No timestamp.

    Layout: ``flags uint8 | SpO2 SFLOAT | PR SFLOAT | [fast SpO2 | fast PR] | [slow SpO2 | slow PR]
    | [measurement status uint16] | [device and sensor status uint24] | [pulse amplitude index SFLOAT]``.
    RFU flag bits (5-7) are refused (``decode_tolerant`` ignores them) and never emitted.
    """

    UUID: ClassVar[int] = 0x2A5F
    spo2: MderFloat
    pulse_rate: MderFloat
    spo2_fast: MderFloat | None = None
    pulse_rate_fast: MderFloat | None = None
    spo2_slow: MderFloat | None = None
    pulse_rate_slow: MderFloat | None = None
    measurement_status: int | None = None
    device_and_sensor_status: int | None = None
    pulse_amplitude_index: MderFloat | None = None

    def __post_init__(self) -> None:
        check_sfloat("spo2", self.spo2, optional=False)
        check_sfloat("pulse_rate", self.pulse_rate, optional=False)
        for name in ("spo2_fast", "pulse_rate_fast", "spo2_slow", "pulse_rate_slow"):
            check_sfloat(name, getattr(self, name))
        if (self.spo2_fast is None) != (self.pulse_rate_fast is None):
            raise EncodeError("spo2_fast and pulse_rate_fast are sent together or not at all")
        if (self.spo2_slow is None) != (self.pulse_rate_slow is None):
            raise EncodeError("spo2_slow and pulse_rate_slow are sent together or not at all")
        _check_status(self.measurement_status, self.device_and_sensor_status, self.pulse_amplitude_index)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A5F notification."""
        r = Reader("2A5F", data)
        flags = r.flags(_C_KNOWN)
        spo2 = r.sfloat("SpO2PR-Normal SpO2")
        pulse = r.sfloat("SpO2PR-Normal PR")
        fast = (r.sfloat("SpO2PR-Fast SpO2"), r.sfloat("SpO2PR-Fast PR")) if flags & _C_FAST else (None, None)
        slow = (r.sfloat("SpO2PR-Slow SpO2"), r.sfloat("SpO2PR-Slow PR")) if flags & _C_SLOW else (None, None)
        status, device, pai = _read_status(r, flags, _C_STATUS, _C_DEVICE, _C_PAI)
        r.finish()
        with decoding("2A5F"):
            return cls(
                spo2,
                pulse,
                spo2_fast=fast[0],
                pulse_rate_fast=fast[1],
                spo2_slow=slow[0],
                pulse_rate_slow=slow[1],
                measurement_status=status,
                device_and_sensor_status=device,
                pulse_amplitude_index=pai,
            )

    def __bytes__(self) -> bytes:
        flags = (
            (_C_FAST if self.spo2_fast is not None else 0)
            | (_C_SLOW if self.spo2_slow is not None else 0)
            | (_C_STATUS if self.measurement_status is not None else 0)
            | (_C_DEVICE if self.device_and_sensor_status is not None else 0)
            | (_C_PAI if self.pulse_amplitude_index is not None else 0)
        )
        out = bytearray(U8.pack(flags) + sfloat_bytes(self.spo2) + sfloat_bytes(self.pulse_rate))
        if self.spo2_fast is not None and self.pulse_rate_fast is not None:
            out += sfloat_bytes(self.spo2_fast) + sfloat_bytes(self.pulse_rate_fast)
        if self.spo2_slow is not None and self.pulse_rate_slow is not None:
            out += sfloat_bytes(self.spo2_slow) + sfloat_bytes(self.pulse_rate_slow)
        out += _status_bytes(self.measurement_status, self.device_and_sensor_status, self.pulse_amplitude_index)
        return bytes(out)

    @property
    def spo2_percent(self) -> float | None:
        """SpO2 (normal averaging) in percent, None for a special value."""
        return self.spo2.as_float()

    @property
    def pulse_bpm(self) -> float | None:
        """Pulse rate (normal averaging) in beats per minute, None for a special value."""
        return self.pulse_rate.as_float()

    @property
    def is_unreliable(self) -> bool:
        """True when a status bit named in thresholds.md §3 says the reading must be ignored or flagged."""
        return _unreliable(self.measurement_status, self.device_and_sensor_status)

    def as_dict(self) -> dict[str, JSONValue]:
        """See ``protocols/README.md``."""
        return {
            "spo2": num(self.spo2),
            "pulse_rate": num(self.pulse_rate),
            "spo2_fast": num(self.spo2_fast),
            "pulse_rate_fast": num(self.pulse_rate_fast),
            "spo2_slow": num(self.spo2_slow),
            "pulse_rate_slow": num(self.pulse_rate_slow),
            **_status_dict(self.measurement_status, self.device_and_sensor_status, self.pulse_amplitude_index),
        }


@dataclass(frozen=True, slots=True)
class PlxFeatures(Measurement):
    """PLX Features, 0x2A60 (PLXS 1.0 §3.3; 2..7 bytes).

    Layout: ``supported features uint16 | [measurement status support uint16, if bit 0]
    | [device and sensor status support uint24, if bit 1]``. All three are kept verbatim (RFU bits included); the
    two optional fields are present exactly when their bit is set.
    """

    UUID: ClassVar[int] = 0x2A60
    supported_features: int
    measurement_status_support: int | None = None
    device_and_sensor_status_support: int | None = None

    def __post_init__(self) -> None:
        check_uint("supported_features", self.supported_features, 16, optional=False)
        check_uint("measurement_status_support", self.measurement_status_support, 16)
        check_uint("device_and_sensor_status_support", self.device_and_sensor_status_support, 24)
        if bool(self.supported_features & 0x01) != (self.measurement_status_support is not None):
            raise EncodeError("supported_features bit 0 says whether measurement_status_support is present")
        if bool(self.supported_features & 0x02) != (self.device_and_sensor_status_support is not None):
            raise EncodeError("supported_features bit 1 says whether device_and_sensor_status_support is present")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A60 read."""
        r = Reader("2A60", data)
        features = r.u16("Supported Features")
        status = r.u16("Measurement Status Support") if features & 0x01 else None
        device = r.u24("Device and Sensor Status Support") if features & 0x02 else None
        r.finish()
        with decoding("2A60"):
            return cls(features, status, device)

    def __bytes__(self) -> bytes:
        out = bytearray(U16.pack(self.supported_features))
        if self.measurement_status_support is not None:
            out += U16.pack(self.measurement_status_support)
        if self.device_and_sensor_status_support is not None:
            out += u24_bytes(self.device_and_sensor_status_support)
        return bytes(out)

    @property
    def flags(self) -> PlxSupportedFeatures:
        """The known supported-feature bits."""
        return PlxSupportedFeatures(self.supported_features & 0xFF)

    def as_dict(self) -> dict[str, JSONValue]:
        """``supported_features``, ``measurement_status_support``, ``device_and_sensor_status_support``."""
        return {
            "supported_features": self.supported_features,
            "feature_names": [f.name.lower() for f in PlxSupportedFeatures if f & self.supported_features and f.name],
            "measurement_status_support": self.measurement_status_support,
            "device_and_sensor_status_support": self.device_and_sensor_status_support,
        }
