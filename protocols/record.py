"""Reading records: what the hub produces, one CBOR map per record (carehub wire protocol v1, ``docs/protocol.md`` §3).

Every record is the deterministic CBOR encoding (RFC 8949 §4.2.1, :mod:`protocols.cbor`) of a map with exactly these
keys, whatever its kind::

    v            uint   1 (the record format version)
    kind         text   "measurement" | "alarm" | "panic" | "device_status" | "down_refused" | "down_applied"
                        | "eviction" | "raw_reading"
    id           bstr   16 bytes, the stable record id (§4)
    hub          text   the producing hub's id
    seq          uint   per-hub record sequence number
    hub_time     uint   when the hub received or created it, microseconds since 1970-01-01T00:00:00Z
    device_id    text / null   the device the record is about (required for measurement, panic, device_status)
    device_time  text / null   the device's own timestamp exactly as reported (local, no zone), if any
    body         map    kind-specific, every key present (null where absent)

Decoding is strict: unknown versions and kinds, missing or extra keys, wrong types, non-finite floats and
non-deterministic encodings raise :class:`~protocols.errors.DecodeError` and nothing else.

Installation-test data (``docs/protocol.md`` §3.10): a measurement, raw reading or panic record made while the
installer runs ``carehub provision test`` carries ``installation_test`` (:attr:`Record.installation_test`); such a
record is never the resident's data (never judged, never an alarm, never charted or exported as theirs). The key is
written only when true, so a body without it is exactly the body of earlier revisions.

Record ids (invariant 2): :func:`measurement_record_id`, :func:`alarm_record_id`, :func:`panic_record_id` and
:func:`status_record_id` derive a 16-byte id from what identifies the record, so the same reading delivered twice
(live indication, then again from the meter's memory after a crash) gets the same id and the platform stores it once.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self, TypeAlias

from protocols import cbor
from protocols.cbor import CborValue, Fields
from protocols.errors import DecodeError, EncodeError, quote
from protocols.gatt.tolerant import DecodeTolerance, tolerances_from_names
from protocols.topics import is_valid_hub_id

__all__ = [
    "MAX_RAW_BYTES",
    "MAX_RECORD_BYTES",
    "RECORD_ID_LEN",
    "RECORD_VERSION",
    "AlarmBody",
    "AlarmState",
    "AlarmTier",
    "Body",
    "ClockCorrection",
    "DeviceStatusBody",
    "DownAppliedBody",
    "DownRefusal",
    "DownRefusedBody",
    "EvictionBody",
    "LinkFailure",
    "LinkState",
    "MeasurementBody",
    "PanicBody",
    "PanicEventType",
    "RawReadingBody",
    "Record",
    "RecordKind",
    "alarm_record_id",
    "decode_record",
    "measurement_record_id",
    "panic_record_id",
    "peek_record_hub",
    "raw_reading_record_id",
    "status_record_id",
]

RECORD_VERSION: Final = 1
RECORD_ID_LEN: Final = 16
MAX_RECORD_BYTES: Final = 8192
"""Largest encoded record; a GATT value is at most 512 bytes (Core Spec Vol 3 Part F §3.2.9)."""
MAX_RAW_BYTES: Final = 512
MAX_TRIGGERS: Final = 64
_TEXT: Final = 256
_LONG_TEXT: Final = 2048
_ID_KEY: Final = b"carehub/v1/record-id"


class RecordKind(enum.Enum):
    """The ``kind`` of a record."""

    MEASUREMENT = "measurement"
    ALARM = "alarm"
    PANIC = "panic"
    DEVICE_STATUS = "device_status"
    DOWN_REFUSED = "down_refused"
    DOWN_APPLIED = "down_applied"
    """The hub applied a down-message (``docs/protocol.md`` §3.9): the platform's confirmation of delivery."""
    EVICTION = "eviction"
    RAW_READING = "raw_reading"
    """A meter's value the hub could not decode at all, kept as it was received (``docs/protocol.md`` §3.8)."""


class AlarmTier(enum.Enum):
    """How urgent an alarm is (``../shared/thresholds.md`` defines which condition maps to which tier)."""

    NOTICE = "notice"
    WARNING = "warning"
    CRITICAL = "critical"


class AlarmState(enum.Enum):
    """A step in an alarm's life; each step is its own record with the next revision number."""

    RAISED = "raised"
    RE_RAISED = "re_raised"
    ESCALATED = "escalated"
    """The tier went up while open, or a panic call was not acknowledged by the platform in time."""
    CONFIRMED = "confirmed"
    DOWNGRADED = "downgraded"
    """A re-measurement did not confirm a blood-pressure crisis; the alarm continues at the reading's own tier."""
    CLEARED = "cleared"
    ACKNOWLEDGED = "acknowledged"
    SNOOZED = "snoozed"
    CANCELLED = "cancelled"
    """The resident cancelled a panic call within the cancel window (a false alarm; it stays on record)."""


class PanicEventType(enum.Enum):
    """Pendant events that become panic records (battery and heartbeat frames become device status)."""

    PRESS = "press"
    LONG_PRESS = "long_press"
    CANCEL = "cancel"
    CHECKIN = "checkin"


class LinkState(enum.Enum):
    """A device's link as the hub sees it."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    FAILED = "failed"
    """A session failed; the body's ``failure`` says how."""


