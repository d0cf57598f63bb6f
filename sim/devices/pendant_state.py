"""The simulated pendant's memory and rules, without radio, clock or files: what the firmware keeps in RAM
(``firmware/pendant/app.py``: pending events, the Event value, the feedback floor) and how it answers the hub's
writes (``Pendant.on_write``), per ``docs/protocol.md`` §9.4, §9.6 and §9.7 (the key check at pairing).

:class:`PendantState` takes the time of each write as an argument and returns what happened; the GATT shell
(:mod:`sim.devices.pendant`) persists the counter, logs the ground truth and paces the indications.
``tests/firmware/test_conformance.py`` checks that the two together answer exactly like the firmware.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Final, NamedTuple

from protocols.errors import AuthenticationError, DecodeError
from protocols.pendant import (
    COUNTER_CEILING,
    KEY_LEN,
    REKEY_DUE_AT,
    ConfirmFrame,
    FeedbackFrame,
    FeedbackState,
    KeyChallenge,
    PendantEvent,
    PendantEventType,
)

__all__ = [
    "PATTERNS",
    "CounterExhaustedError",
    "Pattern",
    "PendantState",
    "Queued",
    "Refusal",
    "Rejection",
    "Shown",
    "Written",
]

_FEEDBACK_SEQ_FLOOR: Final = 0xFFFF


class CounterExhaustedError(RuntimeError):
    """The pendant has no ordinary counter left (docs/protocol.md §9.6): it sent REKEY and must be re-provisioned."""


class Written(enum.Enum):
    """The characteristic a hub wrote."""

    CONFIRM = "confirm"
    FEEDBACK = "feedback"
    KEY_CHECK = "key_check"


class Refusal(enum.Enum):
    """Why the pendant ignored a write (it still succeeds at the ATT layer, as on the firmware)."""

    NOT_AUTHENTIC = "not_authentic"
    """Not a frame of this protocol, or its tag does not verify under this pendant's key and id."""
    STALE = "stale"
    """Authentic, but names a counter never sent, or a feedback pair not above the last accepted one."""


@dataclasses.dataclass(frozen=True, slots=True)
class Pattern:
    """What the pendant shows for a feedback state.

    Attributes:
        led: the LED's colour and rhythm.
        sound: the buzzer's sound.
        repeat: how many times the pattern plays (0: nothing plays; the state only stops what was playing).
    """

    led: str
    sound: str
    repeat: int


#: Feedback state -> pattern (``firmware/pendant/feedback.py``; colours added for the simulated RGB LED).
PATTERNS: Final[Mapping[FeedbackState, Pattern]] = {
    FeedbackState.IDLE: Pattern("off", "silent", 0),
    FeedbackState.HELP_CALLED: Pattern("red slow blink 500/500 ms", "1.5 kHz beep every 2 s", 30),
    FeedbackState.ANSWERED: Pattern("green steady 3 s", "rising chime 1 kHz, 1.5 kHz", 1),
    FeedbackState.CANCELLED: Pattern("off", "three low 600 Hz beeps", 1),
    FeedbackState.LOW_BATTERY: Pattern("amber double blink", "one 400 Hz beep", 3),
    FeedbackState.NOT_CONNECTED: Pattern("red fast flicker 100/100 ms", "falling 1.2 kHz, 800 Hz", 3),
    FeedbackState.CHECKIN_OK: Pattern("green steady 1 s", "one 2.5 kHz chirp", 1),
}


class Shown(NamedTuple):
    """A pattern the pendant showed: when (home time), for which state, and what."""

    at: datetime
    state: FeedbackState
    pattern: Pattern


class Rejection(NamedTuple):
    """A hub write the pendant ignored (the write itself succeeded, as on the firmware).

    Attributes:
        at: home time of the write.
        characteristic: what was written.
        refusal: why it was ignored.
        reason: why, in words.
        data: the bytes written.
    """

    at: datetime
    characteristic: Written
    refusal: Refusal
    reason: str
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Queued:
    """An event frame waiting for a Confirm."""

    event: PendantEvent
    raw: bytes


