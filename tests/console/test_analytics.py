"""Console analytics with known answers from stored data (issue 18: "the risk tier and upload-rate figures are
computed from stored data in tests with known answers"): records sealed with a hub key, opened, stored in a real
SQLite platform database and read back, then judged."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Collection
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from analytics_data import RESIDENT, Home, store
from hypothesis import given, settings
from hypothesis import strategies as st

from community.console.analytics import (
    DeviceRole,
    MealContext,
    ReasonKind,
    RiskTier,
    Tolerance,
    Vital,
    VitalReading,
    assess_risk,
    combine_upload_rates,
    devices_summary,
    latest_vitals,
    open_alarms,
    reading_level,
    resident_overview,
    scheduled_slots,
    taken_at,
    upload_rate,
    vital_readings,
)
from community.console.careplan import CarePlan, KindPlan, MeasurementKind
from protocols import gatt
from protocols.record import AlarmState, AlarmTier, LinkState
from protocols.thresholds import Key, Tier, resolve_thresholds

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 22:00 in Shanghai on 8 March: the 20:00 slot of that day has just closed (20:00 + 1 h tolerance).
NOW = _dt.datetime(2026, 3, 8, 22, 0, tzinfo=SHANGHAI)
PLAN_START = _dt.datetime(2026, 2, 1, tzinfo=SHANGHAI)


def local(day: int, hour: int, minute: int = 0, month: int = 3) -> _dt.datetime:
    return _dt.datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(_dt.UTC)


def bp_plan(resident: str = RESIDENT, starts: _dt.datetime = PLAN_START) -> CarePlan:
    times = (_dt.time(8), _dt.time(20))
    return CarePlan(resident, "Asia/Shanghai", (KindPlan(MeasurementKind.BLOOD_PRESSURE, times),), starts)


def twice_daily(home: Home, skip: Collection[tuple[int, int]] = (), days: range = range(2, 9)) -> None:
    """Cuff readings 10 minutes after 08:00 and 20:00 on 2..8 March, except the (day, hour) in ``skip``."""
    for day in days:
        for hour in (8, 20):
            if (day, hour) not in skip:
                home.bp(local(day, hour, 10), 128, 82)


# --- upload rate -----------------------------------------------------------------------------------------------------


async def test_13_of_14_is_92_9_percent_and_not_failing(tmp_path: Path):
    home = Home()
    twice_daily(home, skip={(5, 20)})
    stored = await store(tmp_path / "platform.db", [home])
    vitals = vital_readings(stored, SHANGHAI, resident_id=RESIDENT)
    rate = upload_rate(bp_plan(), vitals, now=NOW)
    assert (rate.scheduled, rate.received, rate.percent, rate.failing) == (14, 13, 92.9, False)
    assert [s.label for s in rate.missed] == ["blood_pressure 2026-03-05 20:00"]
    assert rate.missed[0].due == local(5, 20)


async def test_12_of_14_is_85_7_percent_and_failing(tmp_path: Path):
    home = Home()
    twice_daily(home, skip={(3, 8), (7, 20)})
    stored = await store(tmp_path / "platform.db", [home])
    rate = upload_rate(bp_plan(), vital_readings(stored, SHANGHAI, resident_id=RESIDENT), now=NOW)
    assert (rate.scheduled, rate.received, rate.percent, rate.failing) == (14, 12, 85.7, True)
    assert [s.label for s in rate.missed] == ["blood_pressure 2026-03-03 08:00", "blood_pressure 2026-03-07 20:00"]
    risk = assess_risk(
        vital_readings(stored, SHANGHAI, resident_id=RESIDENT), (), upload=rate, now=NOW, thresholds=None
    )
    assert risk.tier is RiskTier.YELLOW
    assert [(r.kind, r.value, r.threshold) for r in risk.reasons] == [(ReasonKind.UPLOAD_FAILING, 85.7, 90.0)]


async def test_30_day_window(tmp_path: Path):
    home = Home()
    skip = {(7, 8), (9, 20), (15, 8), (21, 8), (28, 20)}
    for day in range(7, 29):  # 7..28 February
        for hour in (8, 20):
            if (day, hour) not in skip:
                home.bp(local(day, hour, 5, month=2), 120, 80)
    twice_daily(home, days=range(1, 9))
    stored = await store(tmp_path / "platform.db", [home])
    rate = upload_rate(bp_plan(), vital_readings(stored, SHANGHAI, resident_id=RESIDENT), now=NOW, days=30)
    # 30 days before 8 March 22:00 is 6 February 22:00: slots 7 February 08:00 .. 8 March 20:00, 60 of them.
    assert (rate.scheduled, rate.received, rate.percent, rate.failing) == (60, 55, 91.7, False)
    assert len(rate.missed) == 5


async def test_tolerance_edges_unreliable_other_residents_and_the_installation_day(tmp_path: Path):
    home = Home()
    home.bp(local(2, 4, 0), 120, 80)  # exactly 4 h before 08:00: met
    home.bp(local(2, 15, 59), 120, 80)  # 4 h 1 min before 20:00: too early
    home.bp(local(3, 9, 0), 120, 80)  # exactly 1 h after 08:00: met
    home.bp(local(3, 21, 1), 120, 80)  # 1 h 1 min after 20:00: too late
    home.bp(local(4, 8, 0), 120, 80, unreliable=True)  # flagged by the cuff: not counted
    home.bp(local(4, 20, 0), 120, 80, resident=None)  # another user of the cuff (unassigned): not counted
    home.bp(local(5, 8, 0), 120, 80, resident="mr-li")  # another resident: not counted
    stored = await store(tmp_path / "platform.db", [home])
    vitals = vital_readings(stored, SHANGHAI)
    rate = upload_rate(bp_plan(starts=local(1, 12)), vitals, now=local(5, 21, 30))
    assert [s.label for s in (m.slot for m in rate.met)] == [
        "blood_pressure 2026-03-02 08:00",
        "blood_pressure 2026-03-03 08:00",
    ]
    assert [s.label for s in rate.missed] == [
        "blood_pressure 2026-03-01 20:00",
        "blood_pressure 2026-03-02 20:00",
        "blood_pressure 2026-03-03 20:00",
        "blood_pressure 2026-03-04 08:00",
        "blood_pressure 2026-03-04 20:00",
        "blood_pressure 2026-03-05 08:00",
        "blood_pressure 2026-03-05 20:00",
    ]
    # The plan started on 3 March at noon (the day after the installation): earlier slots are not scheduled.
    later = upload_rate(bp_plan(starts=local(3, 12)), vitals, now=local(5, 21, 30))
    assert (later.scheduled, later.received) == (5, 0)


async def test_one_reading_meets_one_slot_and_counts_per_day(tmp_path: Path):
    home = Home()
    home.glucose(local(7, 7, 30), 110, 1, gatt.Meal.FASTING)  # inside both the 07:00 and the 09:00 window
    for day in (2, 3, 4, 6, 7, 8):
        home.weight(local(day, 7), 61.5)
    home.weight(local(8, 19), 61.6)  # a second weighing on the 8th meets nothing more (1 a day)
    stored = await store(tmp_path / "platform.db", [home])
    plan = CarePlan(
        RESIDENT,
        "Asia/Shanghai",
        (
            KindPlan(MeasurementKind.GLUCOSE, (_dt.time(7), _dt.time(9))),
            KindPlan(MeasurementKind.WEIGHT, (), 1),
        ),
        PLAN_START,
    )
    now = local(9, 0, 0)  # midnight: 2..8 March are whole days
    rate = upload_rate(plan, vital_readings(stored, SHANGHAI), now=now)
    glucose = [m for m in rate.met if m.slot.kind is MeasurementKind.GLUCOSE]
    assert [m.slot.label for m in glucose] == ["glucose 2026-03-07 07:00"]
    weights = [m.slot.label for m in rate.met if m.slot.kind is MeasurementKind.WEIGHT]
    assert weights == [f"weight 2026-03-{d:02d} #1" for d in (2, 3, 4, 6, 7, 8)]
    assert [s.label for s in rate.missed if s.kind is MeasurementKind.WEIGHT] == ["weight 2026-03-05 #1"]
    assert (rate.scheduled, rate.received) == (14 + 7, 7)


async def test_meter_memory_read_late_keeps_its_own_time(tmp_path: Path):
    """A cuff read out hours later: its own stamp (local time) is when it was taken, in the plan's zone."""
    home = Home()
    stamped = _dt.datetime(2026, 3, 8, 8, 5)  # noqa: DTZ001 - 08:05 on the cuff's clock (Shanghai)
    home.bp(local(8, 14, 0), 125, 80, stamped=stamped)
    home.bp(local(8, 14, 1), 126, 80, stamped=_dt.datetime(2026, 3, 8, 19, 0))  # noqa: DTZ001 - stamped after receipt: not believed
    stored = await store(tmp_path / "platform.db", [home])
    first, second = sorted(stored, key=lambda r: r.record_seq)
    assert taken_at(first, SHANGHAI) == local(8, 8, 5)
    assert taken_at(first) == local(8, 14, 0)  # no zone known: the hub's receive time
    assert taken_at(second, SHANGHAI) == local(8, 14, 1)
    plan = CarePlan(RESIDENT, "Asia/Shanghai", (KindPlan(MeasurementKind.BLOOD_PRESSURE, (_dt.time(8),)),), local(8, 0))
    rate = upload_rate(plan, vital_readings(stored, SHANGHAI), now=NOW)
    assert (rate.scheduled, rate.received) == (1, 1)


