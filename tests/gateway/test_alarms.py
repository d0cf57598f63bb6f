"""The alarm book: one alarm per condition, re-raise pacing, escalation, all-clear, snooze and acknowledgement."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.alarms import (
    MESSAGE_KEYS,
    AlarmBook,
    AlarmEvent,
    AlarmPolicy,
    AlarmState,
    CriticalSnoozeError,
    InvalidSnoozeError,
    UnknownAlarmError,
)
from gateway.clock import ManualClock
from gateway.config import DeviceKind
from gateway.findings import ConditionRef, Evaluation, Finding, Transition
from gateway.observations import Observation, Vital
from gateway.rules import DeviceWatch, ResidentRules, RuleEngine
from gateway.thresholds import Tier, resolve_thresholds

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


class Book(AlarmBook):
    """An alarm book on a manual clock that starts at T0; the helpers below move it to the time of each input."""

    def __init__(self, policy: AlarmPolicy | None = None) -> None:
        ids = itertools.count(1)
        self.clock = ManualClock(T0)
        super().__init__(policy, id_factory=lambda: f"a{next(ids)}", clock=self.clock)

    def at(self, when: datetime) -> datetime:
        """Let time pass until ``when`` (both readings; tests never go back in time this way)."""
        if when > self.clock.now():
            self.clock.advance(when - self.clock.now())
        return when


def book(policy: AlarmPolicy | None = None) -> Book:
    return Book(policy)


def tick(b: Book, when: datetime) -> list[AlarmEvent]:
    return b.tick(b.at(when))


def apply(b: Book, evaluation: Evaluation) -> list[AlarmEvent]:
    b.at(evaluation.at)
    return b.apply(evaluation)


def snooze(b: Book, alarm_id: str, duration: timedelta, when: datetime, *, by: str) -> AlarmEvent:
    return b.snooze(alarm_id, duration, b.at(when), by=by)


def finding(
    condition: str,
    tier: Tier,
    at: datetime,
    *,
    message: str = "spo2_low",
    value: float = 1.0,
    transition: Transition = Transition.NONE,
) -> Evaluation:
    return Evaluation(
        at, (Finding("r1", condition, tier, message, at, value=value, threshold=2.0, transition=transition),)
    )


def clear(condition: str, at: datetime) -> Evaluation:
    return Evaluation(at, normal=(ConditionRef("r1", condition),))


def states(events: list[AlarmEvent]) -> list[tuple[AlarmState, Tier]]:
    return [(e.state, e.tier) for e in events]


def test_a_new_finding_raises_an_alarm_with_its_details() -> None:
    b = book()
    (event,) = apply(b, finding("spo2.low", Tier.WARNING, T0, value=92))
    assert (event.alarm_id, event.state, event.tier, event.message, event.value, event.threshold, event.at) == (
        "a1",
        AlarmState.RAISED,
        Tier.WARNING,
        "spo2_low",
        92,
        2.0,
        T0,
    )
    assert (event.condition, event.subject, event.resident) == ("spo2.low", "", "r1")


def test_default_ids_are_uuid4_hex() -> None:
    (event,) = AlarmBook().apply(finding("spo2.low", Tier.NOTICE, T0))
    assert len(event.alarm_id) == 32
    int(event.alarm_id, 16)


def test_one_alarm_per_condition_repeats_update_quietly() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.WARNING, T0, value=92))
    assert apply(b, finding("spo2.low", Tier.WARNING, T0 + timedelta(minutes=1), value=93)) == []
    assert apply(b, finding("spo2.low", Tier.NOTICE, T0 + timedelta(minutes=2), value=94)) == []
    (alarm,) = b.open_alarms()
    assert (alarm.id, alarm.tier, alarm.value) == ("a1", Tier.WARNING, 93)  # never silently lowered
    assert alarm.updated_at == T0 + timedelta(minutes=2)


def test_conditions_and_subjects_are_separate_alarms() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.NOTICE, T0))
    apply(b, finding("pulse.high", Tier.NOTICE, T0))
    apply(b, Evaluation(T0, (Finding("r1", "battery.low", Tier.NOTICE, "battery_low_meter", T0, subject="d1"),)))
    apply(b, Evaluation(T0, (Finding("r1", "battery.low", Tier.NOTICE, "battery_low_meter", T0, subject="d2"),)))
    assert len(b.open_alarms()) == 4
    assert b.get("r1", "battery.low", "d2") is not None


def test_escalation_raises_the_tier_and_counts() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.NOTICE, T0))
    events = apply(b, finding("spo2.low", Tier.CRITICAL, T0 + timedelta(minutes=1), message="spo2_critical"))
    assert states(events) == [(AlarmState.ESCALATED, Tier.CRITICAL)]
    assert events[0].message == "spo2_critical"
    alarm = b.get("r1", "spo2.low")
    assert alarm is not None
    assert (alarm.escalations, alarm.peak_tier, alarm.raise_count) == (1, Tier.CRITICAL, 2)


def test_confirmation_and_explicit_downgrade_of_a_bp_crisis() -> None:
    b = book()
    (raised,) = apply(b, finding("bp.high", Tier.WARNING, T0, message="bp_crisis_remeasure"))
    (confirmed,) = apply(
        b, finding("bp.high", Tier.CRITICAL, T0, message="bp_crisis_confirmed", transition=Transition.CONFIRMED)
    )
    assert (confirmed.state, confirmed.tier, confirmed.alarm_id) == (
        AlarmState.CONFIRMED,
        Tier.CRITICAL,
        raised.alarm_id,
    )
    (down,) = apply(b, finding("bp.high", Tier.NOTICE, T0, message="bp_high", transition=Transition.DOWNGRADED))
    assert (down.state, down.tier, down.message) == (AlarmState.DOWNGRADED, Tier.NOTICE, "bp_high")


def test_same_tier_with_a_new_instruction_is_said_again() -> None:
    b = book()
    apply(b, finding("bp.high", Tier.WARNING, T0, message="bp_very_high"))
    (event,) = apply(b, finding("bp.high", Tier.WARNING, T0 + timedelta(minutes=1), message="bp_crisis_remeasure"))
    assert (event.state, event.message) == (AlarmState.RE_RAISED, "bp_crisis_remeasure")


@pytest.mark.parametrize(
    ("tier", "interval"),
    [(Tier.CRITICAL, timedelta(minutes=5)), (Tier.WARNING, timedelta(minutes=30)), (Tier.NOTICE, timedelta(hours=4))],
)
def test_re_raised_at_the_tiers_interval(tier: Tier, interval: timedelta) -> None:
    b = book(AlarmPolicy(max_reraises={}))
    apply(b, finding("spo2.low", tier, T0))
    assert tick(b, T0 + interval - timedelta(seconds=1)) == []
    assert states(tick(b, T0 + interval)) == [(AlarmState.RE_RAISED, tier)]
    assert tick(b, T0 + interval + timedelta(seconds=1)) == []
    assert states(tick(b, T0 + 2 * interval)) == [(AlarmState.RE_RAISED, tier)]


@pytest.mark.parametrize(("tier", "said_again"), [(Tier.CRITICAL, 12), (Tier.WARNING, 2), (Tier.NOTICE, 1)])
def test_the_pace_alone_repeats_a_warning_twice_and_a_notice_once(tier: Tier, said_again: int) -> None:
    """Alarm fatigue (issue 16 item 9: the demo's resident heard "oxygen a little low" every half hour all day);
    a critical alarm keeps repeating until it clears or a caregiver answers."""
    b = book()
    apply(b, finding("spo2.low", tier, T0))
    pace = AlarmPolicy().reraise[tier]
    repeats = sum(len(tick(b, T0 + k * pace)) for k in range(1, 13))
    assert repeats == said_again
    assert b.open_alarms()  # still open, still on record


def test_an_escalation_starts_the_repeats_again() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.NOTICE, T0))
    assert len(tick(b, T0 + timedelta(hours=4))) == 1
    assert tick(b, T0 + timedelta(hours=8)) == []
    (up,) = apply(b, finding("spo2.low", Tier.WARNING, T0 + timedelta(hours=9)))
    assert up.state is AlarmState.ESCALATED
    assert states(tick(b, T0 + timedelta(hours=9, minutes=30))) == [(AlarmState.RE_RAISED, Tier.WARNING)]


def test_a_negative_repeat_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_reraises"):
        AlarmPolicy(max_reraises={Tier.WARNING: -1})


def test_re_raise_intervals_are_configurable() -> None:
    policy = AlarmPolicy(
        reraise={Tier.CRITICAL: timedelta(minutes=1), Tier.WARNING: timedelta(minutes=2), Tier.NOTICE: timedelta(1)}
    )
    b = book(policy)
    apply(b, finding("spo2.low", Tier.CRITICAL, T0))
    assert len(tick(b, T0 + timedelta(minutes=1))) == 1
    with pytest.raises(ValueError, match="reraise"):
        AlarmPolicy(reraise={Tier.CRITICAL: timedelta(minutes=1)})


def test_all_clear_closes_and_keeps_the_record() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.WARNING, T0))
    (event,) = apply(b, clear("spo2.low", T0 + timedelta(minutes=3)))
    assert (event.state, event.message, event.alarm_id) == (AlarmState.CLEARED, "all_clear", "a1")
    assert b.open_alarms() == ()
    assert b.closed[0].closed_at == T0 + timedelta(minutes=3)
    assert tick(b, T0 + timedelta(hours=5)) == []
    # The same condition again is a new alarm.
    (again,) = apply(b, finding("spo2.low", Tier.WARNING, T0 + timedelta(hours=6)))
    assert (again.state, again.alarm_id) == (AlarmState.RAISED, "a2")


def test_normal_without_an_open_alarm_says_nothing() -> None:
    assert book().apply(clear("spo2.low", T0)) == []


def test_info_findings_never_become_alarms() -> None:
    b = book()
    ev = Evaluation(T0, (Finding("r1", "reading.unreliable", Tier.INFO, "reading_unreliable", T0, subject="d"),))
    assert apply(b, ev) == []
    assert b.open_alarms() == ()


def test_snooze_holds_back_re_raises_until_it_ends() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.WARNING, T0))
    event = snooze(b, "a1", timedelta(hours=1), T0 + timedelta(minutes=1), by="caregiver")
    assert (event.state, event.until, event.by) == (AlarmState.SNOOZED, T0 + timedelta(hours=1, minutes=1), "caregiver")
    assert tick(b, T0 + timedelta(minutes=30)) == []
    assert tick(b, T0 + timedelta(minutes=60, seconds=59)) == []
    assert states(tick(b, T0 + timedelta(minutes=61))) == [(AlarmState.RE_RAISED, Tier.WARNING)]


def test_snooze_never_silences_critical() -> None:
    b = book()
    apply(b, finding("glucose.low", Tier.CRITICAL, T0, message="glucose_hypo_critical"))
    with pytest.raises(CriticalSnoozeError) as info:
        snooze(b, "a1", timedelta(minutes=10), T0, by="resident")
    assert (info.value.alarm_id, info.value.condition) == ("a1", "glucose.low")
    alarm = b.get("r1", "glucose.low")
    assert alarm is not None
    assert alarm.snoozed_until is None
    assert states(tick(b, T0 + timedelta(minutes=5))) == [(AlarmState.RE_RAISED, Tier.CRITICAL)]


def test_escalation_to_critical_ends_a_snooze() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.WARNING, T0))
    snooze(b, "a1", timedelta(hours=2), T0, by="resident")
    events = apply(b, finding("spo2.low", Tier.CRITICAL, T0 + timedelta(minutes=10), message="spo2_critical"))
    assert states(events) == [(AlarmState.ESCALATED, Tier.CRITICAL)]
    assert states(tick(b, T0 + timedelta(minutes=15))) == [(AlarmState.RE_RAISED, Tier.CRITICAL)]
    with pytest.raises(CriticalSnoozeError):
        snooze(b, "a1", timedelta(minutes=5), T0 + timedelta(minutes=16), by="resident")


def test_invalid_snoozes_are_refused() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.NOTICE, T0))
    with pytest.raises(InvalidSnoozeError):
        snooze(b, "a1", timedelta(0), T0, by="x")
    with pytest.raises(InvalidSnoozeError):
        snooze(b, "a1", timedelta(hours=13), T0, by="x")
    with pytest.raises(UnknownAlarmError):
        snooze(b, "nope", timedelta(minutes=5), T0, by="x")


def test_acknowledgement_stops_re_raising_but_keeps_the_alarm_open() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.CRITICAL, T0, message="spo2_critical"))
    event = b.acknowledge("a1", T0 + timedelta(minutes=2), by="dr.li")
    assert event is not None
    assert (event.state, event.by) == (AlarmState.ACKNOWLEDGED, "dr.li")
    assert b.acknowledge("a1", T0 + timedelta(minutes=3), by="dr.li") is None  # delivered twice
    assert tick(b, T0 + timedelta(hours=1)) == []
    assert b.get("r1", "spo2.low") is not None
    (cleared,) = apply(b, clear("spo2.low", T0 + timedelta(hours=2)))
    assert cleared.state is AlarmState.CLEARED
    assert b.closed[0].acknowledged_by == "dr.li"


def test_escalation_after_acknowledgement_needs_attention_again() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.WARNING, T0))
    b.acknowledge("a1", T0, by="nurse")
    apply(b, finding("spo2.low", Tier.CRITICAL, T0 + timedelta(minutes=1), message="spo2_critical"))
    assert states(tick(b, T0 + timedelta(minutes=6))) == [(AlarmState.RE_RAISED, Tier.CRITICAL)]


def test_acknowledging_a_closed_or_unknown_alarm() -> None:
    b = book()
    apply(b, finding("spo2.low", Tier.WARNING, T0))
    apply(b, clear("spo2.low", T0 + timedelta(minutes=1)))
    event = b.acknowledge("a1", T0 + timedelta(minutes=2), by="nurse")
    assert event is not None
    assert event.state is AlarmState.ACKNOWLEDGED
    assert b.by_id("a1") is not None
    assert b.acknowledge("zzz", T0, by="nurse") is None


def test_every_message_the_engine_or_book_uses_is_a_listed_key() -> None:
    engine = RuleEngine(
        {"r1": ResidentRules(resolve_thresholds(["heart_failure"]), devices=(DeviceWatch("d9", timedelta(hours=1)),))},
        started_at=T0,
        local_zone=UTC,
    )
    b = book()
    seen: set[str] = set()
    series: list[tuple[Vital, tuple[float, ...]]] = [
        (Vital.SYSTOLIC, (85.0, 95.0, 145.0, 165.0, 190.0)),
        (Vital.GLUCOSE, (40.0, 60.0, 200.0, 300.0, 700.0, 100.0)),
        (Vital.SPO2, (94.0, 92.0, 88.0)),
        (Vital.PULSE, (35.0, 45.0, 95.0, 120.0, 140.0)),
        (Vital.TEMPERATURE, (34.0, 35.5, 38.5, 40.0)),
        (Vital.WEIGHT, (70.0, 73.0)),
        (Vital.BATTERY, (5.0,)),
    ]
    samples = [{vital: v, Vital.DIASTOLIC: 70.0} for vital, values in series for v in values]
    at = T0
    for values in samples:
        at += timedelta(minutes=20)
        for kind in (DeviceKind.GLUCOSE, DeviceKind.PENDANT):
            evaluation = engine.evaluate(Observation("r1", "d1", kind, "x", at, values))
            seen |= {f.message for f in evaluation.findings}
            seen |= {e.message for e in apply(b, evaluation)}
    evaluation = engine.evaluate(Observation("r1", "d1", DeviceKind.SCALE, "y", at, {Vital.WEIGHT: 1}, True))
    seen |= {f.message for f in evaluation.findings}
    seen |= {f.message for f in engine.tick(at + timedelta(hours=3)).findings}
    assert seen <= set(MESSAGE_KEYS)
    assert len(seen) >= 20
    assert len(set(MESSAGE_KEYS)) == len(MESSAGE_KEYS)


# -- issue 17 item 4: intervals on the monotonic clock -----------------------------------------------------------

WALL_STEPS = [timedelta(hours=12), timedelta(hours=-12), timedelta(days=365), timedelta(days=-365)]


@pytest.mark.parametrize("step", WALL_STEPS, ids=["+12h", "-12h", "+1y", "-1y"])
def test_a_stepped_wall_clock_neither_fires_nor_delays_a_re_raise(step: timedelta) -> None:
    b = book()
    b.apply(finding("spo2.low", Tier.WARNING, T0))
    b.clock.advance(timedelta(minutes=10))
    b.clock.step_wall(step)
    assert b.tick(b.clock.now()) == []  # on wall time, +12 h re-raised at once
    b.clock.advance(timedelta(minutes=19, seconds=59))
    assert b.tick(b.clock.now()) == []
    b.clock.advance(timedelta(seconds=1))
    events = b.tick(b.clock.now())  # on wall time, -12 h held this back for 12 hours
    assert states(events) == [(AlarmState.RE_RAISED, Tier.WARNING)]
    assert events[0].at == b.clock.now()  # the event says the wall time
    b.clock.advance(timedelta(minutes=30))
    assert states(b.tick(b.clock.now())) == [(AlarmState.RE_RAISED, Tier.WARNING)]


@pytest.mark.parametrize("step", WALL_STEPS, ids=["+12h", "-12h", "+1y", "-1y"])
def test_a_stepped_wall_clock_neither_ends_nor_stretches_a_snooze(step: timedelta) -> None:
    b = book()
    b.apply(finding("spo2.low", Tier.NOTICE, T0))
    event = b.snooze("a1", timedelta(hours=5), T0, by="resident")
    assert event.until == T0 + timedelta(hours=5)  # what the record says: wall time
    b.clock.advance(timedelta(hours=4, minutes=30))
    b.clock.step_wall(step)
    assert b.tick(b.clock.now()) == []  # on wall time, +12 h ended the snooze and re-raised
    b.clock.advance(timedelta(minutes=29, seconds=59))
    assert b.tick(b.clock.now()) == []
    b.clock.advance(timedelta(seconds=1))
    assert states(b.tick(b.clock.now())) == [(AlarmState.RE_RAISED, Tier.NOTICE)]  # -12 h stretched it


# -- property: random streams through the real engine ----------------------------------------------------------

_VALUES = {
    Vital.SYSTOLIC: st.sampled_from([85.0, 95.0, 130.0, 150.0, 170.0, 185.0, 200.0]),
    Vital.GLUCOSE: st.sampled_from([45.0, 60.0, 100.0, 140.0, 200.0, 300.0, 650.0]),
    Vital.SPO2: st.sampled_from([85.0, 90.0, 92.0, 94.0, 97.0]),
    Vital.PULSE: st.sampled_from([35.0, 45.0, 70.0, 100.0, 120.0, 140.0]),
    Vital.BATTERY: st.sampled_from([5.0, 15.0, 50.0]),
}
_step = st.one_of(
    st.tuples(
        st.just("obs"),
        st.sampled_from(sorted(_VALUES)),
        st.data(),
        st.booleans(),
        st.sampled_from([DeviceKind.PENDANT, DeviceKind.OXIMETER]),
    ),
    st.tuples(st.just("tick"), st.integers(1, 3600)),
    st.tuples(st.just("snooze"), st.integers(0, 5)),
    st.tuples(st.just("ack"), st.integers(0, 5)),
)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_step, max_size=40), data=st.data())
def test_random_streams_keep_the_alarm_invariants(steps: list[tuple[object, ...]], data: st.DataObject) -> None:
    engine = RuleEngine({"r1": ResidentRules(resolve_thresholds())}, started_at=T0, local_zone=UTC)
    b = book()
    now = T0
    open_keys: dict[str, tuple[ConditionRef, Tier]] = {}
    all_events: list[AlarmEvent] = []
    for step in steps:
        events: list[AlarmEvent] = []
        if step[0] == "obs":
            _, vital, _, unreliable, kind = step
            assert isinstance(vital, Vital)
            assert isinstance(kind, DeviceKind)
            now += timedelta(seconds=data.draw(st.integers(1, 900)))
            value = data.draw(_VALUES[vital])
            evaluation = engine.evaluate(Observation("r1", "d", kind, "x", now, {vital: value}, bool(unreliable)))
            if unreliable and vital is not Vital.BATTERY:
                assert all(f.tier is Tier.INFO for f in evaluation.findings)
            events = apply(b, evaluation)
        elif step[0] == "tick":
            seconds = step[1]
            assert isinstance(seconds, int)
            now += timedelta(seconds=seconds)
            events = apply(b, engine.tick(now)) + tick(b, now)
        else:
            alarms = b.open_alarms()
            index = step[1]
            assert isinstance(index, int)
            if not alarms:
                continue
            alarm = alarms[index % len(alarms)]
            if step[0] == "ack":
                event = b.acknowledge(alarm.id, now, by="carer")
                events = [event] if event is not None else []
            elif alarm.tier is Tier.CRITICAL:
                with pytest.raises(CriticalSnoozeError):
                    snooze(b, alarm.id, timedelta(minutes=30), now, by="resident")
            else:
                events = [snooze(b, alarm.id, timedelta(minutes=30), now, by="resident")]
        for event in events:
            ref = ConditionRef(event.resident, event.condition, event.subject)
            if event.state is AlarmState.RAISED:
                assert all(r != ref for r, _ in open_keys.values()), "two open alarms for one condition"
                open_keys[event.alarm_id] = (ref, event.tier)
            else:
                assert event.alarm_id in open_keys or event.state is AlarmState.ACKNOWLEDGED, "event before a raise"
            if event.state is AlarmState.ESCALATED or event.state is AlarmState.CONFIRMED:
                assert event.tier > open_keys[event.alarm_id][1]
            if event.state is AlarmState.SNOOZED:
                assert event.tier is not Tier.CRITICAL
            if event.state is AlarmState.CLEARED:
                del open_keys[event.alarm_id]
            elif event.alarm_id in open_keys:
                open_keys[event.alarm_id] = (ref, event.tier)
        all_events += events
        refs = [a.ref for a in b.open_alarms()]
        assert len(refs) == len(set(refs))
        assert {a.id for a in b.open_alarms()} == set(open_keys)
    assert all(e.message in MESSAGE_KEYS for e in all_events)
