"""The panic pendant's GATT service (carehub wire protocol v1, ``docs/protocol.md`` §9).

A custom 128-bit service with five characteristics; every frame is a fixed little-endian layout that MicroPython can
take apart with ``struct``, followed by a 16-byte tag::

    tag = HMAC-SHA256(key, label || len(pendant_id) || pendant_id || frame-without-tag)[:16]      (RFC 2104)

``key`` is the pendant's 32-byte key provisioned at pairing, ``pendant_id`` its ASCII id (1 byte of length, then the
bytes), and ``label`` one byte naming the frame type (``E`` event, ``C`` confirm, ``F`` feedback, ``K`` key check) so
that a frame of one type can never pass as another.

Key check (``docs/protocol.md`` §9.7, document revision 5): at pairing the hub writes a :class:`KeyChallenge` (a
fresh random nonce) to the Key Check characteristic and the pendant answers with a :class:`KeyAnswer` (the nonce and
its tag under the pendant's key), indicated and readable. The hub saves the key only once the answer verifies, so a
mistyped key is refused at pairing instead of silencing every later press.

HMAC-SHA256 needs only ``hashlib.sha256``, which MicroPython has.

Frames are at most 27 bytes: the hub requests an ATT MTU of at least 30 (``ATT_MTU - 3`` bytes fit in an
indication or a write request).

Repeat-until-confirmed: the pendant indicates each event and re-indicates the *same bytes* (same counter, same tag)
until the hub writes a Confirm naming that counter. :class:`PendantVerifier` therefore accepts a frame whose counter
equals the last accepted one as a repeat (``repeat=True``), and refuses older counters as replays.

Counter ceiling and re-keying (``docs/protocol.md`` §9.6): event counters run from 1 to ``COUNTER_CEILING - 1``.
The counter :data:`COUNTER_CEILING` (2**32 - 2) is reserved for one frame per key, the ``REKEY`` event with fixed
contents (battery unknown, uptime 0), by which a pendant that has used up its counters says it must be re-keyed;
2**32 - 1 is never sent, confirmed or named in feedback (a :class:`~protocols.errors.DecodeError`). The counter
belongs to the key: re-provisioning a pendant with a new key starts its counter again at 1, and the hub's verifier
state is restored only for the key it was saved under (:meth:`PendantVerifier.restore`). Frames made under the old
key do not verify under the new one, so the fresh start replays nothing; without the key nobody can move a counter.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import re
import secrets
import struct
import uuid
from dataclasses import dataclass
from typing import Final, Self

from protocols.errors import AuthenticationError, DecodeError, EncodeError, ReplayError

__all__ = [
    "CONFIRM",
    "CONFIRM_CHAR_UUID",
    "COUNTER_CEILING",
    "DEVICE_INFO_CHAR_UUID",
    "EVENT",
    "EVENT_CHAR_UUID",
    "FEEDBACK",
    "FEEDBACK_CHAR_UUID",
    "KEY_CHECK",
    "KEY_CHECK_CHAR_UUID",
    "KEY_LEN",
    "NONCE_LEN",
    "PROTOCOL_VERSION",
    "REKEY_DUE_AT",
    "SERVICE_UUID",
    "TAG_LEN",
    "ConfirmFrame",
    "DeviceInfo",
    "FeedbackFrame",
    "FeedbackState",
    "KeyAnswer",
    "KeyChallenge",
    "PendantCounterState",
    "PendantEvent",
    "PendantEventType",
    "PendantVerifier",
    "VerifiedEvent",
    "compute_tag",
    "key_id",
]

SERVICE_UUID: Final = uuid.UUID("978716ca-37a7-4944-8e50-bcfb9fb6a9d0")
EVENT_CHAR_UUID: Final = uuid.UUID("978716cb-37a7-4944-8e50-bcfb9fb6a9d0")
"""Event: read, indicate. The pendant's latest unconfirmed event frame."""
CONFIRM_CHAR_UUID: Final = uuid.UUID("978716cc-37a7-4944-8e50-bcfb9fb6a9d0")
"""Confirm: write (with response). The hub confirms an event counter."""
FEEDBACK_CHAR_UUID: Final = uuid.UUID("978716cd-37a7-4944-8e50-bcfb9fb6a9d0")
"""Feedback: write (with response). The hub sets what the pendant shows."""
DEVICE_INFO_CHAR_UUID: Final = uuid.UUID("978716ce-37a7-4944-8e50-bcfb9fb6a9d0")
"""Device Info: read. Protocol version and pendant id."""
KEY_CHECK_CHAR_UUID: Final = uuid.UUID("978716cf-37a7-4944-8e50-bcfb9fb6a9d0")
"""Key Check: write (with response), read, indicate. The hub's challenge in, the pendant's answer out (§9.7)."""

