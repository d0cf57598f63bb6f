"""The alarm lifecycle: findings become alarms that are raised once, re-raised at a pace, escalated and cleared.

An :class:`AlarmBook` holds the open alarms of a hub, at most one per (resident, condition, subject) -- the subject
is empty for a resident's vital signs and names the device or the schedule slot for device and schedule conditions.
It is pure and synchronous: every input carries its wall time (what records say), and every transition returns an
:class:`AlarmEvent` that
the gateway turns into an alarm record for the outbox's priority lane (`gateway.core.alarm_records`) and shows to
the resident. Its states are the wire protocol's own :class:`protocols.record.AlarmState` (one vocabulary).

Intervals (re-raise pace, snooze length) are measured on the injected :class:`gateway.clock.Clock`'s monotonic time
(issue 17 item 4, as `gateway.panic` does): a wall clock stepped by NTP or by hand, by hours or years either way,
neither fires nor delays a re-raise and neither ends nor stretches a snooze. Wall time only stamps the events.

Rules against alarm fatigue, and against silence:

- A finding for a condition that is already open updates that alarm; it never raises a second one.
- A higher tier escalates the alarm (event ``escalated``, or ``confirmed`` for a confirmed BP crisis). A lower tier
  never lowers it silently: the alarm keeps its tier until the condition is back in range (``cleared``), except
  when the rule engine explicitly downgrades a BP crisis that a re-measurement did not confirm (``downgraded``).
- While a condition persists its alarm is re-raised every ``reraise[tier]`` (critical 5 min, warning 30 min,
  notice 4 h by default), until it clears, is acknowledged by a caregiver, or (below critical) is snoozed; below
  critical at most ``max_reraises[tier]`` times (warning 2, notice 1) until it escalates, changes or clears.
- Snoozing never silences a critical alarm: :meth:`AlarmBook.snooze` refuses with :class:`CriticalSnoozeError`.
  A snoozed alarm that escalates is unsnoozed at once.
- A caregiver's acknowledgement (from the platform) stops the re-raising: someone is acting. The alarm stays open
  on the hub until its condition clears, and a later escalation raises it again. Closed alarms are kept in a
  bounded local record.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType

from gateway.clock import Clock, SystemClock
from gateway.cues import MESSAGE_KEYS
from gateway.errors import GatewayError
from gateway.findings import ConditionRef, Evaluation, Finding, Transition
from gateway.thresholds import Tier
from protocols.record import AlarmState

__all__ = [
    "MESSAGE_KEYS",
    "Alarm",
    "AlarmBook",
    "AlarmError",
    "AlarmEvent",
    "AlarmPolicy",
    "AlarmState",
    "CriticalSnoozeError",
    "InvalidSnoozeError",
    "UnknownAlarmError",
]


class AlarmError(GatewayError):
    """Root of the alarm book's errors."""


class UnknownAlarmError(AlarmError, KeyError):
    """No open alarm has this id."""

    def __init__(self, alarm_id: str) -> None:
        self.alarm_id = alarm_id
        super().__init__(alarm_id)


class CriticalSnoozeError(AlarmError):
    """A critical alarm cannot be snoozed: the danger is not something the resident may choose to hear later."""

    def __init__(self, alarm_id: str, condition: str) -> None:
        self.alarm_id = alarm_id
        self.condition = condition
        super().__init__(f"alarm {alarm_id} ({condition}) is critical and cannot be snoozed")


class InvalidSnoozeError(AlarmError, ValueError):
    """A snooze duration that is not positive or longer than the policy allows."""


_DEFAULT_RERAISE: Mapping[Tier, timedelta] = MappingProxyType(
    {
        Tier.CRITICAL: timedelta(minutes=5),
        Tier.WARNING: timedelta(minutes=30),
        Tier.NOTICE: timedelta(hours=4),
    }
)


_DEFAULT_MAX_RERAISES: Mapping[Tier, int | None] = MappingProxyType(
    {Tier.CRITICAL: None, Tier.WARNING: 2, Tier.NOTICE: 1}
)


