"""Verified down-messages -> decisions: apply, or refuse with a reason (``docs/protocol.md`` §8; issue 13.6).

A down-message has passed the platform's signature and the replay check (`gateway.wire`) before it gets here; what
it asks may still be inapplicable: a resident this hub does not have, an unknown threshold key, an implausible or
out-of-order value (a systolic critical limit of 50), an alarm the hub does not know. :meth:`Downlink.decide`
never raises for any message: it returns one :data:`Decision`, and an inapplicable message becomes a
:class:`Refuse` that the hub reports to the platform as a ``down_refused`` record.

An accepted threshold change is kept as the resident's *platform override set* (key -> value over the installer's
configuration; a null value removes the key, restoring the configured value). :meth:`Downlink.cursors` gives the
outbox cursors (the last ``seq`` as decimal text, since a uint64 does not fit SQLite's signed integers, and each
resident's override set as JSON text, and for a refusal the running count with the last refusal, which
`carehub doctor` shows) that the hub commits in the same transaction as the decision's record, and
:meth:`Downlink.restore` re-applies them on start. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias, assert_never

from gateway.core.sealer import Draft
from gateway.outbox_rows import Lane
from gateway.thresholds import ThresholdError, ThresholdProblem, Thresholds
from protocols.messages import AlarmAcknowledgement, AlarmSnooze, DownMessage, ThresholdUpdate
from protocols.record import DownAppliedBody, DownRefusal, DownRefusedBody, RecordKind, status_record_id

__all__ = [
    "REFUSED_CURSOR",
    "SEQ_CURSOR",
    "Acknowledge",
    "ApplyThresholds",
    "Decision",
    "Downlink",
    "Refuse",
    "Snooze",
    "Stale",
    "applied_draft",
    "describe_refusals",
    "parse_seq",
    "thresholds_cursor",
]

SEQ_CURSOR = "down_seq"
"""The outbox cursor holding the last accepted down-message ``seq``."""
REFUSED_CURSOR = "down_refused"
"""The outbox cursor holding ``{"count", "seq", "type", "reason", "detail"}`` (JSON): refusals so far, the last one."""


def thresholds_cursor(resident: str) -> str:
    """The outbox cursor holding a resident's platform override set."""
    return f"thresholds:{resident}"


def parse_seq(value: object) -> int:
    """A stored ``down_seq`` cursor (decimal text; an integer from older hubs) as an int; 0 when absent or bad."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdecimal() and len(value) <= 20:
        return int(value)
    return 0


@dataclass(frozen=True, slots=True)
class Stale:
    """A ``seq`` at or below the last accepted one: ignored (the wire layer normally refuses these first)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the message: count it, log it and report it to the platform."""

    seq: int
    message_type: str
    reason: DownRefusal
    detail: str
    key: str | None = None

    @classmethod
    def snooze_refused(cls, seq: int, request: AlarmSnooze, error: Exception, reason: DownRefusal) -> Refuse:
        """A snooze the alarm book refused (critical, unknown alarm, invalid duration), with its reason."""
        return cls(seq, request.TYPE, reason, str(error)[:256] or reason.value, request.alarm_id)

    def draft(self, hub_id: str, now: datetime) -> Draft:
        """The refusal's record: priority (never evicted: the platform must learn of it), its id made from the
        refused ``seq``, which is refused once, so a refusal whose commit failed and is made again is still stored
        once (``docs/protocol.md`` §3.7)."""
        body = DownRefusedBody(self.seq, self.message_type, self.reason, self.detail, self.key)
        record_id = status_record_id(hub_id, RecordKind.DOWN_REFUSED, self.seq)
        return Draft(body, Lane.PRIORITY, now, record_id, standalone=False)


@dataclass(frozen=True, slots=True)
class ApplyThresholds:
    """Replace the resident's thresholds; commit the new override set with the ``seq``."""

    seq: int
    resident: str
    overrides: Mapping[str, float]
    thresholds: Thresholds


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """A caregiver acknowledged a known alarm (or answered a panic call)."""

    seq: int
    request: AlarmAcknowledgement


@dataclass(frozen=True, slots=True)
class Snooze:
    """A caregiver asks to snooze a known alarm (the alarm book may still refuse a critical one)."""

    seq: int
    request: AlarmSnooze


Decision: TypeAlias = Stale | Refuse | ApplyThresholds | Acknowledge | Snooze


def applied_draft(hub_id: str, decision: ApplyThresholds | Acknowledge | Snooze, now: datetime) -> Draft:
    """The record that tells the platform the message was applied (``down_applied``, ``docs/protocol.md`` §3.9):
    priority lane, committed with the message's ``seq``, its id made from that ``seq`` (applied once)."""
    match decision:
        case ApplyThresholds():
            message_type = ThresholdUpdate.TYPE
        case Acknowledge():
            message_type = AlarmAcknowledgement.TYPE
        case Snooze():
            message_type = AlarmSnooze.TYPE
    body = DownAppliedBody(decision.seq, message_type)
    record_id = status_record_id(hub_id, RecordKind.DOWN_APPLIED, decision.seq)
    return Draft(body, Lane.PRIORITY, now, record_id, standalone=False)


