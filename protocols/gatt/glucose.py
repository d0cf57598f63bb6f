"""Glucose Profile characteristics: Glucose Measurement (0x2A18), Glucose Measurement Context (0x2A34) and Glucose
Feature (0x2A51), per Glucose Service 1.0 §3.106-3.108 and the former SIG characteristic XMLs.
"""

from __future__ import annotations

import datetime as _dt
import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from protocols.datetime_ import DateTime
from protocols.errors import EncodeError
from protocols.gatt.common import (
    S16,
    U8,
    U16,
    FeatureBits,
    JSONValue,
    Measurement,
    Reader,
    check_sfloat,
    check_uint,
    decoding,
    enum_name,
    enum_or_int,
    num,
    sfloat_bytes,
)
from protocols.ieee11073 import MderFloat

__all__ = [
    "CarbohydrateId",
    "GlucoseFeature",
    "GlucoseFeatureBits",
    "GlucoseMeasurement",
    "GlucoseMeasurementContext",
    "GlucoseSensorStatus",
    "GlucoseType",
    "GlucoseUnit",
    "Health",
    "Meal",
    "MedicationId",
    "MedicationUnit",
    "SampleLocation",
    "Tester",
]

# ../shared/thresholds.md, "Units": mg/dL = mmol/L x 18.016; BLE note: mg/dL = kg/L x 100 000, mmol/L = mol/L x 1 000.
MG_DL_PER_KG_L: Final = 100_000.0
MMOL_L_PER_MOL_L: Final = 1_000.0
MG_DL_PER_MMOL_L: Final = 18.016


class GlucoseUnit(enum.IntEnum):
    """Flags bit 2 of 0x2A18: the unit of the concentration as transmitted."""

    KG_PER_L = 0
    MOL_PER_L = 1

    @property
    def symbol(self) -> str:
        """``"kg/L"`` or ``"mol/L"``."""
        return "kg/L" if self is GlucoseUnit.KG_PER_L else "mol/L"


class GlucoseType(enum.IntEnum):
    """Low nibble of Type-Sample Location; 0 and 11..15 are RFU (kept as int)."""

    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class SampleLocation(enum.IntEnum):
    """High nibble of Type-Sample Location; 0 and 5..14 are RFU (kept as int)."""

    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


class GlucoseSensorStatus(enum.IntFlag):
    """Sensor Status Annunciation bits of 0x2A18; bits 12..15 RFU."""

    BATTERY_LOW = 0x0001
    SENSOR_MALFUNCTION = 0x0002
    SAMPLE_SIZE_INSUFFICIENT = 0x0004
    STRIP_INSERTION_ERROR = 0x0008
    STRIP_TYPE_INCORRECT = 0x0010
    RESULT_TOO_HIGH = 0x0020
    RESULT_TOO_LOW = 0x0040
    TEMPERATURE_TOO_HIGH = 0x0080
    TEMPERATURE_TOO_LOW = 0x0100
    READ_INTERRUPTED = 0x0200
    GENERAL_DEVICE_FAULT = 0x0400
    TIME_FAULT = 0x0800


_TIME_OFFSET: Final = 0x01
_CONCENTRATION: Final = 0x02
_UNIT_MOL: Final = 0x04
_SENSOR_STATUS: Final = 0x08
_CONTEXT_FOLLOWS: Final = 0x10
_KNOWN_FLAGS: Final = 0x1F  # bits 5-7 are RFU