class LinkFailure(enum.Enum):
    """Why a session failed, as the hub's BLE layer classified it (``docs/protocol.md`` §3.4)."""

    GONE = "gone"
    """The device stopped advertising or dropped the link."""
    TRANSIENT = "transient"
    """A timeout or a busy controller; retried after a backoff."""
    AUTH = "auth"
    """Bonding refused or insufficient authentication."""
    PROTOCOL = "protocol"
    """The device broke the GATT contract."""


class DownRefusal(enum.Enum):
    """Why the hub refused a verified down-message (``docs/protocol.md`` §8)."""

    UNKNOWN_RESIDENT = "unknown_resident"
    INVALID_THRESHOLD = "invalid_threshold"
    """An unknown key, a value outside its plausible range, or tiers out of order."""
    UNKNOWN_ALARM = "unknown_alarm"
    CRITICAL_SNOOZE = "critical_snooze"
    """A critical alarm is never silenced."""
    INVALID_SNOOZE = "invalid_snooze"


# --- validation helpers (construction raises EncodeError) ----------------------------------------------------------


def _text(value: object, name: str, max_len: int = _TEXT) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise EncodeError(f"{name} must be text of 1..{max_len} characters, not {value!r:.80}")


def _opt_text(value: object, name: str, max_len: int = _TEXT) -> None:
    if value is not None:
        _text(value, name, max_len)


def _uint(value: object, name: str, limit: int = cbor.MAX_UINT) -> None:
    if not cbor.is_uint(value, limit):
        raise EncodeError(f"{name} must be an integer in 0..{limit}, not {value!r}")


def _opt_uint(value: object, name: str, limit: int = cbor.MAX_UINT) -> None:
    if value is not None:
        _uint(value, name, limit)


def _opt_number(value: object, name: str) -> None:
    if value is not None and not cbor.is_number(value):
        raise EncodeError(f"{name} must be a finite number or None, not {value!r}")


def _aware(value: object, name: str) -> None:
    if not isinstance(value, _dt.datetime):
        raise EncodeError(f"{name} must be a datetime")
    cbor.to_micros(value)