async def test_glucose_time_offset_is_part_of_the_meters_time(tmp_path: Path):
    home = Home()
    home.glucose(local(8, 7, 30), 101, 4, offset_min=45)  # base time 06:45, offset +45 min: taken 07:30
    stored = await store(tmp_path / "platform.db", [home])
    assert stored[0].device_time == "2026-03-08T06:45:00"
    hub_time = stored[0].hub_time
    assert taken_at(stored[0], SHANGHAI) == local(8, 7, 30) == hub_time  # the hub received it at 07:30 too
    late = Home()
    late.glucose(local(8, 7, 30), 101, 4, offset_min=45)
    late.records[0] = dataclasses.replace(late.records[0], hub_time=local(8, 12))  # read out of memory at noon
    stored = await store(tmp_path / "late.db", [late])
    assert taken_at(stored[0], SHANGHAI) == local(8, 7, 30)
    assert vital_readings(stored, SHANGHAI)[0].taken_at == local(8, 7, 30)


async def test_home_rate_combines_residents(tmp_path: Path):
    home = Home()
    twice_daily(home, skip={(5, 20)})
    for day in range(2, 9):
        home.bp(local(day, 8, 0), 120, 80, resident="mr-wang", device="bp-2")
    stored = await store(tmp_path / "platform.db", [home])
    vitals = vital_readings(stored, SHANGHAI)
    rates = [upload_rate(bp_plan(), vitals, now=NOW), upload_rate(bp_plan("mr-wang"), vitals, now=NOW)]
    combined = combine_upload_rates(rates)
    assert (rates[1].scheduled, rates[1].received) == (14, 7)
    assert (combined.scheduled, combined.received, combined.percent, combined.failing) == (28, 20, 71.4, True)
    assert combined.resident_ids == (RESIDENT, "mr-wang")