PROTOCOL_VERSION: Final = 1
KEY_LEN: Final = 32
TAG_LEN: Final = 16
MIN_ATT_MTU: Final = 30
_PENDANT_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,32}")
_COUNTER_MAX: Final = 0xFFFF_FFFF
COUNTER_CEILING: Final = 0xFFFF_FFFE
"""The highest counter a pendant ever sends, only in its one REKEY frame; ordinary events stay below it."""
REKEY_DUE_AT: Final = 0x8000_0000
"""Once the hub has accepted a counter this high, it asks for the pendant to be re-keyed (half the space is used)."""
KEY_ID_LEN: Final = 8

# version u8 | event type u8 | counter u32 | battery % u8 (0xFF unknown) | uptime seconds u32   (11 bytes, then tag)
EVENT: Final = struct.Struct("<BBIBI")
# version u8 | confirmed event counter u32                                                       (5 bytes, then tag)
CONFIRM: Final = struct.Struct("<BI")
# version u8 | feedback state u8 | event counter u32 | feedback seq u16                          (8 bytes, then tag)
FEEDBACK: Final = struct.Struct("<BBIH")
# version u8 | pendant id length u8, then the id's ASCII bytes                                   (2 + n bytes)
DEVICE_INFO: Final = struct.Struct("<BB")
# version u8 | nonce (8): the challenge as written; the answer is the same, then tag             (9 bytes, 9 + 16)
KEY_CHECK: Final = struct.Struct("<B8s")
NONCE_LEN: Final = 8

_LABEL_EVENT: Final = b"E"
_LABEL_CONFIRM: Final = b"C"
_LABEL_FEEDBACK: Final = b"F"
_LABEL_KEY_CHECK: Final = b"K"
_BATTERY_UNKNOWN: Final = 0xFF


class PendantEventType(enum.IntEnum):
    """What happened at the pendant (the ``event type`` byte)."""

    PRESS = 1
    LONG_PRESS = 2
    CANCEL = 3
    CHECKIN = 4
    BATTERY_LOW = 5
    HEARTBEAT = 6
    REKEY = 7
    """The pendant's counters are used up (it sent :data:`COUNTER_CEILING`): it can send nothing more until it is
    re-provisioned with a new key. Always counter :data:`COUNTER_CEILING`, battery unknown, uptime 0."""


class FeedbackState(enum.IntEnum):
    """What the pendant shows (the ``feedback state`` byte)."""

    IDLE = 0
    HELP_CALLED = 1
    ANSWERED = 2
    CANCELLED = 3
    LOW_BATTERY = 4
    NOT_CONNECTED = 5
    """The hub cannot reach the platform; help is escalated locally."""
    CHECKIN_OK = 6


def _pendant_id_bytes(pendant_id: str) -> bytes:
    if not isinstance(pendant_id, str) or _PENDANT_ID.fullmatch(pendant_id) is None:
        raise EncodeError(f"{pendant_id!r} is not a pendant id (1..32 of A-Z a-z 0-9 . _ : -)")
    return pendant_id.encode("ascii")


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_LEN:
        raise EncodeError(f"a pendant key has {KEY_LEN} bytes")


def compute_tag(key: bytes, label: bytes, pendant_id: str, header: bytes) -> bytes:
    """``HMAC-SHA256(key, label || len(id) || id || header)[:16]``.

    Args:
        key: the pendant's 32-byte key.
        label: ``b"E"``, ``b"C"``, ``b"F"`` or ``b"K"``.
        pendant_id: the pendant's id.
        header: the frame without its tag.
    """
    _check_key(key)
    pid = _pendant_id_bytes(pendant_id)
    return hmac.new(key, label + bytes([len(pid)]) + pid + header, hashlib.sha256).digest()[:TAG_LEN]


def _check_version(data: bytes, what: str) -> None:
    if data[0] != PROTOCOL_VERSION:
        raise DecodeError(what, 0, f"unsupported pendant protocol version {data[0]}")