def _record_id(value: object, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != RECORD_ID_LEN:
        raise EncodeError(f"{name} must be {RECORD_ID_LEN} bytes")


_TEST_KEY: Final = "installation_test"


def _present(value: object, *optional: str) -> frozenset[str]:
    """Which of the ``optional`` keys a body map carries (keys written only when they say something)."""
    return frozenset(key for key in optional if isinstance(value, dict) and key in value)


def _bool(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise EncodeError(f"{name} must be bool, not {value!r:.80}")


def _installation_test(f: Fields, present: frozenset[str]) -> bool:
    """A body's ``installation_test``: absent is false; present it must be ``true`` (one encoding per body)."""
    if _TEST_KEY not in present:
        return False
    if f.raw(_TEST_KEY) is not True:
        raise f.fail(_TEST_KEY, "expected true (a body that is not test data leaves the key out)")
    return True


def _json(value: object, path: str, depth: int = 0) -> Any:
    """A deep copy of a JSON-ready value with tuples turned into lists; EncodeError for anything else."""
    if depth > 8:
        raise EncodeError(f"{path}: nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
            raise EncodeError(f"{path}: integer out of the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EncodeError(f"{path}: {value} is not JSON-ready (finite numbers only)")
        return value
    if isinstance(value, list | tuple):
        return [_json(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodeError(f"{path}: key {key!r} is not a string")
            out[key] = _json(item, f"{path}.{key}", depth + 1)
        return out
    raise EncodeError(f"{path}: {type(value).__name__} is not JSON-ready")


# --- bodies --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeasurementBody:
    """A health reading from a meter.

    Attributes:
        uuid: the 16-bit GATT characteristic UUID it came from (0x2A35 for blood pressure).
        raw: the characteristic value exactly as received (at most 512 bytes).
        values: the decoded ``Measurement.as_dict()`` of :mod:`protocols.gatt` (str keys; str, int, float, bool,
            None, lists and maps; finite numbers only). Copied on construction; treat as read-only.
        resident_id: whose reading it is (from the device registry), if known.
        clock_corrected: the hub replaced a wrong device clock with its own time for this reading.
        corrected_time: the corrected time (required exactly when ``clock_corrected``).
        unreliable: the hub or meter flagged the reading as not trustworthy (movement, cuff fit, out of range).
        tolerated: what the hub's tolerant decoding accepted in ``raw`` that the specification does not allow
            (``protocols.gatt.tolerant``); empty when ``raw`` decodes strictly. On the wire only when not empty.
        installation_test: taken during ``carehub provision test``, not the resident's data (§3.10). On the wire
            only when true.
    """

    KIND: ClassVar[RecordKind] = RecordKind.MEASUREMENT
    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"uuid", "raw", "values", "resident", "clock_corrected", "corrected_time", "unreliable"}
    )

    uuid: int
    raw: bytes
    values: Mapping[str, Any]
    resident_id: str | None = None
    clock_corrected: bool = False
    corrected_time: _dt.datetime | None = None
    unreliable: bool = False
    tolerated: frozenset[DecodeTolerance] = frozenset()
    installation_test: bool = False

    def __post_init__(self) -> None:
        _uint(self.uuid, "uuid", 0xFFFF)
        _bool(self.installation_test, "installation_test")
        if not isinstance(self.tolerated, frozenset | set) or not all(
            isinstance(t, DecodeTolerance) for t in self.tolerated
        ):
            raise EncodeError("tolerated must be a set of DecodeTolerance")
        object.__setattr__(self, "tolerated", frozenset(self.tolerated))
        if not isinstance(self.raw, bytes) or len(self.raw) > MAX_RAW_BYTES:
            raise EncodeError(f"raw must be at most {MAX_RAW_BYTES} bytes")
        if not isinstance(self.values, Mapping):
            raise EncodeError("values must be a mapping")
        object.__setattr__(self, "values", _json(self.values, "values"))
        _opt_text(self.resident_id, "resident_id")
        if not isinstance(self.clock_corrected, bool) or not isinstance(self.unreliable, bool):
            raise EncodeError("clock_corrected and unreliable must be bool")
        if self.clock_corrected != (self.corrected_time is not None):
            raise EncodeError("corrected_time is given exactly when clock_corrected is true")
        if self.corrected_time is not None:
            _aware(self.corrected_time, "corrected_time")

    def _to_map(self) -> dict[str, CborValue]:
        out: dict[str, CborValue] = {
            "uuid": self.uuid,
            "raw": self.raw,
            "values": dict(self.values),
            "resident": self.resident_id,
            "clock_corrected": self.clock_corrected,
            "corrected_time": None if self.corrected_time is None else cbor.to_micros(self.corrected_time),
            "unreliable": self.unreliable,
        }
        if self.tolerated:  # only then: a body without it is what hubs before revision 5 wrote
            out["tolerated"] = [*sorted(t.value for t in self.tolerated)]
        if self.installation_test:  # only then: a body without it is what hubs before revision 6 wrote
            out[_TEST_KEY] = True
        return out

    @classmethod
    def _from_map(cls, value: object) -> Self:
        # A body without "tolerated" (every hub before revision 5 of this document) decoded strictly; one without
        # "installation_test" (every hub before revision 6, and every reading outside an installation test) is not
        # test data.
        present = _present(value, "tolerated", _TEST_KEY)
        tolerant = "tolerated" in present
        f = Fields(value, "record.body", cls._KEYS | present)
        values = f.raw("values")
        if not isinstance(values, dict):
            raise f.fail("values", "expected a map")
        _check_finite(values, f)
        tolerated: frozenset[DecodeTolerance] = frozenset()
        if tolerant:
            raw_names = f.raw("tolerated")
            names = [n for n in raw_names if isinstance(n, str)] if isinstance(raw_names, list) else []
            if not names or names != raw_names or names != sorted(set(names)):
                raise f.fail("tolerated", "expected a non-empty, sorted array of distinct names")
            try:
                tolerated = tolerances_from_names(names)
            except ValueError as exc:
                raise f.fail("tolerated", str(exc)) from None
        return cls(
            uuid=f.uint("uuid", 0xFFFF),
            raw=f.bytes_("raw", 0, MAX_RAW_BYTES),
            values=values,
            resident_id=f.opt_text("resident"),
            clock_corrected=f.boolean("clock_corrected"),
            corrected_time=f.opt_time("corrected_time"),
            unreliable=f.boolean("unreliable"),
            tolerated=tolerated,
            installation_test=_installation_test(f, present),
        )


def _check_finite(value: CborValue, f: Fields) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise f.fail("values", "holds a non-finite float")
    if isinstance(value, list):
        for item in value:
            _check_finite(item, f)
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item, f)


@dataclass(frozen=True, slots=True)
class AlarmBody:
    """One step in the life of an alarm raised by the hub's rules.

    Attributes:
        alarm_id: the alarm's id, stable across its states.
        condition: the threshold key that fired (``"bp.systolic.critical"``), or ``"panic"`` for a pendant alarm.
        tier: urgency.
        state: this step.
        revision: 0 for ``raised``, then one more for each later step of the same alarm.
        message: human-readable text (as spoken or shown to the resident, in the hub's language).
        trigger_record_ids: ids of the records that caused this step (at most 64).
        value: the measured value that crossed the threshold, if any.
        threshold: the threshold it crossed, if any.
        resident_id: whose alarm it is, if known.
    """

    KIND: ClassVar[RecordKind] = RecordKind.ALARM
    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"alarm_id", "condition", "tier", "state", "revision", "message", "triggers", "value", "threshold", "resident"}
    )

    alarm_id: str
    condition: str
    tier: AlarmTier
    state: AlarmState
    revision: int
    message: str
    trigger_record_ids: tuple[bytes, ...] = ()
    value: int | float | None = None
    threshold: int | float | None = None
    resident_id: str | None = None

    def __post_init__(self) -> None:
        _text(self.alarm_id, "alarm_id")
        _text(self.condition, "condition")
        if not isinstance(self.tier, AlarmTier) or not isinstance(self.state, AlarmState):
            raise EncodeError("tier and state must be AlarmTier and AlarmState")
        _uint(self.revision, "revision", 2**32 - 1)
        _text(self.message, "message", _LONG_TEXT)
        object.__setattr__(self, "trigger_record_ids", tuple(self.trigger_record_ids))
        if len(self.trigger_record_ids) > MAX_TRIGGERS:
            raise EncodeError(f"at most {MAX_TRIGGERS} trigger record ids")
        for rid in self.trigger_record_ids:
            _record_id(rid, "trigger record id")
        _opt_number(self.value, "value")
        _opt_number(self.threshold, "threshold")
        _opt_text(self.resident_id, "resident_id")

    def _to_map(self) -> dict[str, CborValue]:
        return {
            "alarm_id": self.alarm_id,
            "condition": self.condition,
            "tier": self.tier.value,
            "state": self.state.value,
            "revision": self.revision,
            "message": self.message,
            "triggers": list(self.trigger_record_ids),
            "value": self.value,
            "threshold": self.threshold,
            "resident": self.resident_id,
        }

    @classmethod
    def _from_map(cls, value: object) -> Self:
        f = Fields(value, "record.body", cls._KEYS)
        triggers = f.raw("triggers")
        if not isinstance(triggers, list) or len(triggers) > MAX_TRIGGERS:
            raise f.fail("triggers", f"expected an array of at most {MAX_TRIGGERS} record ids")
        if not all(isinstance(t, bytes) and len(t) == RECORD_ID_LEN for t in triggers):
            raise f.fail("triggers", f"every trigger is a {RECORD_ID_LEN}-byte record id")
        return cls(
            alarm_id=f.text("alarm_id"),
            condition=f.text("condition"),
            tier=f.choice("tier", AlarmTier),
            state=f.choice("state", AlarmState),
            revision=f.uint("revision", 2**32 - 1),
            message=f.text("message", _LONG_TEXT),
            trigger_record_ids=tuple(t for t in triggers if isinstance(t, bytes)),
            value=f.opt_number("value"),
            threshold=f.opt_number("threshold"),
            resident_id=f.opt_text("resident"),
        )


@dataclass(frozen=True, slots=True)
class PanicBody:
    """An authenticated pendant event (see :mod:`protocols.pendant`).

    Attributes:
        pendant_id: the pendant (equal to the record's ``device_id``).
        event: what the resident did.
        counter: the pendant's event counter (uint32, strictly increasing per pendant).
        battery: battery percentage 0..100 as reported, if known.
        alarm_id: the alarm this event raised (press, long press) or cancelled (cancel), if any.
        installation_test: pressed during ``carehub provision test``: no call for help, no alarm (§3.10). On the
            wire only when true.
    """

    KIND: ClassVar[RecordKind] = RecordKind.PANIC
    _KEYS: ClassVar[frozenset[str]] = frozenset({"pendant_id", "event", "counter", "battery", "alarm_id"})

    pendant_id: str
    event: PanicEventType
    counter: int
    battery: int | None = None
    alarm_id: str | None = None
    installation_test: bool = False

    def __post_init__(self) -> None:
        _text(self.pendant_id, "pendant_id")
        _bool(self.installation_test, "installation_test")
        if self.installation_test and self.alarm_id is not None:
            raise EncodeError("an installation-test pendant event raises no alarm (alarm_id must be None)")
        if not isinstance(self.event, PanicEventType):
            raise EncodeError("event must be a PanicEventType")
        _uint(self.counter, "counter", 2**32 - 1)
        _opt_uint(self.battery, "battery", 100)
        _opt_text(self.alarm_id, "alarm_id")

    def _to_map(self) -> dict[str, CborValue]:
        out: dict[str, CborValue] = {
            "pendant_id": self.pendant_id,
            "event": self.event.value,
            "counter": self.counter,
            "battery": self.battery,
            "alarm_id": self.alarm_id,
        }
        if self.installation_test:
            out[_TEST_KEY] = True
        return out

    @classmethod
    def _from_map(cls, value: object) -> Self:
        present = _present(value, _TEST_KEY)
        f = Fields(value, "record.body", cls._KEYS | present)
        return cls(
            pendant_id=f.text("pendant_id"),
            event=f.choice("event", PanicEventType),
            counter=f.uint("counter", 2**32 - 1),
            battery=f.opt_uint("battery", 100),
            alarm_id=f.opt_text("alarm_id"),
            installation_test=_installation_test(f, present),
        )


@dataclass(frozen=True, slots=True)
class ClockCorrection:
    """The hub set a device's clock.

    Attributes:
        old_device_time: the device's time before, as it reported it (local, no zone).
        new_time: the time the hub wrote.
        offset_seconds: device clock minus hub clock before the correction (positive: device was fast); ``None``
            when the device's time could not be read as a date (the hub set the clock anyway).
    """

    _KEYS: ClassVar[frozenset[str]] = frozenset({"old_device_time", "new_time", "offset_s"})

    old_device_time: str
    new_time: _dt.datetime
    offset_seconds: int | float | None

    def __post_init__(self) -> None:
        _text(self.old_device_time, "old_device_time")
        _aware(self.new_time, "new_time")
        _opt_number(self.offset_seconds, "offset_seconds")

    def _to_map(self) -> dict[str, CborValue]:
        return {
            "old_device_time": self.old_device_time,
            "new_time": cbor.to_micros(self.new_time),
            "offset_s": self.offset_seconds,
        }

    @classmethod
    def _from_map(cls, value: object) -> Self:
        f = Fields(value, "record.body.clock", cls._KEYS)
        return cls(f.text("old_device_time"), f.time("new_time"), f.opt_number("offset_s"))


@dataclass(frozen=True, slots=True)
class DeviceStatusBody:
    """A device's battery, link or clock changed, a session failed, or the device misbehaved.

    Attributes:
        battery: battery percentage 0..100, if known.
        link: link state, if it is what changed.
        clock_correction: the clock correction the hub made, if any.
        failure: how the session failed; given exactly when ``link`` is :attr:`LinkState.FAILED`.
        detail: the failure's or the misbehaviour's description (1..256 characters), if any.
        raw: the bytes a misbehaving device sent (at most 512), if any.
    """

    KIND: ClassVar[RecordKind] = RecordKind.DEVICE_STATUS
    _KEYS: ClassVar[frozenset[str]] = frozenset({"battery", "link", "clock", "failure", "detail", "raw"})
    _LEGACY_KEYS: ClassVar[frozenset[str]] = frozenset({"battery", "link", "clock"})

    battery: int | None = None
    link: LinkState | None = None
    clock_correction: ClockCorrection | None = None
    failure: LinkFailure | None = None
    detail: str | None = None
    raw: bytes | None = None

    def __post_init__(self) -> None:
        _opt_uint(self.battery, "battery", 100)
        if self.link is not None and not isinstance(self.link, LinkState):
            raise EncodeError("link must be a LinkState")
        if self.clock_correction is not None and not isinstance(self.clock_correction, ClockCorrection):
            raise EncodeError("clock_correction must be a ClockCorrection")
        if self.failure is not None and not isinstance(self.failure, LinkFailure):
            raise EncodeError("failure must be a LinkFailure")
        if (self.link is LinkState.FAILED) != (self.failure is not None):
            raise EncodeError("failure is given exactly when link is 'failed'")
        _opt_text(self.detail, "detail")
        if self.raw is not None and (not isinstance(self.raw, bytes) or len(self.raw) > MAX_RAW_BYTES):
            raise EncodeError(f"raw must be at most {MAX_RAW_BYTES} bytes")

    def _to_map(self) -> dict[str, CborValue]:
        return {
            "battery": self.battery,
            "link": None if self.link is None else self.link.value,
            "clock": None if self.clock_correction is None else self.clock_correction._to_map(),
            "failure": None if self.failure is None else self.failure.value,
            "detail": self.detail,
            "raw": self.raw,
        }

    @classmethod
    def _from_map(cls, value: object) -> Self:
        # A body of the first revision of §3.4 (three keys) is read as one without failure, detail and raw.
        legacy = isinstance(value, dict) and set(value) == cls._LEGACY_KEYS
        f = Fields(value, "record.body", cls._LEGACY_KEYS if legacy else cls._KEYS)
        clock = f.raw("clock")
        return cls(  # an inconsistent body raises EncodeError, which Record.from_cbor turns into DecodeError
            battery=f.opt_uint("battery", 100),
            link=f.opt_choice("link", LinkState),
            clock_correction=None if clock is None else ClockCorrection._from_map(clock),
            failure=None if legacy else f.opt_choice("failure", LinkFailure),
            detail=None if legacy else f.opt_text("detail"),
            raw=None if legacy else f.opt_bytes("raw", 0, MAX_RAW_BYTES),
        )


@dataclass(frozen=True, slots=True)
class DownRefusedBody:
    """The hub refused a verified down-message it cannot apply (``docs/protocol.md`` §8).

    Attributes:
        down_seq: the refused message's ``seq`` (uint64).
        message_type: the refused message's ``type`` (``thresholds``, ``alarm_ack``, ``alarm_snooze``).
        reason: why.
        key: the offending threshold key or alarm id, if one is to blame.
        detail: a sentence for the platform operator (1..256 characters).
    """

    KIND: ClassVar[RecordKind] = RecordKind.DOWN_REFUSED
    _KEYS: ClassVar[frozenset[str]] = frozenset({"down_seq", "type", "reason", "key", "detail"})

    down_seq: int
    message_type: str
    reason: DownRefusal
    detail: str
    key: str | None = None

    def __post_init__(self) -> None:
        _uint(self.down_seq, "down_seq")
        _text(self.message_type, "message_type", 64)
        if not isinstance(self.reason, DownRefusal):
            raise EncodeError("reason must be a DownRefusal")
        _text(self.detail, "detail")
        _opt_text(self.key, "key")

    def _to_map(self) -> dict[str, CborValue]:
        return {
            "down_seq": self.down_seq,
            "type": self.message_type,
            "reason": self.reason.value,
            "key": self.key,
            "detail": self.detail,
        }

    @classmethod
    def _from_map(cls, value: object) -> Self:
        f = Fields(value, "record.body", cls._KEYS)
        return cls(
            down_seq=f.uint("down_seq"),
            message_type=f.text("type", 64),
            reason=f.choice("reason", DownRefusal),
            detail=f.text("detail"),
            key=f.opt_text("key"),
        )


@dataclass(frozen=True, slots=True)
class DownAppliedBody:
    """The hub applied a verified down-message (``docs/protocol.md`` §3.9), committed with its ``seq``.

    Attributes:
        down_seq: the applied message's ``seq`` (uint64).
        message_type: the applied message's ``type`` (``thresholds``, ``alarm_ack``, ``alarm_snooze``).
    """

    KIND: ClassVar[RecordKind] = RecordKind.DOWN_APPLIED
    _KEYS: ClassVar[frozenset[str]] = frozenset({"down_seq", "type"})

    down_seq: int
    message_type: str

    def __post_init__(self) -> None:
        _uint(self.down_seq, "down_seq")
        _text(self.message_type, "message_type", 64)

    def _to_map(self) -> dict[str, CborValue]:
        return {"down_seq": self.down_seq, "type": self.message_type}

    @classmethod
    def _from_map(cls, value: object) -> Self:
        f = Fields(value, "record.body", cls._KEYS)
        return cls(down_seq=f.uint("down_seq"), message_type=f.text("type", 64))


@dataclass(frozen=True, slots=True)
class EvictionBody:
    """The outbox dropped routine records it could not keep (invariant 4): what, so the platform knows the gap.

    Attributes:
        count: records evicted since the previous eviction report.
        first_seq: lowest record sequence number evicted.
        last_seq: highest record sequence number evicted.
        bytes_freed: bytes of storage freed.
        oldest_record_id: id of the oldest evicted record, if known.
        newest_record_id: id of the newest evicted record, if known.
    """

    KIND: ClassVar[RecordKind] = RecordKind.EVICTION
    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"count", "first_seq", "last_seq", "bytes_freed", "oldest_id", "newest_id"}
    )

    count: int
    first_seq: int
    last_seq: int
    bytes_freed: int
    oldest_record_id: bytes | None = None
    newest_record_id: bytes | None = None

    def __post_init__(self) -> None:
        _uint(self.count, "count")
        _uint(self.first_seq, "first_seq")
        _uint(self.last_seq, "last_seq")
        _uint(self.bytes_freed, "bytes_freed")
        if self.first_seq > self.last_seq:
            raise EncodeError("first_seq must not exceed last_seq")
        for rid in (self.oldest_record_id, self.newest_record_id):
            if rid is not None:
                _record_id(rid, "evicted record id")

    def _to_map(self) -> dict[str, CborValue]:
        return {
            "count": self.count,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "bytes_freed": self.bytes_freed,
            "oldest_id": self.oldest_record_id,
            "newest_id": self.newest_record_id,
        }

    @classmethod
    def _from_map(cls, value: object) -> Self:
        f = Fields(value, "record.body", cls._KEYS)
        return cls(
            count=f.uint("count"),
            first_seq=f.uint("first_seq"),
            last_seq=f.uint("last_seq"),
            bytes_freed=f.uint("bytes_freed"),
            oldest_record_id=f.opt_bytes("oldest_id", RECORD_ID_LEN, RECORD_ID_LEN),
            newest_record_id=f.opt_bytes("newest_id", RECORD_ID_LEN, RECORD_ID_LEN),
        )


