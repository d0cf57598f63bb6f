"""Platform-to-hub messages on ``carehub/v1/<hub>/down`` (carehub wire protocol v1, ``docs/protocol.md`` §8).

::

    body      = CBOR {"v": 1, "hub": text, "seq": uint, "at": uint (µs since epoch, UTC),
                      "type": "thresholds" | "alarm_ack", "body": map}            deterministic (RFC 8949 §4.2.1)
    signature = Ed25519(platform signing key, "carehub/v1/down" || 0x00 || body)
    message   = signature (64 bytes) || body

``seq`` increases strictly per hub; the hub persists the last accepted one and refuses anything not above it
(:class:`~protocols.errors.ReplayError`). Bodies:

* ``thresholds``: ``{"resident": text, "values": {key: number | null}}``: the resident's threshold settings, keyed
  as in ``../shared/thresholds.md`` (``"bp.systolic.critical"``); units are implied by the key; ``null`` restores
  the default for that key.
* ``alarm_ack``: ``{"alarm_id": text, "by": text, "role": text | null, "at": uint, "note": text | null}``: a
  caregiver acknowledged an alarm; "caregiver answered the panic call" is this message for a panic alarm.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, Self, TypeAlias

import nacl.signing

from protocols import cbor
from protocols.cbor import CborValue, Fields
from protocols.errors import AuthenticationError, DecodeError, EncodeError, ReplayError
from protocols.keys import SIGNATURE_LEN, sign_detached, verify_detached
from protocols.topics import is_valid_hub_id

__all__ = [
    "DOWN_DOMAIN",
    "MAX_DOWN_BYTES",
    "AlarmAcknowledgement",
    "AlarmSnooze",
    "DownBody",
    "DownMessage",
    "ThresholdUpdate",
    "sign_message",
    "verify_message",
]

DOWN_DOMAIN: Final = b"carehub/v1/down\x00"
MAX_DOWN_BYTES: Final = 16_384
MAX_THRESHOLDS: Final = 256
_KEYS: Final = frozenset({"v", "hub", "seq", "at", "type", "body"})


def _text(value: object, name: str, max_len: int = 256) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise EncodeError(f"{name} must be text of 1..{max_len} characters")


@dataclass(frozen=True, slots=True)
class ThresholdUpdate:
    """New threshold settings for one resident.

    Attributes:
        resident_id: whose thresholds.
        values: threshold key -> number (units implied by the key), or ``None`` to restore the default.
    """

    TYPE: ClassVar[str] = "thresholds"
    _KEYS: ClassVar[frozenset[str]] = frozenset({"resident", "values"})

    resident_id: str
    values: Mapping[str, int | float | None]

    def __post_init__(self) -> None:
        _text(self.resident_id, "resident_id")
        if not isinstance(self.values, Mapping) or len(self.values) > MAX_THRESHOLDS:
            raise EncodeError(f"values must be a mapping of at most {MAX_THRESHOLDS} thresholds")
        for key, value in self.values.items():
            _text(key, "threshold key", 128)
            if value is not None and not cbor.is_number(value):
                raise EncodeError(f"threshold {key!r} must be a finite number or None")
        object.__setattr__(self, "values", dict(self.values))

    def _to_map(self) -> dict[str, CborValue]:
        return {"resident": self.resident_id, "values": dict(self.values)}

    @classmethod
    def _from_map(cls, value: object) -> Self:
        f = Fields(value, "down.thresholds", cls._KEYS)
        values = f.raw("values")
        if not isinstance(values, dict):
            raise f.fail("values", "expected a map")
        for item in values.values():
            if item is not None and not cbor.is_number(item):
                raise f.fail("values", "every threshold is a finite number or null")
        return cls(f.text("resident"), values)  # type: ignore[arg-type]  # checked just above


@dataclass(frozen=True, slots=True)
class AlarmAcknowledgement:
    """A caregiver acknowledged an alarm (for a panic alarm: answered the call).

    Attributes:
        alarm_id: the alarm (as in the hub's alarm records).
        by: who, as shown to the resident ("Mei Lin").
        role: their role ("daughter", "nurse", "call centre"), if given.
        at: when they acknowledged it.
        note: free text, if any.
    """

    TYPE: ClassVar[str] = "alarm_ack"
    _KEYS: ClassVar[frozenset[str]] = frozenset({"alarm_id", "by", "role", "at", "note"})

    alarm_id: str
    by: str
    at: _dt.datetime
    role: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        _text(self.alarm_id, "alarm_id")
        _text(self.by, "by")
        cbor.to_micros(self.at)
        if self.role is not None:
            _text(self.role, "role")
        if self.note is not None:
            _text(self.note, "note", 2048)

    def _to_map(self) -> dict[str, CborValue]:
        return {
            "alarm_id": self.alarm_id,
            "by": self.by,
            "role": self.role,
            "at": cbor.to_micros(self.at),
            "note": self.note,
        }

    @classmethod
    def _from_map(cls, value: object) -> Self:
        f = Fields(value, "down.alarm_ack", cls._KEYS)
        return cls(f.text("alarm_id"), f.text("by"), f.time("at"), f.opt_text("role"), f.opt_text("note", 2048))


@dataclass(frozen=True, slots=True)
class AlarmSnooze:
    """A caregiver asks the hub to stop re-announcing an alarm for a while.

    The hub refuses it for a critical alarm (a critical alarm can never be silenced) and for a duration longer than
    its own maximum; it records what it did either way.

    Attributes:
        alarm_id: the alarm (as in the hub's alarm records).
        by: who asked.
        duration_seconds: how long, 1..86400.
        at: when they asked.
    """

    TYPE: ClassVar[str] = "alarm_snooze"
    _KEYS: ClassVar[frozenset[str]] = frozenset({"alarm_id", "by", "duration_s", "at"})

    alarm_id: str
    by: str
    duration_seconds: int
    at: _dt.datetime

    def __post_init__(self) -> None:
        _text(self.alarm_id, "alarm_id")
        _text(self.by, "by")
        if not isinstance(self.duration_seconds, int) or not 1 <= self.duration_seconds <= 86_400:
            raise EncodeError("duration_seconds must be an integer 1..86400")
        cbor.to_micros(self.at)

    def _to_map(self) -> dict[str, CborValue]:
        return {
            "alarm_id": self.alarm_id,
            "by": self.by,
            "duration_s": self.duration_seconds,
            "at": cbor.to_micros(self.at),
        }

    @classmethod
    def _from_map(cls, value: object) -> Self:
        f = Fields(value, "down.alarm_snooze", cls._KEYS)
        try:
            return cls(f.text("alarm_id"), f.text("by"), f.uint("duration_s", 86_400), f.time("at"))
        except EncodeError as exc:
            raise DecodeError("down.alarm_snooze", None, str(exc)) from exc


DownBody: TypeAlias = ThresholdUpdate | AlarmAcknowledgement | AlarmSnooze
_BODIES: Final[dict[str, type[DownBody]]] = {
    ThresholdUpdate.TYPE: ThresholdUpdate,
    AlarmAcknowledgement.TYPE: AlarmAcknowledgement,
    AlarmSnooze.TYPE: AlarmSnooze,
}


@dataclass(frozen=True, slots=True)
class DownMessage:
    """A signed platform-to-hub message.

    Attributes:
        hub_id: the hub it is for.
        seq: the platform's message counter for this hub, strictly increasing.
        issued_at: when the platform signed it.
        body: what it says.
    """

    hub_id: str
    seq: int
    issued_at: _dt.datetime
    body: DownBody

    def __post_init__(self) -> None:
        if not isinstance(self.hub_id, str) or not is_valid_hub_id(self.hub_id):
            raise EncodeError(f"{self.hub_id!r} is not a valid hub id")
        if not cbor.is_uint(self.seq):
            raise EncodeError(f"seq must be an integer in 0..{cbor.MAX_UINT}")
        cbor.to_micros(self.issued_at)
        if not isinstance(self.body, ThresholdUpdate | AlarmAcknowledgement | AlarmSnooze):
            raise EncodeError("body must be a ThresholdUpdate, an AlarmAcknowledgement or an AlarmSnooze")


def sign_message(message: DownMessage, platform_signing_key: nacl.signing.SigningKey) -> bytes:
    """Encode and sign a message for ``carehub/v1/<hub>/down``.

    Raises:
        EncodeError: the message exceeds :data:`MAX_DOWN_BYTES`.
    """
    body = cbor.dumps(
        {
            "v": 1,
            "hub": message.hub_id,
            "seq": message.seq,
            "at": cbor.to_micros(message.issued_at),
            "type": message.body.TYPE,
            "body": message.body._to_map(),
        },
        "down",
    )
    if len(body) + SIGNATURE_LEN > MAX_DOWN_BYTES:
        raise EncodeError(f"message exceeds {MAX_DOWN_BYTES} bytes")
    return sign_detached(platform_signing_key, DOWN_DOMAIN, body) + body


def verify_message(
    data: bytes, platform_verify_key: nacl.signing.VerifyKey, expected_hub: str, last_seq: int | None
) -> DownMessage:
    """Verify a message received on this hub's down topic.

    Args:
        data: the MQTT payload.
        platform_verify_key: the platform's Ed25519 public key.
        expected_hub: this hub's id.
        last_seq: the highest message ``seq`` accepted so far (persisted by the hub), or ``None`` if none yet.

    Returns:
        The verified message; the caller persists its ``seq`` before acting on it.

    Raises:
        AuthenticationError: not signed by the platform, or addressed to another hub.
        ReplayError: authentic, but ``seq`` is not above ``last_seq``.
        DecodeError: signed, but not a well-formed version-1 message.
    """
    if not SIGNATURE_LEN < len(data) <= MAX_DOWN_BYTES:
        raise AuthenticationError(f"{len(data)} bytes is not a possible down-message size")
    signature, body = data[:SIGNATURE_LEN], data[SIGNATURE_LEN:]
    verify_detached(platform_verify_key, DOWN_DOMAIN, body, signature)
    f = Fields(cbor.loads(body, "down"), "down", _KEYS)
    if f.uint("v") != 1:
        raise f.fail("v", "unsupported message version")
    hub = f.text("hub", 63)
    if hub != expected_hub:
        raise AuthenticationError(f"message is addressed to hub {hub!r}, not {expected_hub!r}")
    seq = f.uint("seq")
    if last_seq is not None and seq <= last_seq:
        raise ReplayError(f"message seq {seq} is not above the last accepted {last_seq}")
    kind = f.raw("type")
    body_type = _BODIES.get(kind) if isinstance(kind, str) else None
    if body_type is None:
        raise f.fail("type", f"expected one of {sorted(_BODIES)}")
    try:
        return DownMessage(hub, seq, f.time("at"), body_type._from_map(f.raw("body")))
    except EncodeError as exc:
        raise DecodeError("down", None, str(exc)) from exc
