"""The rule engine: every tier at its edges, unit conversions, the BP crisis machine, trends and time-driven rules."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.bp_crisis import BpConfirmation, BpCrisisState, BpStep
from gateway.clock import ManualClock
from gateway.config import DeviceKind
from gateway.findings import ConditionRef, Evaluation, Transition
from gateway.observations import Observation, Vital
from gateway.rules import DeviceWatch, ResidentRules, RuleEngine, ScheduleEntry, UnknownResidentError
from gateway.thresholds import (
    Key,
    Tier,
    fahrenheit_to_celsius,
    kpa_to_mmhg,
    lb_to_kg,
    mmol_per_l_to_mg_dl,
    resolve_thresholds,
)

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
_ids = itertools.count()


def make_engine(
    profiles: tuple[str, ...] = (),
    overrides: Mapping[str, float] | None = None,
    *,
    schedule: tuple[ScheduleEntry, ...] = (),
    devices: tuple[DeviceWatch, ...] = (),
    started_at: datetime = T0,
    zone: ZoneInfo | None = None,
) -> RuleEngine:
    rules = ResidentRules(resolve_thresholds(profiles, overrides), schedule, devices)
    clock = ManualClock(started_at)
    return RuleEngine({"r1": rules}, started_at=started_at, local_zone=zone or UTC, clock=clock)


def at(engine: RuleEngine, when: datetime) -> Evaluation:
    """Let time pass on the engine's manual clock until its wall clock reads `when` (or set the wall clock back,
    without moving the monotonic one), then tick."""
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    step = when - clock.now()
    if step >= timedelta(0):
        clock.advance(step)
    else:
        clock.step_wall(step)
    return engine.tick()


def obs(
    values: Mapping[Vital, float],
    at: datetime = T0,
    *,
    kind: DeviceKind = DeviceKind.BLOOD_PRESSURE,
    device: str = "AA:00:00:00:00:01",
    unreliable: bool = False,
) -> Observation:
    return Observation("r1", device, kind, f"rec-{next(_ids)}", at, values, unreliable)


def found(evaluation: Evaluation) -> dict[str, tuple[Tier, str]]:
    return {f.condition: (f.tier, f.message) for f in evaluation.findings}


def tier_of(evaluation: Evaluation, condition: str) -> Tier | None:
    for f in evaluation.findings:
        if f.condition == condition:
            return f.tier
    return None


def normal_conditions(evaluation: Evaluation) -> set[str]:
    return {ref.condition for ref in evaluation.normal}


# -- single thresholds at their edges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "kind", "condition", "tier"),
    [
        # Systolic: stage 2 at >=140 notice, >=160 warning (diastolic held normal).
        ({Vital.SYSTOLIC: 139, Vital.DIASTOLIC: 70}, DeviceKind.BLOOD_PRESSURE, "bp.high", None),
        ({Vital.SYSTOLIC: 140, Vital.DIASTOLIC: 70}, DeviceKind.BLOOD_PRESSURE, "bp.high", Tier.NOTICE),
        ({Vital.SYSTOLIC: 159.9, Vital.DIASTOLIC: 70}, DeviceKind.BLOOD_PRESSURE, "bp.high", Tier.NOTICE),
        ({Vital.SYSTOLIC: 160, Vital.DIASTOLIC: 70}, DeviceKind.BLOOD_PRESSURE, "bp.high", Tier.WARNING),
        ({Vital.SYSTOLIC: 180, Vital.DIASTOLIC: 70}, DeviceKind.BLOOD_PRESSURE, "bp.high", Tier.WARNING),
        ({Vital.SYSTOLIC: 120, Vital.DIASTOLIC: 89}, DeviceKind.BLOOD_PRESSURE, "bp.high", None),
        ({Vital.SYSTOLIC: 120, Vital.DIASTOLIC: 90}, DeviceKind.BLOOD_PRESSURE, "bp.high", Tier.NOTICE),
        ({Vital.SYSTOLIC: 120, Vital.DIASTOLIC: 100}, DeviceKind.BLOOD_PRESSURE, "bp.high", Tier.WARNING),
        ({Vital.SYSTOLIC: 150, Vital.DIASTOLIC: 120}, DeviceKind.BLOOD_PRESSURE, "bp.high", Tier.WARNING),
        # NEWS2: SBP <=90 scores 3, 91-100 scores 2.
        ({Vital.SYSTOLIC: 101, Vital.DIASTOLIC: 60}, DeviceKind.BLOOD_PRESSURE, "bp.low", None),
        ({Vital.SYSTOLIC: 100, Vital.DIASTOLIC: 60}, DeviceKind.BLOOD_PRESSURE, "bp.low", Tier.WARNING),
        ({Vital.SYSTOLIC: 91, Vital.DIASTOLIC: 60}, DeviceKind.BLOOD_PRESSURE, "bp.low", Tier.WARNING),
        ({Vital.SYSTOLIC: 90, Vital.DIASTOLIC: 60}, DeviceKind.BLOOD_PRESSURE, "bp.low", Tier.CRITICAL),
        # ADA hypoglycaemia: level 1 <70, level 2 <54 (critical at once).
        ({Vital.GLUCOSE: 70}, DeviceKind.GLUCOSE, "glucose.low", None),
        ({Vital.GLUCOSE: 69.9}, DeviceKind.GLUCOSE, "glucose.low", Tier.NOTICE),
        ({Vital.GLUCOSE: 54}, DeviceKind.GLUCOSE, "glucose.low", Tier.NOTICE),
        ({Vital.GLUCOSE: 53.9}, DeviceKind.GLUCOSE, "glucose.low", Tier.CRITICAL),
        # Hyperglycaemia >180, >250, HHS >=600.
        ({Vital.GLUCOSE: 180}, DeviceKind.GLUCOSE, "glucose.high", None),
        ({Vital.GLUCOSE: 180.1}, DeviceKind.GLUCOSE, "glucose.high", Tier.NOTICE),
        ({Vital.GLUCOSE: 250}, DeviceKind.GLUCOSE, "glucose.high", Tier.NOTICE),
        ({Vital.GLUCOSE: 250.1}, DeviceKind.GLUCOSE, "glucose.high", Tier.WARNING),
        ({Vital.GLUCOSE: 599.9}, DeviceKind.GLUCOSE, "glucose.high", Tier.WARNING),
        ({Vital.GLUCOSE: 600}, DeviceKind.GLUCOSE, "glucose.high", Tier.CRITICAL),
        # SpO2, NEWS2 scale 1.
        ({Vital.SPO2: 96}, DeviceKind.OXIMETER, "spo2.low", None),
        ({Vital.SPO2: 95}, DeviceKind.OXIMETER, "spo2.low", Tier.NOTICE),
        ({Vital.SPO2: 94}, DeviceKind.OXIMETER, "spo2.low", Tier.NOTICE),
        ({Vital.SPO2: 93}, DeviceKind.OXIMETER, "spo2.low", Tier.WARNING),
        ({Vital.SPO2: 92}, DeviceKind.OXIMETER, "spo2.low", Tier.WARNING),
        ({Vital.SPO2: 91}, DeviceKind.OXIMETER, "spo2.low", Tier.CRITICAL),
        # Pulse, NEWS2 bands.
        ({Vital.PULSE: 40}, DeviceKind.HEART_RATE, "pulse.low", Tier.CRITICAL),
        ({Vital.PULSE: 41}, DeviceKind.HEART_RATE, "pulse.low", Tier.NOTICE),
        ({Vital.PULSE: 50}, DeviceKind.HEART_RATE, "pulse.low", Tier.NOTICE),
        ({Vital.PULSE: 51}, DeviceKind.HEART_RATE, "pulse.low", None),
        ({Vital.PULSE: 90}, DeviceKind.HEART_RATE, "pulse.high", None),
        ({Vital.PULSE: 91}, DeviceKind.HEART_RATE, "pulse.high", Tier.NOTICE),
        ({Vital.PULSE: 110}, DeviceKind.HEART_RATE, "pulse.high", Tier.NOTICE),
        ({Vital.PULSE: 111}, DeviceKind.HEART_RATE, "pulse.high", Tier.WARNING),
        ({Vital.PULSE: 130}, DeviceKind.HEART_RATE, "pulse.high", Tier.WARNING),
        ({Vital.PULSE: 131}, DeviceKind.HEART_RATE, "pulse.high", Tier.CRITICAL),
        # Temperature, NEWS2 bands.
        ({Vital.TEMPERATURE: 35.0}, DeviceKind.THERMOMETER, "temperature.low", Tier.CRITICAL),
        ({Vital.TEMPERATURE: 35.1}, DeviceKind.THERMOMETER, "temperature.low", Tier.NOTICE),
        ({Vital.TEMPERATURE: 36.0}, DeviceKind.THERMOMETER, "temperature.low", Tier.NOTICE),
        ({Vital.TEMPERATURE: 36.1}, DeviceKind.THERMOMETER, "temperature.low", None),
        ({Vital.TEMPERATURE: 38.0}, DeviceKind.THERMOMETER, "temperature.high", None),
        ({Vital.TEMPERATURE: 38.1}, DeviceKind.THERMOMETER, "temperature.high", Tier.NOTICE),
        ({Vital.TEMPERATURE: 39.0}, DeviceKind.THERMOMETER, "temperature.high", Tier.NOTICE),
        ({Vital.TEMPERATURE: 39.1}, DeviceKind.THERMOMETER, "temperature.high", Tier.WARNING),
    ],
)
def test_single_threshold_edges(
    values: Mapping[Vital, float], kind: DeviceKind, condition: str, tier: Tier | None
) -> None:
    evaluation = make_engine().evaluate(obs(values, kind=kind))
    assert tier_of(evaluation, condition) is tier
    if tier is None:
        assert condition in normal_conditions(evaluation)
    else:
        assert condition not in normal_conditions(evaluation)


def test_messages_follow_the_tier() -> None:
    engine = make_engine()
    assert found(engine.evaluate(obs({Vital.GLUCOSE: 53}, kind=DeviceKind.GLUCOSE)))["glucose.low"] == (
        Tier.CRITICAL,
        "glucose_hypo_critical",
    )
    assert found(engine.evaluate(obs({Vital.SPO2: 90}, kind=DeviceKind.OXIMETER)))["spo2.low"] == (
        Tier.CRITICAL,
        "spo2_critical",
    )
    assert found(engine.evaluate(obs({Vital.TEMPERATURE: 35.5}, kind=DeviceKind.THERMOMETER)))["temperature.low"] == (
        Tier.NOTICE,
        "temperature_low",
    )


def test_a_finding_carries_value_threshold_device_and_record() -> None:
    reading = obs({Vital.SPO2: 92}, kind=DeviceKind.OXIMETER)
    (finding,) = make_engine().evaluate(reading).findings
    assert (finding.value, finding.threshold) == (92, 93)
    assert (finding.device, finding.record_id, finding.at) == (reading.device, reading.record_id, T0)


@pytest.mark.parametrize(
    ("spo2", "tier"),
    [
        (88, None),
        (92, None),
        (87, Tier.NOTICE),
        (86, Tier.NOTICE),
        (85, Tier.WARNING),
        (84, Tier.WARNING),
        (83, Tier.CRITICAL),
    ],
)
def test_copd_profile_spo2_edges(spo2: float, tier: Tier | None) -> None:
    evaluation = make_engine(("copd",)).evaluate(obs({Vital.SPO2: spo2}, kind=DeviceKind.OXIMETER))
    assert tier_of(evaluation, "spo2.low") is tier


def test_nan_is_no_reading_never_zero() -> None:
    evaluation = make_engine().evaluate(obs({Vital.SYSTOLIC: math.nan, Vital.DIASTOLIC: 80, Vital.PULSE: 70}))
    assert evaluation.findings == ()
    assert "bp.low" not in normal_conditions(evaluation)  # no systolic, nothing said about low BP


# -- units ---------------------------------------------------------------------------------------------------


def test_kpa_readings_are_judged_in_mmhg() -> None:
    engine = make_engine()
    # 24.0 kPa is 180.015 mmHg: above the crisis line; 23.9 kPa (179.3) is not.
    assert found(engine.evaluate(obs({Vital.SYSTOLIC: kpa_to_mmhg(24.0), Vital.DIASTOLIC: kpa_to_mmhg(12.0)})))[
        "bp.high"
    ] == (Tier.WARNING, "bp_crisis_remeasure")
    other = make_engine()
    assert found(other.evaluate(obs({Vital.SYSTOLIC: kpa_to_mmhg(23.9), Vital.DIASTOLIC: kpa_to_mmhg(12.0)})))[
        "bp.high"
    ] == (Tier.WARNING, "bp_very_high")
    assert tier_of(other.evaluate(obs({Vital.SYSTOLIC: kpa_to_mmhg(12.0), Vital.DIASTOLIC: 60})), "bp.low") is (
        Tier.WARNING
    )  # 90.007 mmHg is just above the critical line


def test_mmol_readings_are_judged_in_mg_dl() -> None:
    engine = make_engine()
    g = DeviceKind.GLUCOSE
    assert tier_of(engine.evaluate(obs({Vital.GLUCOSE: mmol_per_l_to_mg_dl(3.0)}, kind=g)), "glucose.low") is (
        Tier.NOTICE
    )
    assert tier_of(engine.evaluate(obs({Vital.GLUCOSE: mmol_per_l_to_mg_dl(2.9)}, kind=g)), "glucose.low") is (
        Tier.CRITICAL
    )
    assert tier_of(engine.evaluate(obs({Vital.GLUCOSE: mmol_per_l_to_mg_dl(33.4)}, kind=g)), "glucose.high") is (
        Tier.CRITICAL
    )


def test_fahrenheit_readings_are_judged_in_celsius() -> None:
    engine = make_engine()
    th = DeviceKind.THERMOMETER
    assert tier_of(
        engine.evaluate(obs({Vital.TEMPERATURE: fahrenheit_to_celsius(102.2)}, kind=th)), "temperature.high"
    ) is (Tier.NOTICE)
    assert tier_of(
        engine.evaluate(obs({Vital.TEMPERATURE: fahrenheit_to_celsius(102.4)}, kind=th)), "temperature.high"
    ) is (Tier.WARNING)
    assert tier_of(
        engine.evaluate(obs({Vital.TEMPERATURE: fahrenheit_to_celsius(95.0)}, kind=th)), "temperature.low"
    ) is (Tier.CRITICAL)


# -- unreliable readings ---------------------------------------------------------------------------------------


def test_unreliable_readings_are_reported_but_never_alarmed_on() -> None:
    engine = make_engine()
    evaluation = engine.evaluate(obs({Vital.SYSTOLIC: 230, Vital.DIASTOLIC: 130}, unreliable=True))
    assert found(evaluation) == {"reading.unreliable": (Tier.INFO, "reading_unreliable")}
    assert engine.bp_state("r1") is BpCrisisState.IDLE
    assert not normal_conditions(evaluation) & {"bp.high", "bp.low"}
    evaluation = engine.evaluate(obs({Vital.GLUCOSE: 20}, kind=DeviceKind.GLUCOSE, unreliable=True))
    assert [f.tier for f in evaluation.findings] == [Tier.INFO]


def test_unreliable_readings_enter_no_history() -> None:
    engine = make_engine()
    g = DeviceKind.GLUCOSE
    engine.evaluate(obs({Vital.GLUCOSE: 100}, T0, kind=g))
    engine.evaluate(obs({Vital.GLUCOSE: 300}, T0 + timedelta(hours=1), kind=g, unreliable=True))
    # Compared with 100, not with the flagged 300: +20% is no swing.
    assert tier_of(engine.evaluate(obs({Vital.GLUCOSE: 120}, T0 + timedelta(hours=2), kind=g)), "glucose.swing") is None


# -- BP crisis confirmation ------------------------------------------------------------------------------------


def bp(sys_: float, dia: float, at: datetime) -> Observation:
    return obs({Vital.SYSTOLIC: sys_, Vital.DIASTOLIC: dia, Vital.PULSE: 80}, at)


def test_crisis_edges_180_and_120_are_not_crisis_181_and_121_are() -> None:
    assert make_engine().evaluate(bp(180, 100, T0)).findings[0].message == "bp_very_high"
    assert make_engine().evaluate(bp(181, 100, T0)).findings[0].message == "bp_crisis_remeasure"
    assert make_engine().evaluate(bp(150, 120, T0)).findings[0].message == "bp_very_high"
    assert make_engine().evaluate(bp(150, 121, T0)).findings[0].message == "bp_crisis_remeasure"


def test_crisis_confirmed_by_the_re_measurement() -> None:
    engine = make_engine()
    first = engine.evaluate(bp(195, 100, T0))
    assert found(first)["bp.high"] == (Tier.WARNING, "bp_crisis_remeasure")
    assert engine.bp_state("r1") is BpCrisisState.AWAITING_REMEASURE
    second = engine.evaluate(bp(190, 100, T0 + timedelta(seconds=300)))
    (finding,) = [f for f in second.findings if f.condition == "bp.high"]
    assert (finding.tier, finding.message, finding.transition) == (
        Tier.CRITICAL,
        "bp_crisis_confirmed",
        Transition.CONFIRMED,
    )
    assert engine.bp_state("r1") is BpCrisisState.CONFIRMED
    third = engine.evaluate(bp(200, 100, T0 + timedelta(seconds=900)))
    assert found(third)["bp.high"] == (Tier.CRITICAL, "bp_crisis_confirmed")
    assert third.findings[0].transition is Transition.NONE


def test_a_re_measurement_before_the_rest_period_does_not_count() -> None:
    engine = make_engine()
    engine.evaluate(bp(195, 100, T0))
    early = engine.evaluate(bp(199, 100, T0 + timedelta(seconds=299)))
    assert found(early)["bp.high"] == (Tier.WARNING, "bp_crisis_remeasure")
    early_low = engine.evaluate(bp(150, 85, T0 + timedelta(seconds=200)))
    assert found(early_low)["bp.high"] == (Tier.WARNING, "bp_crisis_remeasure")
    assert early_low.findings[0].value == 199  # reported against the latest crisis reading
    assert engine.bp_state("r1") is BpCrisisState.AWAITING_REMEASURE


def test_crisis_confirmed_by_the_deadline_through_tick() -> None:
    engine = make_engine()
    engine.evaluate(bp(185, 125, T0))
    assert at(engine, T0 + timedelta(seconds=599)).findings == ()
    evaluation = at(engine, T0 + timedelta(seconds=600))
    (finding,) = evaluation.findings
    assert (finding.condition, finding.tier, finding.message, finding.transition) == (
        "bp.high",
        Tier.CRITICAL,
        "bp_crisis_confirmed",
        Transition.CONFIRMED,
    )
    assert (finding.value, finding.threshold) == (185, 180)
    assert at(engine, T0 + timedelta(seconds=700)).findings == ()  # confirmed once, not on every tick


def test_confirm_delay_and_deadline_are_configurable() -> None:
    engine = make_engine((), {"bp.confirm_delay_s": 120, "bp.confirm_deadline_s": 240})
    engine.evaluate(bp(185, 100, T0))
    assert found(engine.evaluate(bp(186, 100, T0 + timedelta(seconds=120))))["bp.high"][0] is Tier.CRITICAL
    other = make_engine((), {"bp.confirm_delay_s": 120, "bp.confirm_deadline_s": 240})
    other.evaluate(bp(185, 100, T0))
    assert at(other, T0 + timedelta(seconds=240)).findings[0].tier is Tier.CRITICAL


def test_a_normal_re_measurement_downgrades_to_its_own_tier() -> None:
    engine = make_engine()
    engine.evaluate(bp(190, 100, T0))
    evaluation = engine.evaluate(bp(165, 95, T0 + timedelta(seconds=360)))
    (finding,) = [f for f in evaluation.findings if f.condition == "bp.high"]
    assert (finding.tier, finding.message, finding.transition) == (
        Tier.WARNING,
        "bp_very_high",
        Transition.DOWNGRADED,
    )
    assert engine.bp_state("r1") is BpCrisisState.IDLE
    assert at(engine, T0 + timedelta(seconds=3600)).findings == ()  # no deadline left behind


def test_a_fully_normal_re_measurement_clears_bp_high() -> None:
    engine = make_engine()
    engine.evaluate(bp(190, 100, T0))
    evaluation = engine.evaluate(bp(128, 78, T0 + timedelta(seconds=400)))
    assert "bp.high" in normal_conditions(evaluation)
    assert tier_of(evaluation, "bp.high") is None


def test_a_confirmed_crisis_ends_with_a_reading_below_the_line() -> None:
    engine = make_engine()
    engine.evaluate(bp(190, 100, T0))
    at(engine, T0 + timedelta(seconds=600))
    evaluation = engine.evaluate(bp(145, 85, T0 + timedelta(seconds=1200)))
    assert evaluation.findings[0].transition is Transition.DOWNGRADED
    assert evaluation.findings[0].tier is Tier.NOTICE
    assert engine.bp_state("r1") is BpCrisisState.IDLE
    again = engine.evaluate(bp(190, 100, T0 + timedelta(seconds=2000)))
    assert found(again)["bp.high"] == (Tier.WARNING, "bp_crisis_remeasure")  # a fresh cycle


def test_hypertension_profile_makes_diastolic_111_a_crisis() -> None:
    assert found(make_engine(("hypertension",)).evaluate(bp(150, 111, T0)))["bp.high"][1] == "bp_crisis_remeasure"
    assert found(make_engine(("hypertension",)).evaluate(bp(150, 110, T0)))["bp.high"][1] == "bp_very_high"


def test_bp_machine_alone() -> None:
    delay, deadline = timedelta(minutes=5), timedelta(minutes=10)
    now = timedelta(0)
    m = BpConfirmation()
    assert m.on_reading(T0, False, delay, deadline, mono=0.0, age=now) is BpStep.NONE
    assert m.on_reading(T0, True, delay, deadline, mono=0.0, age=now) is BpStep.ASK_REMEASURE
    assert m.due == 600.0
    # A stored older reading arriving late is never the re-measurement.
    assert m.on_reading(T0 - timedelta(hours=1), True, delay, deadline, mono=1.0, age=timedelta(hours=1)) is BpStep.WAIT
    # A reading after the deadline with no tick in between: confirmed, then judged.
    late = m.on_reading(T0 + timedelta(minutes=11), False, delay, deadline, mono=660.0, age=now)
    assert late is BpStep.DOWNGRADE
    assert m.state is BpCrisisState.IDLE
    assert m.on_tick(18000.0) is BpStep.NONE


def test_bp_deadline_of_a_stored_reading_counts_from_when_it_was_taken() -> None:
    delay, deadline = timedelta(minutes=5), timedelta(minutes=10)
    m = BpConfirmation()
    # Taken 4 minutes before it arrived at monotonic 100 s: 6 minutes are left.
    assert m.on_reading(T0, True, delay, deadline, mono=100.0, age=timedelta(minutes=4)) is BpStep.ASK_REMEASURE
    assert m.on_tick(459.0) is BpStep.NONE
    assert m.on_tick(460.0) is BpStep.CONFIRM


def test_a_wall_clock_step_neither_confirms_nor_delays_the_bp_deadline() -> None:
    for step in (timedelta(hours=12), timedelta(hours=-12), timedelta(days=365)):
        engine = make_engine()
        engine.evaluate(bp(185, 125, T0))
        clock = engine.clock
        assert isinstance(clock, ManualClock)
        clock.step_wall(step)
        assert engine.tick().findings == ()
        clock.advance(599)
        assert engine.tick().findings == ()
        clock.advance(1)
        (finding,) = engine.tick().findings
        assert (finding.message, finding.transition) == ("bp_crisis_confirmed", Transition.CONFIRMED)


def test_a_wall_clock_step_does_not_make_a_device_silent() -> None:
    scale = "AA:00:00:00:00:05"
    engine = make_engine(devices=(DeviceWatch(scale, timedelta(hours=36)),))
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(hours=1))
    clock.step_wall(timedelta(days=365))
    assert engine.tick().findings == ()
    clock.step_wall(timedelta(days=-730))
    clock.advance(timedelta(hours=35, seconds=1))
    assert [f.condition for f in engine.tick().findings] == ["device.silent"]


# -- glucose swing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "current", "swing"),
    [(100, 130, False), (100, 130.1, True), (100, 70, False), (100, 69.9, True), (200, 140, False), (200, 139, True)],
)
def test_glucose_swing_boundary_at_30_percent(previous: float, current: float, swing: bool) -> None:
    engine = make_engine()
    g = DeviceKind.GLUCOSE
    engine.evaluate(obs({Vital.GLUCOSE: previous}, T0, kind=g))
    evaluation = engine.evaluate(obs({Vital.GLUCOSE: current}, T0 + timedelta(hours=3), kind=g))
    assert (tier_of(evaluation, "glucose.swing") is Tier.WARNING) is swing
    assert ("glucose.swing" in normal_conditions(evaluation)) is not swing
    if swing:
        assert found(evaluation)["glucose.swing"] == (Tier.WARNING, "glucose_swing")


def test_glucose_swing_needs_readings_within_the_window_and_can_be_turned_off() -> None:
    g = DeviceKind.GLUCOSE
    engine = make_engine()
    engine.evaluate(obs({Vital.GLUCOSE: 100}, T0, kind=g))
    assert (
        tier_of(engine.evaluate(obs({Vital.GLUCOSE: 150}, T0 + timedelta(days=1, seconds=1), kind=g)), "glucose.swing")
        is None
    )
    off = make_engine((), {"glucose.swing.enabled": 0})
    off.evaluate(obs({Vital.GLUCOSE: 100}, T0, kind=g))
    assert tier_of(off.evaluate(obs({Vital.GLUCOSE: 150}, T0 + timedelta(hours=1), kind=g)), "glucose.swing") is None


def test_glucose_swing_compares_with_the_reading_just_before_in_time() -> None:
    g = DeviceKind.GLUCOSE
    engine = make_engine()
    engine.evaluate(obs({Vital.GLUCOSE: 100}, T0 + timedelta(hours=2), kind=g))
    # A stored reading from before arrives late: compared with nothing older, so no swing.
    assert tier_of(engine.evaluate(obs({Vital.GLUCOSE: 200}, T0, kind=g)), "glucose.swing") is None
    # The next reading follows 100 (the latest in time), not the late 200.
    assert tier_of(engine.evaluate(obs({Vital.GLUCOSE: 125}, T0 + timedelta(hours=3), kind=g)), "glucose.swing") is None


# -- weight trend ----------------------------------------------------------------------------------------------


def weigh(engine: RuleEngine, kg: float, at: datetime) -> Evaluation:
    return engine.evaluate(obs({Vital.WEIGHT: kg}, at, kind=DeviceKind.SCALE, device="AA:00:00:00:00:05"))


def test_weight_gain_over_2_kg_in_3_days_boundary() -> None:
    engine = make_engine(("heart_failure",))
    weigh(engine, 70.0, T0)
    weigh(engine, 70.5, T0 + timedelta(days=1))
    weigh(engine, 71.0, T0 + timedelta(days=2))
    exactly = weigh(engine, 72.0, T0 + timedelta(days=3))
    assert tier_of(exactly, "weight.gain_3d") is None  # +2.0 is not more than 2
    assert tier_of(exactly, "weight.gain_1d") is None  # +1.0 in a day is not more than 1
    over = weigh(engine, 72.05, T0 + timedelta(days=3, hours=1))
    # 70.0 is now 3 days 1 hour old; the lowest weight in the window is 70.5.
    assert tier_of(over, "weight.gain_3d") is None
    engine2 = make_engine(("heart_failure",))
    weigh(engine2, 70.0, T0)
    over2 = weigh(engine2, 72.01, T0 + timedelta(days=3))
    assert found(over2)["weight.gain_3d"] == (Tier.WARNING, "weight_gain")
    assert over2.findings[0].value == pytest.approx(2.01)


def test_weight_gain_over_1_kg_in_a_day_is_a_notice() -> None:
    engine = make_engine(("heart_failure",))
    weigh(engine, lb_to_kg(150.0), T0)
    evaluation = weigh(engine, lb_to_kg(152.5), T0 + timedelta(hours=20))  # +1.13 kg
    assert tier_of(evaluation, "weight.gain_1d") is Tier.NOTICE
    assert tier_of(evaluation, "weight.gain_3d") is None


def test_weight_rules_are_off_without_the_heart_failure_profile() -> None:
    engine = make_engine()
    weigh(engine, 70.0, T0)
    evaluation = weigh(engine, 75.0, T0 + timedelta(days=1))
    assert evaluation.findings == ()
    assert {"weight.gain_1d", "weight.gain_3d"} <= normal_conditions(evaluation)


# -- batteries -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "level", "tier", "message"),
    [
        (DeviceKind.GLUCOSE, 21, None, None),
        (DeviceKind.GLUCOSE, 20, Tier.NOTICE, "battery_low_meter"),
        (DeviceKind.GLUCOSE, 11, Tier.NOTICE, "battery_low_meter"),
        (DeviceKind.GLUCOSE, 10, Tier.WARNING, "battery_low_meter"),
        (DeviceKind.PENDANT, 21, None, None),
        (DeviceKind.PENDANT, 20, Tier.WARNING, "battery_low_pendant"),
        (DeviceKind.PENDANT, 11, Tier.WARNING, "battery_low_pendant"),
        (DeviceKind.PENDANT, 10, Tier.CRITICAL, "battery_low_pendant"),
    ],
)
def test_battery_tiers(kind: DeviceKind, level: float, tier: Tier | None, message: str | None) -> None:
    evaluation = make_engine().evaluate(obs({Vital.BATTERY: level}, kind=kind, device="AA:00:00:00:00:09"))
    if tier is None:
        assert ConditionRef("r1", "battery.low", "AA:00:00:00:00:09") in evaluation.normal
        assert evaluation.findings == ()
    else:
        (finding,) = evaluation.findings
        assert (finding.condition, finding.subject, finding.tier, finding.message) == (
            "battery.low",
            "AA:00:00:00:00:09",
            tier,
            message,
        )


def test_battery_is_judged_even_on_a_flagged_reading() -> None:
    evaluation = make_engine().evaluate(
        obs({Vital.SPO2: 80, Vital.BATTERY: 5}, kind=DeviceKind.OXIMETER, unreliable=True)
    )
    assert found(evaluation) == {
        "battery.low": (Tier.WARNING, "battery_low_meter"),
        "reading.unreliable": (Tier.INFO, "reading_unreliable"),
    }


# -- silent devices --------------------------------------------------------------------------------------------


def test_a_silent_device_raises_a_warning_and_clears_when_heard() -> None:
    scale = "AA:00:00:00:00:05"
    engine = make_engine(devices=(DeviceWatch(scale, timedelta(hours=36)),))
    assert at(engine, T0 + timedelta(hours=36)).findings == ()
    (finding,) = at(engine, T0 + timedelta(hours=36, seconds=1)).findings
    assert (finding.condition, finding.subject, finding.tier, finding.message) == (
        "device.silent",
        scale,
        Tier.WARNING,
        "device_silent",
    )
    at(engine, T0 + timedelta(hours=40))
    heard = weigh(engine, 70.0, T0 + timedelta(hours=40))
    assert ConditionRef("r1", "device.silent", scale) in heard.normal
    assert at(engine, T0 + timedelta(hours=41)).findings == ()
    assert at(engine, T0 + timedelta(hours=76)).findings == ()
    assert at(engine, T0 + timedelta(hours=76, seconds=1)).findings[0].condition == "device.silent"


def test_a_device_heard_with_an_old_stored_reading_counts_as_heard_now() -> None:
    scale = "AA:00:00:00:00:05"
    engine = make_engine(devices=(DeviceWatch(scale, timedelta(hours=1)),))
    at(engine, T0 + timedelta(hours=5))
    weigh(engine, 70.0, T0)  # a reading taken 5 h ago, transferred now
    assert at(engine, T0 + timedelta(hours=5, minutes=30)).findings == ()


# -- missed schedule -------------------------------------------------------------------------------------------


BP_BY_10 = ScheduleEntry(Vital.SYSTOLIC, time(10, 0), grace=timedelta(minutes=30), escalate_after=timedelta(hours=2))


def test_missed_morning_bp_notice_then_warning_then_cleared_by_a_reading() -> None:
    engine = make_engine(schedule=(BP_BY_10,))
    day = T0.replace(hour=0)
    assert at(engine, day.replace(hour=10, minute=29)).findings == ()
    (notice,) = at(engine, day.replace(hour=10, minute=30)).findings
    assert (notice.condition, notice.subject, notice.tier, notice.message) == (
        "schedule.missed",
        "systolic@10:00",
        Tier.NOTICE,
        "measure_reminder",
    )
    assert at(engine, day.replace(hour=12, minute=29)).findings[0].tier is Tier.NOTICE
    assert at(engine, day.replace(hour=12, minute=30)).findings[0].tier is Tier.WARNING
    late = engine.evaluate(bp(130, 80, day.replace(hour=13)))
    assert ConditionRef("r1", "schedule.missed", "systolic@10:00") in late.normal
    assert at(engine, day.replace(hour=13, minute=1)).findings == ()


def test_a_reading_in_the_window_satisfies_the_slot() -> None:
    engine = make_engine(schedule=(BP_BY_10,))
    day = T0.replace(hour=0)
    engine.evaluate(bp(130, 80, day.replace(hour=6, minute=30)))  # window opens 4 h before 10:00
    assert at(engine, day.replace(hour=11)).findings == ()
    # The next day's slot wants a new reading.
    assert at(engine, day.replace(hour=10, minute=30) + timedelta(days=1)).findings[0].tier is Tier.NOTICE


def test_a_reading_before_the_window_does_not_satisfy_the_slot() -> None:
    engine = make_engine(schedule=(BP_BY_10,), started_at=T0.replace(hour=0))
    day = T0.replace(hour=0)
    evaluation = engine.evaluate(bp(130, 80, day.replace(hour=5, minute=59)))
    assert ConditionRef("r1", "schedule.missed", "systolic@10:00") in evaluation.normal  # nothing missed yet
    assert at(engine, day.replace(hour=10, minute=30)).findings[0].condition == "schedule.missed"


def test_slots_that_ended_before_the_engine_started_are_not_judged() -> None:
    engine = make_engine(schedule=(BP_BY_10,), started_at=T0.replace(hour=11))
    assert at(engine, T0.replace(hour=11, minute=5)).findings == ()


def test_schedule_due_times_are_local() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")  # UTC+8: 10:00 local is 02:00 UTC
    engine = make_engine(schedule=(BP_BY_10,), started_at=datetime(2026, 3, 2, 0, 0, tzinfo=UTC), zone=shanghai)
    assert at(engine, datetime(2026, 3, 2, 2, 29, tzinfo=UTC)).findings == ()
    assert at(engine, datetime(2026, 3, 2, 2, 30, tzinfo=UTC)).findings[0].tier is Tier.NOTICE


# -- configuration and input checks ----------------------------------------------------------------------------


def test_thresholds_can_be_replaced_at_run_time() -> None:
    engine = make_engine()
    assert tier_of(engine.evaluate(obs({Vital.SPO2: 90}, kind=DeviceKind.OXIMETER)), "spo2.low") is Tier.CRITICAL
    engine.set_thresholds(
        "r1", engine.thresholds("r1").updated({"spo2.low.notice": 89, "spo2.low.warning": 88, "spo2.low.critical": 86})
    )
    assert engine.thresholds("r1")[Key.SPO2_LOW_CRITICAL] == 86
    assert tier_of(engine.evaluate(obs({Vital.SPO2: 90}, kind=DeviceKind.OXIMETER)), "spo2.low") is None


def test_unknown_resident_and_naive_time_are_refused() -> None:
    engine = make_engine()
    with pytest.raises(UnknownResidentError):
        engine.evaluate(Observation("nobody", "d", DeviceKind.SCALE, "x", T0, {Vital.WEIGHT: 70}))
    with pytest.raises(ValueError, match="timezone-aware"):
        Observation("r1", "d", DeviceKind.SCALE, "x", datetime(2026, 3, 2, 7, 0), {Vital.WEIGHT: 70})  # noqa: DTZ001
