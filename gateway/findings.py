"""What the rules found: findings about alarmable conditions, and conditions back in range. Pure values.

:class:`gateway.rules.RuleEngine` produces them; :class:`gateway.alarms.AlarmBook` turns them into alarm transitions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from gateway.thresholds import Tier

__all__ = ["ConditionRef", "Evaluation", "Finding", "Reminder", "Transition"]


class Transition(enum.StrEnum):
    """A finding that changes an open alarm in a way the alarm book must not decide on its own."""

    NONE = "none"
    CONFIRMED = "confirmed"  # a waiting BP crisis is now believed (re-measured, or not re-measured in time)
    DOWNGRADED = "downgraded"  # a waiting or confirmed BP crisis was re-measured below the crisis line


@dataclass(frozen=True, slots=True)
class ConditionRef:
    """Names one alarmable condition of one resident; `subject` scopes it further (a device, a schedule slot)."""

    resident: str
    condition: str
    subject: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    """Something out of range, at a tier, with the message the resident should hear."""

    resident: str
    condition: str
    tier: Tier
    message: str
    at: datetime
    subject: str = ""
    value: float | None = None
    threshold: float | None = None
    device: str | None = None
    record_id: str | None = None
    transition: Transition = Transition.NONE

    @property
    def ref(self) -> ConditionRef:
        """The condition this finding is about."""
        return ConditionRef(self.resident, self.condition, self.subject)


@dataclass(frozen=True, slots=True)
class Reminder:
    """A scheduled measurement falls due now and has not been taken yet: tell the resident (a cue, no record).

    Attributes:
        resident: whose schedule.
        subject: the slot, as in ``schedule.missed`` findings (e.g. ``"systolic@10:00"``).
        due_at: the instant the slot fell due (UTC).
    """

    resident: str
    subject: str
    due_at: datetime


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one observation or tick showed: findings, and conditions now back in range."""

    at: datetime
    findings: tuple[Finding, ...] = ()
    normal: tuple[ConditionRef, ...] = ()
    reminders: tuple[Reminder, ...] = ()