def _nibble(name: str, value: int | None) -> None:
    check_uint(name, value, 4)


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement(Measurement):
    """Glucose Measurement, 0x2A18 (GLS 1.0 §3.106; 10..17 bytes).

    Layout: ``flags uint8 | sequence uint16 | base time Date Time (7) | [time offset sint16 minutes]
    | [concentration SFLOAT | type:4 low, location:4 high uint8] | [sensor status uint16]``.

    ``concentration``, ``type`` and ``sample_location`` are present together or not at all (one flag). ``unit`` is
    the flag bit as sent, kept even when no concentration is present. RFU flag bits (5-7) are refused
    (``decode_tolerant`` ignores them) and never emitted.
    ``sensor_status`` is the raw uint16 (RFU bits kept); see :attr:`sensor_status_flags`.
    """

    UUID: ClassVar[int] = 0x2A18
    sequence_number: int
    base_time: DateTime
    time_offset: int | None = None
    concentration: MderFloat | None = None
    unit: GlucoseUnit = GlucoseUnit.KG_PER_L
    type: GlucoseType | int | None = None
    sample_location: SampleLocation | int | None = None
    sensor_status: int | None = None
    context_follows: bool = False

    # sequence number uint16 | base time (7 bytes, see DateTime)
    _HEAD: ClassVar[struct.Struct] = U16

    def __post_init__(self) -> None:
        check_uint("sequence_number", self.sequence_number, 16, optional=False)
        if not isinstance(self.base_time, DateTime):
            raise EncodeError("base_time must be a DateTime")
        if self.time_offset is not None and (
            isinstance(self.time_offset, bool) or not isinstance(self.time_offset, int)
        ):
            raise EncodeError("time_offset must be an int (minutes)")
        if self.time_offset is not None and not -32768 <= self.time_offset <= 32767:
            raise EncodeError(f"time_offset {self.time_offset} is not a sint16")
        check_sfloat("concentration", self.concentration)
        if not isinstance(self.unit, GlucoseUnit):
            raise EncodeError(f"unit must be a GlucoseUnit, not {self.unit!r}")
        _nibble("type", self.type)
        _nibble("sample_location", self.sample_location)
        present = (self.concentration is not None, self.type is not None, self.sample_location is not None)
        if any(present) and not all(present):
            raise EncodeError("concentration, type and sample_location are sent together or not at all")
        check_uint("sensor_status", self.sensor_status, 16)
        if not isinstance(self.context_follows, bool):
            raise EncodeError("context_follows must be a bool")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A18 notification."""
        r = Reader("2A18", data)
        flags = r.flags(_KNOWN_FLAGS)
        sequence = r.u16("Sequence Number")
        base_time = r.date_time("Base Time")
        offset = r.s16("Time Offset") if flags & _TIME_OFFSET else None
        concentration = glucose_type = location = None
        if flags & _CONCENTRATION:
            concentration = r.sfloat("Glucose Concentration")
            packed = r.u8("Type-Sample Location")
            glucose_type = enum_or_int(GlucoseType, packed & 0x0F)
            location = enum_or_int(SampleLocation, packed >> 4)
        status = r.u16("Sensor Status Annunciation") if flags & _SENSOR_STATUS else None
        r.finish()
        with decoding("2A18"):
            return cls(
                sequence_number=sequence,
                base_time=base_time,
                time_offset=offset,
                concentration=concentration,
                unit=GlucoseUnit.MOL_PER_L if flags & _UNIT_MOL else GlucoseUnit.KG_PER_L,
                type=glucose_type,
                sample_location=location,
                sensor_status=status,
                context_follows=bool(flags & _CONTEXT_FOLLOWS),
            )

    def __bytes__(self) -> bytes:
        flags = (
            (_TIME_OFFSET if self.time_offset is not None else 0)
            | (_CONCENTRATION if self.concentration is not None else 0)
            | (_UNIT_MOL if self.unit is GlucoseUnit.MOL_PER_L else 0)
            | (_SENSOR_STATUS if self.sensor_status is not None else 0)
            | (_CONTEXT_FOLLOWS if self.context_follows else 0)
        )
        out = bytearray(U8.pack(flags) + self._HEAD.pack(self.sequence_number) + bytes(self.base_time))
        if self.time_offset is not None:
            out += S16.pack(self.time_offset)
        if self.concentration is not None and self.type is not None and self.sample_location is not None:
            out += sfloat_bytes(self.concentration) + U8.pack(self.type | self.sample_location << 4)
        if self.sensor_status is not None:
            out += U16.pack(self.sensor_status)
        return bytes(out)

    @property
    def mg_dl(self) -> float | None:
        """The concentration in mg/dL; None when absent or special."""
        value = None if self.concentration is None else self.concentration.as_float()
        if value is None:
            return None
        if self.unit is GlucoseUnit.KG_PER_L:
            return value * MG_DL_PER_KG_L
        return value * MMOL_L_PER_MOL_L * MG_DL_PER_MMOL_L

    @property
    def mmol_l(self) -> float | None:
        """The concentration in mmol/L; None when absent or special."""
        value = None if self.concentration is None else self.concentration.as_float()
        if value is None:
            return None
        if self.unit is GlucoseUnit.MOL_PER_L:
            return value * MMOL_L_PER_MOL_L
        return value * MG_DL_PER_KG_L / MG_DL_PER_MMOL_L

    @property
    def device_time(self) -> _dt.datetime | None:
        """User-facing time: base time plus the time offset; None when a date component is unknown."""
        base = self.base_time.to_datetime()
        if base is None:
            return None
        try:
            return base + _dt.timedelta(minutes=self.time_offset or 0)
        except OverflowError:
            return None

    @property
    def sensor_status_flags(self) -> GlucoseSensorStatus | None:
        """The Sensor Status Annunciation as flags (RFU bits kept), None when not sent."""
        return None if self.sensor_status is None else GlucoseSensorStatus(self.sensor_status)

    @property
    def out_of_device_range(self) -> bool:
        """True when the device says the result is above or below what it can measure (bits 5 and 6)."""
        flags = self.sensor_status_flags
        return bool(flags and flags & (GlucoseSensorStatus.RESULT_TOO_HIGH | GlucoseSensorStatus.RESULT_TOO_LOW))

    def as_dict(self) -> dict[str, JSONValue]:
        """See ``protocols/README.md``."""
        return {
            "sequence_number": self.sequence_number,
            "base_time": self.base_time.iso(),
            "time_offset": self.time_offset,
            "concentration": num(self.concentration),
            "unit": self.unit.symbol,
            "type": None if self.type is None else int(self.type),
            "type_name": enum_name(GlucoseType, self.type),
            "sample_location": None if self.sample_location is None else int(self.sample_location),
            "sample_location_name": enum_name(SampleLocation, self.sample_location),
            "sensor_status": self.sensor_status,
            "context_follows": self.context_follows,
        }


# ---------------------------------------------------------------------------------------------------------------
# Glucose Measurement Context 0x2A34


class CarbohydrateId(enum.IntEnum):
    """Carbohydrate ID; 0 and 8..255 RFU (kept as int)."""

    BREAKFAST = 1
    LUNCH = 2
    DINNER = 3
    SNACK = 4
    DRINK = 5
    SUPPER = 6
    BRUNCH = 7


class Meal(enum.IntEnum):
    """Meal; 0 and 6..255 RFU (kept as int)."""

    PREPRANDIAL = 1
    POSTPRANDIAL = 2
    FASTING = 3
    CASUAL = 4
    BEDTIME = 5


class Tester(enum.IntEnum):
    """Low nibble of Tester-Health; 0 and 4..14 RFU (kept as int)."""

    SELF = 1
    HEALTH_CARE_PROFESSIONAL = 2
    LAB_TEST = 3
    NOT_AVAILABLE = 15


class Health(enum.IntEnum):
    """High nibble of Tester-Health; 0 and 6..14 RFU (kept as int)."""

    MINOR_HEALTH_ISSUES = 1
    MAJOR_HEALTH_ISSUES = 2
    DURING_MENSES = 3
    UNDER_STRESS = 4
    NO_HEALTH_ISSUES = 5
    NOT_AVAILABLE = 15


class MedicationId(enum.IntEnum):
    """Medication ID; 0 and 6..255 RFU (kept as int)."""

    RAPID_ACTING_INSULIN = 1
    SHORT_ACTING_INSULIN = 2
    INTERMEDIATE_ACTING_INSULIN = 3
    LONG_ACTING_INSULIN = 4
    PRE_MIXED_INSULIN = 5


class MedicationUnit(enum.IntEnum):
    """Flags bit 5 of 0x2A34: the medication quantity is in kilograms or litres."""

    KG = 0
    LITRE = 1

    @property
    def symbol(self) -> str:
        """``"kg"`` or ``"L"``."""
        return "kg" if self is MedicationUnit.KG else "L"


_CARB: Final = 0x01
_MEAL: Final = 0x02
_TESTER_HEALTH: Final = 0x04
_EXERCISE: Final = 0x08
_MEDICATION: Final = 0x10
_MEDICATION_LITRES: Final = 0x20
_HBA1C: Final = 0x40
_EXTENDED: Final = 0x80


def _together(names: str, *values: object) -> None:
    present = [v is not None for v in values]
    if any(present) and not all(present):
        raise EncodeError(f"{names} are sent together or not at all")


@dataclass(frozen=True, slots=True)
class GlucoseMeasurementContext(Measurement):
    """Glucose Measurement Context, 0x2A34 (GLS 1.0 §3.107; 3..17 bytes).

    Layout: ``flags uint8 | sequence uint16 | [extended flags uint8] | [carbohydrate id uint8 | carbohydrate SFLOAT kg]
    | [meal uint8] | [tester:4 low, health:4 high uint8] | [exercise duration uint16 s | intensity uint8 %]
    | [medication id uint8 | medication SFLOAT kg or L] | [HbA1c SFLOAT %]``.

    ``extended_flags`` (all RFU) is kept verbatim when sent. ``medication_unit`` is the flag bit as sent.
    """

    UUID: ClassVar[int] = 0x2A34
    sequence_number: int
    extended_flags: int | None = None
    carbohydrate_id: CarbohydrateId | int | None = None
    carbohydrate: MderFloat | None = None
    meal: Meal | int | None = None
    tester: Tester | int | None = None
    health: Health | int | None = None
    exercise_duration: int | None = None
    exercise_intensity: int | None = None
    medication_id: MedicationId | int | None = None
    medication: MderFloat | None = None
    medication_unit: MedicationUnit = MedicationUnit.KG
    hba1c: MderFloat | None = None

    # exercise duration uint16 seconds | exercise intensity uint8 percent
    _EXERCISE: ClassVar[struct.Struct] = struct.Struct("<HB")

    def __post_init__(self) -> None:
        check_uint("sequence_number", self.sequence_number, 16, optional=False)
        check_uint("extended_flags", self.extended_flags, 8)
        check_uint("carbohydrate_id", self.carbohydrate_id, 8)
        check_sfloat("carbohydrate", self.carbohydrate)
        check_uint("meal", self.meal, 8)
        _nibble("tester", self.tester)
        _nibble("health", self.health)
        check_uint("exercise_duration", self.exercise_duration, 16)
        check_uint("exercise_intensity", self.exercise_intensity, 8)
        check_uint("medication_id", self.medication_id, 8)
        check_sfloat("medication", self.medication)
        if not isinstance(self.medication_unit, MedicationUnit):
            raise EncodeError(f"medication_unit must be a MedicationUnit, not {self.medication_unit!r}")
        check_sfloat("hba1c", self.hba1c)
        _together("carbohydrate_id and carbohydrate", self.carbohydrate_id, self.carbohydrate)
        _together("tester and health", self.tester, self.health)
        _together("exercise_duration and exercise_intensity", self.exercise_duration, self.exercise_intensity)
        _together("medication_id and medication", self.medication_id, self.medication)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a 0x2A34 notification."""
        r = Reader("2A34", data)
        flags = r.u8("Flags")
        sequence = r.u16("Sequence Number")
        extended = r.u8("Extended Flags") if flags & _EXTENDED else None
        carb_id = carb = meal = tester = health = duration = intensity = med_id = med = hba1c = None
        if flags & _CARB:
            carb_id = enum_or_int(CarbohydrateId, r.u8("Carbohydrate ID"))
            carb = r.sfloat("Carbohydrate")
        if flags & _MEAL:
            meal = enum_or_int(Meal, r.u8("Meal"))
        if flags & _TESTER_HEALTH:
            packed = r.u8("Tester-Health")
            tester = enum_or_int(Tester, packed & 0x0F)
            health = enum_or_int(Health, packed >> 4)
        if flags & _EXERCISE:
            duration, intensity = r.unpack(cls._EXERCISE, "Exercise Duration and Intensity")
        if flags & _MEDICATION:
            med_id = enum_or_int(MedicationId, r.u8("Medication ID"))
            med = r.sfloat("Medication")
        if flags & _HBA1C:
            hba1c = r.sfloat("HbA1c")
        r.finish()
        with decoding("2A34"):
            return cls(
                sequence_number=sequence,
                extended_flags=extended,
                carbohydrate_id=carb_id,
                carbohydrate=carb,
                meal=meal,
                tester=tester,
                health=health,
                exercise_duration=duration,
                exercise_intensity=intensity,
                medication_id=med_id,
                medication=med,
                medication_unit=MedicationUnit.LITRE if flags & _MEDICATION_LITRES else MedicationUnit.KG,
                hba1c=hba1c,
            )

    def __bytes__(self) -> bytes:
        flags = (
            (_CARB if self.carbohydrate is not None else 0)
            | (_MEAL if self.meal is not None else 0)
            | (_TESTER_HEALTH if self.tester is not None else 0)
            | (_EXERCISE if self.exercise_duration is not None else 0)
            | (_MEDICATION if self.medication is not None else 0)
            | (_MEDICATION_LITRES if self.medication_unit is MedicationUnit.LITRE else 0)
            | (_HBA1C if self.hba1c is not None else 0)
            | (_EXTENDED if self.extended_flags is not None else 0)
        )
        out = bytearray(U8.pack(flags) + U16.pack(self.sequence_number))
        if self.extended_flags is not None:
            out += U8.pack(self.extended_flags)
        if self.carbohydrate_id is not None and self.carbohydrate is not None:
            out += U8.pack(self.carbohydrate_id) + sfloat_bytes(self.carbohydrate)
        if self.meal is not None:
            out += U8.pack(self.meal)
        if self.tester is not None and self.health is not None:
            out += U8.pack(self.tester | self.health << 4)
        if self.exercise_duration is not None and self.exercise_intensity is not None:
            out += self._EXERCISE.pack(self.exercise_duration, self.exercise_intensity)
        if self.medication_id is not None and self.medication is not None:
            out += U8.pack(self.medication_id) + sfloat_bytes(self.medication)
        if self.hba1c is not None:
            out += sfloat_bytes(self.hba1c)
        return bytes(out)

    def as_dict(self) -> dict[str, JSONValue]:
        """See ``protocols/README.md``; enumerations as raw ints plus ``*_name``."""

        def raw(value: int | None) -> int | None:
            return None if value is None else int(value)

        return {
            "sequence_number": self.sequence_number,
            "extended_flags": self.extended_flags,
            "carbohydrate_id": raw(self.carbohydrate_id),
            "carbohydrate_id_name": enum_name(CarbohydrateId, self.carbohydrate_id),
            "carbohydrate": num(self.carbohydrate),
            "meal": raw(self.meal),
            "meal_name": enum_name(Meal, self.meal),
            "tester": raw(self.tester),
            "tester_name": enum_name(Tester, self.tester),
            "health": raw(self.health),
            "health_name": enum_name(Health, self.health),
            "exercise_duration": self.exercise_duration,
            "exercise_intensity": self.exercise_intensity,
            "medication_id": raw(self.medication_id),
            "medication_id_name": enum_name(MedicationId, self.medication_id),
            "medication": num(self.medication),
            "medication_unit": self.medication_unit.symbol if self.medication is not None else None,
            "hba1c": num(self.hba1c),
        }