@dataclass(frozen=True, slots=True)
class RawReadingBody:
    """A meter's value the hub could not decode even tolerantly: kept, sealed and sent like any reading.

    Attributes:
        uuid: the 16-bit GATT characteristic UUID it came from.
        raw: the characteristic value exactly as received (at most 512 bytes).
        reason: why it does not decode (the decoder's message: characteristic, offset, reason; 1..256 characters).
        resident_id: the resident the device is provisioned for, if known.
        installation_test: received during ``carehub provision test`` (§3.10). On the wire only when true.
    """

    KIND: ClassVar[RecordKind] = RecordKind.RAW_READING
    _KEYS: ClassVar[frozenset[str]] = frozenset({"uuid", "raw", "reason", "resident"})

    uuid: int
    raw: bytes
    reason: str
    resident_id: str | None = None
    installation_test: bool = False

    def __post_init__(self) -> None:
        _uint(self.uuid, "uuid", 0xFFFF)
        _bool(self.installation_test, "installation_test")
        if not isinstance(self.raw, bytes) or len(self.raw) > MAX_RAW_BYTES:
            raise EncodeError(f"raw must be at most {MAX_RAW_BYTES} bytes")
        _text(self.reason, "reason")
        _opt_text(self.resident_id, "resident_id")

    def _to_map(self) -> dict[str, CborValue]:
        out: dict[str, CborValue] = {
            "uuid": self.uuid,
            "raw": self.raw,
            "reason": self.reason,
            "resident": self.resident_id,
        }
        if self.installation_test:
            out[_TEST_KEY] = True
        return out

    @classmethod
    def _from_map(cls, value: object) -> Self:
        present = _present(value, _TEST_KEY)
        f = Fields(value, "record.body", cls._KEYS | present)
        return cls(
            uuid=f.uint("uuid", 0xFFFF),
            raw=f.bytes_("raw", 0, MAX_RAW_BYTES),
            reason=f.text("reason"),
            resident_id=f.opt_text("resident"),
            installation_test=_installation_test(f, present),
        )


