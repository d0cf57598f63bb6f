"""Pendant frames: fixed vectors for the firmware, authentication, replay vs repeat, strict parsing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import AuthenticationError, DecodeError, EncodeError, ReplayError
from protocols.pendant import (
    COUNTER_CEILING,
    EVENT,
    REKEY_DUE_AT,
    ConfirmFrame,
    DeviceInfo,
    FeedbackFrame,
    FeedbackState,
    PendantCounterState,
    PendantEvent,
    PendantEventType,
    PendantVerifier,
    compute_tag,
    key_id,
)

# The test vectors of docs/protocol.md §9.5.
KEY = bytes(range(32))
PENDANT = "pendant-0001"
PRESS_42 = bytes.fromhex("01012a00000057100e0000b43673dd3ad64ca3b3313dd30947339b")
CONFIRM_42 = bytes.fromhex("012a00000062c56b9ef81b74eae07668cdaf8a6800")
HELP_CALLED_42 = bytes.fromhex("01012a00000000008addf1969099d0a9b303ed57b916af64")
DEVICE_INFO = bytes.fromhex("010c70656e64616e742d30303031")
REKEY = bytes.fromhex("0107feffffffff000000007851f3566c01f3c04d6a18b57ebd9e1c")
OTHER_KEY = bytes(range(32, 64))

ORDINARY = [t for t in PendantEventType if t is not PendantEventType.REKEY]
counters = st.integers(1, COUNTER_CEILING - 1)
events = st.one_of(
    st.builds(
        PendantEvent,
        event=st.sampled_from(ORDINARY),
        counter=counters,
        battery=st.none() | st.integers(0, 100),
        uptime_seconds=st.integers(0, 2**32 - 1),
    ),
    st.just(PendantEvent.rekey()),
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
    assert bytes(PendantEvent.rekey().sign(PENDANT, KEY)) == REKEY
    assert key_id(KEY) == bytes.fromhex("a9f35ca087de8745")


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


@given(st.sampled_from(FeedbackState), st.integers(0, COUNTER_CEILING), st.integers(0, 0xFFFF), counters)
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
        "01082a00000057100e0000" + "00" * 16,  # event type 8
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


# -- the counter ceiling and re-keying (docs/protocol.md §9.6) ----------------------------------------------------


def _signed_event(event: int, counter: int, battery: int = 0xFF, uptime: int = 0, key: bytes = KEY) -> bytes:
    """An Event frame with any header fields, correctly signed (what a holder of the key could send)."""
    header = EVENT.pack(1, event, counter, battery, uptime)
    return header + compute_tag(key, b"E", PENDANT, header)


def test_an_authentic_frame_at_2_32_minus_1_cannot_lock_a_pendant_out() -> None:
    # Issue 19 item 4: accepting counter 2**32-1 once made every later event "older". It is no frame at all now.
    verifier = PendantVerifier(PENDANT, KEY, last_counter=41)
    with pytest.raises(DecodeError, match="ceiling"):
        verifier.verify(_signed_event(PendantEventType.PRESS, 2**32 - 1, 80, 5))
    assert verifier.last_counter == 41
    assert verifier.verify(PRESS_42).event.counter == 42


@given(st.integers(COUNTER_CEILING + 1, 2**32 - 1), st.sampled_from(list(PendantEventType)))
def test_no_frame_names_a_counter_above_the_ceiling(counter: int, event: PendantEventType) -> None:
    with pytest.raises(DecodeError):
        PendantEvent.from_bytes(_signed_event(event, counter))
    confirm_header = bytes([1]) + counter.to_bytes(4, "little")
    with pytest.raises(DecodeError):
        ConfirmFrame.from_bytes(confirm_header + compute_tag(KEY, b"C", PENDANT, confirm_header))
    feedback_header = bytes([1, 1]) + counter.to_bytes(4, "little") + bytes(2)
    with pytest.raises(DecodeError):
        FeedbackFrame.from_bytes(feedback_header + compute_tag(KEY, b"F", PENDANT, feedback_header))
    with pytest.raises(EncodeError):
        ConfirmFrame(counter)
    with pytest.raises(EncodeError):
        FeedbackFrame(FeedbackState.IDLE, counter, 0)


@given(
    st.sampled_from(list(PendantEventType)),
    st.integers(1, COUNTER_CEILING),
    st.integers(0, 100) | st.just(0xFF),
    st.integers(0, 2**32 - 1),
)
def test_the_ceiling_counter_is_the_fixed_rekey_frame_and_nothing_else(
    event: PendantEventType, counter: int, battery: int, uptime: int
) -> None:
    frame = _signed_event(event, counter, battery, uptime)
    rekey = event is PendantEventType.REKEY
    fixed = counter == COUNTER_CEILING and battery == 0xFF and uptime == 0
    if rekey != (counter == COUNTER_CEILING) or (rekey and not fixed):
        with pytest.raises(DecodeError):
            PendantEvent.from_bytes(frame)
    else:
        parsed = PendantEvent.from_bytes(frame)
        assert (parsed.event, parsed.counter) == (event, counter)
        assert (parsed == PendantEvent.rekey().sign(PENDANT, KEY)) == rekey


def test_rekey_is_accepted_once_then_only_repeated() -> None:
    verifier = PendantVerifier(PENDANT, KEY, last_counter=COUNTER_CEILING - 3)
    assert (verifier.rekey_due, verifier.exhausted) == (True, False)
    accepted = verifier.verify(REKEY)
    assert (accepted.event.event, accepted.repeat) == (PendantEventType.REKEY, False)
    assert verifier.exhausted
    assert verifier.verify(REKEY).repeat  # re-sent after a reboot: the same bytes, confirmed again
    with pytest.raises(ReplayError):
        verifier.verify(_signed_event(PendantEventType.PRESS, COUNTER_CEILING - 1, 50, 1))


def test_a_pendant_at_the_ceiling_is_not_locked_out_after_re_keying() -> None:
    hub = PendantVerifier(PENDANT, KEY, last_counter=COUNTER_CEILING - 1)
    hub.verify(REKEY)
    saved = PendantCounterState.from_bytes(bytes(hub.state()))
    assert saved == PendantCounterState(key_id(KEY), COUNTER_CEILING, REKEY[11:])
    # A hub restart under the same key resumes where it was: still exhausted, old frames still replays.
    same = PendantVerifier.restore(PENDANT, KEY, saved)
    assert same.exhausted
    assert same.verify(REKEY).repeat
    with pytest.raises(ReplayError):
        same.verify(PRESS_42)
    # Re-provisioned with a new key: the pendant counts from 1 again and the hub accepts it ...
    rekeyed = PendantVerifier.restore(PENDANT, OTHER_KEY, saved)
    assert (rekeyed.last_counter, rekeyed.exhausted, rekeyed.rekey_due) == (0, False, False)
    first = bytes(PendantEvent(PendantEventType.PRESS, 1, 90, 2).sign(PENDANT, OTHER_KEY))
    assert not rekeyed.verify(first).repeat
    # ... and nothing signed under the old key, however high or low its counter, gets through.
    for old in (PRESS_42, REKEY, _signed_event(PendantEventType.PRESS, 2, 90, 3)):
        with pytest.raises(AuthenticationError):
            rekeyed.verify(old)
    assert PendantVerifier.restore(PENDANT, OTHER_KEY, None).last_counter == 0


@given(st.integers(0, 2**32 - 1), st.none() | st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32))
def test_saved_state_is_resumed_only_under_its_own_key(last: int, tag: bytes | None, other: bytes) -> None:
    saved = PendantCounterState(key_id(KEY), last, tag)
    assert PendantCounterState.from_bytes(bytes(saved)) == saved
    resumed = PendantVerifier.restore(PENDANT, KEY, saved)
    assert (resumed.last_counter, resumed.last_tag) == (last, tag)  # the same key never resets a counter
    assert resumed.exhausted == (last >= COUNTER_CEILING)
    assert resumed.rekey_due == (last >= REKEY_DUE_AT)
    fresh = PendantVerifier.restore(PENDANT, other, saved)
    assert fresh.last_counter == (last if other == KEY else 0)


@given(st.binary(max_size=40))
def test_counter_state_parsing_raises_only_decode_errors(data: bytes) -> None:
    try:
        state = PendantCounterState.from_bytes(data)
    except DecodeError:
        return
    assert bytes(state) == data


@given(st.lists(st.integers(1, COUNTER_CEILING), min_size=1, max_size=30))
def test_counter_rules_under_one_key(sent: list[int]) -> None:
    """Whatever order frames arrive in, a new event is accepted only above the mark, the mark never goes down, and
    once REKEY is in nothing but its repeat is."""
    verifier = PendantVerifier(PENDANT, KEY)
    for counter in sent:
        kind = PendantEventType.REKEY if counter == COUNTER_CEILING else PendantEventType.CHECKIN
        frame = bytes(PendantEvent(kind, counter, None, 0 if counter == COUNTER_CEILING else 7).sign(PENDANT, KEY))
        before = verifier.last_counter
        try:
            verified = verifier.verify(frame)
        except ReplayError:
            assert counter < before
            assert verifier.last_counter == before
            continue
        assert counter >= before
        assert verified.repeat == (counter == before)
        assert verifier.last_counter == counter
    assert verifier.exhausted == (COUNTER_CEILING in sent)