def test_nothing_scheduled_is_not_failing():
    plan = bp_plan(starts=NOW)
    rate = upload_rate(plan, (), now=NOW)
    assert (rate.scheduled, rate.rate, rate.percent, rate.failing) == (0, None, None, False)
    with pytest.raises(ValueError, match="positive"):
        upload_rate(plan, (), now=NOW, days=0)
    with pytest.raises(ValueError, match="aware"):
        upload_rate(plan, (), now=_dt.datetime(2026, 3, 8))  # noqa: DTZ001 - naive on purpose


_TIMES = st.lists(
    st.builds(_dt.time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45])), min_size=1, max_size=4, unique=True
)


@settings(max_examples=150, deadline=None)
@given(
    times=_TIMES,
    offsets=st.lists(st.integers(-6 * 3600, 30 * 86400), max_size=60),
    days=st.integers(1, 30),
    zone=st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC"]),
    before=st.integers(0, 6 * 3600),
    after=st.integers(0, 3 * 3600),
    per_day=st.none() | st.integers(1, 4),
)
def test_upload_rate_arithmetic(times, offsets, days, zone, before, after, per_day):  # noqa: PLR0917 - hypothesis
    now = _dt.datetime(2026, 3, 31, 12, tzinfo=_dt.UTC)
    kind_plan = (
        KindPlan(MeasurementKind.GLUCOSE, tuple(times))
        if per_day is None
        else KindPlan(MeasurementKind.GLUCOSE, (), per_day)
    )
    plan = CarePlan(RESIDENT, zone, (kind_plan,), now - _dt.timedelta(days=40))
    tolerance = Tolerance(_dt.timedelta(seconds=before), _dt.timedelta(seconds=after))
    readings = [
        VitalReading(
            f"{i:032x}",
            "hub",
            "g",
            RESIDENT,
            now - _dt.timedelta(seconds=o),
            MeasurementKind.GLUCOSE,
            {Vital.GLUCOSE: 100},
        )
        for i, o in enumerate(offsets)
    ]
    rate = upload_rate(plan, readings, now=now, days=days, tolerance=tolerance)
    slots = scheduled_slots(plan, now - _dt.timedelta(days=days), now, tolerance)
    assert rate.scheduled == len(rate.met) + len(rate.missed) == len(slots)
    assert {m.slot for m in rate.met} | set(rate.missed) == set(slots)
    assert rate.scheduled >= (days - 1) * kind_plan.per_day
    if rate.rate is not None:
        assert 0.0 <= rate.rate <= 1.0
        assert rate.failing == (rate.received * 10 < rate.scheduled * 9)
    assert len({m.record_id for m in rate.met}) == len(rate.met)  # a reading meets one slot at most
    for m in rate.met:
        assert m.slot.opens <= m.taken_at <= m.slot.closes
    # Nothing missed could have been met by a reading left over (the matching is as large as it can be).
    used = {m.record_id for m in rate.met}
    for slot in rate.missed:
        assert not any(r.record_id not in used and slot.opens <= r.taken_at <= slot.closes for r in readings)


