"""The panic pendant's link: frames -> verified events, confirms and feedback frames; panic steps -> records.

``docs/protocol.md`` §9.4: the hub confirms an event only once it is durably stored. :meth:`PendantLink.check`
authenticates a frame without moving the pendant's counter high-water mark; the shell acts on a new event, commits
its records with the ``pendant:<address>`` cursor (:meth:`PendantLink.cursor_value`: the verifier state after the
event, tied to the key it was accepted under, §9.6), and only then calls :meth:`PendantLink.accept` and writes the
:meth:`PendantLink.confirm` frame. When the commit fails the mark stays where it was, so the pendant's re-send of
the same frame checks as new again (never as a confirmed repeat). :func:`panic_event_draft` turns the panic
lifecycle's ``panic_event`` steps into ``panic`` record drafts (§3.3). Pure: keys and counters in memory only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.core.sealer import Draft
from gateway.outbox_rows import Lane
from gateway.panic import PendantEventKind
from protocols.errors import AuthenticationError, DecodeError, EncodeError, ReplayError
from protocols.pendant import (
    ConfirmFrame,
    FeedbackFrame,
    FeedbackState,
    PendantCounterState,
    PendantEventType,
    PendantVerifier,
    VerifiedEvent,
)
from protocols.record import PanicBody, PanicEventType, panic_record_id

__all__ = ["PendantLink", "Rejected", "cursor_key", "describe_counter", "event_kind", "panic_event_draft"]

_PANIC_EVENTS = {
    PendantEventType.PRESS: PendantEventKind.PRESS,
    PendantEventType.LONG_PRESS: PendantEventKind.LONG_PRESS,
    PendantEventType.CANCEL: PendantEventKind.CANCEL,
    PendantEventType.CHECKIN: PendantEventKind.CHECKIN,
}
_FEEDBACK_STATES = {
    "help_called": FeedbackState.HELP_CALLED,
    "answered": FeedbackState.ANSWERED,
    "cancelled": FeedbackState.CANCELLED,
    "checkin_ok": FeedbackState.CHECKIN_OK,
    "not_connected": FeedbackState.NOT_CONNECTED,
    "low_battery": FeedbackState.LOW_BATTERY,
}


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame the hub does not act on (counted, never confirmed)."""

    reason: str


def cursor_key(address: str) -> str:
    """The outbox cursor holding a pendant's counter high-water mark."""
    return f"pendant:{address}"


def describe_counter(stored: object) -> str:
    """A :func:`cursor_key` value as text (for `carehub doctor`): the last accepted counter."""
    if isinstance(stored, bytes):
        try:
            return str(PendantCounterState.from_bytes(stored).last_counter)
        except DecodeError:
            return "unreadable"
    return str(stored)


def event_kind(event_type: PendantEventType) -> PendantEventKind | None:
    """What the panic lifecycle acts on for a pendant event type (``None``: battery/heartbeat only)."""
    return _PANIC_EVENTS.get(event_type)


class PendantLink:
    """The verifiers, confirms and feedback frames of every provisioned pendant."""

    __slots__ = ("_feedback_seq", "_keys", "_verifiers")

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = dict(keys)
        self._verifiers = {address: PendantVerifier(address, key) for address, key in self._keys.items()}
        self._feedback_seq: dict[str, tuple[int, int]] = {}

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
        """The event is durably stored: advance the high-water mark."""
        self._verifiers[address].accept(verified)

    def confirm(self, address: str, counter: int) -> bytes:
        """The Confirm frame for every event up to ``counter`` (write it only after the commit)."""
        return bytes(ConfirmFrame(counter).sign(address, self._keys[address]))

    def feedback_frame(self, address: str, state: str, counter: int | None = None) -> bytes | None:
        """A signed feedback frame for a lifecycle pendant state; ``None`` for no key or an unknown state.

        ``counter`` is the event the frame answers: the one being handled (checked, not yet accepted: the pendant
        ignores feedback naming an event older than its own counter after a reboot), else the last accepted one.
        """
        key = self._keys.get(address)
        feedback_state = _FEEDBACK_STATES.get(state)
        if key is None or feedback_state is None:
            return None
        accepted = self._verifiers[address].last_counter
        counter = accepted if counter is None else max(counter, accepted)
        last_counter, last_seq = self._feedback_seq.get(address, (counter, -1))
        seq = last_seq + 1 if last_counter == counter else 0
        self._feedback_seq[address] = (counter, seq)
        return bytes(FeedbackFrame(feedback_state, counter, seq).sign(address, key))


def panic_event_draft(fields: Mapping[str, object], counter: int, now: datetime) -> Draft:
    """A panic-lifecycle ``panic_event`` step as a priority-lane ``panic`` record draft.

    Raises:
        ValueError: an event type the protocol does not have (a defect of the lifecycle).
    """
    pendant_id = str(fields["pendant"])
    event = PanicEventType(str(fields["event"]))
    battery = fields.get("battery")
    alarm = fields.get("alarm_id")
    body = PanicBody(
        pendant_id=pendant_id,
        event=event,
        counter=counter,
        battery=battery if isinstance(battery, int) else None,
        alarm_id=alarm if isinstance(alarm, str) else None,
    )
    return Draft(body, Lane.PRIORITY, now, panic_record_id(pendant_id, counter, event), pendant_id)
