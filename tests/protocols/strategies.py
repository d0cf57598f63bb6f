"""Hypothesis strategies that build valid values of every GATT health characteristic in :mod:`protocols.gatt`.

Reusable by other test suites: ``measurements()`` draws any characteristic, ``MEASUREMENT_STRATEGIES[0x2A35]``
one kind. Every optional field is drawn present or absent independently, numbers include the IEEE-11073 specials,
and enumerated fields include RFU raw values.
"""

from __future__ import annotations

import calendar
from typing import TypeVar

from hypothesis import strategies as st

from protocols import gatt
from protocols.datetime_ import DateTime
from protocols.gatt import Measurement
from protocols.ieee11073 import (
    FLOAT_MANTISSA_MAX,
    NAN,
    NEG_INF,
    NRES,
    POS_INF,
    SFLOAT_MANTISSA_MAX,
    MderFloat,
)

SPECIALS = (NAN, NRES, POS_INF, NEG_INF)

_T = TypeVar("_T")


def sfloats() -> st.SearchStrategy[MderFloat]:
    """Any SFLOAT value except the reserved one."""
    numbers = st.builds(
        MderFloat,
        st.integers(-SFLOAT_MANTISSA_MAX, SFLOAT_MANTISSA_MAX),
        st.integers(-8, 7),
    )
    return st.one_of(numbers, st.sampled_from(SPECIALS))


def floats32() -> st.SearchStrategy[MderFloat]:
    """Any 32-bit FLOAT value except the reserved one."""
    numbers = st.builds(
        MderFloat,
        st.integers(-FLOAT_MANTISSA_MAX, FLOAT_MANTISSA_MAX),
        st.integers(-128, 127),
    )
    return st.one_of(numbers, st.sampled_from(SPECIALS))


@st.composite
def date_times(draw: st.DrawFn) -> DateTime:
    """A valid Date Time, sometimes with year, month or day unknown (0)."""
    year = draw(st.one_of(st.just(0), st.integers(1582, 9999)))
    month = draw(st.integers(0, 12))
    last = calendar.monthrange(year or 2000, month)[1] if month else 31
    day = draw(st.integers(0, last))
    return DateTime(year, month, day, draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59)))


def _opt(strategy: st.SearchStrategy[_T]) -> st.SearchStrategy[_T | None]:
    return st.one_of(st.none(), strategy)


def _u(bits: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << bits) - 1)


def blood_pressure() -> st.SearchStrategy[gatt.BloodPressureMeasurement]:
    return st.builds(
        gatt.BloodPressureMeasurement,
        systolic=sfloats(),
        diastolic=sfloats(),
        mean_arterial=sfloats(),
        unit=st.sampled_from(gatt.PressureUnit),
        timestamp=_opt(date_times()),
        pulse_rate=_opt(sfloats()),
        user_id=_opt(_u(8)),
        measurement_status=_opt(_u(16)),
    )


def intermediate_cuff_pressure() -> st.SearchStrategy[gatt.IntermediateCuffPressure]:
    return st.builds(
        gatt.IntermediateCuffPressure,
        cuff_pressure=sfloats(),
        unit=st.sampled_from(gatt.PressureUnit),
        timestamp=_opt(date_times()),
        pulse_rate=_opt(sfloats()),
        user_id=_opt(_u(8)),
        measurement_status=_opt(_u(16)),
    )


@st.composite
def glucose(draw: st.DrawFn) -> gatt.GlucoseMeasurement:
    with_concentration = draw(st.booleans())
    return gatt.GlucoseMeasurement(
        sequence_number=draw(_u(16)),
        base_time=draw(date_times()),
        time_offset=draw(_opt(st.integers(-32768, 32767))),
        concentration=draw(sfloats()) if with_concentration else None,
        unit=draw(st.sampled_from(gatt.GlucoseUnit)),
        type=draw(_u(4)) if with_concentration else None,
        sample_location=draw(_u(4)) if with_concentration else None,
        sensor_status=draw(_opt(_u(16))),
        context_follows=draw(st.booleans()),
    )


