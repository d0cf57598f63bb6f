"""The panic lifecycle: press, cancel, escalation without the platform, caregiver answer, daily check-in, floods,
and timeouts on the monotonic clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.app import open_gateway
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.events import PendantFrame
from gateway.feedback import Light, RecordingFeedback, Sound
from gateway.panic import PanicLifecycle, PanicPolicy
from gateway.panic_actions import (
    Action,
    CallState,
    EmitAlarmStep,
    EmitPanicEvent,
    NotifyFallback,
    SetPendantState,
    ShowCue,
)
from protocols.keys import (
    HubIdentity,
    PlatformIdentity,
    save_hub_identity,
    save_pendant_key,
    save_platform_public_keys,
)
from protocols.pendant import FeedbackState, PendantEvent, PendantEventType
from protocols.record import AlarmTier, PanicEventType
from sim.broker import free_port

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
PENDANT = "AA:BB:CC:DD:EE:02"


def lifecycle(
    policy: PanicPolicy | None = None, language: dict[str, str] | None = None
) -> tuple[PanicLifecycle, ManualClock]:
    clock = ManualClock(T0)
    return PanicLifecycle(policy or PanicPolicy(local_zone=UTC), clock=clock, language=language or {}), clock


def cues(actions: list[Action]) -> list[str | None]:
    return [a.cue.message for a in actions if isinstance(a, ShowCue)]


def records(actions: list[Action]) -> list[EmitPanicEvent | EmitAlarmStep]:
    return [a for a in actions if isinstance(a, EmitPanicEvent | EmitAlarmStep)]


def events(actions: list[Action]) -> list[EmitPanicEvent]:
    return [a for a in actions if isinstance(a, EmitPanicEvent)]


def steps(actions: list[Action]) -> list[EmitAlarmStep]:
    return [a for a in actions if isinstance(a, EmitAlarmStep)]


def alarm_states(actions: list[Action]) -> list[object]:
    return [a.state.value for a in steps(actions)]


def press(life: PanicLifecycle, kind: PanicEventType, counter: int) -> list[Action]:
    return life.on_event(pendant=PENDANT, resident="r1", kind=kind, counter=counter, battery=80)


def test_press_gives_local_feedback_first_then_records_then_pendant_state() -> None:
    life, _ = lifecycle(language={"r1": "zh"})
    actions = press(life, PanicEventType.PRESS, 7)
    first = actions[0]
    assert isinstance(first, ShowCue)
    assert first.cue.message == "panic_help_called"
    assert first.cue.language == "zh"
    assert first.cue.urgent
    assert first.cue.light is Light.HELP_CALLED
    assert alarm_states(actions) == ["raised"]
    assert [r.event for r in events(actions)] == [PanicEventType.PRESS]
    assert all(r.at == T0 for r in records(actions))  # records carry the clock's wall time, UTC
    assert actions[-1] == SetPendantState(PENDANT, FeedbackState.HELP_CALLED)
    call = life.open_call(PENDANT)
    assert call is not None
    assert call.state is CallState.CALLING


def test_second_press_joins_the_open_call() -> None:
    life, clock = lifecycle()
    press(life, PanicEventType.PRESS, 1)
    clock.advance(3)
    actions = press(life, PanicEventType.PRESS, 2)
    assert cues(actions) == ["panic_still_calling"]
    assert alarm_states(actions) == []
    (joined,) = events(actions)
    (call,) = life.calls.values()
    assert joined.alarm_id == call.alarm_id
    assert len(life.calls) == 1


def test_long_press_within_window_cancels_and_keeps_the_alarm_on_record() -> None:
    life, clock = lifecycle(PanicPolicy(local_zone=UTC, cancel_window=timedelta(seconds=60)))
    press(life, PanicEventType.PRESS, 1)
    clock.advance(60)
    actions = press(life, PanicEventType.LONG_PRESS, 2)
    assert cues(actions) == ["panic_cancelled"]
    assert alarm_states(actions) == ["cancelled"]
    assert SetPendantState(PENDANT, FeedbackState.CANCELLED) in actions
    assert life.open_call(PENDANT) is None
    (call,) = life.calls.values()
    assert call.state is CallState.CANCELLED
    clock.advance(3600)
    assert life.tick() == []  # nothing more happens for a cancelled call


def test_cancel_after_the_window_is_refused() -> None:
    life, clock = lifecycle(PanicPolicy(local_zone=UTC, cancel_window=timedelta(seconds=60)))
    press(life, PanicEventType.PRESS, 1)
    clock.advance(61)
    actions = press(life, PanicEventType.CANCEL, 2)
    assert cues(actions) == ["panic_still_calling"]
    assert alarm_states(actions) == []
    assert [r.cancel_refused for r in events(actions)] == [True]
    assert steps(actions) == []
    assert life.open_call(PENDANT) is not None


def test_cancel_without_a_call_is_only_recorded() -> None:
    life, _ = lifecycle()
    actions = press(life, PanicEventType.CANCEL, 1)
    assert len(actions) == 1
    assert isinstance(actions[0], EmitPanicEvent)
    assert actions[0].event is PanicEventType.CANCEL


def test_no_platform_ack_escalates_with_siren_and_fallback_then_repeats() -> None:
    life, clock = lifecycle(
        PanicPolicy(local_zone=UTC, ack_timeout=timedelta(seconds=5), repeat_interval=timedelta(seconds=30))
    )
    press(life, PanicEventType.PRESS, 1)
    clock.advance(4.9)
    assert life.tick() == []
    clock.advance(0.1)
    actions = life.tick()
    assert cues(actions) == ["siren", "panic_still_calling"]
    siren = actions[0]
    assert isinstance(siren, ShowCue)
    assert siren.cue.sound is Sound.SIREN
    assert alarm_states(actions) == ["escalated"]
    assert sum(isinstance(a, NotifyFallback) for a in actions) == 1
    clock.advance(15)
    assert life.tick() == []
    clock.advance(15)
    again = life.tick()
    assert cues(again) == ["panic_still_calling"]
    assert sum(isinstance(a, NotifyFallback) for a in again) == 1


def test_delivered_in_time_does_not_escalate_and_caregiver_answer_closes() -> None:
    life, clock = lifecycle(PanicPolicy(local_zone=UTC, ack_timeout=timedelta(seconds=5)))
    press(life, PanicEventType.PRESS, 1)
    (alarm_id,) = life.calls
    clock.advance(1)
    assert life.on_delivered(alarm_id) == []
    clock.advance(5)
    assert life.tick() == []
    clock.advance(84)
    answered = life.on_caregiver_ack(alarm_id, "Dr. Li")
    assert cues(answered) == ["panic_answered"]
    assert alarm_states(answered) == ["acknowledged"]
    assert SetPendantState(PENDANT, FeedbackState.ANSWERED) in answered
    assert life.calls[alarm_id].state is CallState.ANSWERED
    assert life.calls[alarm_id].answered_at == T0 + timedelta(seconds=90)
    assert life.on_caregiver_ack(alarm_id, "Dr. Li") == []
    assert life.on_caregiver_ack("unknown", "Dr. Li") == []


def test_escalated_call_stops_escalating_once_answered() -> None:
    life, clock = lifecycle(PanicPolicy(local_zone=UTC, ack_timeout=timedelta(seconds=5)))
    press(life, PanicEventType.PRESS, 1)
    clock.advance(10)
    life.tick()
    (alarm_id,) = life.calls
    life.on_caregiver_ack(alarm_id, "nurse")
    clock.advance(7200)
    assert life.tick() == []


def test_records_take_the_given_wall_time_when_the_hub_passes_one() -> None:
    life, _ = lifecycle()
    stamp = T0 + timedelta(minutes=3)
    actions = life.on_event(
        pendant=PENDANT, resident="r1", kind=PanicEventType.PRESS, counter=1, battery=None, now=stamp
    )
    assert {r.at for r in records(actions)} == {stamp}
    with pytest.raises(ValueError, match="timezone-aware"):
        life.tick(datetime(2026, 11, 25, 8, 0))  # noqa: DTZ001 - the point of the test


# -- the wall clock steps; timeouts do not ------------------------------------------------------------------------


@pytest.mark.parametrize("step", [timedelta(hours=12), timedelta(hours=-12), timedelta(days=365), timedelta(days=-365)])
def test_a_wall_clock_step_neither_fires_nor_delays_escalation(step: timedelta) -> None:
    life, clock = lifecycle(
        PanicPolicy(local_zone=UTC, ack_timeout=timedelta(seconds=5), repeat_interval=timedelta(seconds=30))
    )
    press(life, PanicEventType.PRESS, 1)
    clock.advance(2)
    clock.step_wall(step)  # NTP corrects the clock by hours while the call waits for the platform
    assert life.tick() == []  # a forward step does not fire the escalation early
    clock.advance(2.9)
    assert life.tick() == []
    clock.advance(0.1)  # 5 s after the press, whatever the wall clock says
    escalated = life.tick()
    assert alarm_states(escalated) == ["escalated"]
    assert sum(isinstance(a, NotifyFallback) for a in escalated) == 1
    (record,) = steps(escalated)
    assert record.at == T0 + timedelta(seconds=5) + step  # records say what the wall clock says
    clock.step_wall(-step)
    assert life.tick() == []  # nor does stepping back repeat anything before its interval
    clock.advance(30)
    assert cues(life.tick()) == ["panic_still_calling"]


def test_a_wall_clock_step_does_not_close_or_reopen_the_cancel_window() -> None:
    life, clock = lifecycle(PanicPolicy(local_zone=UTC, cancel_window=timedelta(seconds=60)))
    press(life, PanicEventType.PRESS, 1)
    clock.step_wall(timedelta(hours=12))
    clock.advance(10)
    assert alarm_states(press(life, PanicEventType.CANCEL, 2)) == ["cancelled"]
    press(life, PanicEventType.PRESS, 3)
    clock.advance(61)
    clock.step_wall(timedelta(hours=-12))
    assert alarm_states(press(life, PanicEventType.CANCEL, 4)) == []


# -- check-ins in the home's zone --------------------------------------------------------------------------------


def test_checkin_recorded_and_missed_checkin_warns_once_a_day() -> None:
    life, clock = lifecycle(PanicPolicy(local_zone=UTC, checkin_deadline=time(11, 0)))
    life.expect_checkins(["r1"], since=T0 - timedelta(days=1))
    clock.step_wall(timedelta(days=-1))
    ok = press(life, PanicEventType.CHECKIN, 1)
    assert cues(ok) == ["checkin_ok"]
    assert [r.event for r in events(ok)] == [PanicEventType.CHECKIN]
    assert life.tick(T0.replace(hour=10, minute=59)) == []
    missed = life.tick(T0.replace(hour=11))
    assert cues(missed) == ["checkin_missed"]
    assert [a.tier for a in steps(missed)] == [AlarmTier.WARNING]
    assert life.tick(T0.replace(hour=15)) == []
    clock.set_wall(T0 + timedelta(days=1, hours=1))
    clock.advance(60)
    press(life, PanicEventType.CHECKIN, 2)
    assert life.tick(T0 + timedelta(days=1, hours=4)) == []


def test_checkin_deadline_is_local_time_in_the_homes_zone() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")  # UTC+8: 11:00 local is 03:00 UTC
    life, _ = lifecycle(PanicPolicy(local_zone=shanghai, checkin_deadline=time(11, 0)))
    life.expect_checkins(["r1"], since=datetime(2026, 11, 24, 9, 0, tzinfo=shanghai))
    assert life.tick(datetime(2026, 11, 25, 2, 59, tzinfo=UTC)) == []
    missed = life.tick(datetime(2026, 11, 25, 3, 0, tzinfo=UTC))
    assert cues(missed) == ["checkin_missed"]
    (alarm,) = steps(missed)
    assert alarm.alarm_id == "checkin-r1-2026-11-25"  # the local day, not the UTC one
    assert alarm.at == datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def test_checkin_deadline_in_the_repeated_autumn_hour_warns_once() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice
    life, _ = lifecycle(PanicPolicy(local_zone=berlin, checkin_deadline=time(2, 30)))
    life.expect_checkins(["r1"], since=datetime(2026, 10, 24, 9, 0, tzinfo=berlin))
    assert life.tick(datetime(2026, 10, 25, 0, 29, tzinfo=UTC)) == []  # 02:29 CEST
    assert cues(life.tick(datetime(2026, 10, 25, 0, 30, tzinfo=UTC))) == ["checkin_missed"]  # 02:30 CEST
    assert life.tick(datetime(2026, 10, 25, 1, 30, tzinfo=UTC)) == []  # 02:30 CET, the same local day


def test_checkin_deadline_in_the_skipped_spring_hour_warns_after_the_gap() -> None:
    new_york = ZoneInfo("America/New_York")  # 2026-03-08: 02:00 EST -> 03:00 EDT; 02:30 never happens
    life, _ = lifecycle(PanicPolicy(local_zone=new_york, checkin_deadline=time(2, 30)))
    life.expect_checkins(["r1"], since=datetime(2026, 3, 7, 9, 0, tzinfo=new_york))
    assert life.tick(datetime(2026, 3, 8, 6, 59, tzinfo=UTC)) == []  # 01:59 EST
    assert cues(life.tick(datetime(2026, 3, 8, 7, 0, tzinfo=UTC))) == ["checkin_missed"]  # 03:00 EDT


# -- floods ------------------------------------------------------------------------------------------------------


def test_a_flood_of_press_cancel_toggles_opens_a_bounded_number_of_calls() -> None:
    """Issue 19 item 5: 5,000 valid press/cancel events in a row opened 2,500 calls and 15,000 outbox rows."""
    policy = PanicPolicy(local_zone=UTC)
    life, clock = lifecycle(policy)
    emitted: list[EmitPanicEvent | EmitAlarmStep] = []
    for counter in range(5000):
        kind = PanicEventType.PRESS if counter % 2 == 0 else PanicEventType.CANCEL
        emitted += records(press(life, kind, counter))
        clock.advance(0.01)
        emitted += records(life.tick())
    elapsed = timedelta(seconds=50)
    assert len(life.calls) == 1 + policy.cancel_limit  # the fourth cancel in ten minutes is refused
    assert len(life.calls) <= policy.max_calls(elapsed)
    assert len(emitted) <= policy.max_records(elapsed)
    call = life.open_call(PENDANT)
    assert call is not None  # the resident kept pressing: the last call stays open for a caregiver


def test_a_stuck_button_raises_one_alarm() -> None:
    life, clock = lifecycle()
    emitted: list[Action] = []
    for counter in range(5000):
        emitted += press(life, PanicEventType.PRESS, counter)
        clock.advance(0.001)
    assert alarm_states(emitted) == ["raised"]
    assert len(life.calls) == 1
    assert len(records(emitted)) == 2 + 1  # the press with its alarm, and one echo of the repeats in 5 s


def test_cancels_are_allowed_again_after_the_limit_window() -> None:
    policy = PanicPolicy(local_zone=UTC, cancel_limit=1, cancel_limit_window=timedelta(minutes=10))
    life, clock = lifecycle(policy)
    press(life, PanicEventType.PRESS, 1)
    assert alarm_states(press(life, PanicEventType.CANCEL, 2)) == ["cancelled"]
    clock.advance(5)
    first_again = press(life, PanicEventType.PRESS, 3)
    assert alarm_states(first_again) == ["raised"]  # a first press after a cancel always opens a call
    assert cues(first_again) == ["panic_help_called"]
    assert alarm_states(press(life, PanicEventType.CANCEL, 4)) == []  # over the limit: refused
    clock.advance(600)
    # The refused call is now past its cancel window: the caregiver closes it; the next call may be cancelled.
    (open_call,) = [c for c in life.calls.values() if c.open]
    life.on_caregiver_ack(open_call.alarm_id, "nurse")
    press(life, PanicEventType.PRESS, 5)
    assert alarm_states(press(life, PanicEventType.CANCEL, 6)) == ["cancelled"]


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="echo_interval"):
        PanicPolicy(local_zone=UTC, echo_interval=timedelta(0))
    with pytest.raises(ValueError, match="cancel_limit"):
        PanicPolicy(local_zone=UTC, cancel_limit=0)


_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(list(PanicEventType)),
        # Seconds to the next event: mostly a burst (a stuck or toggled button), sometimes a pause.
        st.one_of(st.just(0.0), st.floats(0, 2), st.floats(0, 120)),
        st.booleans(),  # the platform acks the open call's alarm now
        st.sampled_from([timedelta(0), timedelta(hours=12), timedelta(hours=-12)]),  # wall clock step
    ),
    min_size=20,
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(_EVENTS)
def test_every_first_press_opens_a_call_and_calls_and_records_are_bounded_by_time(
    events: list[tuple[PanicEventType, float, bool, timedelta]],
) -> None:
    policy = PanicPolicy(local_zone=UTC)
    life, clock = lifecycle(policy)
    start = clock.monotonic()
    emitted = opened = 0
    for counter, (kind, gap, ack, step) in enumerate(events):
        clock.advance(gap)
        clock.step_wall(step)
        was_open = life.open_call(PENDANT)
        actions = press(life, kind, counter)
        if kind is PanicEventType.PRESS and was_open is None:
            # A first press is never dropped or delayed: at once a call, its alarm, and the help cue first.
            assert cues(actions)[0] == "panic_help_called"
            assert alarm_states(actions) == ["raised"]
            assert life.open_call(PENDANT) is not None
        if kind is PanicEventType.PRESS and was_open is not None:
            assert alarm_states(actions) == []
            assert life.open_call(PENDANT) == was_open  # joined, not replaced
        emitted += len(records(actions))
        opened += alarm_states(actions).count("raised")
        current = life.open_call(PENDANT)
        if ack and current is not None:
            life.on_delivered(current.alarm_id)
        emitted += len(records(life.tick()))
        assert sum(1 for c in life.calls.values() if c.open) <= 1
        elapsed = timedelta(seconds=clock.monotonic() - start)
        assert opened <= policy.max_calls(elapsed)
        assert emitted <= policy.max_records(elapsed)


def test_the_same_event_sent_again_makes_the_same_records_again_and_opens_nothing() -> None:
    """A press the hub could not store is not confirmed; the pendant sends it again and its records come again,
    with the same alarm id (the platform keeps one), however the flood limits stand."""
    life, clock = lifecycle()
    first = press(life, PanicEventType.PRESS, 7)
    clock.advance(1)
    again = press(life, PanicEventType.PRESS, 7)
    assert alarm_states(again) == ["raised"]
    assert records(again) == records(first)
    assert len(life.calls) == 1
    clock.advance(1)
    cancelled = press(life, PanicEventType.CANCEL, 8)
    assert alarm_states(cancelled) == ["cancelled"]
    clock.advance(1)
    assert alarm_states(press(life, PanicEventType.CANCEL, 8)) == ["cancelled"]
    assert life.open_call(PENDANT) is None
    clock.advance(1)
    # The counter seen again after the call closed (it wrapped): a new call, with an alarm id of its own.
    assert alarm_states(press(life, PanicEventType.PRESS, 7)) == ["raised"]
    assert len(life.calls) == 2
    assert len({c.alarm_id for c in life.calls.values()}) == 2


def test_closed_calls_are_forgotten_beyond_a_bound_and_open_ones_never() -> None:
    life, clock = lifecycle(PanicPolicy(local_zone=UTC, cancel_limit=1000))
    for counter in range(0, 400, 2):
        press(life, PanicEventType.PRESS, counter)
        press(life, PanicEventType.CANCEL, counter + 1)
        clock.advance(1)
    assert len(life.calls) <= 65
    life.on_event(pendant="AA:BB:CC:DD:EE:03", resident="r2", kind=PanicEventType.PRESS, counter=1, battery=None)
    for counter in range(400, 800, 2):
        press(life, PanicEventType.PRESS, counter)
        press(life, PanicEventType.CANCEL, counter + 1)
    assert life.open_call("AA:BB:CC:DD:EE:03") is not None  # the other pendant's call is still open


# -- the flood through a running hub (issue 19 item 5's reproducer) ------------------------------------------------

FLOOD_PENDANT = "C0:11:00:00:00:0A"
FLOOD_KEY = bytes(range(32))
FLOOD_CONFIG = f"""
[hub]
id = "flood-hub"
key_file = "hub.key"
timezone = "Asia/Shanghai"
[platform]
public_key_file = "platform.pub"
[broker]
url = "mqtt://127.0.0.1:{{port}}"
[storage]
path = "outbox.sqlite"
[[residents]]
id = "r1"
language = "zh"
[[devices]]
address = "{FLOOD_PENDANT}"
kind = "pendant"
resident = "r1"
pendant_key_file = "pendant.key"
"""


async def test_a_press_cancel_flood_through_the_hub_stores_a_bounded_number_of_calls_and_records(
    tmp_path: Path,
) -> None:
    save_hub_identity(tmp_path / "hub.key", HubIdentity.generate("flood-hub"))
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    save_pendant_key(tmp_path / "pendant.key", FLOOD_PENDANT, FLOOD_KEY)
    # No broker listens on this port: local handling and storage only.
    config = parse_config(FLOOD_CONFIG.format(port=free_port()), tmp_path / "hub.toml")
    device = config.devices[0]
    clock = ManualClock(T0)
    recorder = RecordingFeedback()
    events = 1000
    async with open_gateway(config, feedback=recorder, ble=False, clock=clock, tick_interval=3600) as gw:
        before = (await gw.outbox.stats()).priority_rows
        for counter in range(1, events + 1):
            kind = PendantEventType.PRESS if counter % 2 else PendantEventType.CANCEL
            frame = bytes(PendantEvent(kind, counter, None, counter).sign(FLOOD_PENDANT, FLOOD_KEY))
            assert await gw.hub.pendant_frame(PendantFrame(device, frame)) is not None  # stored, so confirmed
            clock.advance(0.01)
        policy = PanicPolicy(local_zone=config.timezone)
        elapsed = timedelta(seconds=events * 0.01)
        calls = gw.hub.panic_calls()
        assert len(calls) == 1 + policy.cancel_limit  # 500 presses without the limits opened 500 calls
        assert recorder.messages().count("panic_help_called") == len(calls)  # every first press raised its cues
        stored = (await gw.outbox.stats()).priority_rows - before
        assert 0 < stored <= policy.max_records(elapsed)