class Downlink:
    """The hub's down-message state: the last accepted ``seq`` and every resident's platform override set.

    Args:
        base: each resident's thresholds from the installer's configuration.
        last_seq: the last accepted ``seq`` (from :data:`SEQ_CURSOR`).
    """

    __slots__ = ("_base", "_last_seq", "_overrides", "_refused")

    def __init__(self, base: Mapping[str, Thresholds], last_seq: int = 0, refused: object = None) -> None:
        self._base = dict(base)
        self._last_seq = last_seq
        self._overrides: dict[str, dict[str, float]] = {}
        self._refused = _refused_count(refused)

    @property
    def refused(self) -> int:
        """Down-messages refused so far (across restarts)."""
        return self._refused

    @property
    def last_seq(self) -> int:
        """The last accepted (or refused) ``seq``."""
        return self._last_seq

    @property
    def residents(self) -> tuple[str, ...]:
        """The residents whose thresholds down-messages may change."""
        return tuple(self._base)

    def overrides(self, resident: str) -> Mapping[str, float]:
        """The resident's platform override set (empty when none)."""
        return dict(self._overrides.get(resident, {}))

    def restore(self, resident: str, stored: object) -> Thresholds | ThresholdError | None:
        """Re-apply a committed override set (the JSON text of :func:`thresholds_cursor`).

        Returns:
            The resident's thresholds with it applied; ``None`` for no stored set or an unknown resident; the
            :class:`ThresholdError` when the stored set no longer validates (it is then not applied).
        """
        base = self._base.get(resident)
        if base is None or not isinstance(stored, str):
            return None
        try:
            loaded = json.loads(stored)
        except ValueError:
            loaded = None
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for k, v in loaded.items()
        ):
            problem = ThresholdProblem.NOT_A_NUMBER
            return ThresholdError(thresholds_cursor(resident), problem, "the stored override set is unreadable")
        overrides = {k: float(v) for k, v in loaded.items()}
        try:
            thresholds = base.updated(overrides)
        except ThresholdError as exc:
            return exc
        self._overrides[resident] = overrides
        return thresholds

    def decide(self, message: DownMessage, known_alarm: Callable[[str], bool]) -> Decision:
        """What to do with ``message``; never raises."""
        seq = message.seq
        if seq <= self._last_seq:
            return Stale(seq)
        body = message.body
        match body:
            case ThresholdUpdate():
                return self._thresholds(seq, body)
            case AlarmAcknowledgement():
                if not known_alarm(body.alarm_id):
                    return Refuse(seq, body.TYPE, DownRefusal.UNKNOWN_ALARM, "no such alarm on this hub", body.alarm_id)
                return Acknowledge(seq, body)
            case AlarmSnooze():
                if not known_alarm(body.alarm_id):
                    return Refuse(seq, body.TYPE, DownRefusal.UNKNOWN_ALARM, "no such alarm on this hub", body.alarm_id)
                return Snooze(seq, body)
            case _:
                assert_never(body)

    def _thresholds(self, seq: int, update: ThresholdUpdate) -> Refuse | ApplyThresholds:
        resident = update.resident_id
        base = self._base.get(resident)
        if base is None:
            return Refuse(seq, update.TYPE, DownRefusal.UNKNOWN_RESIDENT, "no such resident on this hub", resident)
        overrides = dict(self._overrides.get(resident, {}))
        for key, value in update.values.items():
            if value is None:
                overrides.pop(key, None)
            else:
                overrides[key] = float(value)
        try:
            thresholds = base.updated(overrides)
        except ThresholdError as exc:
            return Refuse(seq, update.TYPE, DownRefusal.INVALID_THRESHOLD, _cut(exc.detail), exc.key[:256] or None)
        return ApplyThresholds(seq, resident, overrides, thresholds)

    def cursors(self, decision: Decision) -> dict[str, str]:
        """The outbox cursors to commit with ``decision`` (none for a stale message)."""
        if isinstance(decision, Stale):
            return {}
        out = {SEQ_CURSOR: str(decision.seq)}
        if isinstance(decision, ApplyThresholds):
            out[thresholds_cursor(decision.resident)] = json.dumps(dict(decision.overrides), sort_keys=True)
        if isinstance(decision, Refuse):
            last = {
                "count": self._refused + 1,
                "seq": decision.seq,
                "type": decision.message_type,
                "reason": decision.reason.value,
                "detail": decision.detail,
            }
            out[REFUSED_CURSOR] = json.dumps(last, sort_keys=True)
        return out

    def committed(self, decision: Decision) -> None:
        """``decision``'s cursors are durable: advance the state to match."""
        if isinstance(decision, Stale):
            return
        self._last_seq = max(self._last_seq, decision.seq)
        if isinstance(decision, ApplyThresholds):
            self._overrides[decision.resident] = dict(decision.overrides)
        if isinstance(decision, Refuse):
            self._refused += 1


def describe_refusals(stored: object) -> str | None:
    """One line about the refusals in a :data:`REFUSED_CURSOR` value (for `carehub doctor`); None for none."""
    if not isinstance(stored, str):
        return None
    try:
        last = json.loads(stored)
    except ValueError:
        return "refusal record unreadable"
    if not isinstance(last, dict):
        return "refusal record unreadable"
    return (
        f"{_refused_count(stored)} platform message(s) refused; last: seq {last.get('seq')} "
        f"({last.get('type')}) {last.get('reason')}: {last.get('detail')}"
    )


def _refused_count(stored: object) -> int:
    if not isinstance(stored, str):
        return 0
    try:
        loaded = json.loads(stored)
    except ValueError:
        return 0
    count = loaded.get("count") if isinstance(loaded, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 0


def _cut(text: str) -> str:
    return (text.strip() or "refused")[:256]