# --- risk tier -------------------------------------------------------------------------------------------------------


async def assess(tmp_path: Path, home: Home, *, plan: CarePlan | None = None, profiles: tuple[str, ...] = ()):
    stored = await store(tmp_path / "platform.db", [home])
    return resident_overview(RESIDENT, stored, plan=plan, thresholds=resolve_thresholds(profiles), now=NOW)


async def test_green_when_readings_are_in_range_and_every_slot_met(tmp_path: Path):
    home = Home()
    twice_daily(home)
    overview = await assess(tmp_path, home, plan=bp_plan())
    assert overview.risk.tier is RiskTier.GREEN
    assert overview.risk.reasons == ()
    assert overview.upload is not None
    assert overview.upload.percent == 100.0


async def test_bp_above_180_is_red_with_the_threshold_that_fired(tmp_path: Path):
    home = Home()
    twice_daily(home, skip={(8, 20)})
    home.bp(local(8, 20, 10), 185, 95)
    risk = (await assess(tmp_path, home, plan=bp_plan())).risk
    assert risk.tier is RiskTier.RED
    first = risk.reasons[0]
    assert (first.kind, first.vital, first.value, first.threshold, first.threshold_key) == (
        ReasonKind.CRITICAL_READING,
        Vital.SYSTOLIC,
        185.0,
        180.0,
        Key.BP_SYS_CRITICAL_HIGH,
    )
    # Diastolic 95 is stage 2 (notice): shown, raises nothing.
    assert (ReasonKind.NOTICE_READING, Vital.DIASTOLIC, RiskTier.GREEN) in [
        (r.kind, r.vital, r.tier) for r in risk.reasons
    ]