# ---------------------------------------------------------------------------------------------------------------
# Glucose Feature 0x2A51


class GlucoseFeatureBits(enum.IntFlag):
    """Glucose Feature bits (GLS 1.0 §3.108); bits 11..15 RFU."""

    LOW_BATTERY_DETECTION = 0x0001
    SENSOR_MALFUNCTION_DETECTION = 0x0002
    SENSOR_SAMPLE_SIZE = 0x0004
    SENSOR_STRIP_INSERTION_ERROR_DETECTION = 0x0008
    SENSOR_STRIP_TYPE_ERROR_DETECTION = 0x0010
    SENSOR_RESULT_HIGH_LOW_DETECTION = 0x0020
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION = 0x0040
    SENSOR_READ_INTERRUPT_DETECTION = 0x0080
    GENERAL_DEVICE_FAULT = 0x0100
    TIME_FAULT = 0x0200
    MULTIPLE_BOND = 0x0400


@dataclass(frozen=True, slots=True)
class GlucoseFeature(FeatureBits):
    """Glucose Feature, 0x2A51 (GLS 1.0 §3.108): a uint16 bit field, kept verbatim (RFU bits included)."""

    UUID: ClassVar[int] = 0x2A51
    _NAME: ClassVar[str] = "Glucose Feature"
    _BITS: ClassVar[type[enum.IntFlag] | None] = GlucoseFeatureBits
    _KNOWN: ClassVar[int] = 0x07FF
    features: int

    @property
    def flags(self) -> GlucoseFeatureBits:
        """The known feature bits."""
        return GlucoseFeatureBits(self.features & self._KNOWN)
