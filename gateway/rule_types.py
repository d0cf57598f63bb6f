"""What the rule engine is configured with, per resident: thresholds, measurement schedule, devices to watch."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta

from gateway.observations import Vital
from gateway.thresholds import Thresholds, resolve_thresholds

__all__ = ["DeviceWatch", "ResidentRules", "ScheduleEntry"]


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """A measurement the resident is expected to take every day, e.g. blood pressure by 10:00.

    A reading of `vital` (``SYSTOLIC`` for a blood-pressure schedule) taken from `window` before `due` onwards
    satisfies the day's slot. Missing at ``due + grace``: notice; still missing ``escalate_after`` later: warning.

    `due` is local time in the engine's zone (the home's); `grace`, `escalate_after` and `window` are elapsed time,
    counted from the instant the slot falls due, so a DST change inside them neither stretches nor shortens them.
    On the day the clocks go forward a due time inside the skipped hour falls due that much later (02:30 in a
    02:00 -> 03:00 change is 03:30, as PEP 495 reads a time in a gap); on the day they go back a due time inside the
    repeated hour falls due at its first occurrence, once.
    """

    vital: Vital
    due: time
    grace: timedelta = timedelta(hours=1)
    escalate_after: timedelta = timedelta(hours=2)
    window: timedelta = timedelta(hours=4)

    @property
    def subject(self) -> str:
        """The slot's name as an alarm subject, e.g. ``"systolic@10:00"``."""
        return f"{self.vital.value}@{self.due:%H:%M}"


@dataclass(frozen=True, slots=True)
class DeviceWatch:
    """A device that must be heard from at least every `silent_after` (its own reporting rhythm plus slack)."""

    device: str
    silent_after: timedelta


@dataclass(frozen=True, slots=True)
class ResidentRules:
    """Everything the engine needs to judge one resident."""

    thresholds: Thresholds = field(default_factory=resolve_thresholds)
    schedule: tuple[ScheduleEntry, ...] = ()
    devices: tuple[DeviceWatch, ...] = ()