Body: TypeAlias = (
    MeasurementBody
    | AlarmBody
    | PanicBody
    | DeviceStatusBody
    | DownRefusedBody
    | DownAppliedBody
    | EvictionBody
    | RawReadingBody
)

_BODIES: Final[dict[RecordKind, type[Body]]] = {
    RecordKind.MEASUREMENT: MeasurementBody,
    RecordKind.ALARM: AlarmBody,
    RecordKind.PANIC: PanicBody,
    RecordKind.DEVICE_STATUS: DeviceStatusBody,
    RecordKind.DOWN_REFUSED: DownRefusedBody,
    RecordKind.DOWN_APPLIED: DownAppliedBody,
    RecordKind.EVICTION: EvictionBody,
    RecordKind.RAW_READING: RawReadingBody,
}
_NEEDS_DEVICE: Final = frozenset(
    {RecordKind.MEASUREMENT, RecordKind.PANIC, RecordKind.DEVICE_STATUS, RecordKind.RAW_READING}
)
_RECORD_KEYS: Final = frozenset({"v", "kind", "id", "hub", "seq", "hub_time", "device_id", "device_time", "body"})


@dataclass(frozen=True, slots=True)
class Record:
    """One record as the hub stores and sends it (``docs/protocol.md`` §3).

    Attributes:
        record_id: 16-byte stable id (see the ``*_record_id`` functions).
        hub_id: the hub that produced it.
        seq: per-hub record sequence number, assigned by the outbox.
        hub_time: when the hub received (measurement, panic) or created (others) it; timezone-aware.
        body: the kind-specific part; its type determines :attr:`kind`.
        device_id: the device concerned; required for measurement, panic and device status records, and equal to
            the pendant id for panic records.
        device_time: the device's own timestamp, as reported, if it sent one.
    """

    record_id: bytes
    hub_id: str
    seq: int
    hub_time: _dt.datetime
    body: Body
    device_id: str | None = None
    device_time: str | None = None
    kind: RecordKind = field(init=False)

    def __post_init__(self) -> None:
        _record_id(self.record_id, "record_id")
        if not isinstance(self.hub_id, str) or not is_valid_hub_id(self.hub_id):
            raise EncodeError(f"{self.hub_id!r} is not a valid hub id")
        _uint(self.seq, "seq")
        _aware(self.hub_time, "hub_time")
        if not isinstance(self.body, tuple(_BODIES.values())):
            raise EncodeError(f"body must be one of the record bodies, not {type(self.body).__name__}")
        object.__setattr__(self, "kind", self.body.KIND)
        _opt_text(self.device_id, "device_id")
        _opt_text(self.device_time, "device_time", 64)
        if self.kind in _NEEDS_DEVICE and self.device_id is None:
            raise EncodeError(f"a {self.kind.value} record needs a device_id")
        if isinstance(self.body, PanicBody) and self.body.pendant_id != self.device_id:
            raise EncodeError("a panic record's device_id is its pendant_id")

    @property
    def installation_test(self) -> bool:
        """Made during ``carehub provision test`` (§3.10): never the resident's data, never an alarm."""
        return isinstance(self.body, MeasurementBody | RawReadingBody | PanicBody) and self.body.installation_test

    def to_cbor(self) -> bytes:
        """The deterministic CBOR encoding.

        Raises:
            EncodeError: the encoding exceeds :data:`MAX_RECORD_BYTES`.
        """
        data = cbor.dumps(
            {
                "v": RECORD_VERSION,
                "kind": self.kind.value,
                "id": self.record_id,
                "hub": self.hub_id,
                "seq": self.seq,
                "hub_time": cbor.to_micros(self.hub_time),
                "device_id": self.device_id,
                "device_time": self.device_time,
                "body": self.body._to_map(),
            },
            "record",
        )
        if len(data) > MAX_RECORD_BYTES:
            raise EncodeError(f"record of {len(data)} bytes exceeds {MAX_RECORD_BYTES}")
        return data

    @classmethod
    def from_cbor(cls, data: bytes) -> Self:
        """Decode one record strictly.

        Raises:
            DecodeError: anything but a valid, deterministically encoded version-1 record.
        """
        if len(data) > MAX_RECORD_BYTES:
            raise DecodeError("record", None, f"{len(data)} bytes exceed {MAX_RECORD_BYTES}")
        f = _record_fields(cbor.loads(data, "record"))
        kind = f.choice("kind", RecordKind)
        try:
            return cls(
                record_id=f.bytes_("id", RECORD_ID_LEN, RECORD_ID_LEN),
                hub_id=f.text("hub", 63),
                seq=f.uint("seq"),
                hub_time=f.time("hub_time"),
                body=_BODIES[kind]._from_map(f.raw("body")),
                device_id=f.opt_text("device_id"),
                device_time=f.opt_text("device_time", 64),
            )
        except EncodeError as exc:
            raise DecodeError("record", None, str(exc)) from exc