@st.composite
def glucose_context(draw: st.DrawFn) -> gatt.GlucoseMeasurementContext:
    carb, tester, exercise, medication = (draw(st.booleans()) for _ in range(4))
    return gatt.GlucoseMeasurementContext(
        sequence_number=draw(_u(16)),
        extended_flags=draw(_opt(_u(8))),
        carbohydrate_id=draw(_u(8)) if carb else None,
        carbohydrate=draw(sfloats()) if carb else None,
        meal=draw(_opt(_u(8))),
        tester=draw(_u(4)) if tester else None,
        health=draw(_u(4)) if tester else None,
        exercise_duration=draw(_u(16)) if exercise else None,
        exercise_intensity=draw(_u(8)) if exercise else None,
        medication_id=draw(_u(8)) if medication else None,
        medication=draw(sfloats()) if medication else None,
        medication_unit=draw(st.sampled_from(gatt.MedicationUnit)),
        hba1c=draw(_opt(sfloats())),
    )


@st.composite
def racp_requests(draw: st.DrawFn) -> gatt.RacpRequest:
    kind = draw(st.sampled_from(["structured", "rfu_op", "rfu_operator", "rfu_filter"]))
    if kind == "rfu_op":
        op = draw(st.one_of(st.just(0), st.integers(7, 255)))
        return gatt.RacpRequest(op, draw(_u(8)), raw_operand=draw(st.binary(max_size=6)))
    op = draw(st.integers(1, 4))
    if kind == "rfu_operator":
        return gatt.RacpRequest(op, draw(st.integers(7, 255)), raw_operand=draw(st.binary(max_size=6)))
    operator = draw(st.integers(0, 6))
    wanted = {2: 1, 3: 1, 4: 2}.get(operator, 0)
    if wanted == 0:
        return gatt.RacpRequest(op, operator)
    if kind == "rfu_filter":
        filter_type = draw(st.one_of(st.just(0), st.integers(3, 255)))
        return gatt.RacpRequest(op, operator, filter_type, raw_operand=draw(st.binary(max_size=6)))
    filter_type = draw(st.sampled_from(gatt.RacpFilterType))
    value: st.SearchStrategy[int | DateTime] = (
        _u(16) if filter_type is gatt.RacpFilterType.SEQUENCE_NUMBER else date_times()
    )
    values = tuple(draw(value) for _ in range(wanted))
    return gatt.RacpRequest(op, operator, filter_type, values)


@st.composite
def racp_responses(draw: st.DrawFn) -> gatt.RacpResponse:
    if draw(st.booleans()):
        size = draw(st.sampled_from([1, 2, 4]))
        return gatt.RacpResponse(
            gatt.RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE,
            number_of_records=draw(_u(8 * size)),
            count_size=size,
        )
    return gatt.RacpResponse.response(draw(_u(8)), draw(_u(8)))


def racp() -> st.SearchStrategy[gatt.RacpRequest | gatt.RacpResponse]:
    return st.one_of(racp_requests(), racp_responses())


def plx_spot_check() -> st.SearchStrategy[gatt.PlxSpotCheckMeasurement]:
    return st.builds(
        gatt.PlxSpotCheckMeasurement,
        spo2=sfloats(),
        pulse_rate=sfloats(),
        timestamp=_opt(date_times()),
        measurement_status=_opt(_u(16)),
        device_and_sensor_status=_opt(_u(24)),
        pulse_amplitude_index=_opt(sfloats()),
        device_clock_not_set=st.booleans(),
    )


@st.composite
def plx_continuous(draw: st.DrawFn) -> gatt.PlxContinuousMeasurement:
    fast, slow = draw(st.booleans()), draw(st.booleans())
    return gatt.PlxContinuousMeasurement(
        spo2=draw(sfloats()),
        pulse_rate=draw(sfloats()),
        spo2_fast=draw(sfloats()) if fast else None,
        pulse_rate_fast=draw(sfloats()) if fast else None,
        spo2_slow=draw(sfloats()) if slow else None,
        pulse_rate_slow=draw(sfloats()) if slow else None,
        measurement_status=draw(_opt(_u(16))),
        device_and_sensor_status=draw(_opt(_u(24))),
        pulse_amplitude_index=draw(_opt(sfloats())),
    )