async def test_diastolic_above_110_is_red_by_the_programme_rule(tmp_path: Path):
    home = Home()
    home.bp(local(8, 20, 10), 150, 112)
    risk = (await assess(tmp_path, home)).risk
    assert risk.tier is RiskTier.RED
    first = risk.reasons[0]
    assert (first.kind, first.vital, first.value, first.threshold, first.programme_rule) == (
        ReasonKind.CRITICAL_READING,
        Vital.DIASTOLIC,
        112.0,
        110.0,
        True,
    )
    # Under the hypertension profile the resident's own line (110) fires and is named.
    hypertension = (await assess(tmp_path / "h", home, profiles=("hypertension",))).risk
    assert (hypertension.reasons[0].threshold_key, hypertension.reasons[0].programme_rule) == (
        Key.BP_DIA_CRITICAL_HIGH,
        False,
    )


async def test_exactly_180_over_110_is_not_red(tmp_path: Path):
    home = Home()
    home.bp(local(8, 20, 10), 180, 110)
    risk = (await assess(tmp_path, home)).risk
    assert risk.tier is RiskTier.YELLOW  # >= 160 / >= 100: warning (thresholds.md §8)
    assert {(r.kind, r.vital, r.threshold_key) for r in risk.reasons if r.tier is RiskTier.YELLOW} == {
        (ReasonKind.WARNING_READING, Vital.SYSTOLIC, Key.BP_SYS_WARNING_HIGH),
        (ReasonKind.WARNING_READING, Vital.DIASTOLIC, Key.BP_DIA_WARNING_HIGH),
    }


async def test_a_past_crisis_keeps_the_resident_yellow(tmp_path: Path):
    home = Home()
    home.bp(local(6, 8, 0), 192, 100)
    home.bp(local(8, 8, 0), 130, 80)
    home.bp(local(8, 20, 0), 200, 125, unreliable=True)  # flagged by the cuff: never judged
    risk = (await assess(tmp_path, home)).risk
    assert risk.tier is RiskTier.YELLOW
    past = [r for r in risk.reasons if r.kind is ReasonKind.PAST_CRITICAL_READING]
    assert [(r.vital, r.value, r.at) for r in past] == [(Vital.SYSTOLIC, 192.0, local(6, 8, 0))]


async def test_readings_before_the_window_are_not_judged(tmp_path: Path):
    home = Home()
    home.bp(local(1, 8, 0), 200, 125)  # 7 days and 14 hours before NOW
    risk = (await assess(tmp_path, home)).risk
    assert risk.tier is RiskTier.GREEN
    assert [r.kind for r in risk.reasons] == [ReasonKind.NO_CARE_PLAN, ReasonKind.NO_READINGS]