def _record_fields(value: CborValue) -> Fields:
    if isinstance(value, dict) and "v" in value and (type(value["v"]) is not int or value["v"] != RECORD_VERSION):
        raise DecodeError("record", None, f"unsupported record version {quote(value['v'])}")
    return Fields(value, "record", _RECORD_KEYS)


def decode_record(data: bytes) -> Record:
    """Same as :meth:`Record.from_cbor`."""
    return Record.from_cbor(data)


# The deterministic encoding orders a record's keys by length, then bytewise: "v", "id", "hub", ... so every
# version-1 record starts with: map(9) "v" 1 "id" bstr(16) <16 bytes> "hub" text(n) <n bytes>.
_PREFIX_V1: Final = bytes.fromhex("a961760162696450")
_HUB_KEY: Final = bytes.fromhex("63687562")


def peek_record_hub(data: bytes) -> str:
    """The ``hub`` of an encoded record, read from its fixed-layout prefix (cheap; used by envelope checks).

    A record that does not start the way every deterministic version-1 record does is decoded in full instead.

    Raises:
        DecodeError: not a version-1 record map.
    """
    start = len(_PREFIX_V1) + RECORD_ID_LEN
    text_at = start + len(_HUB_KEY)
    if data[: len(_PREFIX_V1)] == _PREFIX_V1 and data[start:text_at] == _HUB_KEY and len(data) > text_at:
        head = data[text_at]
        length = head - 0x60
        if 2 <= length <= 23 and len(data) > text_at + length:  # short text: hub ids are 2..63, most under 24
            try:
                hub = data[text_at + 1 : text_at + 1 + length].decode("ascii")
            except UnicodeDecodeError:
                hub = ""
            if is_valid_hub_id(hub):
                return hub
    return _record_fields(cbor.loads(data, "record")).text("hub", 63)


