"""What the console's pages show, computed from stored records for one account (issue 18 items 1, 2 and 4).

Pure functions of the stored readings, the console's own actions (:mod:`community.console.web_store`), the
accounts' sharing settings and an injected ``now``; the web handlers (:mod:`community.console.web`) only render
them. Access: an alarm or a resident is shown only to an account with full access to that resident
(:func:`community.console.accounts.access`); an alarm that names no resident (a hub that could not tell whose
pendant it was) is shown to every doctor and nurse, so that a call for help is never invisible.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from community.console.accounts import Access, Account, Role, Sharing, access
from community.console.analytics import OpenAlarm, VitalReading, open_alarms, vital_readings
from community.console.web_store import AlarmAction
from community.down_types import QueuedDown
from community.storage import StoredReading
from protocols.record import AlarmTier

__all__ = [
    "QueueItem",
    "ThresholdStatus",
    "alarm_resident",
    "hub_of_resident",
    "queue_items",
    "residents_of",
    "threshold_status",
]


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One open alarm as the queue shows it."""

    alarm: OpenAlarm
    triggers: tuple[VitalReading, ...]
    waiting: _dt.timedelta
    escalated: bool
    acks: tuple[AlarmAction, ...]
    notes: tuple[AlarmAction, ...]


def alarm_resident(readings: Sequence[StoredReading], hub: str, alarm_id: str) -> str | None:
    """The resident an alarm (any of its alarm records) names, if any."""
    for r in readings:
        if r.hub == hub and r.alarm_id == alarm_id and r.resident_id:
            return r.resident_id
    return None


def _may_see_alarm(account: Account, resident: str | None, sharing: Callable[[str], Sharing | None]) -> bool:
    if resident is None:
        return account.role in (Role.DOCTOR, Role.NURSE)
    return access(account, sharing(resident)) is Access.FULL


def queue_items(
    readings: Sequence[StoredReading],
    account: Account,
    sharing: Callable[[str], Sharing | None],
    actions: Sequence[AlarmAction],
    resolved: dict[tuple[str, str], int],
    *,
    now: _dt.datetime,
    escalate_after: _dt.timedelta,
) -> list[QueueItem]:
    """The open alarms ``account`` may see, most urgent first (:func:`open_alarms`'s order), escalated ones first
    within their tier. A critical alarm not acknowledged (by the hub's record or by an ack sent from the console)
    within ``escalate_after`` of being raised is escalated."""
    vitals = {v.record_id: v for v in vital_readings(readings)}
    out: list[QueueItem] = []
    for alarm in open_alarms(readings, resolved=resolved):
        if not _may_see_alarm(account, alarm.resident_id, sharing):
            continue
        mine = [a for a in actions if (a.hub, a.alarm_id) == (alarm.hub, alarm.alarm_id)]
        acks = tuple(a for a in mine if a.action == "ack")
        waiting = max(now - alarm.raised_at, _dt.timedelta(0))
        escalated = (
            alarm.tier is AlarmTier.CRITICAL and not alarm.acknowledged and not acks and waiting >= escalate_after
        )
        triggers = tuple(vitals[i] for i in alarm.trigger_record_ids if i in vitals)
        out.append(QueueItem(alarm, triggers, waiting, escalated, acks, tuple(a for a in mine if a.action == "note")))
    rank = {AlarmTier.CRITICAL: 0, AlarmTier.WARNING: 1, AlarmTier.NOTICE: 2}
    out.sort(key=lambda q: (rank[q.alarm.tier], not q.escalated))  # stable: open_alarms' order otherwise
    return out


def residents_of(
    readings: Sequence[StoredReading], account: Account, sharing: Callable[[str], Sharing | None]
) -> list[tuple[str, Access]]:
    """Every resident named in stored records that ``account`` may see something of, by id."""
    named = sorted({r.resident_id for r in readings if r.resident_id})
    out = [(resident, access(account, sharing(resident))) for resident in named]
    return [(resident, level) for resident, level in out if level is not Access.NONE]


def hub_of_resident(readings: Sequence[StoredReading], resident: str) -> str | None:
    """The hub of the newest record naming ``resident``."""
    latest: StoredReading | None = None
    for r in readings:
        if r.resident_id == resident and (latest is None or r.hub_time >= latest.hub_time):
            latest = r
    return None if latest is None else latest.hub


@dataclass(frozen=True, slots=True)
class ThresholdStatus:
    """A threshold change and what became of its down-message: ``sent`` (or ``queued``), ``applied`` with the
    time the hub's confirmation was stored, ``refused`` with the hub's reason, or ``expired``."""

    state: str
    confirmed_at: _dt.datetime | None
    reason: str | None


def threshold_status(down: Sequence[QueuedDown], hub: str, seq: int) -> ThresholdStatus:
    for d in down:
        if d.hub == hub and d.seq == seq:
            return ThresholdStatus(d.state.value, d.confirmed_at, d.reason)
    return ThresholdStatus("queued", None, None)
