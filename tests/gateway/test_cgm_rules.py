"""CGM readings are judged with their own thresholds (issue 14 item 7; /work/shared/thresholds.md §2 and §8) and a
sensor that reads every 5 minutes does not flood the resident with alarms."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from gateway.alarms import AlarmBook, AlarmState
from gateway.clock import ManualClock
from gateway.config import DeviceKind
from gateway.observations import Observation, Vital
from gateway.rules import ResidentRules, RuleEngine
from gateway.thresholds import Tier, resolve_thresholds

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
_ids = itertools.count()
SENSOR = "C0:47:00:00:00:01"


def engine(clock: ManualClock) -> RuleEngine:
    rules = ResidentRules(resolve_thresholds((), None), (), ())
    return RuleEngine({"r1": rules}, started_at=T0, local_zone=UTC, clock=clock)


def cgm(mg_dl: float, at: datetime) -> Observation:
    return Observation("r1", SENSOR, DeviceKind.CGM, f"rec-{next(_ids)}", at, {Vital.CGM_GLUCOSE: mg_dl})


@pytest.mark.parametrize(
    ("mg_dl", "condition", "tier"),
    [
        (53.9, "cgm.low", Tier.CRITICAL),  # ADA level 2: < 54 mg/dL
        (54, "cgm.low", Tier.WARNING),  # level 1: < 70 and >= 54
        (69.9, "cgm.low", Tier.WARNING),
        (70, None, None),
        (180, None, None),
        (180.1, "cgm.high", Tier.NOTICE),  # CGM hyperglycaemia level 1: > 180
        (250.1, "cgm.high", Tier.WARNING),  # level 2: > 250
    ],
)
def test_cgm_levels(mg_dl: float, condition: str | None, tier: Tier | None) -> None:
    found = {f.condition: f.tier for f in engine(ManualClock(T0)).evaluate(cgm(mg_dl, T0)).findings}
    assert found == ({} if condition is None else {condition: tier})


def test_strip_glucose_rules_do_not_judge_a_cgm() -> None:
    rules = engine(ManualClock(T0))
    rules.evaluate(cgm(100, T0))
    later = rules.evaluate(cgm(160, T0 + timedelta(minutes=5)))  # +60 %: a strip meter's swing, not a CGM's
    assert not any(f.condition.startswith("glucose") for f in later.findings)


def test_an_hour_of_hypo_readings_raises_one_alarm_re_raised_at_the_critical_pace() -> None:
    clock = ManualClock(T0)
    rules = engine(clock)
    book = AlarmBook(clock=clock)
    events = []
    for n in range(13):  # a reading every 5 minutes for an hour, all below 54 mg/dL
        now = T0 + timedelta(minutes=5 * n)
        if n:
            clock.advance(timedelta(minutes=5))
        events += book.apply(rules.evaluate(cgm(50 - n % 3, now)))
    assert [e.state for e in events] == [AlarmState.RAISED]  # the readings alone never raise it again
    ticks = []
    for _ in range(3):
        clock.advance(timedelta(minutes=5))
        ticks += book.tick(clock.now())
    assert {e.state for e in ticks} == {AlarmState.RE_RAISED}  # the pace (critical: 5 min), not the sensor's
    assert len(ticks) <= 3
    back = book.apply(rules.evaluate(cgm(95, clock.now())))
    assert [e.state for e in back] == [AlarmState.CLEARED]