# --- record ids ------------------------------------------------------------------------------------------------------


def _derive_id(parts: Sequence[CborValue]) -> bytes:
    """BLAKE2b-128 keyed with the domain string over the deterministic CBOR array of ``parts``."""
    return hashlib.blake2b(cbor.dumps(list(parts), "record id"), digest_size=RECORD_ID_LEN, key=_ID_KEY).digest()


def measurement_record_id(  # noqa: PLR0917 - the documented signature names every input of the id in order
    device_id: str,
    uuid: int,
    raw: bytes,
    sequence_number: int | None,
    device_timestamp: str | None,
    hub_time: _dt.datetime,
) -> bytes:
    """The stable id of a measurement (invariant 2).

    The id covers the device, the characteristic and the raw bytes, plus the first of these that exists:

    1. the meter's record sequence number (RACP stored records, e.g. Glucose's 16-bit sequence number);
    2. the meter's own timestamp string, as reported;
    3. otherwise the hub's receive time: such a reading has nothing of its own that identifies it, so a
       redelivered indication gets a new id and cannot be deduplicated.

    The raw bytes are included even with a sequence number so that a meter whose sequence numbers restart (memory
    reset, 16-bit wrap) cannot make a new reading collide with an old one.

    Args:
        device_id: the provisioned device's id.
        uuid: the 16-bit characteristic UUID.
        raw: the characteristic value as received.
        sequence_number: the meter's record sequence number, if the reading has one.
        device_timestamp: the meter's timestamp as a string (e.g. ``DateTime.iso()``), if it sent one.
        hub_time: when the hub received the reading (used only in case 3).

    Returns:
        16 bytes.
    """
    _text(device_id, "device_id")
    _uint(uuid, "uuid", 0xFFFF)
    if sequence_number is not None:
        _uint(sequence_number, "sequence_number")
        anchor: list[CborValue] = ["seq", sequence_number]
    elif device_timestamp is not None:
        _text(device_timestamp, "device_timestamp")
        anchor = ["device_time", device_timestamp]
    else:
        anchor = ["received", cbor.to_micros(hub_time)]
    return _derive_id(["measurement", device_id, uuid, *anchor, bytes(raw)])