@dataclass(frozen=True, slots=True)
class AlarmPolicy:
    """Installer-configurable pacing.

    ``max_reraises[tier]``: how many times the pace alone re-raises an alarm of that tier (None: until it clears or
    a caregiver acknowledges it). A critical alarm keeps repeating; a warning is said twice more (an hour at the
    default pace) and a notice once more, then stays open and on record without being spoken again until it
    escalates, changes or clears: a resident told every half hour for a whole day that her oxygen is a little low
    stops listening to the hub (alarm fatigue).
    """

    reraise: Mapping[Tier, timedelta] = field(default_factory=lambda: _DEFAULT_RERAISE)
    max_reraises: Mapping[Tier, int | None] = field(default_factory=lambda: _DEFAULT_MAX_RERAISES)
    max_snooze: timedelta = timedelta(hours=12)
    closed_kept: int = 256

    def __post_init__(self) -> None:
        for tier in (Tier.NOTICE, Tier.WARNING, Tier.CRITICAL):
            interval = self.reraise.get(tier)
            if interval is None or interval <= timedelta(0):
                raise ValueError(f"reraise[{tier.label}] must be a positive duration, got {interval!r}")
            limit = self.max_reraises.get(tier)
            if limit is not None and limit < 0:
                raise ValueError(f"max_reraises[{tier.label}] must not be negative, got {limit}")
        if self.max_snooze <= timedelta(0):
            raise ValueError("max_snooze must be positive")
        if self.closed_kept < 0:
            raise ValueError("closed_kept must not be negative")


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm, open from its first raise until its condition clears; replaced (not mutated) on each change."""

    id: str
    resident: str
    condition: str
    subject: str
    tier: Tier
    message: str
    value: float | None
    threshold: float | None
    opened_at: datetime
    updated_at: datetime
    last_raised_at: datetime
    device: str | None = None
    peak_tier: Tier = Tier.NOTICE
    raise_count: int = 1  # raised + re-raised + escalated/confirmed/downgraded announcements
    escalations: int = 0  # times the tier went up while open
    snoozed_until: datetime | None = None
    snoozed_by: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    closed_at: datetime | None = None
    raised_mono: float = 0.0  # the clock's monotonic seconds at the last raise (the re-raise pace counts from it)
    timed_reraises: int = 0  # re-raises by the pace alone since the alarm was last raised, escalated or changed
    snooze_ends_mono: float | None = None  # monotonic seconds at which the snooze ends (``snoozed_until``: wall)

    @property
    def ref(self) -> ConditionRef:
        """The condition this alarm is about."""
        return ConditionRef(self.resident, self.condition, self.subject)


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One alarm transition, for the outbox's priority lane and for local feedback."""

    alarm_id: str
    resident: str
    condition: str
    subject: str
    tier: Tier
    state: AlarmState
    message: str
    value: float | None
    threshold: float | None
    at: datetime
    device: str | None = None
    by: str | None = None
    until: datetime | None = None


def _event(
    alarm: Alarm, state: AlarmState, at: datetime, *, message: str | None = None, by: str | None = None
) -> AlarmEvent:
    return AlarmEvent(
        alarm_id=alarm.id,
        resident=alarm.resident,
        condition=alarm.condition,
        subject=alarm.subject,
        tier=alarm.tier,
        state=state,
        message=message if message is not None else alarm.message,
        value=alarm.value,
        threshold=alarm.threshold,
        at=at,
        device=alarm.device,
        by=by,
        until=alarm.snoozed_until if state is AlarmState.SNOOZED else None,
    )


def _uuid_hex() -> str:
    return uuid.uuid4().hex


