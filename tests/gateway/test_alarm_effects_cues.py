"""What the resident is told for one evaluation's alarm steps (gateway.alarm_effects): "your readings are back to
normal" is not said in the same breath as a new or worse alarm (issue 16 item 9: the demo's oximeter reading cleared
a pulse alarm and raised a low-oxygen one, and the resident heard both), but is said when nothing else is raised."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.alarm_effects import AlarmEffects
from gateway.alarms import AlarmEvent
from gateway.core.alarm_records import AlarmRecords
from gateway.core.counters import HubCounters
from gateway.feedback import RecordingFeedback
from gateway.thresholds import Tier
from protocols.record import AlarmState

NOW = datetime(2026, 12, 4, 13, 29, tzinfo=UTC)


def event(alarm_id: str, resident: str, state: AlarmState, message: str, tier: Tier = Tier.WARNING) -> AlarmEvent:
    return AlarmEvent(alarm_id, resident, "c", "", tier, state, message, None, None, NOW)


def spoken(*events: AlarmEvent) -> list[str | None]:
    feedback = RecordingFeedback()
    counters = HubCounters()
    effects = AlarmEffects(AlarmRecords("hub-a", lambda _r: "en", counters.alarms), feedback, counters, lambda _r: "en")
    drafts = effects.judge(events, NOW)
    assert len(drafts) == len(events)  # every step is still recorded
    return feedback.messages()


@pytest.mark.parametrize("louder", [AlarmState.RAISED, AlarmState.ESCALATED, AlarmState.CONFIRMED])
def test_back_to_normal_is_not_said_with_a_new_alarm_for_the_same_resident(louder: AlarmState) -> None:
    cleared = event("pulse", "r1", AlarmState.CLEARED, "pulse_abnormal")
    raised = event("spo2", "r1", louder, "spo2_low")
    assert spoken(cleared, raised) == ["spo2_low"]


def test_back_to_normal_is_said_when_nothing_else_is_raised_or_for_another_resident() -> None:
    assert spoken(event("pulse", "r1", AlarmState.CLEARED, "pulse_abnormal")) == ["all_clear"]
    both = spoken(
        event("pulse", "r1", AlarmState.CLEARED, "pulse_abnormal"), event("spo2", "r2", AlarmState.RAISED, "spo2_low")
    )
    assert both == ["all_clear", "spo2_low"]
