"""Topics, uplink frames and platform acks."""

from __future__ import annotations

import datetime as dt

import cbor2
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import cbor
from protocols.acks import PERMANENT_REJECTIONS, Ack, Rejected, sign_ack, verify_ack
from protocols.errors import AuthenticationError, DecodeError, EncodeError, EnvelopeRejection
from protocols.topics import (
    MAX_UPLINK_BYTES,
    MAX_UPLINK_ENVELOPES,
    ParsedTopic,
    TopicError,
    TopicKind,
    ack_topic,
    alarm_topic,
    decode_uplink,
    down_topic,
    encode_uplink,
    is_valid_hub_id,
    parse_topic,
    shared_alarm_filter,
    shared_uplink_filter,
    up_topic,
)

T0 = dt.datetime(2026, 3, 14, 9, 0, tzinfo=dt.UTC)
PLATFORM = nacl.signing.SigningKey(b"\x01" * 32)
hub_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{1,62}", fullmatch=True)


def test_topic_layout() -> None:
    assert up_topic("home-0042") == "carehub/v1/home-0042/up"
    assert ack_topic("home-0042") == "carehub/v1/home-0042/ack"
    assert down_topic("home-0042") == "carehub/v1/home-0042/down"
    assert shared_uplink_filter("ingest") == "$share/ingest/carehub/v1/+/up"
    assert alarm_topic("home-0042") == "carehub/v1/home-0042/alarm"
    assert shared_alarm_filter("ingest") == "$share/ingest/carehub/v1/+/alarm"


@given(hub_ids, st.sampled_from(TopicKind))
def test_topics_parse_back(hub: str, kind: TopicKind) -> None:
    makers = {
        TopicKind.UP: up_topic,
        TopicKind.ALARM: alarm_topic,
        TopicKind.ACK: ack_topic,
        TopicKind.DOWN: down_topic,
    }
    topic = makers[kind](hub)
    assert parse_topic(topic) == ParsedTopic(hub, kind)


@pytest.mark.parametrize("hub", ["", "a", "-home", "Home", "home/1", "home+", "home#", "h" * 64, "home 1", "hé"])
def test_invalid_hub_ids(hub: str) -> None:
    assert not is_valid_hub_id(hub)
    with pytest.raises(EncodeError):
        up_topic(hub)


@pytest.mark.parametrize(
    "topic",
    [
        "carehub/v1/home-1",
        "carehub/v2/home-1/up",
        "carehub/v1/home-1/up/extra",
        "carehub/v1/+/up",
        "carehub/v1/home-1/sideways",
        "other/v1/home-1/up",
        "",
    ],
)
def test_foreign_topics_are_topic_errors(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#"])
def test_invalid_share_groups(group: str) -> None:
    with pytest.raises(EncodeError):
        shared_uplink_filter(group)


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=MAX_UPLINK_ENVELOPES))
def test_uplink_frames_round_trip(envelopes: list[bytes]) -> None:
    assert decode_uplink(encode_uplink(envelopes)) == tuple(envelopes)


def test_uplink_limits() -> None:
    with pytest.raises(EncodeError):
        encode_uplink([])
    with pytest.raises(EncodeError):
        encode_uplink([b"x"] * (MAX_UPLINK_ENVELOPES + 1))
    with pytest.raises(EncodeError):
        encode_uplink([bytes(MAX_UPLINK_BYTES // 2)] * 2)
    with pytest.raises(DecodeError):
        decode_uplink(bytes(MAX_UPLINK_BYTES + 1))


@pytest.mark.parametrize(
    "value",
    [
        {"v": 2, "envelopes": [b"x"]},
        {"v": 1.0, "envelopes": [b"x"]},
        {"v": True, "envelopes": [b"x"]},
        {"v": 1, "envelopes": []},
        {"v": 1, "envelopes": ["x"]},
        {"v": 1},
        [1, [b"x"]],
    ],
)
def test_malformed_uplink_frames(value: object) -> None:
    with pytest.raises(DecodeError):
        decode_uplink(bytes(cbor2.dumps(value, canonical=True)))


def test_uplink_prefixes_are_decode_errors() -> None:
    frame = encode_uplink([b"abc", b"defg"])
    for cut in range(len(frame)):
        with pytest.raises(DecodeError):
            decode_uplink(frame[:cut])


# --- acks --------------------------------------------------------------------------------------------------------


ACK = Ack(
    "home-a",
    ack_seq=9,
    issued_at=T0,
    stored=(1, 2, 3),
    rejected=(Rejected(4, EnvelopeRejection.CANNOT_OPEN), Rejected(5, EnvelopeRejection.UNKNOWN_HUB)),
)


def test_ack_round_trip() -> None:
    assert verify_ack(sign_ack(ACK, PLATFORM), PLATFORM.verify_key, "home-a") == ACK


@given(
    st.lists(st.integers(0, cbor.MAX_UINT), max_size=20),
    st.lists(st.tuples(st.integers(0, cbor.MAX_UINT), st.sampled_from(EnvelopeRejection)), max_size=5),
    st.integers(0, cbor.MAX_UINT),
)
def test_acks_round_trip(stored: list[int], rejected: list[tuple[int, EnvelopeRejection]], ack_seq: int) -> None:
    ack = Ack("home-a", ack_seq, T0, tuple(stored), tuple(Rejected(s, r) for s, r in rejected))
    assert verify_ack(sign_ack(ack, PLATFORM), PLATFORM.verify_key, "home-a") == ack


def test_permanent_rejections() -> None:
    assert ACK.rejected[0].permanent
    assert not ACK.rejected[1].permanent
    assert EnvelopeRejection.UNKNOWN_HUB not in PERMANENT_REJECTIONS


def test_ack_not_signed_by_the_platform_is_rejected() -> None:
    forged = sign_ack(ACK, nacl.signing.SigningKey(b"\x09" * 32))
    with pytest.raises(AuthenticationError):
        verify_ack(forged, PLATFORM.verify_key, "home-a")


def test_ack_for_another_hub_is_rejected() -> None:
    with pytest.raises(AuthenticationError, match="home-b"):
        verify_ack(sign_ack(ACK, PLATFORM), PLATFORM.verify_key, "home-b")


def test_every_bit_flip_of_an_ack_is_rejected() -> None:
    signed = sign_ack(ACK, PLATFORM)
    for bit in range(len(signed) * 8):
        tampered = bytearray(signed)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AuthenticationError):
            verify_ack(bytes(tampered), PLATFORM.verify_key, "home-a")


def test_signed_but_malformed_ack_is_a_decode_error() -> None:
    from protocols.acks import ACK_DOMAIN  # noqa: PLC0415 - only this test signs raw bodies
    from protocols.keys import sign_detached  # noqa: PLC0415 - same

    body = bytes(cbor2.dumps({"v": 1, "hub": "home-a"}, canonical=True))
    with pytest.raises(DecodeError):
        verify_ack(sign_detached(PLATFORM, ACK_DOMAIN, body) + body, PLATFORM.verify_key, "home-a")