def _exact(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise DecodeError(what, min(len(data), size), f"expected {size} bytes, got {len(data)}")


@dataclass(frozen=True, slots=True)
class PendantEvent:
    """An Event characteristic frame (27 bytes).

    Attributes:
        event: what happened.
        counter: the pendant's event counter, incremented (and persisted) for every new event: 1..COUNTER_CEILING-1,
            or :data:`COUNTER_CEILING` for the REKEY event.
        battery: battery percentage 0..100, or ``None`` if unknown (sent as 0xFF).
        uptime_seconds: seconds since the pendant booted.
        tag: the 16-byte authentication tag (zeros until :meth:`sign`).
    """

    event: PendantEventType
    counter: int
    battery: int | None
    uptime_seconds: int
    tag: bytes = bytes(TAG_LEN)

    def __post_init__(self) -> None:
        if not isinstance(self.event, PendantEventType):
            raise EncodeError("event must be a PendantEventType")
        if not 1 <= self.counter <= COUNTER_CEILING:
            raise EncodeError(f"counter must be in 1..{COUNTER_CEILING}")
        if (self.event is PendantEventType.REKEY) != (self.counter == COUNTER_CEILING):
            raise EncodeError(f"counter {COUNTER_CEILING} is the REKEY event's, and only its")
        if self.event is PendantEventType.REKEY and (self.battery is not None or self.uptime_seconds != 0):
            raise EncodeError("the REKEY event has fixed contents: battery unknown, uptime 0")
        if self.battery is not None and not 0 <= self.battery <= 100:
            raise EncodeError("battery must be 0..100 or None")
        if not 0 <= self.uptime_seconds <= _COUNTER_MAX:
            raise EncodeError("uptime_seconds must fit in 32 bits")
        if len(self.tag) != TAG_LEN:
            raise EncodeError(f"tag must be {TAG_LEN} bytes")

    @classmethod
    def rekey(cls) -> Self:
        """The REKEY event (unsigned): the one frame a pendant sends once its counters are used up."""
        return cls(PendantEventType.REKEY, COUNTER_CEILING, None, 0)

    def header(self) -> bytes:
        """The frame without its tag (what the tag covers, after the label and id)."""
        battery = _BATTERY_UNKNOWN if self.battery is None else self.battery
        return EVENT.pack(PROTOCOL_VERSION, self.event, self.counter, battery, self.uptime_seconds)

    def __bytes__(self) -> bytes:
        return self.header() + self.tag

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse a frame (without checking its tag).

        Raises:
            DecodeError: wrong length, version, event type, battery, a counter of 0 or above
                :data:`COUNTER_CEILING`, or a REKEY event that is not the fixed REKEY frame (or another event at the
                ceiling).
        """
        what = "pendant event"
        _exact(data, EVENT.size + TAG_LEN, what)
        _check_version(data, what)
        _, event, counter, battery, uptime = EVENT.unpack_from(data)
        try:
            kind = PendantEventType(event)
        except ValueError:
            raise DecodeError(what, 1, f"unknown event type {event}") from None
        if counter == 0:
            raise DecodeError(what, 2, "counter 0 is never sent")
        if counter > COUNTER_CEILING:
            raise DecodeError(what, 2, f"counter {counter} is above the ceiling {COUNTER_CEILING}")
        if battery > 100 and battery != _BATTERY_UNKNOWN:
            raise DecodeError(what, 6, f"battery {battery}% out of range")
        if (kind is PendantEventType.REKEY) != (counter == COUNTER_CEILING):
            raise DecodeError(what, 1, f"counter {COUNTER_CEILING} is the REKEY event's, and only its")
        if kind is PendantEventType.REKEY and (battery != _BATTERY_UNKNOWN or uptime != 0):
            raise DecodeError(what, 6, "the REKEY event has fixed contents: battery unknown, uptime 0")
        return cls(kind, counter, None if battery == _BATTERY_UNKNOWN else battery, uptime, bytes(data[EVENT.size :]))

    def sign(self, pendant_id: str, key: bytes) -> Self:
        """A copy carrying the correct tag (the pendant's side)."""
        return dataclasses.replace(self, tag=compute_tag(key, _LABEL_EVENT, pendant_id, self.header()))

    def tag_valid(self, pendant_id: str, key: bytes) -> bool:
        """Whether :attr:`tag` is right for this pendant and key (constant-time comparison)."""
        return hmac.compare_digest(self.tag, compute_tag(key, _LABEL_EVENT, pendant_id, self.header()))


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    """An authentic event.

    Attributes:
        event: the event.
        repeat: the pendant re-sent the last accepted event because it has not seen a Confirm yet: confirm it again,
            but do not act on it twice.
    """

    event: PendantEvent
    repeat: bool


def key_id(key: bytes) -> bytes:
    """An 8-byte name of a pendant key: ``SHA-256("carehub pendant key id" || key)[:8]``.

    Verifier state saved with it is restored only under the same key (:meth:`PendantVerifier.restore`); telling the
    keys apart needs no secret, and the 32-byte key cannot be recovered from it.
    """
    _check_key(key)
    return hashlib.sha256(b"carehub pendant key id" + key).digest()[:KEY_ID_LEN]


# key id (8) | last counter u32 | has tag u8 | tag (16, zeros without one)
_STATE: Final = struct.Struct(f"<{KEY_ID_LEN}sIB{TAG_LEN}s")


@dataclass(frozen=True, slots=True)
class PendantCounterState:
    """What the hub persists of a pendant's verifier: the high-water mark and the key it belongs to.

    Attributes:
        key_id: :func:`key_id` of the key the counter was accepted under.
        last_counter: the highest counter accepted (0 if none).
        last_tag: the tag of that event, if known.
    """

    key_id: bytes
    last_counter: int
    last_tag: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, bytes) or len(self.key_id) != KEY_ID_LEN:
            raise EncodeError(f"key_id must be {KEY_ID_LEN} bytes")
        if not 0 <= self.last_counter <= _COUNTER_MAX:
            raise EncodeError("last_counter must fit in 32 bits")
        if self.last_tag is not None and len(self.last_tag) != TAG_LEN:
            raise EncodeError(f"last_tag must be {TAG_LEN} bytes")

    def __bytes__(self) -> bytes:
        tag = self.last_tag
        return _STATE.pack(self.key_id, self.last_counter, tag is not None, tag or bytes(TAG_LEN))

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse what ``bytes(state)`` wrote (29 bytes).

        Raises:
            DecodeError: wrong length, a tag flag other than 0/1, or a tag with the flag clear.
        """
        what = "pendant counter state"
        _exact(data, _STATE.size, what)
        kid, counter, has_tag, tag = _STATE.unpack(data)
        if has_tag > 1 or (not has_tag and tag != bytes(TAG_LEN)):
            raise DecodeError(what, KEY_ID_LEN + 4, "invalid tag flag")
        return cls(kid, counter, tag if has_tag else None)


class PendantVerifier:
    """Authenticates one pendant's Event frames and keeps its counter high-water mark.

    The gateway persists :attr:`last_counter` (and may persist :attr:`last_tag`) after each accepted new event and
    passes them back in after a restart.
    """

    __slots__ = ("_key", "_last_counter", "_last_tag", "_pendant_id")

    def __init__(self, pendant_id: str, key: bytes, last_counter: int = 0, last_tag: bytes | None = None) -> None:
        """Verify frames of ``pendant_id`` under ``key``, accepting only counters above ``last_counter``."""
        _pendant_id_bytes(pendant_id)
        _check_key(key)
        if not 0 <= last_counter <= _COUNTER_MAX:
            raise EncodeError("last_counter must fit in 32 bits")
        self._pendant_id = pendant_id
        self._key = key
        self._last_counter = last_counter
        self._last_tag = last_tag

    @property
    def last_counter(self) -> int:
        """The highest counter accepted so far (0 if none)."""
        return self._last_counter

    @property
    def last_tag(self) -> bytes | None:
        """The tag of the event with :attr:`last_counter`, if known."""
        return self._last_tag

    @property
    def exhausted(self) -> bool:
        """The pendant has used up its counters under this key (it sent REKEY): nothing new verifies until the
        pendant and the hub are re-provisioned with a new key."""
        return self._last_counter >= COUNTER_CEILING

    @property
    def rekey_due(self) -> bool:
        """The accepted counters have reached :data:`REKEY_DUE_AT` (or the ceiling): the pendant should be re-keyed
        at the next visit, before it runs out."""
        return self._last_counter >= REKEY_DUE_AT

    def state(self) -> PendantCounterState:
        """What to persist (after an accepted event) so that :meth:`restore` resumes here."""
        return PendantCounterState(key_id(self._key), self._last_counter, self._last_tag)

    @classmethod
    def restore(cls, pendant_id: str, key: bytes, saved: PendantCounterState | None) -> Self:
        """A verifier for ``key`` resuming from ``saved`` if it was saved under the same key, else starting afresh.

        A pendant re-provisioned with a new key (after REKEY, or any re-pairing) restarts its counter at 1; the hub
        starts afresh with it. Nothing signed under the old key verifies under the new one, so nothing old can be
        replayed; and because a state saved under a key is always resumed under that key, a counter can never be
        reset without a new key.
        """
        if saved is None or not hmac.compare_digest(saved.key_id, key_id(key)):
            return cls(pendant_id, key)
        return cls(pendant_id, key, saved.last_counter, saved.last_tag)

    def verify(self, frame: bytes) -> VerifiedEvent:
        """:meth:`check` and, for a new event, :meth:`accept` at once (for callers with nothing to commit).

        Raises:
            DecodeError, AuthenticationError, ReplayError: as :meth:`check`.
        """
        verified = self.check(frame)
        self.accept(verified)
        return verified

    def check(self, frame: bytes) -> VerifiedEvent:
        """Authenticate an Event frame without advancing the high-water mark (``docs/protocol.md`` §9.4).

        A new event is accepted only by :meth:`accept`, which the hub calls once the event is durably stored; until
        then the same frame checks as new again (not as a repeat to confirm), so a press whose commit failed is
        never confirmed to the pendant.

        Returns:
            The event, flagged ``repeat=True`` when it is the last accepted event again.

        Raises:
            DecodeError: not an Event frame.
            AuthenticationError: the tag is wrong (another key, another pendant, altered bytes).
            ReplayError: authentic, but its counter is below the last accepted one, or reuses it with other bytes.
        """
        event = PendantEvent.from_bytes(frame)
        if not event.tag_valid(self._pendant_id, self._key):
            raise AuthenticationError(f"pendant {self._pendant_id}: event tag does not verify")
        if event.counter < self._last_counter:
            raise ReplayError(f"pendant {self._pendant_id}: counter {event.counter} < last {self._last_counter}")
        if event.counter == self._last_counter:
            if self._last_tag is not None and not hmac.compare_digest(event.tag, self._last_tag):
                raise ReplayError(f"pendant {self._pendant_id}: counter {event.counter} reused with other content")
            return VerifiedEvent(event, repeat=True)
        return VerifiedEvent(event, repeat=False)

    def accept(self, verified: VerifiedEvent) -> None:
        """Advance the high-water mark to a checked event once it is durably stored.

        A repeat, or an event the mark has moved past meanwhile (it was stored too), leaves the mark where it is;
        a repeat of the last event after a restart supplies its tag.
        """
        event = verified.event
        if event.counter > self._last_counter or (event.counter == self._last_counter and self._last_tag is None):
            self._last_counter = event.counter
            self._last_tag = event.tag


@dataclass(frozen=True, slots=True)
class ConfirmFrame:
    """A Confirm write (21 bytes): the hub has durably recorded every event up to ``counter``.

    The pendant accepts it when the tag verifies and ``counter`` is one it has sent; it then stops repeating every
    event with a counter up to ``counter``. An old Confirm names an old counter, so replaying it silences nothing new.

    Attributes:
        counter: the highest event counter confirmed.
        tag: the authentication tag.
    """

    counter: int
    tag: bytes = bytes(TAG_LEN)

    def __post_init__(self) -> None:
        if not 1 <= self.counter <= COUNTER_CEILING:
            raise EncodeError(f"counter must be in 1..{COUNTER_CEILING}")
        if len(self.tag) != TAG_LEN:
            raise EncodeError(f"tag must be {TAG_LEN} bytes")

    def header(self) -> bytes:
        """The frame without its tag."""
        return CONFIRM.pack(PROTOCOL_VERSION, self.counter)

    def __bytes__(self) -> bytes:
        return self.header() + self.tag

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse a frame (without checking its tag).

        Raises:
            DecodeError: wrong length, version, or a counter of 0 or above :data:`COUNTER_CEILING`.
        """
        _exact(data, CONFIRM.size + TAG_LEN, "pendant confirm")
        _check_version(data, "pendant confirm")
        _, counter = CONFIRM.unpack_from(data)
        if counter == 0:
            raise DecodeError("pendant confirm", 1, "counter 0 is never confirmed")
        if counter > COUNTER_CEILING:
            raise DecodeError("pendant confirm", 1, f"counter {counter} is above the ceiling {COUNTER_CEILING}")
        return cls(counter, bytes(data[CONFIRM.size :]))

    def sign(self, pendant_id: str, key: bytes) -> Self:
        """A copy carrying the correct tag (the hub's side)."""
        return dataclasses.replace(self, tag=compute_tag(key, _LABEL_CONFIRM, pendant_id, self.header()))

    def verify(self, pendant_id: str, key: bytes) -> None:
        """Check the tag (the pendant's side).

        Raises:
            AuthenticationError: the tag is wrong.
        """
        if not hmac.compare_digest(self.tag, compute_tag(key, _LABEL_CONFIRM, pendant_id, self.header())):
            raise AuthenticationError(f"pendant {pendant_id}: confirm tag does not verify")


@dataclass(frozen=True, slots=True)
class FeedbackFrame:
    """A Feedback write (24 bytes): what the pendant should show.

    ``event_counter`` is the highest event counter the hub has accepted from the pendant; ``feedback_seq`` counts the
    hub's feedback writes for that counter from 0. The pendant accepts the frame when the tag verifies,
    ``event_counter`` is not above the last counter it sent, and ``(event_counter, feedback_seq)`` is greater than the
    pair it last accepted (compared as a pair); after a reboot it starts from ``(its counter, 0xFFFF)``. So an old
    "answered" cannot be replayed to mislead the resident.

    Attributes:
        state: what to show.
        event_counter: the event the feedback refers to.
        feedback_seq: the hub's write counter for that event.
        tag: the authentication tag.
    """

    state: FeedbackState
    event_counter: int
    feedback_seq: int
    tag: bytes = bytes(TAG_LEN)

    def __post_init__(self) -> None:
        if not isinstance(self.state, FeedbackState):
            raise EncodeError("state must be a FeedbackState")
        if not 0 <= self.event_counter <= COUNTER_CEILING:
            raise EncodeError(f"event_counter must be in 0..{COUNTER_CEILING}")
        if not 0 <= self.feedback_seq <= 0xFFFF:
            raise EncodeError("feedback_seq must fit in 16 bits")
        if len(self.tag) != TAG_LEN:
            raise EncodeError(f"tag must be {TAG_LEN} bytes")

    def header(self) -> bytes:
        """The frame without its tag."""
        return FEEDBACK.pack(PROTOCOL_VERSION, self.state, self.event_counter, self.feedback_seq)

    def __bytes__(self) -> bytes:
        return self.header() + self.tag

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse a frame (without checking its tag).

        Raises:
            DecodeError: wrong length, version, state, or an event counter above :data:`COUNTER_CEILING`.
        """
        what = "pendant feedback"
        _exact(data, FEEDBACK.size + TAG_LEN, what)
        _check_version(data, what)
        _, state, counter, seq = FEEDBACK.unpack_from(data)
        try:
            kind = FeedbackState(state)
        except ValueError:
            raise DecodeError(what, 1, f"unknown feedback state {state}") from None
        if counter > COUNTER_CEILING:
            raise DecodeError(what, 2, f"event counter {counter} is above the ceiling {COUNTER_CEILING}")
        return cls(kind, counter, seq, bytes(data[FEEDBACK.size :]))

    def sign(self, pendant_id: str, key: bytes) -> Self:
        """A copy carrying the correct tag (the hub's side)."""
        return dataclasses.replace(self, tag=compute_tag(key, _LABEL_FEEDBACK, pendant_id, self.header()))

    def verify(self, pendant_id: str, key: bytes) -> None:
        """Check the tag (the pendant's side).

        Raises:
            AuthenticationError: the tag is wrong.
        """
        if not hmac.compare_digest(self.tag, compute_tag(key, _LABEL_FEEDBACK, pendant_id, self.header())):
            raise AuthenticationError(f"pendant {pendant_id}: feedback tag does not verify")


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """The Device Info characteristic: ``version u8 | id length u8 | id (ASCII)``.

    Attributes:
        pendant_id: the pendant's id (1..32 of ``A-Z a-z 0-9 . _ : -``).
        version: the pendant protocol version it speaks.
    """

    pendant_id: str
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _pendant_id_bytes(self.pendant_id)
        if not 0 <= self.version <= 0xFF:
            raise EncodeError("version must fit in a byte")

    def __bytes__(self) -> bytes:
        pid = _pendant_id_bytes(self.pendant_id)
        return DEVICE_INFO.pack(self.version, len(pid)) + pid

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse the characteristic value (any version; the caller decides whether it can talk to it).

        Raises:
            DecodeError: truncated, trailing bytes, or an invalid id.
        """
        what = "pendant device info"
        if len(data) < DEVICE_INFO.size:
            raise DecodeError(what, len(data), "truncated header")
        version, length = DEVICE_INFO.unpack_from(data)
        _exact(data, DEVICE_INFO.size + length, what)
        raw = bytes(data[DEVICE_INFO.size :])
        try:
            return cls(raw.decode("ascii"), version)
        except (UnicodeDecodeError, EncodeError) as exc:
            raise DecodeError(what, DEVICE_INFO.size, "invalid pendant id") from exc


@dataclass(frozen=True, slots=True)
class KeyChallenge:
    """A Key Check write (9 bytes): ``version u8 | nonce (8)``, a fresh random nonce from the hub (§9.7).

    Attributes:
        nonce: 8 random bytes, new for every challenge.
    """

    nonce: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_LEN:
            raise EncodeError(f"a key check nonce has {NONCE_LEN} bytes")

    @classmethod
    def fresh(cls) -> Self:
        """A challenge with a new random nonce (``secrets``)."""
        return cls(secrets.token_bytes(NONCE_LEN))

    def __bytes__(self) -> bytes:
        return KEY_CHECK.pack(PROTOCOL_VERSION, self.nonce)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse a challenge (the pendant's side).

        Raises:
            DecodeError: wrong length or version.
        """
        _exact(data, KEY_CHECK.size, "pendant key challenge")
        _check_version(data, "pendant key challenge")
        return cls(bytes(data[1:]))

    def answer(self, pendant_id: str, key: bytes) -> KeyAnswer:
        """The pendant's answer: this nonce and its tag under ``key``."""
        return KeyAnswer(self.nonce, compute_tag(key, _LABEL_KEY_CHECK, pendant_id, bytes(self)))


@dataclass(frozen=True, slots=True)
class KeyAnswer:
    """The Key Check value after a challenge (25 bytes): ``version u8 | nonce (8) | tag (16)``.

    ``tag = HMAC-SHA256(key, "K" || len(id) || id || version || nonce)[:16]``: only a pendant holding ``key`` under
    ``id`` can make it for a nonce it has not seen before.

    Attributes:
        nonce: the nonce of the challenge answered.
        tag: the authentication tag.
    """

    nonce: bytes
    tag: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_LEN:
            raise EncodeError(f"a key check nonce has {NONCE_LEN} bytes")
        if not isinstance(self.tag, bytes) or len(self.tag) != TAG_LEN:
            raise EncodeError(f"tag must be {TAG_LEN} bytes")

    def __bytes__(self) -> bytes:
        return KEY_CHECK.pack(PROTOCOL_VERSION, self.nonce) + self.tag

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse the Key Check value (without checking its tag).

        Raises:
            DecodeError: wrong length (an empty value: the pendant has answered no challenge yet) or version.
        """
        what = "pendant key answer"
        _exact(data, KEY_CHECK.size + TAG_LEN, what)
        _check_version(data, what)
        return cls(bytes(data[1 : KEY_CHECK.size]), bytes(data[KEY_CHECK.size :]))

    def answers(self, challenge: KeyChallenge) -> bool:
        """Whether this is the answer to ``challenge`` (same nonce), whatever its tag."""
        return hmac.compare_digest(self.nonce, challenge.nonce)

    def verify(self, challenge: KeyChallenge, pendant_id: str, key: bytes) -> None:
        """Check that the pendant answered ``challenge`` under ``key`` and ``pendant_id`` (the hub's side).

        Raises:
            AuthenticationError: another nonce (a stale answer), or the tag is wrong (another key or id).
        """
        if not self.answers(challenge):
            raise AuthenticationError(f"pendant {pendant_id}: key check answers another challenge")
        expected = compute_tag(key, _LABEL_KEY_CHECK, pendant_id, bytes(challenge))
        if not hmac.compare_digest(self.tag, expected):
            raise AuthenticationError(f"pendant {pendant_id}: key check tag does not verify")
