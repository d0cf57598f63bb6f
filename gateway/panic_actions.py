"""What the panic lifecycle decides, as typed values: the actions it asks the hub to take (show a cue, store a
record, write the pendant's feedback state, run the fallback notifier) and the calls it keeps. Pure values;
:class:`gateway.panic.PanicLifecycle` makes them, ``gateway.hub`` carries them out."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from gateway.cues import Cue
from protocols.pendant import FeedbackState
from protocols.record import AlarmState, AlarmTier, PanicEventType

__all__ = [
    "Action",
    "CallState",
    "EmitAlarmStep",
    "EmitPanicEvent",
    "NotifyFallback",
    "PanicCall",
    "SetPendantState",
    "ShowCue",
]


class CallState(enum.StrEnum):
    """Where an open or closed call stands."""

    CALLING = "calling"
    DELIVERED = "delivered"
    ESCALATED = "escalated"
    ANSWERED = "answered"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ShowCue:
    """Show this cue to the resident now."""

    cue: Cue


@dataclass(frozen=True, slots=True)
class EmitPanicEvent:
    """Put a pendant event's ``panic`` record (``docs/protocol.md`` §3.3) in the outbox's priority lane.

    Attributes:
        alarm_id: the call the event belongs to (opened, joined or cancelled), if any.
        cancel_refused: a cancel the flood limit refused (the record is kept; the call stays open).
    """

    pendant: str
    resident: str
    event: PanicEventType
    counter: int
    battery: int | None
    at: datetime
    alarm_id: str | None = None
    cancel_refused: bool = False


@dataclass(frozen=True, slots=True)
class EmitAlarmStep:
    """Put one step of a panic call or a missed check-in (an ``alarm`` record, §3.2) in the priority lane.

    Attributes:
        condition: ``panic`` or ``checkin.missed``.
        device: the pendant, for a panic call.
        reason: why the call was cancelled or escalated (for the log; the record's message comes from the catalogue).
        by: who answered, for an acknowledgement.
    """

    alarm_id: str
    condition: str
    tier: AlarmTier
    state: AlarmState
    resident: str
    at: datetime
    device: str | None = None
    reason: str | None = None
    by: str | None = None


@dataclass(frozen=True, slots=True)
class SetPendantState:
    """Write this feedback state to the pendant (its LED/buzzer pattern, ``docs/protocol.md`` §9.3)."""

    pendant: str
    state: FeedbackState


@dataclass(frozen=True, slots=True)
class NotifyFallback:
    """Run the installer's fallback notifier (a command or webhook, e.g. an SMS gateway)."""

    alarm_id: str
    resident: str
    message: str


Action = ShowCue | EmitPanicEvent | EmitAlarmStep | SetPendantState | NotifyFallback


@dataclass(frozen=True, slots=True)
class PanicCall:
    """One call for help, from the first press to its end.

    Wall times (``*_at``) are what records say; the ``*_mono`` times are the injected clock's monotonic seconds,
    from which every timeout of the call is measured.
    """

    alarm_id: str
    pendant: str
    resident: str
    opened_at: datetime
    state: CallState
    opened_mono: float
    last_nudge_mono: float
    counter: int = 0  # the pendant counter of the press that opened the call
    cancel_counter: int | None = None  # the counter of the cancel that closed it, if the resident cancelled
    delivered_at: datetime | None = None
    answered_at: datetime | None = None
    answered_by: str | None = None
    fallback_count: int = 0

    @property
    def open(self) -> bool:
        """Still needs someone: neither answered nor cancelled."""
        return self.state not in (CallState.ANSWERED, CallState.CANCELLED)
