"""The panic button's whole lifecycle, as a pure state machine driven by events and an injected clock.

An old person living alone who presses the button must never be ignored. The lifecycle::

    press ──► CALLING ──(platform stored the alarm)──► DELIVERED ──(caregiver acknowledged)──► ANSWERED
                │  │                                      │
                │  └─(no platform ack within ack_timeout)─┴─► ESCALATED: siren, repeated voice, fallback notifier
                └─(long press / cancel within cancel_window)──► CANCELLED (the alarm stays on record)

Every input returns a list of :class:`Action` for the gateway to carry out, in order: local feedback first (so the
resident hears "help is being called" before anything touches the disk or the network), then records for the
outbox's priority lane, then the pendant's feedback state and any fallback notification. Nothing here does I/O;
time comes from the injected `gateway.clock.Clock`: wall time for what records say and for the local check-in
deadline (in the policy's zone), monotonic time for every timeout (ack timeout, cancel window, repeats) and rate, so
a wall clock stepped by hours neither fires nor delays an escalation.

Cases the machine handles, one per input:
- a press while a call is open is a repeat ("still calling"): it joins that call, never opens a second one and
  raises no second alarm;
- a cancel outside the window, or with no open call, cancels nothing: once help may be on its way, only a caregiver
  closes the call;
- floods (a stuck or toggled button): events that change no call (joining presses, refused or stray cancels,
  check-ins) are recorded at most once per `PanicPolicy.echo_interval` per pendant and kind, and a pendant may
  cancel at most `PanicPolicy.cancel_limit` calls per `PanicPolicy.cancel_limit_window` (a further cancel is
  refused, the call stays open). A first press -- one with no open call -- is never dropped, delayed or limited:
  it always opens a call and raises its cues. So one pendant's calls and records grow with time, never with the
  number of events: at most :meth:`PanicPolicy.max_calls` and :meth:`PanicPolicy.max_records`;
- a caregiver acknowledgement for an unknown or closed alarm is recorded and ignored;
- escalation repeats the voice and re-fires the fallback every `repeat_interval` until delivered *and* answered,
  or cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from gateway.clock import Clock, SystemClock
from gateway.cues import Cue, Light, Sound
from gateway.panic_actions import (
    Action,
    CallState,
    EmitAlarmStep,
    EmitPanicEvent,
    NotifyFallback,
    PanicCall,
    SetPendantState,
    ShowCue,
)
from gateway.panic_policy import Echo, PanicPolicy, PendantLimits
from protocols.pendant import FeedbackState
from protocols.record import AlarmState, AlarmTier, PanicEventType

__all__ = ["PanicLifecycle", "PanicPolicy"]


# Closed calls kept for lookups (a late platform ack, a caregiver's answer to a call the resident cancelled).
_CLOSED_CALLS_KEPT = 64


@dataclass(slots=True)
class PanicLifecycle:
    """All pendants' calls for one hub. Feed it events; carry out the actions it returns.

    Every method takes an optional `now`: the wall time to stamp on the records of this input (so that one input's
    records share one time); it defaults to the clock's. Timeouts and rates are always measured on the clock's
    monotonic time, so a wall clock stepped by hours neither fires nor delays an escalation.
    """

    policy: PanicPolicy
    clock: Clock = field(default_factory=SystemClock)
    language: dict[str, str] = field(default_factory=dict)
    calls: dict[str, PanicCall] = field(default_factory=dict)
    last_checkin: dict[str, datetime] = field(default_factory=dict)
    checkin_warned: dict[str, datetime] = field(default_factory=dict)
    _limits: dict[str, PendantLimits] = field(default_factory=dict)

    def _lang(self, resident: str) -> str:
        return self.language.get(resident, "en")

    def _wall(self, now: datetime | None) -> datetime:
        if now is None:
            return self.clock.now()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"panic lifecycle: `now` must be timezone-aware, got {now!r}")
        return now.astimezone(UTC)  # records carry UTC

    def open_call(self, pendant: str) -> PanicCall | None:
        """The pendant's open call, if any."""
        for call in self.calls.values():
            if call.pendant == pendant and call.open:
                return call
        return None

    def _alarm(
        self, call: PanicCall, state: AlarmState, now: datetime, *, reason: str | None = None, by: str | None = None
    ) -> EmitAlarmStep:
        return EmitAlarmStep(
            alarm_id=call.alarm_id,
            condition="panic",
            tier=AlarmTier.CRITICAL,
            state=state,
            resident=call.resident,
            at=now,
            device=call.pendant,
            reason=reason,
            by=by,
        )

    def _echo(self, pendant: str, kind: Echo, mono: float, record: EmitPanicEvent) -> list[Action]:
        limits = self._limits.setdefault(pendant, PendantLimits())
        if limits.echo_due(kind, mono, self.policy.echo_interval.total_seconds()):
            return [record]
        return []

    def _forget_closed(self) -> None:
        closed = [alarm_id for alarm_id, call in self.calls.items() if not call.open]
        for alarm_id in closed[: max(0, len(closed) - _CLOSED_CALLS_KEPT)]:
            del self.calls[alarm_id]

    def on_event(
        self,
        *,
        pendant: str,
        resident: str,
        kind: PanicEventType,
        counter: int,
        battery: int | None,
        now: datetime | None = None,
    ) -> list[Action]:
        """A verified pendant event (authenticated and not a replay)."""
        wall = self._wall(now)
        mono = self.clock.monotonic()
        lang = self._lang(resident)
        event = EmitPanicEvent(
            pendant=pendant, resident=resident, event=kind, counter=counter, battery=battery, at=wall
        )
        current = self.open_call(pendant)
        resent = self._resent(pendant, kind, counter)
        if resent is not None:
            # The same event again: its records were not stored (the hub confirms only what it stored, so the
            # pendant sends it again). The call's records are made again, with the same ids; nothing else moves.
            if kind is PanicEventType.PRESS:
                return self._opening(resent, event, lang)
            return self._closing(resent, event, wall, lang)
        if kind is PanicEventType.CHECKIN:
            self.last_checkin[resident] = wall
            return [
                ShowCue(Cue("checkin_ok", lang, Light.OK, Sound.CHIME)),
                *self._echo(pendant, Echo.CHECKIN, mono, event),
                SetPendantState(pendant, FeedbackState.CHECKIN_OK),
            ]
        if kind is PanicEventType.PRESS:
            if current is not None:
                # The call is already open: this press joins it (the resident hears that help is being called).
                joined = replace(event, alarm_id=current.alarm_id)
                return [
                    ShowCue(Cue("panic_still_calling", lang, Light.HELP_CALLED, Sound.BEEP, urgent=True)),
                    *self._echo(pendant, Echo.PRESS, mono, joined),
                ]
            # A first press is never dropped, delayed or rate-limited.
            alarm_id = f"panic-{pendant.replace(':', '').lower()}-{counter}"
            base, again = alarm_id, 0
            while alarm_id in self.calls:  # the counter came round again (a wrap): a new call needs its own id
                again += 1
                alarm_id = f"{base}-{again}"
            call = PanicCall(
                alarm_id,
                pendant,
                resident,
                wall,
                CallState.CALLING,
                opened_mono=mono,
                last_nudge_mono=mono,
                counter=counter,
            )
            self.calls[alarm_id] = call
            self._forget_closed()
            return self._opening(call, event, lang)
        # LONG_PRESS and CANCEL both ask to cancel.
        if current is None:
            return self._echo(pendant, Echo.CANCEL, mono, event)
        limits = self._limits.setdefault(pendant, PendantLimits())
        in_window = mono - current.opened_mono <= self.policy.cancel_window.total_seconds()
        allowed = limits.cancel_allowed(mono, self.policy.cancel_limit, self.policy.cancel_limit_window.total_seconds())
        if not in_window or not allowed:
            # Once help may be on its way (or the button keeps toggling), only a caregiver closes the call.
            refused = replace(event, alarm_id=current.alarm_id, cancel_refused=True)
            return [
                ShowCue(Cue("panic_still_calling", lang, Light.HELP_CALLED, Sound.BEEP, urgent=True)),
                *self._echo(pendant, Echo.CANCEL, mono, refused),
            ]
        limits.count_cancel(mono, self.policy.cancel_limit)
        cancelled = replace(current, state=CallState.CANCELLED, cancel_counter=counter)
        self.calls[current.alarm_id] = cancelled
        return self._closing(cancelled, event, wall, lang)

    def _resent(self, pendant: str, kind: PanicEventType, counter: int) -> PanicCall | None:
        """The pendant's latest call, when this event is the one that opened it (a press; the call still open) or
        cancelled it (a cancel): the same event again. Only the latest call is looked at, so a press after a
        counter wrap can never be taken for an old call's and dropped."""
        latest = next((c for c in reversed(self.calls.values()) if c.pendant == pendant), None)
        if latest is None:
            return None
        if kind is PanicEventType.PRESS and latest.open and latest.counter == counter:
            return latest
        if kind in (PanicEventType.CANCEL, PanicEventType.LONG_PRESS) and latest.cancel_counter == counter:
            return latest
        return None

    def _opening(self, call: PanicCall, event: EmitPanicEvent, lang: str) -> list[Action]:
        at = call.opened_at
        return [
            ShowCue(Cue("panic_help_called", lang, Light.HELP_CALLED, Sound.ALARM, urgent=True)),
            self._alarm(call, AlarmState.RAISED, at),
            replace(event, alarm_id=call.alarm_id, at=at),
            SetPendantState(call.pendant, FeedbackState.HELP_CALLED),
        ]

    def _closing(self, call: PanicCall, event: EmitPanicEvent, at: datetime, lang: str) -> list[Action]:
        return [
            ShowCue(Cue("panic_cancelled", lang, Light.OK, Sound.CHIME)),
            replace(event, alarm_id=call.alarm_id),
            self._alarm(call, AlarmState.CANCELLED, at, reason="false alarm cancelled by the resident"),
            SetPendantState(call.pendant, FeedbackState.CANCELLED),
        ]

    def on_delivered(self, alarm_id: str, now: datetime | None = None) -> list[Action]:
        """The platform's ack says the call's alarm record is durably stored."""
        call = self.calls.get(alarm_id)
        if call is None or call.delivered_at is not None:
            return []
        state = call.state if call.state is not CallState.CALLING else CallState.DELIVERED
        self.calls[alarm_id] = replace(call, delivered_at=self._wall(now), state=state)
        return []

    def on_caregiver_ack(self, alarm_id: str, by: str, now: datetime | None = None) -> list[Action]:
        """A caregiver acknowledged the call on the platform (a signed down-message)."""
        call = self.calls.get(alarm_id)
        if call is None or not call.open:
            return []
        wall = self._wall(now)
        answered = replace(
            call,
            state=CallState.ANSWERED,
            answered_at=wall,
            answered_by=by,
            delivered_at=call.delivered_at or wall,
        )
        self.calls[alarm_id] = answered
        lang = self._lang(call.resident)
        return [
            ShowCue(Cue("panic_answered", lang, Light.ANSWERED, Sound.CHIME, urgent=True)),
            self._alarm(answered, AlarmState.ACKNOWLEDGED, wall, by=by),
            SetPendantState(call.pendant, FeedbackState.ANSWERED),
        ]

    def tick(self, now: datetime | None = None) -> list[Action]:
        """Advance time: escalate undelivered calls, nudge open ones, warn about a missed check-in."""
        wall = self._wall(now)
        mono = self.clock.monotonic()
        actions: list[Action] = []
        for call in list(self.calls.values()):
            if call.open:
                actions.extend(self._tick_call(call, wall, mono))
        actions.extend(self._tick_checkins(wall))
        return actions

    def _tick_call(self, call: PanicCall, wall: datetime, mono: float) -> list[Action]:
        lang = self._lang(call.resident)
        waited = mono - call.opened_mono
        overdue = call.delivered_at is None and waited >= self.policy.ack_timeout.total_seconds()
        if overdue and call.state is not CallState.ESCALATED:
            self.calls[call.alarm_id] = replace(call, state=CallState.ESCALATED, last_nudge_mono=mono, fallback_count=1)
            return [
                ShowCue(Cue("siren", lang, Light.SIREN, Sound.SIREN, urgent=True)),
                ShowCue(Cue("panic_still_calling", lang, Light.SIREN, Sound.SIREN, urgent=True)),
                self._alarm(call, AlarmState.ESCALATED, wall, reason="platform did not acknowledge in time"),
                NotifyFallback(call.alarm_id, call.resident, "panic button pressed; platform unreachable"),
            ]
        if mono - call.last_nudge_mono < self.policy.repeat_interval.total_seconds():
            return []
        escalated = call.state is CallState.ESCALATED
        actions: list[Action] = [
            ShowCue(
                Cue(
                    "panic_still_calling",
                    lang,
                    Light.SIREN if escalated else Light.HELP_CALLED,
                    Sound.SIREN if escalated else Sound.BEEP,
                    urgent=True,
                )
            )
        ]
        fallback_count = call.fallback_count
        if escalated and call.delivered_at is None:
            fallback_count += 1
            actions.append(NotifyFallback(call.alarm_id, call.resident, "panic button pressed; still no answer"))
        self.calls[call.alarm_id] = replace(call, last_nudge_mono=mono, fallback_count=fallback_count)
        return actions

    def _tick_checkins(self, now: datetime) -> list[Action]:
        deadline = self.policy.checkin_deadline
        if deadline is None:
            return []
        zone = self.policy.local_zone
        actions: list[Action] = []
        local = now.astimezone(zone)
        if local.time() < deadline:
            return []
        today = local.date()
        for resident, last in self.last_checkin.items():
            if last.astimezone(zone).date() == today:
                continue
            warned = self.checkin_warned.get(resident)
            if warned is not None and warned.astimezone(zone).date() == today:
                continue
            self.checkin_warned[resident] = now
            actions.append(ShowCue(Cue("checkin_missed", self._lang(resident), Light.NOTICE, Sound.CHIME)))
            actions.append(
                EmitAlarmStep(
                    alarm_id=f"checkin-{resident}-{today.isoformat()}",
                    condition="checkin.missed",
                    tier=AlarmTier.WARNING,
                    state=AlarmState.RAISED,
                    resident=resident,
                    at=now,
                )
            )
        return actions

    def expect_checkins(self, residents: Sequence[str], since: datetime) -> None:
        """Start tracking daily check-ins for these residents (as if they had checked in at `since`)."""
        for resident in residents:
            self.last_checkin.setdefault(resident, since)