class PendantState:
    """One pendant's counter, pending events and answers to the hub, as the firmware has them.

    Args:
        pendant_id: the id the tags cover.
        key: the 32-byte key.
        counter: the last counter handed out (0 before the first event), as persisted.

    Raises:
        ValueError: a key that is not 32 bytes, or a counter outside 0..COUNTER_CEILING.
    """

    def __init__(self, pendant_id: str, key: bytes, counter: int) -> None:
        _check_key(key)
        if not 0 <= counter <= COUNTER_CEILING:
            raise ValueError(f"counter {counter} is outside 0..{COUNTER_CEILING}")
        self.pendant_id = pendant_id
        self.key = key
        self._counter = counter
        self.pending: list[Queued] = []
        self.event_value = b""
        """The Event characteristic's value: the oldest pending frame, else the last one that was; empty at boot."""
        self.showing = FeedbackState.IDLE
        self.patterns: list[Shown] = []
        self.rejected: list[Rejection] = []
        self.confirmed_at: dict[int, datetime] = {}
        self.duplicate_confirms = 0
        self._feedback_floor = (counter, _FEEDBACK_SEQ_FLOOR)
        self.key_check_value = b""
        """The Key Check characteristic's value: empty at boot, then what the hub last wrote, replaced by the
        answer when that was a challenge (the firmware's stack keeps a written value, then the pendant answers)."""

    @property
    def counter(self) -> int:
        """The last counter handed out (0 before the first event); COUNTER_CEILING once REKEY is out."""
        return self._counter

    @property
    def exhausted(self) -> bool:
        """No ordinary counter is left (the last one, COUNTER_CEILING - 1, has been handed out)."""
        return self._counter >= COUNTER_CEILING - 1

    def boot(self, counter: int) -> list[Queued]:
        """A reset with ``counter`` persisted: RAM (pending, Event value, feedback floor, what shows) is lost.

        Returns:
            What the boot queued: the REKEY frame when the counters are used up (again at every boot).
        """
        self._counter = max(self._counter, counter)
        self.pending.clear()
        self.event_value = b""
        self.key_check_value = b""
        self.showing = FeedbackState.IDLE
        self._feedback_floor = (self._counter, _FEEDBACK_SEQ_FLOOR)
        return self.rekey_if_exhausted()

    def next_counter(self) -> int:
        """The counter the next ordinary event will take (the shell persists it, then calls :meth:`queue`).

        Raises:
            CounterExhaustedError: none is left (:meth:`rekey_if_exhausted` queues the REKEY frame instead).
        """
        if self.exhausted:
            raise CounterExhaustedError(f"{self.pendant_id}: no event counter left; it must be re-provisioned")
        return self._counter + 1

    def queue(self, event_type: PendantEventType, counter: int, battery: int | None, uptime: int) -> list[Queued]:
        """Sign and queue an event with the counter :meth:`next_counter` gave (and the shell persisted).

        Returns:
            What was queued: the event, and REKEY right behind it when that was the last ordinary counter.
        """
        if counter != self._counter + 1 or self.exhausted:
            raise ValueError(f"counter {counter} was not the next one ({self._counter + 1})")
        self._counter = counter
        queued = [self._append(PendantEvent(event_type, counter, battery, uptime).sign(self.pendant_id, self.key))]
        return queued + self.rekey_if_exhausted()

    def reprovision(self, key: bytes) -> None:
        """A new key (``store.provision``): restarts a counter past REKEY_DUE_AT at 0; the same key changes nothing.

        Raises:
            ValueError: the key is not 32 bytes.
        """
        _check_key(key)
        if key != self.key and self._counter >= REKEY_DUE_AT:
            self._counter = 0
        self.key = key

    def on_confirm(self, value: bytes, now: datetime) -> bool:
        """A Confirm write; True when acted on (authentic, for a counter sent), else recorded in :attr:`rejected`."""
        try:
            frame = ConfirmFrame.from_bytes(value)
            frame.verify(self.pendant_id, self.key)
        except (DecodeError, AuthenticationError) as error:
            return self._ignore(Written.CONFIRM, Refusal.NOT_AUTHENTIC, str(error), value, now)
        if frame.counter > self._counter:
            return self._ignore(Written.CONFIRM, Refusal.STALE, f"counter {frame.counter} was never sent", value, now)
        done = [p for p in self.pending if p.event.counter <= frame.counter]
        if not done:
            self.duplicate_confirms += 1
        for confirmed in done:
            self.confirmed_at[confirmed.event.counter] = now
        self.pending = [p for p in self.pending if p.event.counter > frame.counter]
        self._publish_head()
        return True

    def on_feedback(self, value: bytes, now: datetime) -> bool:
        """A Feedback write; True when acted on (authentic, for a counter sent, fresh), else recorded."""
        try:
            frame = FeedbackFrame.from_bytes(value)
            frame.verify(self.pendant_id, self.key)
        except (DecodeError, AuthenticationError) as error:
            return self._ignore(Written.FEEDBACK, Refusal.NOT_AUTHENTIC, str(error), value, now)
        pair = (frame.event_counter, frame.feedback_seq)
        if frame.event_counter > self._counter:
            reason = f"event counter {frame.event_counter} was never sent"
            return self._ignore(Written.FEEDBACK, Refusal.STALE, reason, value, now)
        if pair <= self._feedback_floor:
            reason = f"{pair} is not above {self._feedback_floor}"
            return self._ignore(Written.FEEDBACK, Refusal.STALE, reason, value, now)
        self._feedback_floor = pair
        self.showing = frame.state
        self.patterns.append(Shown(now, frame.state, PATTERNS[frame.state]))
        return True

    def on_key_check(self, value: bytes, now: datetime) -> bytes | None:
        """A Key Check write (§9.7): the answer to a well-formed challenge (also the new value), else None.

        A malformed write is recorded in :attr:`rejected` and left as the value, as the firmware's stack keeps it.
        """
        self.key_check_value = bytes(value)
        try:
            challenge = KeyChallenge.from_bytes(value)
        except DecodeError as error:
            self._ignore(Written.KEY_CHECK, Refusal.NOT_AUTHENTIC, str(error), value, now)
            return None
        answer = bytes(challenge.answer(self.pendant_id, self.key))
        self.key_check_value = answer
        return answer

    def _append(self, event: PendantEvent) -> Queued:
        queued = Queued(event, bytes(event))
        self.pending.append(queued)
        self._publish_head()
        return queued

    def rekey_if_exhausted(self) -> list[Queued]:
        """Queue the fixed REKEY frame when the counters are used up and it is not pending yet; what was queued.

        Its counter, the ceiling, needs no reserving: no other frame can ever carry it.
        """
        if not self.exhausted or any(p.event.event is PendantEventType.REKEY for p in self.pending):
            return []
        self._counter = COUNTER_CEILING
        return [self._append(PendantEvent.rekey().sign(self.pendant_id, self.key))]

    def _publish_head(self) -> None:
        if self.pending:
            self.event_value = self.pending[0].raw

    def _ignore(self, characteristic: Written, refusal: Refusal, reason: str, value: bytes, now: datetime) -> bool:
        self.rejected.append(Rejection(now, characteristic, refusal, reason, value))
        return False


def _check_key(key: bytes) -> None:
    if len(key) != KEY_LEN:
        raise ValueError(f"a pendant key has {KEY_LEN} bytes")
