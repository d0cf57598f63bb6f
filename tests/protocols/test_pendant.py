"""Pendant frames: fixed vectors for the firmware, authentication, replay vs repeat, strict parsing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import AuthenticationError, DecodeError, EncodeError, ReplayError
from protocols.pendant import (
    ConfirmFrame,
    DeviceInfo,
    FeedbackFrame,
    FeedbackState,
    PendantEvent,
    PendantEventType,
    PendantVerifier,
)

# The test vector of docs/protocol.md §9.6.
KEY = bytes(range(32))
PENDANT = "pendant-0001"
PRESS_42 = bytes.fromhex("01012a00000057100e0000b43673dd3ad64ca3b3313dd30947339b")
CONFIRM_42 = bytes.fromhex("012a00000062c56b9ef81b74eae07668cdaf8a6800")
HELP_CALLED_42 = bytes.fromhex("01012a00000000008addf1969099d0a9b303ed57b916af64")
DEVICE_INFO = bytes.fromhex("010c70656e64616e742d30303031")

counters = st.integers(1, 2**32 - 1)
events = st.builds(
    PendantEvent,
    event=st.sampled_from(PendantEventType),
    counter=counters,
    battery=st.none() | st.integers(0, 100),
    uptime_seconds=st.integers(0, 2**32 - 1),
)


def hmac_sha256_by_hand(key: bytes, message: bytes) -> bytes:
    """RFC 2104 with only hashlib.sha256, as the MicroPython firmware must do it."""
    block = 64
    key = key.ljust(block, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + message).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).digest()


def test_fixed_vectors() -> None:
    press = PendantEvent(PendantEventType.PRESS, 42, 87, 3600).sign(PENDANT, KEY)
    assert bytes(press) == PRESS_42
    assert bytes(ConfirmFrame(42).sign(PENDANT, KEY)) == CONFIRM_42
    assert bytes(FeedbackFrame(FeedbackState.HELP_CALLED, 42, 0).sign(PENDANT, KEY)) == HELP_CALLED_42
    assert bytes(DeviceInfo(PENDANT)) == DEVICE_INFO
    assert DeviceInfo.from_bytes(DEVICE_INFO) == DeviceInfo(PENDANT)


def test_tag_matches_a_hand_written_hmac() -> None:
    header = PRESS_42[:11]
    message = b"E" + bytes([len(PENDANT)]) + PENDANT.encode() + header
    assert hmac_sha256_by_hand(KEY, message)[:16] == PRESS_42[11:]


def test_valid_press_is_accepted_and_counter_advances() -> None:
    verifier = PendantVerifier(PENDANT, KEY, last_counter=41)
    verified = verifier.verify(PRESS_42)
    assert not verified.repeat
    assert verified.event.event is PendantEventType.PRESS
    assert (verified.event.counter, verified.event.battery, verified.event.uptime_seconds) == (42, 87, 3600)
    assert verifier.last_counter == 42


def test_repeat_of_the_last_event_is_flagged() -> None:
    verifier = PendantVerifier(PENDANT, KEY, last_counter=41)
    verifier.verify(PRESS_42)
    assert verifier.verify(PRESS_42).repeat
    assert verifier.last_counter == 42
    # After a gateway restart that persisted only the counter, the repeat is still recognised.
    assert PendantVerifier(PENDANT, KEY, last_counter=42).verify(PRESS_42).repeat


def test_same_counter_with_other_content_is_refused() -> None:
    verifier = PendantVerifier(PENDANT, KEY, last_counter=41)
    verifier.verify(PRESS_42)
    cancel_42 = bytes(PendantEvent(PendantEventType.CANCEL, 42, 87, 3600).sign(PENDANT, KEY))
    with pytest.raises(ReplayError):
        verifier.verify(cancel_42)


def test_older_counter_is_a_replay() -> None:
    verifier = PendantVerifier(PENDANT, KEY, last_counter=43)
    with pytest.raises(ReplayError):
        verifier.verify(PRESS_42)
    assert verifier.last_counter == 43


def test_wrong_key_or_pendant_is_rejected() -> None:
    with pytest.raises(AuthenticationError):
        PendantVerifier(PENDANT, bytes(32)).verify(PRESS_42)
    with pytest.raises(AuthenticationError):
        PendantVerifier("pendant-0002", KEY).verify(PRESS_42)
    assert issubclass(ReplayError, AuthenticationError)  # callers that only care about "not authentic" catch both


def test_every_bit_flip_is_rejected() -> None:
    for bit in range(len(PRESS_42) * 8):
        tampered = bytearray(PRESS_42)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises((AuthenticationError, DecodeError)):
            PendantVerifier(PENDANT, KEY).verify(bytes(tampered))


def test_confirm_and_feedback_are_authenticated_and_typed() -> None:
    ConfirmFrame.from_bytes(CONFIRM_42).verify(PENDANT, KEY)
    FeedbackFrame.from_bytes(HELP_CALLED_42).verify(PENDANT, KEY)
    with pytest.raises(AuthenticationError):
        ConfirmFrame.from_bytes(CONFIRM_42).verify(PENDANT, bytes(32))
    forged = bytearray(HELP_CALLED_42)
    forged[1] = FeedbackState.ANSWERED
    with pytest.raises(AuthenticationError):
        FeedbackFrame.from_bytes(bytes(forged)).verify(PENDANT, KEY)


def test_a_confirm_tag_is_not_an_event_tag() -> None:
    # Same key, but the label byte keeps frame types apart.
    feedback_tag = HELP_CALLED_42[8:]
    event = PendantEvent(PendantEventType.PRESS, 42, 87, 3600, tag=feedback_tag)
    assert not event.tag_valid(PENDANT, KEY)


@given(events)
def test_events_round_trip(event: PendantEvent) -> None:
    signed = event.sign(PENDANT, KEY)
    assert PendantEvent.from_bytes(bytes(signed)) == signed
    assert PendantVerifier(PENDANT, KEY, last_counter=signed.counter - 1).verify(bytes(signed)).event == signed


@given(st.sampled_from(FeedbackState), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF), counters)
def test_feedback_and_confirm_round_trip(state: FeedbackState, event_counter: int, seq: int, counter: int) -> None:
    feedback = FeedbackFrame(state, event_counter, seq).sign(PENDANT, KEY)
    assert FeedbackFrame.from_bytes(bytes(feedback)) == feedback
    confirm = ConfirmFrame(counter).sign(PENDANT, KEY)
    assert ConfirmFrame.from_bytes(bytes(confirm)) == confirm


@pytest.mark.parametrize(
    ("parse", "frame"),
    [
        (PendantEvent.from_bytes, PRESS_42),
        (ConfirmFrame.from_bytes, CONFIRM_42),
        (FeedbackFrame.from_bytes, HELP_CALLED_42),
        (DeviceInfo.from_bytes, DEVICE_INFO),
    ],
)
def test_prefixes_and_extensions_are_decode_errors(parse: object, frame: bytes) -> None:
    for cut in range(len(frame)):
        with pytest.raises(DecodeError):
            parse(frame[:cut])  # type: ignore[operator]
    with pytest.raises(DecodeError):
        parse(frame + b"\x00")  # type: ignore[operator]


@given(st.binary(max_size=40))
def test_random_bytes_raise_only_decode_or_authentication_errors(data: bytes) -> None:
    with pytest.raises((DecodeError, AuthenticationError)):
        PendantVerifier(PENDANT, KEY).verify(data)


@pytest.mark.parametrize(
    "frame",
    [
        "02012a00000057100e0000" + "00" * 16,  # version 2
        "01072a00000057100e0000" + "00" * 16,  # event type 7
        "01010000000057100e0000" + "00" * 16,  # counter 0
        "01012a00000065100e0000" + "00" * 16,  # battery 101 %
    ],
)
def test_invalid_event_fields(frame: str) -> None:
    with pytest.raises(DecodeError):
        PendantEvent.from_bytes(bytes.fromhex(frame))


def test_invalid_construction() -> None:
    with pytest.raises(EncodeError):
        PendantEvent(PendantEventType.PRESS, 0, None, 0)
    with pytest.raises(EncodeError):
        PendantVerifier("bad id with spaces", KEY)
    with pytest.raises(EncodeError):
        PendantVerifier(PENDANT, b"short")
    with pytest.raises(EncodeError):
        FeedbackFrame(FeedbackState.IDLE, 1, 0x1_0000)
