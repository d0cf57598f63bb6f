# The pendant's side of the carehub pendant GATT protocol v1 (docs/protocol.md §9, protocols/pendant.py).
#
# Every frame is a fixed little-endian layout followed by a 16-byte tag:
#
#     tag = HMAC-SHA256(key, label || len(pendant_id) || pendant_id || frame-without-tag)[:16]
#
# with label b"E" (event), b"C" (confirm), b"F" (feedback) or b"K" (key check, docs/protocol.md §9.7). The hub's PendantVerifier checks what event_frame()
# builds; confirm_counter() and feedback() check what the hub's ConfirmFrame/FeedbackFrame.sign() build. The test
# tests/firmware/test_firmware.py crosses both interpreters byte for byte.

import struct

from hmac_sha256 import equal, hmac_sha256
from micropython import const

VERSION = const(1)
TAG_LEN = const(16)
KEY_LEN = const(32)
_ID_MAX = const(32)
_COUNTER_MAX = const(0xFFFFFFFF)
# The highest counter ever sent, only in the REKEY frame; ordinary events stay below it; 2**32-1 is never valid
# (docs/protocol.md §9.6).
COUNTER_CEILING = const(0xFFFFFFFE)
BATTERY_UNKNOWN = const(0xFF)

# Event types (the "event type" byte).
EV_PRESS = const(1)
EV_LONG_PRESS = const(2)
EV_CANCEL = const(3)
EV_CHECKIN = const(4)
EV_BATTERY_LOW = const(5)
EV_HEARTBEAT = const(6)
EV_REKEY = const(7)  # counters used up: re-provision with a new key (fixed frame at COUNTER_CEILING)

# Feedback states (the "feedback state" byte) the hub may write.
FB_IDLE = const(0)
FB_HELP_CALLED = const(1)
FB_ANSWERED = const(2)
FB_CANCELLED = const(3)
FB_LOW_BATTERY = const(4)
FB_NOT_CONNECTED = const(5)
FB_CHECKIN_OK = const(6)
_FB_LAST = const(6)

# version u8 | event type u8 | counter u32 | battery % u8 (0xFF unknown) | uptime seconds u32   (11 bytes, then tag)
_EVENT = "<BBIBI"
_EVENT_LEN = const(11)
# version u8 | confirmed event counter u32                                                       (5 bytes, then tag)
_CONFIRM = "<BI"
_CONFIRM_LEN = const(5)
# version u8 | feedback state u8 | event counter u32 | feedback seq u16                          (8 bytes, then tag)
_FEEDBACK = "<BBIH"
_FEEDBACK_LEN = const(8)

_LABEL_EVENT = b"E"
_LABEL_CONFIRM = b"C"
_LABEL_FEEDBACK = b"F"
_LABEL_KEY_CHECK = b"K"
# version u8 | nonce (8): the hub's key challenge; the answer is the same 9 bytes, then tag      (9 bytes, 9 + 16)
_CHALLENGE_LEN = const(9)


def check_id(pendant_id: bytes) -> bool:
    """Whether `pendant_id` is a valid id: 1..32 of A-Z a-z 0-9 . _ : - (ASCII bytes)."""
    if not 1 <= len(pendant_id) <= _ID_MAX:
        return False
    for c in pendant_id:
        if not (48 <= c <= 58 or 65 <= c <= 90 or 97 <= c <= 122 or c in b"._-"):
            return False  # 58 is ":", just after "9"
    return True


def tag(key: bytes, label: bytes, pendant_id: bytes, header: bytes) -> bytes:
    """HMAC-SHA256(key, label || len(id) || id || header)[:16]."""
    return hmac_sha256(key, label, bytes((len(pendant_id),)), pendant_id, header)[:TAG_LEN]


def event_frame(key: bytes, pendant_id: bytes, event: int, counter: int, battery: int, uptime_s: int) -> bytes:
    """The 27-byte Event frame. `battery` is 0..100, or BATTERY_UNKNOWN."""
    if not 1 <= counter <= COUNTER_CEILING or (event == EV_REKEY) != (counter == COUNTER_CEILING):
        raise ValueError("counter")
    if battery > 100:
        battery = BATTERY_UNKNOWN
    header = struct.pack(_EVENT, VERSION, event, counter, battery, uptime_s & _COUNTER_MAX)
    return header + tag(key, _LABEL_EVENT, pendant_id, header)


def rekey_frame(key: bytes, pendant_id: bytes) -> bytes:
    """The one REKEY frame of this key: counter COUNTER_CEILING, battery unknown, uptime 0 (the same bytes always)."""
    return event_frame(key, pendant_id, EV_REKEY, COUNTER_CEILING, BATTERY_UNKNOWN, 0)


def event_counter(frame: bytes) -> int:
    """The counter of an Event frame this pendant built."""
    counter: int = struct.unpack_from(_EVENT, frame)[2]
    return counter


def confirm_counter(key: bytes, pendant_id: bytes, data: bytes) -> int:
    """The counter an authentic Confirm frame names, or 0 when the frame is malformed or forged."""
    if len(data) != _CONFIRM_LEN + TAG_LEN or data[0] != VERSION:
        return 0
    header = data[:_CONFIRM_LEN]
    if not equal(tag(key, _LABEL_CONFIRM, pendant_id, header), data[_CONFIRM_LEN:]):
        return 0
    counter: int = struct.unpack(_CONFIRM, header)[1]
    return counter if counter <= COUNTER_CEILING else 0


def feedback(key: bytes, pendant_id: bytes, data: bytes) -> tuple[int, int, int] | None:
    """(state, event counter, feedback seq) of an authentic Feedback frame, or None when malformed or forged.

    Freshness (the pair ordering) is the caller's job: see app.Pendant.on_feedback().
    """
    if len(data) != _FEEDBACK_LEN + TAG_LEN or data[0] != VERSION or data[1] > _FB_LAST:
        return None
    header = data[:_FEEDBACK_LEN]
    if not equal(tag(key, _LABEL_FEEDBACK, pendant_id, header), data[_FEEDBACK_LEN:]):
        return None
    _, state, counter, seq = struct.unpack(_FEEDBACK, header)
    if counter > COUNTER_CEILING:
        return None
    return (state, counter, seq)


def key_answer(key: bytes, pendant_id: bytes, data: bytes) -> bytes | None:
    """The Key Check answer to the hub's challenge `data` (version | nonce | tag), or None when it is malformed.

    The hub checks it at pairing, before it saves the key it was given (protocols.pendant.KeyAnswer.verify)."""
    if len(data) != _CHALLENGE_LEN or data[0] != VERSION:
        return None
    challenge = bytes(data)
    return challenge + tag(key, _LABEL_KEY_CHECK, pendant_id, challenge)


def device_info(pendant_id: bytes) -> bytes:
    """The Device Info value: version u8 | id length u8 | id."""
    return bytes((VERSION, len(pendant_id))) + pendant_id
