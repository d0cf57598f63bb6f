"""Known-answer notifications, built by hand from the byte layouts in ../shared/gatt-formats.md, with the expected
``as_dict()`` and typed accessors of each characteristic."""

from __future__ import annotations

import datetime as dt

import pytest

from protocols import gatt
from protocols.datetime_ import DateTime
from protocols.errors import DecodeError, EncodeError
from protocols.ieee11073 import NAN, MderFloat

TS = "E2 07 04 11 0F 33 00"  # 2018-04-17 15:51:00
TS_ISO = "2018-04-17T15:51:00"


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_blood_pressure_full() -> None:
    # flags 0x1E: mmHg, time stamp, pulse, user id, status; 142/91/108 mmHg, pulse 72, user 1, irregular pulse.
    raw = hx(f"1E 8E00 5B00 6C00 {TS} 4800 01 0400")
    m = gatt.decode("2A35", raw)
    assert isinstance(m, gatt.BloodPressureMeasurement)
    assert m.as_dict() == {
        "systolic": 142,
        "diastolic": 91,
        "mean_arterial": 108,
        "unit": "mmHg",
        "timestamp": TS_ISO,
        "pulse_rate": 72,
        "user_id": 1,
        "measurement_status": 4,
    }
    assert (m.systolic_mmhg, m.diastolic_mmhg, m.mean_arterial_mmhg, m.pulse_rate_bpm) == (142, 91, 108, 72)
    assert m.device_time == dt.datetime(2018, 4, 17, 15, 51)  # noqa: DTZ001
    assert m.status_flags == gatt.BpMeasurementStatus.IRREGULAR_PULSE
    assert m.pulse_rate_range is gatt.PulseRateRange.WITHIN_RANGE
    assert bytes(m) == raw
    built = gatt.BloodPressureMeasurement(
        systolic=MderFloat.from_value(142),
        diastolic=MderFloat.from_value(91),
        mean_arterial=MderFloat.from_value(108),
        unit=gatt.PressureUnit.MMHG,
        timestamp=DateTime(2018, 4, 17, 15, 51, 0),
        pulse_rate=MderFloat.from_value(72),
        user_id=1,
        measurement_status=4,
    )
    assert built == m


def test_blood_pressure_kpa_nan_and_minimal() -> None:
    # flags 0x01: kPa; systolic 24.0 kPa = 240e-1 (0xF0F0), diastolic NaN, MAP NRes.
    m = gatt.decode(0x2A35, hx("01 F0F0 FF07 0008"))
    assert m.as_dict() == {
        "systolic": 24.0,
        "diastolic": "NaN",
        "mean_arterial": "NRes",
        "unit": "kPa",
        "timestamp": None,
        "pulse_rate": None,
        "user_id": None,
        "measurement_status": None,
    }
    assert isinstance(m, gatt.BloodPressureMeasurement)
    assert m.systolic_mmhg == pytest.approx(24.0 * 7.50062)
    assert m.diastolic_mmhg is None
    assert m.mean_arterial_mmhg is None
    assert m.pulse_rate_bpm is None
    assert m.device_time is None
    assert m.status_flags is None