async def test_open_alarms_panic_calls_and_what_closes_them(tmp_path: Path):
    home = Home()
    home.alarm(local(8, 9), "a-bp", AlarmState.RAISED, 0, AlarmTier.WARNING, "bp.high", 165, 160)
    home.alarm(local(8, 9, 30), "a-bp", AlarmState.ESCALATED, 1, AlarmTier.CRITICAL, "bp.high", 190, 180)
    home.alarm(local(8, 9, 40), "a-bp", AlarmState.ACKNOWLEDGED, 2, AlarmTier.CRITICAL, "bp.high")
    home.alarm(local(7, 9), "a-spo2", AlarmState.RAISED, 0, AlarmTier.WARNING, "spo2.low", 92, 93)
    home.alarm(local(7, 10), "a-spo2", AlarmState.CLEARED, 1, AlarmTier.WARNING, "spo2.low")
    home.panic(local(8, 10), 7, "p-1")
    home.alarm(local(8, 10), "p-1", AlarmState.RAISED, 0, AlarmTier.CRITICAL, "panic")
    home.panic(local(6, 10), 5, "p-0")
    home.alarm(local(6, 10), "p-0", AlarmState.RAISED, 0, AlarmTier.CRITICAL, "panic")
    home.alarm(local(6, 10, 2), "p-0", AlarmState.ACKNOWLEDGED, 1, AlarmTier.CRITICAL, "panic")
    home.alarm(local(8, 11), "a-other", AlarmState.RAISED, 0, AlarmTier.WARNING, "bp.high", resident="mr-li")
    stored = await store(tmp_path / "platform.db", [home])
    alarms = open_alarms(stored, resident_id=RESIDENT)
    assert [(a.alarm_id, a.tier, a.state, a.acknowledged) for a in alarms] == [
        ("p-1", AlarmTier.CRITICAL, AlarmState.RAISED, False),  # the panic call first among criticals
        ("a-bp", AlarmTier.CRITICAL, AlarmState.ACKNOWLEDGED, True),  # acknowledged, but open until it clears
    ]
    assert (alarms[1].value, alarms[1].threshold, alarms[1].raised_at) == (190.0, 180.0, local(8, 9))
    risk = assess_risk((), alarms, upload=None, now=NOW)
    assert risk.tier is RiskTier.RED
    assert [(r.kind, r.alarm_id, r.condition) for r in risk.reasons[:2]] == [
        (ReasonKind.OPEN_PANIC, "p-1", "panic"),
        (ReasonKind.OPEN_ALARM, "a-bp", "bp.high"),
    ]
    # The console marked both resolved: nothing open, green.
    resolved = {("hub-wang", "p-1"), ("hub-wang", "a-bp")}
    assert open_alarms(stored, resident_id=RESIDENT, resolved=resolved) == ()
    overview = resident_overview(RESIDENT, stored, plan=None, now=NOW, resolved=resolved)
    assert overview.risk.tier is RiskTier.GREEN
    # Resolved at revision 2; the hub re-raises it (revision 3): open again.
    home.alarm(local(8, 12), "a-bp", AlarmState.RE_RAISED, 3, AlarmTier.CRITICAL, "bp.high", 191, 180)
    stored = await store(tmp_path / "again.db", [home])
    reopened = open_alarms(stored, resident_id=RESIDENT, resolved={("hub-wang", "p-1"): 0, ("hub-wang", "a-bp"): 2})
    assert [(a.alarm_id, a.state, a.value) for a in reopened] == [("a-bp", AlarmState.RE_RAISED, 191.0)]
    # The pendant is the resident's (its panic raised their alarm).
    assert [(d.device, d.role) for d in overview.devices] == [("pendant-1", DeviceRole.PENDANT)]


async def test_glucose_swing_and_meal_context(tmp_path: Path):
    home = Home()
    home.glucose(local(8, 7, 0), 100, 11, gatt.Meal.FASTING)
    home.glucose(local(8, 12, 0), 140, 12, gatt.Meal.POSTPRANDIAL)
    home.glucose(local(8, 18, 0), 150, 13)
    stored = await store(tmp_path / "platform.db", [home])
    vitals = vital_readings(stored, SHANGHAI, resident_id=RESIDENT)
    assert [(v.value(Vital.GLUCOSE), v.meal) for v in vitals] == [
        (100.0, MealContext.FASTING),
        (140.0, MealContext.POSTPRANDIAL),
        (150.0, None),
    ]
    risk = assess_risk(vitals, (), upload=None, now=NOW)
    assert risk.tier is RiskTier.YELLOW
    swing = risk.reasons[0]
    assert (swing.kind, swing.value, swing.threshold, swing.at) == (ReasonKind.GLUCOSE_SWING, 40.0, 30.0, local(8, 12))


async def test_weight_gain_under_the_heart_failure_profile(tmp_path: Path):
    home = Home()
    home.weight(local(5, 7), 70.0)
    home.weight(local(6, 7), 70.4)
    home.weight(local(8, 7), 72.5)
    stored = await store(tmp_path / "platform.db", [home])
    vitals = vital_readings(stored, SHANGHAI, resident_id=RESIDENT)
    assert assess_risk(vitals, (), upload=None, now=NOW).tier is RiskTier.GREEN  # the trend rules are off
    risk = assess_risk(vitals, (), upload=None, now=NOW, thresholds=resolve_thresholds(["heart_failure"]))
    assert risk.tier is RiskTier.YELLOW
    gain = risk.reasons[0]
    assert (gain.kind, gain.value, gain.threshold, gain.threshold_key) == (
        ReasonKind.WEIGHT_GAIN,
        2.5,
        2.0,
        Key.WEIGHT_GAIN_3D_WARNING_KG,
    )


