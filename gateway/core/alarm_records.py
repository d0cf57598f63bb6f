"""Alarm steps -> alarm records: revisions, ids, messages in the resident's language, and counts by tier.

Both the alarm book (`gateway.alarms`, meter and device conditions) and the panic lifecycle (`gateway.panic`, the
pendant) produce alarm steps; :class:`AlarmRecords` turns each into a priority-lane ``alarm`` record draft
(``docs/protocol.md`` §3.2) with the alarm's next revision and its stable id (§3.7), and counts alarms by the
highest tier each reached. :func:`cue_for` is what the resident is shown for an alarm-book step. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from gateway.alarms import AlarmEvent
from gateway.catalogue import render
from gateway.core.sealer import Draft
from gateway.cues import Cue, Light, Sound
from gateway.outbox_rows import Lane
from gateway.panic_actions import EmitAlarmStep
from gateway.thresholds import Tier
from protocols.record import AlarmBody, AlarmState, AlarmTier, alarm_record_id

__all__ = ["AlarmRecords", "cue_for"]

_TIERS = {Tier.NOTICE: AlarmTier.NOTICE, Tier.WARNING: AlarmTier.WARNING, Tier.CRITICAL: AlarmTier.CRITICAL}
_TIER_ORDER = (AlarmTier.NOTICE, AlarmTier.WARNING, AlarmTier.CRITICAL)
_CUES = {
    Tier.INFO: (Light.NOTICE, Sound.NONE),
    Tier.NOTICE: (Light.NOTICE, Sound.CHIME),
    Tier.WARNING: (Light.WARNING, Sound.BEEP),
    Tier.CRITICAL: (Light.CRITICAL, Sound.ALARM),
}
# What the resident was told for each step of a panic call (catalogue keys).
_PANIC_MESSAGES = {
    AlarmState.RAISED: "panic_help_called",
    AlarmState.CANCELLED: "panic_cancelled",
    AlarmState.ACKNOWLEDGED: "panic_answered",
    AlarmState.ESCALATED: "panic_still_calling",
}


def cue_for(event: AlarmEvent, language: str) -> Cue | None:
    """The cue for an alarm-book step; ``None`` for steps the resident is not told about (ack, snooze)."""
    if event.state in (AlarmState.ACKNOWLEDGED, AlarmState.SNOOZED):
        return None
    if event.state is AlarmState.CLEARED:
        return Cue("all_clear", language, Light.OK, Sound.CHIME)
    light, sound = _CUES.get(event.tier, (Light.NOTICE, Sound.NONE))
    return Cue(event.message, language, light, sound, urgent=event.tier >= Tier.CRITICAL)


class AlarmRecords:
    """Alarm record drafts for one hub.

    Args:
        hub_id: the hub (part of every alarm record id).
        language: a resident's language code.
        counts: alarms by the highest tier each reached, updated in place (the hub's counters).
    """

    __slots__ = ("_counts", "_hub_id", "_language", "_panic_steps", "_peak", "_revision")

    def __init__(self, hub_id: str, language: Callable[[str], str], counts: dict[str, int]) -> None:
        self._hub_id = hub_id
        self._language = language
        self._counts = counts
        self._revision: dict[str, int] = {}
        self._panic_steps: dict[tuple[str, AlarmState], int] = {}
        self._peak: dict[str, AlarmTier] = {}

    def step(self, event: AlarmEvent, now: datetime, triggers: Iterable[bytes] = ()) -> Draft:
        """An alarm-book step as a record draft."""
        body = AlarmBody(
            alarm_id=event.alarm_id,
            condition=event.condition if not event.subject else f"{event.condition}:{event.subject}",
            tier=_TIERS.get(event.tier, AlarmTier.NOTICE),
            state=event.state,
            revision=self._next_revision(event.alarm_id),
            message=render(event.message, self._language(event.resident)),
            trigger_record_ids=tuple(triggers),
            value=event.value,
            threshold=event.threshold,
            resident_id=event.resident,
        )
        return self._draft(body, now)

    def panic_step(self, step: EmitAlarmStep, now: datetime) -> Draft:
        """A panic-lifecycle alarm step (a panic call's, or a missed check-in's) as a record draft.

        The lifecycle makes a call's records again, unchanged, when the pendant re-sends an event whose commit
        failed; a step of a state the call already had (other than ``re_raised``) keeps its revision, hence its
        record id, so it is stored once.
        """
        fallback = "checkin_missed" if step.condition == "checkin.missed" else "panic_still_calling"
        revision = self._panic_steps.get((step.alarm_id, step.state))
        if revision is None or step.state is AlarmState.RE_RAISED:
            revision = self._next_revision(step.alarm_id)
            self._panic_steps[step.alarm_id, step.state] = revision
        body = AlarmBody(
            alarm_id=step.alarm_id,
            condition=step.condition,
            tier=step.tier,
            state=step.state,
            revision=revision,
            message=render(_PANIC_MESSAGES.get(step.state, fallback), self._language(step.resident)),
            resident_id=step.resident or None,
        )
        return self._draft(body, now)

    def record_id(self, alarm_id: str, state: AlarmState, revision: int) -> bytes:
        """The id of one alarm step of this hub."""
        return alarm_record_id(self._hub_id, alarm_id, state, revision)

    def _next_revision(self, alarm_id: str) -> int:
        revision = self._revision.get(alarm_id, -1) + 1
        self._revision[alarm_id] = revision
        return revision

    def _draft(self, body: AlarmBody, now: datetime) -> Draft:
        self._count(body.alarm_id, body.tier)
        return Draft(body, Lane.PRIORITY, now, self.record_id(body.alarm_id, body.state, body.revision))

    def _count(self, alarm_id: str, tier: AlarmTier) -> None:
        """Alarms by the highest tier each reached (a confirmed BP crisis counts once, as critical)."""
        before = self._peak.get(alarm_id)
        if before is not None and _TIER_ORDER.index(before) >= _TIER_ORDER.index(tier):
            return
        if before is not None:
            self._counts[before.value] -= 1
        self._peak[alarm_id] = tier
        self._counts[tier.value] += 1