def test_blood_pressure_rfu_flag_bits_refused_strictly_tolerated_and_not_re_emitted() -> None:
    with pytest.raises(gatt.RfuFlagsError, match="0xE0") as info:
        gatt.decode(0x2A35, hx("E0 7800 5000 6400"))
    assert info.value.bits == 0xE0
    tolerated = gatt.decode_tolerant(0x2A35, hx("E0 7800 5000 6400"))
    assert tolerated.tolerances == {gatt.DecodeTolerance.RFU_FLAGS}
    assert bytes(tolerated.measurement) == hx("00 7800 5000 6400")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("00 0108 5000 6400", "reserved"),  # systolic = reserved word 0x0801
        ("00 FFF7 5000 6400", "ambiguous"),  # 0xF7FF
        ("02 7800 5000 6400 E2 07 0D 11 0F 33 00", "month 13"),
        ("02 7800 5000 6400 E2 07 04 20 0F 33 00", "day 32"),
        ("02 7800 5000 6400 E2 07 02 1E 0F 33 00", "does not exist"),  # 30 February
        ("02 7800 5000 6400 E2 07 04 11 18 33 00", "hours 24"),
        ("04 7800 5000 6400", "Pulse Rate"),  # flag promises a pulse rate that is absent
    ],
)
def test_blood_pressure_malformed(raw: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as info:
        gatt.decode("2a35", hx(raw))
    assert info.value.what == "2A35"
    assert info.value.offset is not None


def test_intermediate_cuff_pressure_ignores_diastolic_and_map() -> None:
    # Nordic sends 0x0000 in the unused sub-fields; a reserved or ambiguous word there is ignored too.
    for unused in ("0000 0000", "FF07 FF07", "0108 FFF7"):
        m = gatt.decode("2A36", hx(f"04 6400 {unused} 4B00"))
        assert isinstance(m, gatt.IntermediateCuffPressure)
        assert m.as_dict() == {
            "cuff_pressure": 100,
            "unit": "mmHg",
            "timestamp": None,
            "pulse_rate": 75,
            "user_id": None,
            "measurement_status": None,
        }
        assert m.cuff_pressure_mmhg == 100
        assert m.pulse_rate_bpm == 75
        assert bytes(m) == hx("04 6400 FF07 FF07 4B00")


def test_blood_pressure_feature() -> None:
    m = gatt.decode(0x2A49, hx("FF 01"))
    assert m.as_dict()["features"] == 0x1FF
    assert isinstance(m, gatt.BloodPressureFeature)
    assert gatt.BloodPressureFeatureBits.USER_FACING_TIME in m.flags
    assert "multiple_bonds" in m.as_dict()["feature_names"]  # type: ignore[operator]


def test_glucose_measurement_full() -> None:
    # flags 0x1B: time offset, concentration, kg/L, sensor status, context follows.
    # seq 5, offset -60 min, 70e-5 kg/L (0xB046), capillary whole blood (1) from finger (1), result too low (bit 6).
    raw = hx(f"1B 0500 {TS} C4FF 46B0 11 4000")
    m = gatt.decode("2A18", raw)
    assert isinstance(m, gatt.GlucoseMeasurement)
    assert m.as_dict() == {
        "sequence_number": 5,
        "base_time": TS_ISO,
        "time_offset": -60,
        "concentration": 0.0007,
        "unit": "kg/L",
        "type": 1,
        "type_name": "capillary_whole_blood",
        "sample_location": 1,
        "sample_location_name": "finger",
        "sensor_status": 0x40,
        "context_follows": True,
    }
    assert m.mg_dl == pytest.approx(70.0)
    assert m.mmol_l == pytest.approx(70.0 / 18.016)
    assert m.device_time == dt.datetime(2018, 4, 17, 14, 51)  # noqa: DTZ001
    assert m.sensor_status_flags == gatt.GlucoseSensorStatus.RESULT_TOO_LOW
    assert m.out_of_device_range
    assert m.sequence_number == 5
    assert bytes(m) == raw


def test_glucose_mol_per_litre_rfu_type_and_unknown_date() -> None:
    # flags 0x06: concentration in mol/L; 39e-4 mol/L (0xC027); type 0x0B (RFU) at location 0xF (not available).
    m = gatt.decode(0x2A18, hx("06 0100 0000 04 11 14 29 3B 27C0 FB"))
    assert isinstance(m, gatt.GlucoseMeasurement)
    assert m.as_dict()["base_time"] == "0000-04-17T20:41:59"
    assert m.device_time is None
    assert m.mmol_l == pytest.approx(3.9)
    assert m.mg_dl == pytest.approx(3.9 * 18.016)
    assert m.type == 11
    assert m.as_dict()["type_name"] is None
    assert m.sample_location is gatt.SampleLocation.NOT_AVAILABLE
    assert m.as_dict()["unit"] == "mol/L"


def test_glucose_minimal() -> None:
    m = gatt.decode(0x2A18, hx(f"00 0700 {TS}"))
    assert isinstance(m, gatt.GlucoseMeasurement)
    assert (m.concentration, m.mg_dl, m.mmol_l, m.sensor_status_flags) == (None, None, None, None)
    assert m.as_dict()["concentration"] is None
    assert not m.out_of_device_range


def test_glucose_context_full() -> None:
    # flags 0xFF: all fields, litres, extended flags; seq 5; breakfast 50e-3 kg (0xD032); postprandial;
    # self (1) / no health issues (5); 1800 s at 40 %; rapid-acting 10e-6 L... as 0xA00A; HbA1c 6.5 % (0xF041).
    raw = hx("FF 0500 00 01 32D0 02 51 0807 28 01 0AA0 41F0")
    m = gatt.decode("2A34", raw)
    assert isinstance(m, gatt.GlucoseMeasurementContext)
    assert m.as_dict() == {
        "sequence_number": 5,
        "extended_flags": 0,
        "carbohydrate_id": 1,
        "carbohydrate_id_name": "breakfast",
        "carbohydrate": 0.05,
        "meal": 2,
        "meal_name": "postprandial",
        "tester": 1,
        "tester_name": "self",
        "health": 5,
        "health_name": "no_health_issues",
        "exercise_duration": 1800,
        "exercise_intensity": 40,
        "medication_id": 1,
        "medication_id_name": "rapid_acting_insulin",
        "medication": 1e-5,
        "medication_unit": "L",
        "hba1c": 6.5,
    }
    assert bytes(m) == raw


def test_glucose_context_minimal() -> None:
    m = gatt.decode(0x2A34, hx("00 0900"))
    assert m.as_dict()["sequence_number"] == 9
    assert m.as_dict()["medication_unit"] is None
    with pytest.raises(DecodeError, match="Extended Flags"):
        gatt.decode(0x2A34, hx("80 0900"))


def test_glucose_feature() -> None:
    m = gatt.decode(0x2A51, hx("0304"))
    assert isinstance(m, gatt.GlucoseFeature)
    assert m.flags == (
        gatt.GlucoseFeatureBits.LOW_BATTERY_DETECTION
        | gatt.GlucoseFeatureBits.SENSOR_MALFUNCTION_DETECTION
        | gatt.GlucoseFeatureBits.MULTIPLE_BOND
    )


def test_plx_spot_check_full() -> None:
    # flags 0x0F; SpO2 97 %, PR 68; status bit 14 (questionable); device status bit 5 (low perfusion); PAI 2.5 %.
    raw = hx(f"0F 6100 4400 {TS} 0040 200000 19F0")
    m = gatt.decode("2A5E", raw)
    assert isinstance(m, gatt.PlxSpotCheckMeasurement)
    assert m.as_dict() == {
        "spo2": 97,
        "pulse_rate": 68,
        "timestamp": TS_ISO,
        "device_clock_not_set": False,
        "measurement_status": 0x4000,
        "device_and_sensor_status": 0x20,
        "pulse_amplitude_index": 2.5,
        "is_unreliable": True,
    }
    assert (m.spo2_percent, m.pulse_bpm) == (97, 68)
    assert m.device_time == dt.datetime(2018, 4, 17, 15, 51)  # noqa: DTZ001
    assert bytes(m) == raw


def test_plx_spot_check_clock_not_set() -> None:
    m = gatt.decode(0x2A5E, hx(f"11 6200 FF07 {TS}"))
    assert isinstance(m, gatt.PlxSpotCheckMeasurement)
    assert m.device_clock_not_set
    assert m.device_time is None
    assert m.pulse_bpm is None
    assert not m.is_unreliable


@pytest.mark.parametrize(
    ("status", "device", "unreliable"),
    [(None, None, False), (1 << 13, None, True), (1 << 15, None, True), (1 << 12, None, False),
     (None, 1 << 13, True), (None, 1 << 15, True), (None, 1 << 14, False), (None, 1 << 16, False)],
)  # fmt: skip
def test_plx_reliability_bits(status: int | None, device: int | None, unreliable: bool) -> None:
    m = gatt.PlxContinuousMeasurement(
        MderFloat(95, 0), MderFloat(70, 0), measurement_status=status, device_and_sensor_status=device
    )
    assert m.is_unreliable is unreliable


def test_plx_continuous_full() -> None:
    # flags 0x1F; normal 96/70, fast 95/71, slow 97/69, status 0x0080 (validated), device 0, PAI 31e-1.
    raw = hx("1F 6000 4600 5F00 4700 6100 4500 8000 000000 1FF0")
    m = gatt.decode("2A5F", raw)
    assert isinstance(m, gatt.PlxContinuousMeasurement)
    assert m.as_dict() == {
        "spo2": 96,
        "pulse_rate": 70,
        "spo2_fast": 95,
        "pulse_rate_fast": 71,
        "spo2_slow": 97,
        "pulse_rate_slow": 69,
        "measurement_status": 0x80,
        "device_and_sensor_status": 0,
        "pulse_amplitude_index": 3.1,
        "is_unreliable": False,
    }
    assert bytes(m) == raw


def test_plx_features() -> None:
    m = gatt.decode("2A60", hx("0300 00E0 20A000"))
    assert m.as_dict() == {
        "supported_features": 3,
        "feature_names": ["measurement_status_support_present", "device_sensor_status_support_present"],
        "measurement_status_support": 0xE000,
        "device_and_sensor_status_support": 0xA020,
    }
    assert gatt.decode("2A60", hx("8000")).as_dict()["measurement_status_support"] is None
    with pytest.raises(DecodeError):
        gatt.decode("2A60", hx("0200 0000"))


def test_temperature_full() -> None:
    raw = hx(f"06 B00E00FE {TS} 02")  # 37.60 °C, body
    m = gatt.decode("2A1C", raw)
    assert isinstance(m, gatt.TemperatureMeasurement)
    assert m.as_dict() == {
        "value": 37.6,
        "unit": "C",
        "timestamp": TS_ISO,
        "temperature_type": 2,
        "temperature_type_name": "body",
    }
    assert m.celsius == pytest.approx(37.6)
    assert m.device_time == dt.datetime(2018, 4, 17, 15, 51)  # noqa: DTZ001
    assert bytes(m) == raw


def test_temperature_fahrenheit_and_intermediate() -> None:
    m = gatt.decode("2A1E", hx("01 EC0300FF"))  # 100.4 °F
    assert isinstance(m, gatt.IntermediateTemperature)
    assert m.as_dict()["unit"] == "F"
    assert m.celsius == pytest.approx(38.0)
    assert m != gatt.TemperatureMeasurement(m.value, m.unit)
    nan = gatt.decode("2A1C", hx("00 FFFF7F00"))
    assert isinstance(nan, gatt.TemperatureMeasurement)
    assert nan.as_dict()["value"] == "NaN"
    assert nan.celsius is None
    with pytest.raises(DecodeError, match="reserved"):
        gatt.decode("2A1C", hx("00 01008000"))


def test_weight_full() -> None:
    # flags 0x0E: SI, time stamp, user 3, BMI 25.9 (259), height 1.700 m (1700); weight 72.5 kg = 14500 x 0.005.
    raw = hx(f"0E A438 {TS} 03 0301 A406")
    m = gatt.decode("2A9D", raw)
    assert isinstance(m, gatt.WeightMeasurement)
    assert m.as_dict() == {
        "weight": 72.5,
        "unit": "kg",
        "timestamp": TS_ISO,
        "user_id": 3,
        "bmi": 25.9,
        "height": 1.7,
        "height_unit": "m",
    }
    assert m.kg == 72.5
    assert bytes(m) == raw
    built = gatt.WeightMeasurement.of(72.5, timestamp=DateTime(2018, 4, 17, 15, 51), user_id=3, bmi=25.9, height=1.7)
    assert built == m


def test_weight_imperial_and_unsuccessful() -> None:
    m = gatt.decode(0x2A9D, hx("09 3C3C 4001 4402"))  # 154.20 lb, BMI 32.0, 58.0 in
    assert isinstance(m, gatt.WeightMeasurement)
    assert m.as_dict() == {
        "weight": 154.2,
        "unit": "lb",
        "timestamp": None,
        "user_id": None,
        "bmi": 32.0,
        "height": 58.0,
        "height_unit": "in",
    }
    assert m.kg == pytest.approx(154.2 * 0.453592)
    failed = gatt.decode(0x2A9D, hx("00 FFFF"))
    assert isinstance(failed, gatt.WeightMeasurement)
    assert failed.as_dict()["weight"] == "NaN"
    assert failed.kg is None
    assert gatt.WeightMeasurement.of(None) == failed
    with pytest.raises(EncodeError):
        gatt.WeightMeasurement.of(327.675)


def test_weight_scale_feature() -> None:
    m = gatt.decode(0x2A9E, hx("BF010000"))  # time stamp, multiple users, BMI, weight res 7, height res 3
    assert m.as_dict() == {
        "features": 0x1BF,
        "time_stamp_supported": True,
        "multiple_users_supported": True,
        "bmi_supported": True,
        "weight_resolution": 7,
        "height_resolution": 3,
    }


def test_heart_rate_full() -> None:
    # flags 0x1F: uint16 HR, contact detected, energy, RR; 72 bpm, 300 kJ, RR 1024 and 512 (1.0 s, 0.5 s).
    raw = hx("1F 4800 2C01 0004 0002")
    m = gatt.decode("2A37", raw)
    assert isinstance(m, gatt.HeartRateMeasurement)
    assert m.as_dict() == {
        "heart_rate": 72,
        "sensor_contact": True,
        "energy_expended": 300,
        "rr_intervals": [1.0, 0.5],
    }
    assert m.bpm == 72
    assert not m.skin_contact_lost
    assert bytes(m) == raw


@pytest.mark.parametrize(("flags", "contact"), [(0x00, None), (0x02, None), (0x04, False), (0x06, True)])
def test_heart_rate_sensor_contact(flags: int, contact: bool | None) -> None:
    m = gatt.decode("2A37", bytes([flags, 60]))
    assert isinstance(m, gatt.HeartRateMeasurement)
    assert m.sensor_contact is contact
    assert m.skin_contact_lost is (contact is False)
    assert m.as_dict() == {"heart_rate": 60, "sensor_contact": contact, "energy_expended": None, "rr_intervals": None}


def test_heart_rate_prefixes() -> None:
    raw = hx("18 48 2C01 0004 0002 0001")  # uint8 HR, energy, three RR intervals
    with pytest.raises(DecodeError):
        gatt.decode("2A37", raw[:1])
    with pytest.raises(DecodeError):
        gatt.decode("2A37", raw[:3])
    for length in range(4, len(raw)):
        if (length - 4) % 2:
            with pytest.raises(DecodeError, match="odd"):
                gatt.decode("2A37", raw[:length])
        else:
            m = gatt.decode("2A37", raw[:length])
            assert isinstance(m, gatt.HeartRateMeasurement)
            assert m.rr_intervals == (1024, 512, 256)[: (length - 4) // 2]


def test_heart_rate_uint8_overflow_refused() -> None:
    with pytest.raises(EncodeError):
        gatt.HeartRateMeasurement(300)
    assert bytes(gatt.HeartRateMeasurement(300, uint16_format=True)) == hx("01 2C01")


def test_battery_level() -> None:
    assert gatt.decode("2A19", hx("55")).as_dict() == {"battery_level": 85}
    for raw in ("65", "FF", "5500"):
        with pytest.raises(DecodeError):
            gatt.decode("2A19", hx(raw))


def test_current_time() -> None:
    raw = hx(f"{TS} 02 80 01")  # Tuesday, 0.5 s, manual update
    m = gatt.decode("2A2B", raw)
    assert isinstance(m, gatt.CurrentTime)
    assert m.as_dict() == {
        "timestamp": TS_ISO,
        "day_of_week": 2,
        "day_of_week_name": "tuesday",
        "fractions256": 128,
        "adjust_reason": 1,
    }
    assert m.device_time == dt.datetime(2018, 4, 17, 15, 51, 0, 500000)  # noqa: DTZ001
    assert m.datetime == m.device_time
    assert bytes(m) == raw
    now = dt.datetime(2018, 4, 17, 15, 51, 0, 500000)  # noqa: DTZ001
    assert gatt.CurrentTime.from_datetime(now, adjust_reason=1) == m


def test_date_time_characteristic() -> None:
    m = gatt.decode("2A08", hx(TS))
    assert m.as_dict() == {"timestamp": TS_ISO}
    assert isinstance(m, gatt.DateTimeCharacteristic)
    assert m.device_time == dt.datetime(2018, 4, 17, 15, 51)  # noqa: DTZ001
    unknown = gatt.decode("2A08", hx("0000 00 00 0C 00 00"))
    assert unknown.as_dict() == {"timestamp": "0000-00-00T12:00:00"}
    assert isinstance(unknown, gatt.DateTimeCharacteristic)
    assert unknown.device_time is None


@pytest.mark.parametrize(
    "raw",
    ["2D06 04 11 0F 33 00", "1027 04 11 0F 33 00", "E207 04 11 0F 3C 00", "E207 04 11 0F 33 3C", "E307 02 1D 00 00 00"],
)
def test_date_time_out_of_range(raw: str) -> None:
    # year 1581, year 10000, minute 60, second 60, 29 February 2019
    with pytest.raises(DecodeError):
        gatt.decode("2A08", hx(raw))


def test_date_time_leap_day_with_unknown_year() -> None:
    assert gatt.decode("2A08", hx("0000 02 1D 00 00 00")).as_dict() == {"timestamp": "0000-02-29T00:00:00"}
    assert DateTime(2020, 2, 29).to_datetime() == dt.datetime(2020, 2, 29)  # noqa: DTZ001


def test_constructor_invariants() -> None:
    with pytest.raises(EncodeError):
        gatt.GlucoseMeasurement(1, DateTime(2020, 1, 1), concentration=NAN)  # type and location missing
    with pytest.raises(EncodeError):
        gatt.PlxContinuousMeasurement(NAN, NAN, spo2_fast=NAN)
    with pytest.raises(EncodeError):
        gatt.BloodPressureMeasurement(MderFloat(3000, 0), NAN, NAN)  # beyond the SFLOAT mantissa
    with pytest.raises(EncodeError):
        gatt.BloodPressureMeasurement(NAN, NAN, NAN, user_id=256)
    with pytest.raises(EncodeError):
        gatt.PlxFeatures(1)  # bit 0 promises measurement status support
    with pytest.raises(EncodeError):
        gatt.BatteryLevel(101)
    with pytest.raises(EncodeError):
        DateTime(2021, 13, 1)