class AlarmBook:
    """The hub's open alarms and a bounded record of closed ones.

    Args:
        policy: re-raise intervals per tier, the longest snooze, how many closed alarms to keep.
        id_factory: makes alarm ids (uuid4 hex by default; tests pass a counter).
        clock: what re-raise and snooze intervals are measured on (its monotonic time); the system's by default.
    """

    def __init__(
        self,
        policy: AlarmPolicy | None = None,
        *,
        id_factory: Callable[[], str] = _uuid_hex,
        clock: Clock | None = None,
    ) -> None:
        self._policy = policy or AlarmPolicy()
        self._ids = id_factory
        self._clock: Clock = clock or SystemClock()
        self._open: dict[ConditionRef, Alarm] = {}
        self._closed: deque[Alarm] = deque(maxlen=self._policy.closed_kept)

    # -- queries -------------------------------------------------------------------------------------------------

    def open_alarms(self) -> tuple[Alarm, ...]:
        """Open alarms, oldest first."""
        return tuple(sorted(self._open.values(), key=lambda a: a.opened_at))

    def get(self, resident: str, condition: str, subject: str = "") -> Alarm | None:
        """The open alarm for this condition, if any."""
        return self._open.get(ConditionRef(resident, condition, subject))

    def by_id(self, alarm_id: str) -> Alarm | None:
        """An open or recently closed alarm by id."""
        for alarm in self._open.values():
            if alarm.id == alarm_id:
                return alarm
        for alarm in self._closed:
            if alarm.id == alarm_id:
                return alarm
        return None

    @property
    def closed(self) -> tuple[Alarm, ...]:
        """Recently closed alarms, oldest first (the local record)."""
        return tuple(self._closed)

    # -- inputs --------------------------------------------------------------------------------------------------

    def apply(self, evaluation: Evaluation) -> list[AlarmEvent]:
        """Fold a rule-engine evaluation in: clear what is back in range, then raise or update what is not."""
        events: list[AlarmEvent] = []
        for ref in evaluation.normal:
            alarm = self._open.pop(ref, None)
            if alarm is None:
                continue
            closed = replace(alarm, closed_at=evaluation.at, updated_at=evaluation.at)
            self._closed.append(closed)
            events.append(_event(closed, AlarmState.CLEARED, evaluation.at, message="all_clear"))
        mono = self._clock.monotonic()
        for finding in evaluation.findings:
            event = self._on_finding(finding, mono)
            if event is not None:
                events.append(event)
        return events

    def _on_finding(self, f: Finding, mono: float) -> AlarmEvent | None:
        if f.tier is Tier.INFO:
            return None  # reported by the gateway as a routine record; never an alarm
        ref = f.ref
        alarm = self._open.get(ref)
        if alarm is None:
            alarm = Alarm(
                id=self._ids(),
                resident=f.resident,
                condition=f.condition,
                subject=f.subject,
                tier=f.tier,
                message=f.message,
                value=f.value,
                threshold=f.threshold,
                opened_at=f.at,
                updated_at=f.at,
                last_raised_at=f.at,
                raised_mono=mono,
                device=f.device,
                peak_tier=f.tier,
            )
            self._open[ref] = alarm
            return _event(alarm, AlarmState.RAISED, f.at)
        if f.tier > alarm.tier:
            state = AlarmState.CONFIRMED if f.transition is Transition.CONFIRMED else AlarmState.ESCALATED
            alarm = replace(
                alarm,
                tier=f.tier,
                peak_tier=max(alarm.peak_tier, f.tier),
                message=f.message,
                value=f.value,
                threshold=f.threshold,
                updated_at=f.at,
                last_raised_at=f.at,
                raised_mono=mono,
                raise_count=alarm.raise_count + 1,
                timed_reraises=0,
                escalations=alarm.escalations + 1,
                snoozed_until=None,
                snoozed_by=None,
                snooze_ends_mono=None,
                acknowledged_at=None,
                acknowledged_by=None,
            )
            self._open[ref] = alarm
            return _event(alarm, state, f.at)
        if f.tier < alarm.tier and f.transition is Transition.DOWNGRADED:
            alarm = replace(
                alarm,
                tier=f.tier,
                message=f.message,
                value=f.value,
                threshold=f.threshold,
                updated_at=f.at,
                last_raised_at=f.at,
                raised_mono=mono,
                raise_count=alarm.raise_count + 1,
                timed_reraises=0,
            )
            self._open[ref] = alarm
            return _event(alarm, AlarmState.DOWNGRADED, f.at)
        if f.tier == alarm.tier and f.message != alarm.message:
            # Same urgency, new instruction (e.g. "measure again" after a very high reading): say it now.
            alarm = replace(
                alarm,
                message=f.message,
                value=f.value,
                threshold=f.threshold,
                updated_at=f.at,
                last_raised_at=f.at,
                raised_mono=mono,
                raise_count=alarm.raise_count + 1,
                timed_reraises=0,
            )
            self._open[ref] = alarm
            return _event(alarm, AlarmState.RE_RAISED, f.at)
        # Same tier and message, or a lower tier without an explicit downgrade: note the value, stay quiet.
        self._open[ref] = replace(alarm, updated_at=f.at, value=f.value if f.tier == alarm.tier else alarm.value)
        return None

    def tick(self, now: datetime) -> list[AlarmEvent]:
        """Re-raise what is due now (on the clock's monotonic time); expired snoozes end. ``now`` stamps the events."""
        mono = self._clock.monotonic()
        events: list[AlarmEvent] = []
        for ref, alarm in list(self._open.items()):
            current = alarm
            if current.snooze_ends_mono is not None:
                if mono < current.snooze_ends_mono:
                    continue
                current = replace(current, snoozed_until=None, snoozed_by=None, snooze_ends_mono=None)
            interval = self._policy.reraise[current.tier].total_seconds()
            limit = self._policy.max_reraises.get(current.tier)
            spent = limit is not None and current.timed_reraises >= limit
            if current.acknowledged_at is None and not spent and mono - current.raised_mono >= interval:
                current = replace(
                    current,
                    last_raised_at=now,
                    raised_mono=mono,
                    raise_count=current.raise_count + 1,
                    timed_reraises=current.timed_reraises + 1,
                )
                events.append(_event(current, AlarmState.RE_RAISED, now))
            self._open[ref] = current
        return events

    def snooze(self, alarm_id: str, duration: timedelta, now: datetime, *, by: str) -> AlarmEvent:
        """Hold back re-raises of a notice or warning alarm for `duration` of monotonic time (``now``: the wall time
        the event and its ``until`` say).

        Raises:
            UnknownAlarmError: no open alarm has this id.
            CriticalSnoozeError: the alarm is critical; it keeps re-raising.
            InvalidSnoozeError: `duration` is not positive or longer than the policy's ``max_snooze``.
        """
        ref, alarm = self._find_open(alarm_id)
        if alarm.tier >= Tier.CRITICAL:
            raise CriticalSnoozeError(alarm.id, alarm.condition)
        if duration <= timedelta(0) or duration > self._policy.max_snooze:
            raise InvalidSnoozeError(f"snooze must be positive and at most {self._policy.max_snooze}, got {duration}")
        ends = self._clock.monotonic() + duration.total_seconds()
        alarm = replace(alarm, snoozed_until=now + duration, snoozed_by=by, snooze_ends_mono=ends, updated_at=now)
        self._open[ref] = alarm
        return _event(alarm, AlarmState.SNOOZED, now, by=by)

    def acknowledge(self, alarm_id: str, now: datetime, *, by: str) -> AlarmEvent | None:
        """A caregiver acknowledged the alarm on the platform.

        Returns None for an id the book does not know or an alarm already acknowledged (the platform may deliver
        an acknowledgement twice); an acknowledgement of a recently closed alarm is recorded on it.
        """
        for ref, alarm in self._open.items():
            if alarm.id == alarm_id:
                if alarm.acknowledged_at is not None:
                    return None
                acked = replace(alarm, acknowledged_at=now, acknowledged_by=by, updated_at=now)
                self._open[ref] = acked
                return _event(acked, AlarmState.ACKNOWLEDGED, now, by=by)
        for i, alarm in enumerate(self._closed):
            if alarm.id == alarm_id:
                if alarm.acknowledged_at is not None:
                    return None
                acked = replace(alarm, acknowledged_at=now, acknowledged_by=by)
                self._closed[i] = acked
                return _event(acked, AlarmState.ACKNOWLEDGED, now, by=by)
        return None

    def _find_open(self, alarm_id: str) -> tuple[ConditionRef, Alarm]:
        for ref, alarm in self._open.items():
            if alarm.id == alarm_id:
                return ref, alarm
        raise UnknownAlarmError(alarm_id)