@pytest.mark.parametrize(
    ("vital", "value", "tier"),
    [
        (Vital.SPO2, 91.0, Tier.CRITICAL),
        (Vital.SPO2, 93.0, Tier.WARNING),
        (Vital.SPO2, 96.0, Tier.INFO),
        (Vital.GLUCOSE, 53.0, Tier.CRITICAL),
        (Vital.GLUCOSE, 600.0, Tier.CRITICAL),
        (Vital.GLUCOSE, 251.0, Tier.WARNING),
        (Vital.PULSE, 131.0, Tier.CRITICAL),
        (Vital.PULSE, 40.0, Tier.CRITICAL),
        (Vital.TEMPERATURE, 35.0, Tier.CRITICAL),
        (Vital.TEMPERATURE, 39.1, Tier.WARNING),
        (Vital.SYSTOLIC, 90.0, Tier.CRITICAL),
        (Vital.SYSTOLIC, 181.0, Tier.CRITICAL),
        (Vital.DIASTOLIC, 111.0, Tier.CRITICAL),
        (Vital.DIASTOLIC, 110.0, Tier.WARNING),
    ],
)
def test_reading_levels_follow_the_catalogue(vital: Vital, value: float, tier: Tier):
    assert reading_level(vital, value, resolve_thresholds()).tier is tier


# --- latest vitals and devices ---------------------------------------------------------------------------------------


async def test_latest_vitals_and_devices(tmp_path: Path):
    home = Home()
    home.bp(local(8, 8), 131, 84, 66)
    home.bp(local(8, 9), 210, 130, 70, unreliable=True)
    home.spo2(local(8, 8, 5), 97, 71)
    home.temperature(local(8, 8, 6), 368)
    home.weight(local(8, 7), 61.25)
    home.heart_rate(local(8, 8, 7), 64)
    home.glucose(local(8, 7, 1), 104, 3, gatt.Meal.FASTING)
    home.status(local(8, 6), "bp-1", battery=15)
    home.status(local(8, 6, 30), "bp-1", link=LinkState.DISCONNECTED)
    home.status(local(7, 6), "scale-1", battery=50)
    home.panic(local(8, 10), 9, "p-9", battery=9)
    home.alarm(local(8, 10), "p-9", AlarmState.RAISED, 0, AlarmTier.CRITICAL, "panic")
    stored = await store(tmp_path / "platform.db", [home])
    latest = latest_vitals(vital_readings(stored, SHANGHAI, resident_id=RESIDENT))
    assert {v: (x.value, x.at) for v, x in latest.values.items()} == {
        Vital.SYSTOLIC: (131.0, local(8, 8)),
        Vital.DIASTOLIC: (84.0, local(8, 8)),
        Vital.PULSE: (64.0, local(8, 8, 7)),
        Vital.GLUCOSE: (104.0, local(8, 7, 1)),
        Vital.SPO2: (97.0, local(8, 8, 5)),
        Vital.TEMPERATURE: (36.8, local(8, 8, 6)),
        Vital.WEIGHT: (61.25, local(8, 7)),
    }
    assert latest.values[Vital.GLUCOSE].meal is MealContext.FASTING
    assert latest.blood_pressure is not None
    devices = {d.device: d for d in devices_summary(stored)}
    bp = devices["bp-1"]
    assert (bp.role, bp.battery, bp.battery_at, bp.battery_tier, bp.link, bp.last_seen) == (
        DeviceRole.BLOOD_PRESSURE,
        15,
        local(8, 6),
        Tier.NOTICE,  # battery.meter.notice: <= 20 %
        LinkState.DISCONNECTED,
        local(8, 9),
    )
    pendant = devices["pendant-1"]
    assert (pendant.role, pendant.battery, pendant.battery_tier) == (DeviceRole.PENDANT, 9, Tier.CRITICAL)
    assert (devices["scale-1"].battery, devices["scale-1"].last_seen) == (50, local(8, 7))
    assert devices["glucose-1"].role is DeviceRole.GLUCOSE
    assert sorted(devices) == ["bp-1", "glucose-1", "hr-1", "oxi-1", "pendant-1", "scale-1", "thermo-1"]