def raw_reading_record_id(device_id: str, uuid: int, raw: bytes, hub_time: _dt.datetime) -> bytes:
    """The id of a raw reading: (device, characteristic, receive time, raw bytes).

    Nothing in an undecodable value identifies it, so the id is anchored on its receive time, as a measurement with
    neither sequence number nor timestamp is; a reading replayed from the hub's indication journal keeps its receive
    time, and so its id.
    """
    _text(device_id, "device_id")
    _uint(uuid, "uuid", 0xFFFF)
    return _derive_id(["raw_reading", device_id, uuid, "received", cbor.to_micros(hub_time), bytes(raw)])


def alarm_record_id(hub_id: str, alarm_id: str, state: AlarmState, revision: int) -> bytes:
    """The id of one alarm step: (hub, alarm id, state, revision)."""
    _text(alarm_id, "alarm_id")
    _uint(revision, "revision", 2**32 - 1)
    return _derive_id(["alarm", hub_id, alarm_id, state.value, revision])


def panic_record_id(pendant_id: str, counter: int, event: PanicEventType) -> bytes:
    """The id of a pendant event: (pendant, counter, event type); repeats of one event share it."""
    _text(pendant_id, "pendant_id")
    _uint(counter, "counter", 2**32 - 1)
    return _derive_id(["panic", pendant_id, counter, event.value])


def status_record_id(hub_id: str, kind: RecordKind, seq: int) -> bytes:
    """The id of a device status or eviction record: (hub, kind, record sequence number).

    These records are made by the hub itself and are unique by their sequence number; one regenerated after a
    crash (with a new sequence number) is a new report, which is harmless. A ``down_refused`` or ``down_applied``
    record passes the down-message's ``seq`` instead (``docs/protocol.md`` §3.7): each is refused or applied once,
    so one made again after a failed commit keeps its id.
    """
    _uint(seq, "seq")
    return _derive_id(["status", hub_id, kind.value, seq])