@st.composite
def plx_features(draw: st.DrawFn) -> gatt.PlxFeatures:
    features = draw(_u(16))
    return gatt.PlxFeatures(
        features,
        draw(_u(16)) if features & 1 else None,
        draw(_u(24)) if features & 2 else None,
    )


def temperature() -> st.SearchStrategy[gatt.TemperatureMeasurement]:
    return st.builds(
        gatt.TemperatureMeasurement,
        value=floats32(),
        unit=st.sampled_from(gatt.TemperatureUnit),
        timestamp=_opt(date_times()),
        temperature_type=_opt(_u(8)),
    )


def intermediate_temperature() -> st.SearchStrategy[gatt.IntermediateTemperature]:
    return st.builds(
        gatt.IntermediateTemperature,
        value=floats32(),
        unit=st.sampled_from(gatt.TemperatureUnit),
        timestamp=_opt(date_times()),
        temperature_type=_opt(_u(8)),
    )


@st.composite
def weight(draw: st.DrawFn) -> gatt.WeightMeasurement:
    with_bmi = draw(st.booleans())
    return gatt.WeightMeasurement(
        weight_raw=draw(st.one_of(st.just(gatt.WEIGHT_UNSUCCESSFUL), _u(16))),
        unit=draw(st.sampled_from(gatt.WeightUnit)),
        timestamp=draw(_opt(date_times())),
        user_id=draw(_opt(_u(8))),
        bmi_raw=draw(_u(16)) if with_bmi else None,
        height_raw=draw(_u(16)) if with_bmi else None,
    )


@st.composite
def heart_rate(draw: st.DrawFn) -> gatt.HeartRateMeasurement:
    wide = draw(st.booleans())
    return gatt.HeartRateMeasurement(
        heart_rate=draw(_u(16 if wide else 8)),
        sensor_contact=draw(st.sampled_from([None, True, False])),
        energy_expended=draw(_opt(_u(16))),
        rr_intervals=draw(_opt(st.lists(_u(16), max_size=9).map(tuple))),
        uint16_format=wide,
    )


def current_time() -> st.SearchStrategy[gatt.CurrentTime]:
    return st.builds(
        gatt.CurrentTime,
        timestamp=date_times(),
        day_of_week=_u(8),
        fractions256=_u(8),
        adjust_reason=_u(8),
    )


MEASUREMENT_STRATEGIES: dict[int, st.SearchStrategy[Measurement]] = {
    0x2A35: blood_pressure(),
    0x2A36: intermediate_cuff_pressure(),
    0x2A49: st.builds(gatt.BloodPressureFeature, _u(16)),
    0x2A18: glucose(),
    0x2A34: glucose_context(),
    0x2A51: st.builds(gatt.GlucoseFeature, _u(16)),
    0x2A52: racp(),
    0x2A5E: plx_spot_check(),
    0x2A5F: plx_continuous(),
    0x2A60: plx_features(),
    0x2A1C: temperature(),
    0x2A1E: intermediate_temperature(),
    0x2A9D: weight(),
    0x2A9E: st.builds(gatt.WeightScaleFeature, _u(32)),
    0x2A37: heart_rate(),
    0x2A19: st.builds(gatt.BatteryLevel, st.integers(0, 100)),
    0x2A2B: current_time(),
    0x2A08: st.builds(gatt.DateTimeCharacteristic, date_times()),
}


def _add_cgm() -> None:
    """The CGM characteristics' strategies (their own module, which draws on the helpers above)."""
    import cgm_strategies as cgm  # noqa: PLC0415 - it imports this module's helpers

    MEASUREMENT_STRATEGIES.update(
        {
            0x2AA7: cgm.cgm_measurement(),
            0x2AA8: cgm.cgm_feature(),
            0x2AA9: cgm.cgm_status(),
            0x2AAA: cgm.cgm_start_time(),
            0x2AAB: cgm.cgm_run_time(),
            0x2AAC: cgm.cgm_socp(),
        }
    )


_add_cgm()


def measurements() -> st.SearchStrategy[Measurement]:
    """Any characteristic value."""
    return st.one_of(*MEASUREMENT_STRATEGIES.values())
