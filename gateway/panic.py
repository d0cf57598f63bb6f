"""The panic button's whole lifecycle, as a pure state machine driven by events and an injected clock.

An old person living alone who presses the button must never be ignored. The lifecycle::

    press ──► CALLING ──(platform stored the alarm)──► DELIVERED ──(caregiver acknowledged)──► ANSWERED
                │  │                                      │
                │  └─(no platform ack within ack_timeout)─┴─► ESCALATED: siren, repeated voice, fallback notifier
                └─(long press / cancel within cancel_window)──► CANCELLED (the alarm stays on record)

Every input returns a list of :class:`Action` for the gateway to carry out, in order: local feedback first (so the
resident hears "help is being called" before anything touches the disk or the network), then records for the
outbox's priority lane, then the pendant's feedback state and any fallback notification. Nothing here does I/O or
reads the time, so every step is tested with plain values.

Cases the machine handles, one per input:
- a press while a call is open is a repeat ("still calling"); it never opens a second call;
- a cancel outside the window, or with no open call, is recorded but cancels nothing: once help may be on its way,
  only a caregiver closes the call;
- a caregiver acknowledgement for an unknown or closed alarm is recorded and ignored;
- escalation repeats the voice and re-fires the fallback every `repeat_interval` until delivered *and* answered,
  or cancelled.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta, tzinfo

from gateway.feedback import Cue, Light, Sound

__all__ = [
    "Action",
    "CallState",
    "EmitRecord",
    "NotifyFallback",
    "PanicCall",
    "PanicLifecycle",
    "PanicPolicy",
    "PendantEventKind",
    "SetPendantState",
    "ShowCue",
]


class PendantEventKind(enum.StrEnum):
    """The pendant events the lifecycle acts on (the wire codes live in `protocols.pendant`)."""

    PRESS = "press"
    LONG_PRESS = "long_press"
    CANCEL = "cancel"
    CHECKIN = "checkin"


class CallState(enum.StrEnum):
    """Where an open or closed call stands."""

    CALLING = "calling"
    DELIVERED = "delivered"
    ESCALATED = "escalated"
    ANSWERED = "answered"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class PanicPolicy:
    """Installer-configurable timings."""

    ack_timeout: timedelta = timedelta(seconds=5)
    cancel_window: timedelta = timedelta(seconds=60)
    repeat_interval: timedelta = timedelta(seconds=30)
    checkin_deadline: time | None = time(11, 0)
    local_zone: tzinfo = UTC


@dataclass(frozen=True, slots=True)
class ShowCue:
    """Show this cue to the resident now."""

    cue: Cue


@dataclass(frozen=True, slots=True)
class EmitRecord:
    """Put a record in the outbox's priority lane.

    `kind` is "panic_event" or "alarm"; `fields` are the record body's values.
    """

    kind: str
    fields: dict[str, object]


@dataclass(frozen=True, slots=True)
class SetPendantState:
    """Write this feedback state to the pendant (its LED/buzzer pattern)."""

    pendant: str
    state: str


@dataclass(frozen=True, slots=True)
class NotifyFallback:
    """Run the installer's fallback notifier (a command or webhook, e.g. an SMS gateway)."""

    alarm_id: str
    resident: str
    message: str


Action = ShowCue | EmitRecord | SetPendantState | NotifyFallback


@dataclass(frozen=True, slots=True)
class PanicCall:
    """One call for help, from the first press to its end."""

    alarm_id: str
    pendant: str
    resident: str
    opened_at: datetime
    state: CallState
    delivered_at: datetime | None = None
    answered_at: datetime | None = None
    answered_by: str | None = None
    last_nudge: datetime | None = None
    fallback_count: int = 0

    @property
    def open(self) -> bool:
        """Still needs someone: neither answered nor cancelled."""
        return self.state not in (CallState.ANSWERED, CallState.CANCELLED)


