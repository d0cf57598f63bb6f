"""Codecs for the Bluetooth SIG health characteristics, and the dispatch by UUID.

``decode(uuid, data)`` returns a typed, frozen :class:`Measurement`; ``encode(m)`` gives its bytes back. Malformed
input raises :class:`~protocols.errors.DecodeError` and nothing else; an unknown UUID raises
:class:`~protocols.errors.UnknownCharacteristicError`. The field names of ``as_dict()`` and the interpretations of
the specification are documented in ``protocols/README.md``.
"""

from __future__ import annotations

import re
import uuid as _uuid
from collections.abc import Callable, Mapping
from typing import Final

from protocols.datetime_ import DateTime
from protocols.errors import DecodeError, UnknownCharacteristicError
from protocols.gatt.bp import (
    BloodPressureFeature,
    BloodPressureFeatureBits,
    BloodPressureMeasurement,
    BpMeasurementStatus,
    IntermediateCuffPressure,
    PressureUnit,
    PulseRateRange,
)
from protocols.gatt.cgm import (
    CgmAnnunciation,
    CgmFeature,
    CgmFeatureBits,
    CgmMeasurement,
    CgmOpCode,
    CgmRecord,
    CgmSessionRunTime,
    CgmSessionStartTime,
    CgmSpecificOpsControlPoint,
    CgmStatus,
)
from protocols.gatt.common import (
    AdjustReason,
    BatteryLevel,
    CurrentTime,
    DateTimeCharacteristic,
    DayOfWeek,
    JSONValue,
    Measurement,
    RfuFlagsError,
    TrailingBytesError,
)
from protocols.gatt.glucose import (
    CarbohydrateId,
    GlucoseFeature,
    GlucoseFeatureBits,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    GlucoseSensorStatus,
    GlucoseType,
    GlucoseUnit,
    Health,
    Meal,
    MedicationId,
    MedicationUnit,
    SampleLocation,
    Tester,
)
from protocols.gatt.heart_rate import HeartRateMeasurement
from protocols.gatt.plx import (
    PlxContinuousMeasurement,
    PlxDeviceSensorStatus,
    PlxFeatures,
    PlxMeasurementStatus,
    PlxSpotCheckMeasurement,
    PlxSupportedFeatures,
)
from protocols.gatt.racp import (
    RacpFilterType,
    RacpOpCode,
    RacpOperator,
    RacpRequest,
    RacpResponse,
    RacpResponseCode,
    decode_racp,
)
from protocols.gatt.thermometer import (
    IntermediateTemperature,
    TemperatureMeasurement,
    TemperatureType,
    TemperatureUnit,
)
from protocols.gatt.tolerant import DecodeTolerance, Tolerated, tolerances_from_names, tolerate
from protocols.gatt.weight import WEIGHT_UNSUCCESSFUL, WeightMeasurement, WeightScaleFeature, WeightUnit
from protocols.ieee11073 import MderFloat, MderSpecial

__all__ = [
    "DECODERS",
    "WEIGHT_UNSUCCESSFUL",
    "AdjustReason",
    "BatteryLevel",
    "BloodPressureFeature",
    "BloodPressureFeatureBits",
    "BloodPressureMeasurement",
    "BpMeasurementStatus",
    "CarbohydrateId",
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
    "CurrentTime",
    "DateTime",
    "DateTimeCharacteristic",
    "DayOfWeek",
    "DecodeTolerance",
    "GlucoseFeature",
    "GlucoseFeatureBits",
    "GlucoseMeasurement",
    "GlucoseMeasurementContext",
    "GlucoseSensorStatus",
    "GlucoseType",
    "GlucoseUnit",
    "Health",
    "HeartRateMeasurement",
    "IntermediateCuffPressure",
    "IntermediateTemperature",
    "JSONValue",
    "MderFloat",
    "MderSpecial",
    "Meal",
    "Measurement",
    "MedicationId",
    "MedicationUnit",
    "PlxContinuousMeasurement",
    "PlxDeviceSensorStatus",
    "PlxFeatures",
    "PlxMeasurementStatus",
    "PlxSpotCheckMeasurement",
    "PlxSupportedFeatures",
    "PressureUnit",
    "PulseRateRange",
    "RacpFilterType",
    "RacpOpCode",
    "RacpOperator",
    "RacpRequest",
    "RacpResponse",
    "RacpResponseCode",
    "RfuFlagsError",
    "SampleLocation",
    "TemperatureMeasurement",
    "TemperatureType",
    "TemperatureUnit",
    "Tester",
    "Tolerated",
    "TrailingBytesError",
    "WeightMeasurement",
    "WeightScaleFeature",
    "WeightUnit",
    "decode",
    "decode_racp",
    "decode_tolerant",
    "encode",
    "normalize_uuid",
    "tolerances_from_names",
]

