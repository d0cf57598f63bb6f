"""The panic pendant's link: frames -> verified events, confirms and feedback frames; panic steps -> records.

``docs/protocol.md`` §9.4: the hub confirms an event only once it is durably stored. :meth:`PendantLink.check`
authenticates a frame without moving the pendant's counter high-water mark; the shell acts on a new event, commits
its records with the ``pendant:<address>`` cursor (:meth:`PendantLink.cursor_value`: the verifier state after the
event, tied to the key it was accepted under, §9.6), and only then calls :meth:`PendantLink.accept` and writes the
:meth:`PendantLink.confirm` frame. When the commit fails the mark stays where it was, so the pendant's re-send of
the same frame checks as new again (never as a confirmed repeat). :func:`panic_event_draft` turns the panic
lifecycle's ``panic_event`` steps into ``panic`` record drafts (§3.3). Pure: keys and counters in memory only.

Re-keying (§9.6): :meth:`PendantLink.rekey_notice` is the maintenance notice the hub commits with the event whose
acceptance makes the pendant due for a new key (its counter reaches 2**31) or leaves it exhausted (its REKEY
event: from then on it can no longer call for help). The notice is a priority-lane ``device_status`` record whose
``detail`` says what to do (§3.4); :func:`describe_counter` says the same in ``carehub doctor``, from the committed
state, so it stays visible after a restart.

Battery (issue 19.5): a pendant reports its battery level in every event; :meth:`PendantLink.battery_news` yields the
level only when it differs from the one last recorded, so a flood of events adds no routine rows.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.core.sealer import Draft
from gateway.outbox_rows import Lane
from gateway.panic_actions import EmitPanicEvent
from protocols.errors import AuthenticationError, DecodeError, EncodeError, ReplayError
from protocols.pendant import (
    COUNTER_CEILING,
    REKEY_DUE_AT,
    ConfirmFrame,
    FeedbackFrame,
    FeedbackState,
    PendantCounterState,
    PendantEventType,
    PendantVerifier,
    VerifiedEvent,
)
from protocols.record import DeviceStatusBody, PanicBody, PanicEventType, panic_record_id

__all__ = [
    "PendantLink",
    "Rejected",
    "RekeyNeed",
    "cursor_key",
    "describe_counter",
    "event_kind",
    "panic_event_draft",
    "rekey_need",
    "stored_rekey_need",
]

_PANIC_EVENTS = {
    PendantEventType.PRESS: PanicEventType.PRESS,
    PendantEventType.LONG_PRESS: PanicEventType.LONG_PRESS,
    PendantEventType.CANCEL: PanicEventType.CANCEL,
    PendantEventType.CHECKIN: PanicEventType.CHECKIN,
}


class RekeyNeed(enum.Enum):
    """How urgently a pendant needs a new key (docs/protocol.md §9.6)."""

    NONE = "none"
    DUE = "due"  # its counter passed 2**31: re-key at the next visit
    EXHAUSTED = "exhausted"  # it sent its REKEY event: it can no longer call for help

    @property
    def notice(self) -> str:
        """The maintenance notice for the platform and `carehub doctor` ("" for :attr:`NONE`)."""
        match self:
            case RekeyNeed.NONE:
                return ""
            case RekeyNeed.DUE:
                return (
                    "maintenance: pendant needs re-keying at the next visit (event counter past 2^31); "
                    "pair it again with a new key (carehub provision pair)"
                )
            case RekeyNeed.EXHAUSTED:
                return (
                    "maintenance: pendant has used up its event counters and CANNOT CALL FOR HELP; "
                    "pair it again with a new key now (carehub provision pair)"
                )


def rekey_need(last_counter: int) -> RekeyNeed:
    """What an accepted counter high-water mark means for re-keying (§9.6)."""
    if last_counter >= COUNTER_CEILING:
        return RekeyNeed.EXHAUSTED
    if last_counter >= REKEY_DUE_AT:
        return RekeyNeed.DUE
    return RekeyNeed.NONE


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame the hub does not act on (counted, never confirmed)."""

    reason: str


def cursor_key(address: str) -> str:
    """The outbox cursor holding a pendant's counter high-water mark."""
    return f"pendant:{address}"


def describe_counter(stored: object) -> str:
    """A :func:`cursor_key` value as text (for `carehub doctor`): the last accepted counter, and the re-keying
    notice when the pendant needs a new key (§9.6)."""
    if isinstance(stored, bytes):
        try:
            counter = PendantCounterState.from_bytes(stored).last_counter
        except DecodeError:
            return "unreadable"
    elif isinstance(stored, int) and not isinstance(stored, bool):
        counter = stored
    else:
        return str(stored)
    need = rekey_need(counter)
    return str(counter) if need is RekeyNeed.NONE else f"{counter} ({need.notice})"


def stored_rekey_need(stored: object) -> RekeyNeed:
    """The re-keying need a :func:`cursor_key` value records (:attr:`RekeyNeed.NONE` when unreadable)."""
    if isinstance(stored, bytes):
        try:
            return rekey_need(PendantCounterState.from_bytes(stored).last_counter)
        except DecodeError:
            return RekeyNeed.NONE
    if isinstance(stored, int) and not isinstance(stored, bool) and stored >= 0:
        return rekey_need(stored)
    return RekeyNeed.NONE


def event_kind(event_type: PendantEventType) -> PanicEventType | None:
    """What the panic lifecycle acts on for a pendant event type (``None``: battery/heartbeat only)."""
    return _PANIC_EVENTS.get(event_type)


