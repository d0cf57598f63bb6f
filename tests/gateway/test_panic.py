"""The panic lifecycle: press, cancel, escalation without the platform, caregiver answer, daily check-in."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from hypothesis import given
from hypothesis import strategies as st

from gateway.feedback import Light, Sound
from gateway.panic import (
    CallState,
    EmitRecord,
    NotifyFallback,
    PanicLifecycle,
    PanicPolicy,
    PendantEventKind,
    SetPendantState,
    ShowCue,
)

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
PENDANT = "AA:BB:CC:DD:EE:02"


def cues(actions: list[object]) -> list[str | None]:
    return [a.cue.message for a in actions if isinstance(a, ShowCue)]


def alarm_states(actions: list[object]) -> list[object]:
    return [a.fields["state"] for a in actions if isinstance(a, EmitRecord) and a.kind == "alarm"]


def press(life: PanicLifecycle, kind: PendantEventKind, counter: int, at: datetime) -> list[object]:
    return list(life.on_event(pendant=PENDANT, resident="r1", kind=kind, counter=counter, battery=80, now=at))


def test_press_gives_local_feedback_first_then_records_then_pendant_state() -> None:
    life = PanicLifecycle(language={"r1": "zh"})
    actions = press(life, PendantEventKind.PRESS, 7, T0)
    first = actions[0]
    assert isinstance(first, ShowCue)
    assert first.cue.message == "panic_help_called"
    assert first.cue.language == "zh"
    assert first.cue.urgent
    assert first.cue.light is Light.HELP_CALLED
    assert alarm_states(actions) == ["raised"]
    assert [a.fields["event"] for a in actions if isinstance(a, EmitRecord) and a.kind == "panic_event"] == ["press"]
    assert actions[-1] == SetPendantState(PENDANT, "help_called")
    call = life.open_call(PENDANT)
    assert call is not None
    assert call.state is CallState.CALLING


def test_second_press_is_a_repeat_not_a_second_call() -> None:
    life = PanicLifecycle()
    press(life, PendantEventKind.PRESS, 1, T0)
    actions = press(life, PendantEventKind.PRESS, 2, T0 + timedelta(seconds=3))
    assert cues(actions) == ["panic_still_calling"]
    assert alarm_states(actions) == []
    assert len(life.calls) == 1


def test_long_press_within_window_cancels_and_keeps_the_alarm_on_record() -> None:
    life = PanicLifecycle(policy=PanicPolicy(cancel_window=timedelta(seconds=60)))
    press(life, PendantEventKind.PRESS, 1, T0)
    actions = press(life, PendantEventKind.LONG_PRESS, 2, T0 + timedelta(seconds=60))
    assert cues(actions) == ["panic_cancelled"]
    assert alarm_states(actions) == ["cancelled"]
    assert SetPendantState(PENDANT, "cancelled") in actions
    assert life.open_call(PENDANT) is None
    (call,) = life.calls.values()
    assert call.state is CallState.CANCELLED
    # Nothing more happens for a cancelled call.
    assert life.tick(T0 + timedelta(hours=1)) == []


def test_cancel_after_the_window_is_refused() -> None:
    life = PanicLifecycle(policy=PanicPolicy(cancel_window=timedelta(seconds=60)))
    press(life, PendantEventKind.PRESS, 1, T0)
    actions = press(life, PendantEventKind.CANCEL, 2, T0 + timedelta(seconds=61))
    assert cues(actions) == ["panic_still_calling"]
    assert alarm_states(actions) == []
    assert life.open_call(PENDANT) is not None


def test_cancel_without_a_call_is_only_recorded() -> None:
    life = PanicLifecycle()
    actions = press(life, PendantEventKind.CANCEL, 1, T0)
    assert len(actions) == 1
    assert isinstance(actions[0], EmitRecord)
    assert actions[0].kind == "panic_event"


def test_no_platform_ack_escalates_with_siren_and_fallback_then_repeats() -> None:
    policy = PanicPolicy(ack_timeout=timedelta(seconds=5), repeat_interval=timedelta(seconds=30))
    life = PanicLifecycle(policy=policy)
    press(life, PendantEventKind.PRESS, 1, T0)
    assert life.tick(T0 + timedelta(seconds=4.9)) == []
    actions = life.tick(T0 + timedelta(seconds=5))
    assert cues(actions) == ["siren", "panic_still_calling"]
    siren = actions[0]
    assert isinstance(siren, ShowCue)
    assert siren.cue.sound is Sound.SIREN
    assert alarm_states(actions) == ["escalated"]
    assert sum(isinstance(a, NotifyFallback) for a in actions) == 1
    assert life.tick(T0 + timedelta(seconds=20)) == []
    again = life.tick(T0 + timedelta(seconds=35))
    assert cues(again) == ["panic_still_calling"]
    assert sum(isinstance(a, NotifyFallback) for a in again) == 1


def test_delivered_in_time_does_not_escalate_and_caregiver_answer_closes() -> None:
    life = PanicLifecycle(policy=PanicPolicy(ack_timeout=timedelta(seconds=5)))
    press(life, PendantEventKind.PRESS, 1, T0)
    (alarm_id,) = life.calls
    assert life.on_delivered(alarm_id, T0 + timedelta(seconds=1)) == []
    assert life.tick(T0 + timedelta(seconds=6)) == []
    answered = life.on_caregiver_ack(alarm_id, "Dr. Li", T0 + timedelta(seconds=90))
    assert cues(answered) == ["panic_answered"]
    assert alarm_states(answered) == ["acknowledged"]
    assert SetPendantState(PENDANT, "answered") in answered
    assert life.calls[alarm_id].state is CallState.ANSWERED
    assert life.on_caregiver_ack(alarm_id, "Dr. Li", T0 + timedelta(seconds=95)) == []
    assert life.on_caregiver_ack("unknown", "Dr. Li", T0) == []


def test_escalated_call_stops_escalating_once_answered() -> None:
    life = PanicLifecycle(policy=PanicPolicy(ack_timeout=timedelta(seconds=5)))
    press(life, PendantEventKind.PRESS, 1, T0)
    life.tick(T0 + timedelta(seconds=10))
    (alarm_id,) = life.calls
    life.on_caregiver_ack(alarm_id, "nurse", T0 + timedelta(seconds=40))
    assert life.tick(T0 + timedelta(hours=2)) == []


def test_checkin_recorded_and_missed_checkin_warns_once_a_day() -> None:
    life = PanicLifecycle(policy=PanicPolicy(checkin_deadline=time(11, 0)))
    life.expect_checkins(["r1"], since=T0 - timedelta(days=1))
    ok = press(life, PendantEventKind.CHECKIN, 1, T0 - timedelta(days=1))
    assert cues(ok) == ["checkin_ok"]
    assert life.tick(T0.replace(hour=10, minute=59)) == []
    missed = life.tick(T0.replace(hour=11))
    assert cues(missed) == ["checkin_missed"]
    assert [a.fields["tier"] for a in missed if isinstance(a, EmitRecord)] == ["warning"]
    assert life.tick(T0.replace(hour=15)) == []
    press(life, PendantEventKind.CHECKIN, 2, T0 + timedelta(days=1, hours=1))
    assert life.tick(T0 + timedelta(days=1, hours=4)) == []


@given(st.lists(st.tuples(st.sampled_from(list(PendantEventKind)), st.integers(0, 120)), max_size=30))
def test_never_more_than_one_open_call_per_pendant(events: list[tuple[PendantEventKind, int]]) -> None:
    life = PanicLifecycle()
    now = T0
    for counter, (kind, gap) in enumerate(events):
        now += timedelta(seconds=gap)
        press(life, kind, counter, now)
        life.tick(now)
        assert sum(1 for c in life.calls.values() if c.open) <= 1
