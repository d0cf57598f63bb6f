"""Platform-to-hub messages: signed, addressed, strictly increasing."""

from __future__ import annotations

import datetime as dt

import cbor2
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import cbor
from protocols.errors import AuthenticationError, DecodeError, EncodeError, ReplayError
from protocols.keys import sign_detached
from protocols.messages import (
    DOWN_DOMAIN,
    AlarmAcknowledgement,
    AlarmSnooze,
    DownMessage,
    ThresholdUpdate,
    sign_message,
    verify_message,
)

T0 = dt.datetime(2026, 3, 14, 9, 0, tzinfo=dt.UTC)
PLATFORM = nacl.signing.SigningKey(b"\x01" * 32)
THRESHOLDS = DownMessage(
    "home-a", 5, T0, ThresholdUpdate("resident-1", {"bp.systolic.critical": 180, "spo2.low": 91.5, "hr.high": None})
)
PANIC_ANSWERED = DownMessage(
    "home-a", 6, T0, AlarmAcknowledgement("alarm-17", by="Mei Lin", at=T0, role="daughter", note="on my way")
)

finite = st.floats(allow_nan=False, allow_infinity=False)
bodies = st.one_of(
    st.builds(
        ThresholdUpdate,
        resident_id=st.text(min_size=1, max_size=10),
        values=st.dictionaries(st.text(min_size=1, max_size=20), st.none() | st.integers(-1000, 1000) | finite),
    ),
    st.builds(
        AlarmAcknowledgement,
        alarm_id=st.text(min_size=1, max_size=10),
        by=st.text(min_size=1, max_size=10),
        at=st.just(T0),
        role=st.none() | st.text(min_size=1, max_size=10),
        note=st.none() | st.text(min_size=1, max_size=50),
    ),
    st.builds(
        AlarmSnooze,
        alarm_id=st.text(min_size=1, max_size=10),
        by=st.text(min_size=1, max_size=10),
        duration_seconds=st.integers(1, 86_400),
        at=st.just(T0),
    ),
)


@given(st.integers(0, cbor.MAX_UINT), bodies)
def test_messages_round_trip(seq: int, body: ThresholdUpdate | AlarmAcknowledgement | AlarmSnooze) -> None:
    message = DownMessage("home-a", seq, T0, body)
    assert verify_message(sign_message(message, PLATFORM), PLATFORM.verify_key, "home-a", None) == message


def test_threshold_update_and_panic_answer() -> None:
    for message in (THRESHOLDS, PANIC_ANSWERED):
        assert verify_message(sign_message(message, PLATFORM), PLATFORM.verify_key, "home-a", 4) == message


def test_replayed_or_stale_messages_are_replay_errors() -> None:
    signed = sign_message(THRESHOLDS, PLATFORM)
    for last in (5, 6, 100):
        with pytest.raises(ReplayError):
            verify_message(signed, PLATFORM.verify_key, "home-a", last)


def test_forged_and_misaddressed_messages_are_rejected() -> None:
    with pytest.raises(AuthenticationError):
        verify_message(
            sign_message(THRESHOLDS, nacl.signing.SigningKey(b"\x07" * 32)), PLATFORM.verify_key, "home-a", None
        )
    with pytest.raises(AuthenticationError, match="home-b"):
        verify_message(sign_message(THRESHOLDS, PLATFORM), PLATFORM.verify_key, "home-b", None)
    with pytest.raises(AuthenticationError):
        verify_message(b"\x00" * 10, PLATFORM.verify_key, "home-a", None)


def test_an_ack_signature_does_not_verify_as_a_message() -> None:
    from protocols.acks import ACK_DOMAIN  # noqa: PLC0415 - only this test needs the other domain

    body = cbor2.dumps({"v": 1, "hub": "home-a", "seq": 9, "at": 0, "type": "alarm_ack", "body": {}}, canonical=True)
    with pytest.raises(AuthenticationError):
        verify_message(sign_detached(PLATFORM, ACK_DOMAIN, body) + body, PLATFORM.verify_key, "home-a", None)


@pytest.mark.parametrize(
    "value",
    [
        {"v": 1, "hub": "home-a", "seq": 9, "at": 0, "type": "reboot", "body": {}},
        {"v": 2, "hub": "home-a", "seq": 9, "at": 0, "type": "alarm_ack", "body": {}},
        {
            "v": 1,
            "hub": "home-a",
            "seq": 9,
            "at": 0,
            "type": "thresholds",
            "body": {"resident": "r", "values": {"x": "high"}},
        },
        {"v": 1, "hub": "home-a", "seq": 9, "at": 0, "type": "alarm_ack", "body": {"alarm_id": "a"}},
    ],
)
def test_signed_but_malformed_messages_are_decode_errors(value: object) -> None:
    body = bytes(cbor2.dumps(value, canonical=True))
    with pytest.raises(DecodeError):
        verify_message(sign_detached(PLATFORM, DOWN_DOMAIN, body) + body, PLATFORM.verify_key, "home-a", None)


def test_invalid_messages_cannot_be_built() -> None:
    with pytest.raises(EncodeError):
        ThresholdUpdate("r", {"x": float("nan")})
    with pytest.raises(EncodeError):
        AlarmAcknowledgement("a", by="", at=T0)
    with pytest.raises(EncodeError):
        DownMessage("home-a", -1, T0, THRESHOLDS.body)


def test_snooze_bounds() -> None:
    with pytest.raises(EncodeError, match="duration_seconds"):
        AlarmSnooze("a1", "nurse", 0, T0)
    with pytest.raises(EncodeError, match="duration_seconds"):
        AlarmSnooze("a1", "nurse", 86_401, T0)