class PendantLink:
    """The verifiers, confirms and feedback frames of every provisioned pendant."""

    __slots__ = ("_battery", "_feedback_seq", "_keys", "_verifiers")

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = dict(keys)
        self._verifiers = {address: PendantVerifier(address, key) for address, key in self._keys.items()}
        self._feedback_seq: dict[str, tuple[int, int]] = {}
        self._battery: dict[str, int] = {}

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every pendant with a key."""
        return tuple(self._keys)

    def restore(self, address: str, stored: object) -> bool:
        """Start from the verifier state committed before a restart (the :meth:`cursor_value` bytes).

        A state saved under another key is not resumed (the pendant was re-keyed and counts from 1 again); a bare
        integer is a high-water mark written by an earlier hub version. Returns False when ``stored`` is unreadable
        (the verifier then starts afresh; the caller logs it).
        """
        key = self._keys.get(address)
        if key is None or stored is None:
            return True
        if isinstance(stored, int) and not isinstance(stored, bool):
            try:
                self._verifiers[address] = PendantVerifier(address, key, stored)
            except EncodeError:
                return False
            return True
        if not isinstance(stored, bytes):
            return False
        try:
            saved = PendantCounterState.from_bytes(stored)
        except DecodeError:
            return False
        self._verifiers[address] = PendantVerifier.restore(address, key, saved)
        return True

    def cursor_value(self, address: str, verified: VerifiedEvent) -> bytes:
        """The verifier state to commit with ``verified``'s records: what :meth:`accept` will leave."""
        state = self._verifiers[address].state()
        event = verified.event
        if event.counter > state.last_counter:
            state = PendantCounterState(state.key_id, event.counter, event.tag)
        return bytes(state)

    def last_counter(self, address: str) -> int | None:
        """The pendant's accepted counter high-water mark (``None``: not a pendant with a key)."""
        verifier = self._verifiers.get(address)
        return None if verifier is None else verifier.last_counter

    def check(self, address: str, frame: bytes) -> VerifiedEvent | Rejected:
        """Authenticate a frame without accepting it (see the module docstring)."""
        verifier = self._verifiers.get(address)
        if verifier is None:
            return Rejected("no key for this pendant")
        try:
            return verifier.check(frame)
        except (AuthenticationError, ReplayError, DecodeError) as exc:
            return Rejected(str(exc))

    def accept(self, address: str, verified: VerifiedEvent) -> None:
        """The event is durably stored: advance the high-water mark (and the battery level last recorded)."""
        self._verifiers[address].accept(verified)
        if verified.event.battery is not None:
            self._battery[address] = verified.event.battery

    def battery_news(self, address: str, verified: VerifiedEvent) -> int | None:
        """``verified``'s battery level if it is worth a record: known and not the level last stored (issue 19.5).

        The level counts as stored only once the event is accepted (after its commit), so a failed commit loses no
        level. After a restart the first level is recorded again.
        """
        level = verified.event.battery
        if level is None or self._battery.get(address) == level:
            return None
        return level

    def rekey_notice(self, address: str, verified: VerifiedEvent, now: datetime) -> Draft | None:
        """The maintenance notice to commit with ``verified`` if accepting it makes the pendant need a new key
        more urgently than before (§9.6): due once its counter reaches 2**31, exhausted with its REKEY event.

        A priority-lane ``device_status`` record (never evicted: a pendant that cannot call for help must reach
        the platform). ``None`` when nothing changes; a repeat never changes anything.
        """
        before = rekey_need(self._verifiers[address].last_counter)
        after = rekey_need(max(verified.event.counter, self._verifiers[address].last_counter))
        if after is before or after is RekeyNeed.NONE:
            return None
        return Draft(DeviceStatusBody(detail=after.notice), Lane.PRIORITY, now, None, address)

    def confirm(self, address: str, counter: int) -> bytes:
        """The Confirm frame for every event up to ``counter`` (write it only after the commit)."""
        return bytes(ConfirmFrame(counter).sign(address, self._keys[address]))

    def feedback_frame(self, address: str, state: FeedbackState, counter: int | None = None) -> bytes | None:
        """A signed feedback frame for a lifecycle pendant state; ``None`` for a pendant without a key.

        ``counter`` is the event the frame answers: the one being handled (checked, not yet accepted: the pendant
        ignores feedback naming an event older than its own counter after a reboot), else the last accepted one.
        """
        key = self._keys.get(address)
        if key is None:
            return None
        accepted = self._verifiers[address].last_counter
        counter = accepted if counter is None else max(counter, accepted)
        last_counter, last_seq = self._feedback_seq.get(address, (counter, -1))
        seq = last_seq + 1 if last_counter == counter else 0
        self._feedback_seq[address] = (counter, seq)
        return bytes(FeedbackFrame(state, counter, seq).sign(address, key))


def panic_event_draft(step: EmitPanicEvent, counter: int, now: datetime) -> Draft:
    """A panic-lifecycle pendant event as a priority-lane ``panic`` record draft.

    `counter` is the counter of the frame being committed (the step's own, or the repeat's for a re-sent event).
    """
    body = PanicBody(
        pendant_id=step.pendant, event=step.event, counter=counter, battery=step.battery, alarm_id=step.alarm_id
    )
    return Draft(body, Lane.PRIORITY, now, panic_record_id(step.pendant, counter, step.event), step.pendant)