@dataclass(slots=True)
class PanicLifecycle:
    """All pendants' calls for one hub. Feed it events; carry out the actions it returns."""

    policy: PanicPolicy = field(default_factory=PanicPolicy)
    language: dict[str, str] = field(default_factory=dict)
    calls: dict[str, PanicCall] = field(default_factory=dict)
    last_checkin: dict[str, datetime] = field(default_factory=dict)
    checkin_warned: dict[str, datetime] = field(default_factory=dict)

    def _lang(self, resident: str) -> str:
        return self.language.get(resident, "en")

    def open_call(self, pendant: str) -> PanicCall | None:
        """The pendant's open call, if any."""
        for call in self.calls.values():
            if call.pendant == pendant and call.open:
                return call
        return None

    def _alarm(self, call: PanicCall, state: str, now: datetime, **extra: object) -> EmitRecord:
        fields: dict[str, object] = {
            "alarm_id": call.alarm_id,
            "condition": "panic",
            "tier": "critical",
            "state": state,
            "resident": call.resident,
            "device": call.pendant,
            "at": now,
        }
        fields.update(extra)
        return EmitRecord("alarm", fields)

    def on_event(
        self, *, pendant: str, resident: str, kind: PendantEventKind, counter: int, battery: int | None, now: datetime
    ) -> list[Action]:
        """A verified pendant event (authenticated and not a replay)."""
        lang = self._lang(resident)
        event = EmitRecord(
            "panic_event",
            {
                "pendant": pendant,
                "resident": resident,
                "event": kind.value,
                "counter": counter,
                "battery": battery,
                "at": now,
            },
        )
        current = self.open_call(pendant)
        if kind is PendantEventKind.CHECKIN:
            self.last_checkin[resident] = now
            return [
                ShowCue(Cue("checkin_ok", lang, Light.OK, Sound.CHIME)),
                event,
                SetPendantState(pendant, "checkin_ok"),
            ]
        if kind is PendantEventKind.PRESS:
            if current is not None:
                return [ShowCue(Cue("panic_still_calling", lang, Light.HELP_CALLED, Sound.BEEP, urgent=True)), event]
            alarm_id = f"panic-{pendant.replace(':', '').lower()}-{counter}"
            call = PanicCall(alarm_id, pendant, resident, now, CallState.CALLING, last_nudge=now)
            self.calls[alarm_id] = call
            return [
                ShowCue(Cue("panic_help_called", lang, Light.HELP_CALLED, Sound.ALARM, urgent=True)),
                self._alarm(call, "raised", now, counter=counter),
                replace(event, fields={**event.fields, "alarm_id": alarm_id}),
                SetPendantState(pendant, "help_called"),
            ]
        # LONG_PRESS and CANCEL both ask to cancel.
        if current is None:
            return [event]
        if now - current.opened_at > self.policy.cancel_window:
            return [
                ShowCue(Cue("panic_still_calling", lang, Light.HELP_CALLED, Sound.BEEP, urgent=True)),
                replace(event, fields={**event.fields, "alarm_id": current.alarm_id, "cancel_refused": True}),
            ]
        self.calls[current.alarm_id] = replace(current, state=CallState.CANCELLED)
        return [
            ShowCue(Cue("panic_cancelled", lang, Light.OK, Sound.CHIME)),
            replace(event, fields={**event.fields, "alarm_id": current.alarm_id}),
            self._alarm(current, "cancelled", now, reason="false alarm cancelled by the resident"),
            SetPendantState(pendant, "cancelled"),
        ]

    def on_delivered(self, alarm_id: str, now: datetime) -> list[Action]:
        """The platform's ack says the call's alarm record is durably stored."""
        call = self.calls.get(alarm_id)
        if call is None or call.delivered_at is not None:
            return []
        state = call.state if call.state is not CallState.CALLING else CallState.DELIVERED
        self.calls[alarm_id] = replace(call, delivered_at=now, state=state)
        return []

    def on_caregiver_ack(self, alarm_id: str, by: str, now: datetime) -> list[Action]:
        """A caregiver acknowledged the call on the platform (a signed down-message)."""
        call = self.calls.get(alarm_id)
        if call is None or not call.open:
            return []
        answered = replace(
            call,
            state=CallState.ANSWERED,
            answered_at=now,
            answered_by=by,
            delivered_at=call.delivered_at or now,
        )
        self.calls[alarm_id] = answered
        lang = self._lang(call.resident)
        return [
            ShowCue(Cue("panic_answered", lang, Light.ANSWERED, Sound.CHIME, urgent=True)),
            self._alarm(answered, "acknowledged", now, by=by),
            SetPendantState(call.pendant, "answered"),
        ]

    def tick(self, now: datetime) -> list[Action]:
        """Advance time: escalate undelivered calls, nudge open ones, warn about a missed check-in."""
        actions: list[Action] = []
        for call in list(self.calls.values()):
            if call.open:
                actions.extend(self._tick_call(call, now))
        actions.extend(self._tick_checkins(now))
        return actions

    def _tick_call(self, call: PanicCall, now: datetime) -> list[Action]:
        lang = self._lang(call.resident)
        overdue = call.delivered_at is None and now - call.opened_at >= self.policy.ack_timeout
        if overdue and call.state is not CallState.ESCALATED:
            self.calls[call.alarm_id] = replace(call, state=CallState.ESCALATED, last_nudge=now, fallback_count=1)
            return [
                ShowCue(Cue("siren", lang, Light.SIREN, Sound.SIREN, urgent=True)),
                ShowCue(Cue("panic_still_calling", lang, Light.SIREN, Sound.SIREN, urgent=True)),
                self._alarm(call, "escalated", now, reason="platform did not acknowledge in time"),
                NotifyFallback(call.alarm_id, call.resident, "panic button pressed; platform unreachable"),
            ]
        last = call.last_nudge or call.opened_at
        if now - last < self.policy.repeat_interval:
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
        self.calls[call.alarm_id] = replace(call, last_nudge=now, fallback_count=fallback_count)
        return actions

    def _tick_checkins(self, now: datetime) -> list[Action]:
        deadline = self.policy.checkin_deadline
        if deadline is None:
            return []
        actions: list[Action] = []
        local = now.astimezone(self.policy.local_zone)
        if local.timetz().replace(tzinfo=None) < deadline:
            return []
        today = local.date()
        for resident, last in self.last_checkin.items():
            if last.astimezone(self.policy.local_zone).date() == today:
                continue
            warned = self.checkin_warned.get(resident)
            if warned is not None and warned.astimezone(self.policy.local_zone).date() == today:
                continue
            self.checkin_warned[resident] = now
            actions.append(ShowCue(Cue("checkin_missed", self._lang(resident), Light.NOTICE, Sound.CHIME)))
            actions.append(
                EmitRecord(
                    "alarm",
                    {
                        "alarm_id": f"checkin-{resident}-{today.isoformat()}",
                        "condition": "checkin.missed",
                        "tier": "warning",
                        "state": "raised",
                        "resident": resident,
                        "at": now,
                    },
                )
            )
        return actions

    def expect_checkins(self, residents: Sequence[str], since: datetime) -> None:
        """Start tracking daily check-ins for these residents (as if they had checked in at `since`)."""
        for resident in residents:
            self.last_checkin.setdefault(resident, since)