_MEASUREMENT_CLASSES: Final[tuple[type[Measurement], ...]] = (
    BloodPressureMeasurement,
    IntermediateCuffPressure,
    BloodPressureFeature,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    GlucoseFeature,
    PlxSpotCheckMeasurement,
    PlxContinuousMeasurement,
    PlxFeatures,
    TemperatureMeasurement,
    IntermediateTemperature,
    WeightMeasurement,
    WeightScaleFeature,
    HeartRateMeasurement,
    CgmMeasurement,
    CgmFeature,
    CgmStatus,
    CgmSessionStartTime,
    CgmSessionRunTime,
    CgmSpecificOpsControlPoint,
    BatteryLevel,
    CurrentTime,
    DateTimeCharacteristic,
)

DECODERS: Final[Mapping[int, Callable[[bytes], Measurement]]] = {
    **{cls.UUID: cls.from_bytes for cls in _MEASUREMENT_CLASSES},
    RacpRequest.UUID: decode_racp,
}
"""Every 16-bit characteristic UUID this package decodes, with its decoder."""

_BASE_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"
_SHORT: Final = re.compile(r"(?:0x)?([0-9a-f]{4}|[0-9a-f]{8})")


def normalize_uuid(uuid: str | int | _uuid.UUID) -> int:
    """The 16- or 32-bit SIG number of a characteristic UUID.

    Accepts ``"2A35"``, ``"2a35"``, ``"0x2A35"``, ``0x2A35``, the 128-bit form
    ``"00002a35-0000-1000-8000-00805f9b34fb"`` (any case) and :class:`uuid.UUID`.

    Raises:
        UnknownCharacteristicError: not a Bluetooth SIG UUID in any of those forms.
    """
    if isinstance(uuid, _uuid.UUID):
        uuid = str(uuid)
    if isinstance(uuid, bool):
        raise UnknownCharacteristicError(repr(uuid))
    if isinstance(uuid, int):
        if 0 <= uuid <= 0xFFFFFFFF:
            return uuid
        raise UnknownCharacteristicError(f"{uuid:#x}")
    if not isinstance(uuid, str):
        raise UnknownCharacteristicError(repr(uuid))
    text = uuid.strip().lower()
    if text.endswith(_BASE_SUFFIX) and len(text) == 36:
        text = text[:8]
    match = _SHORT.fullmatch(text)
    if match is None:
        raise UnknownCharacteristicError(uuid)
    return int(match.group(1), 16)


def _decoder(uuid: str | int | _uuid.UUID, data: object) -> Callable[[bytes], Measurement]:
    number = normalize_uuid(uuid)
    decoder = DECODERS.get(number)
    if decoder is None:
        raise UnknownCharacteristicError(f"{number:04X}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{number:04X}", None, f"expected bytes, got {type(data).__name__}")
    return decoder


def decode(uuid: str | int | _uuid.UUID, data: bytes | bytearray | memoryview) -> Measurement:
    """Decode one value of the characteristic ``uuid``, strictly: exactly the fields the flags call for, no
    reserved flag bit set.

    Raises:
        UnknownCharacteristicError: the UUID is not one of :data:`DECODERS`.
        TrailingBytesError: bytes follow the last field (a ``DecodeError``; :func:`decode_tolerant` accepts them).
        RfuFlagsError: reserved flag bits are set (a ``DecodeError``; :func:`decode_tolerant` accepts them).
        DecodeError: malformed bytes; names the characteristic (``"2A35"``), the offset and the reason.
    """
    return _decoder(uuid, data)(bytes(data))


def decode_tolerant(uuid: str | int | _uuid.UUID, data: bytes | bytearray | memoryview) -> Tolerated:
    """Decode one value as the hub does: like :func:`decode`, but trailing bytes and reserved flag bits are accepted
    and named in :attr:`Tolerated.tolerances` (``protocols.gatt.tolerant`` documents the tolerance).

    Raises:
        UnknownCharacteristicError: the UUID is not one of :data:`DECODERS`.
        DecodeError: the value cannot be decoded even so.
    """
    return tolerate(_decoder(uuid, data), bytes(data))


def encode(measurement: Measurement) -> bytes:
    """The bytes a peripheral sends for ``measurement`` (same as ``bytes(measurement)``)."""
    return bytes(measurement)
