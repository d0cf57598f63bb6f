"""The pendant key check (docs/protocol.md §9.7, issue 16 item 3): the vectors of §9.5, round trips, and that an
answer verifies only for its challenge, key and id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import AuthenticationError, DecodeError, EncodeError
from protocols.pendant import (
    KEY_CHECK_CHAR_UUID,
    NONCE_LEN,
    TAG_LEN,
    KeyAnswer,
    KeyChallenge,
    PendantEvent,
    PendantEventType,
)

KEY = bytes(range(32))
PENDANT = "pendant-0001"
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
CHALLENGE_HEX = "01a0a1a2a3a4a5a6a7"
ANSWER_HEX = "01a0a1a2a3a4a5a6a7f4001f397003f1ed712fb6f3f3d02256"
nonces = st.binary(min_size=NONCE_LEN, max_size=NONCE_LEN)
keys = st.binary(min_size=32, max_size=32)


def test_vectors_match_the_document() -> None:
    challenge = KeyChallenge(bytes(range(0xA0, 0xA8)))
    assert bytes(challenge).hex() == CHALLENGE_HEX
    assert bytes(challenge.answer(PENDANT, KEY)).hex() == ANSWER_HEX
    doc = DOC.read_text(encoding="utf-8")
    assert f"`{CHALLENGE_HEX}`" in doc
    assert f"`{ANSWER_HEX}`" in doc
    assert str(KEY_CHECK_CHAR_UUID) in doc
    assert re.search(r"^### 9\.7 Key check", doc, re.MULTILINE)


@given(nonces, keys)
def test_an_answer_verifies_under_its_key_and_round_trips(nonce: bytes, key: bytes) -> None:
    challenge = KeyChallenge(nonce)
    assert KeyChallenge.from_bytes(bytes(challenge)) == challenge
    answer = KeyAnswer.from_bytes(bytes(challenge.answer(PENDANT, key)))
    assert answer.answers(challenge)
    answer.verify(challenge, PENDANT, key)


@given(nonces, keys, keys)
def test_another_key_does_not_match(nonce: bytes, key: bytes, other: bytes) -> None:
    challenge = KeyChallenge(nonce)
    answer = challenge.answer(PENDANT, key)
    if other != key:
        with pytest.raises(AuthenticationError, match="key check tag does not verify"):
            answer.verify(challenge, PENDANT, other)
    with pytest.raises(AuthenticationError, match="key check tag does not verify"):
        answer.verify(challenge, "C0:00:00:00:00:0A", key)  # another id


@given(nonces, nonces)
def test_a_stale_answer_is_refused(nonce: bytes, other: bytes) -> None:
    answer = KeyChallenge(nonce).answer(PENDANT, KEY)
    if other != nonce:
        with pytest.raises(AuthenticationError, match="another challenge"):
            answer.verify(KeyChallenge(other), PENDANT, KEY)


def test_the_label_keeps_an_answer_from_passing_as_an_event_tag() -> None:
    # An event header is 11 bytes, a challenge 9: and even at equal input, label K differs from E.
    answer = KeyChallenge(bytes(NONCE_LEN)).answer(PENDANT, KEY)
    event = PendantEvent(PendantEventType.PRESS, 1, 50, 0).sign(PENDANT, KEY)
    assert answer.tag != event.tag
    assert len(answer.tag) == TAG_LEN


@pytest.mark.parametrize(
    "data",
    [b"", bytes.fromhex(CHALLENGE_HEX)[:-1], bytes.fromhex(CHALLENGE_HEX) + b"\0", b"\x02" + bytes(NONCE_LEN)],
)
def test_malformed_challenges_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        KeyChallenge.from_bytes(data)


@pytest.mark.parametrize("data", [b"", bytes.fromhex(CHALLENGE_HEX), bytes.fromhex(ANSWER_HEX)[:-1]])
def test_malformed_answers_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        KeyAnswer.from_bytes(data)


def test_bad_fields_refused() -> None:
    with pytest.raises(EncodeError):
        KeyChallenge(b"short")
    with pytest.raises(EncodeError):
        KeyAnswer(bytes(NONCE_LEN), b"short")
    assert KeyChallenge.fresh() != KeyChallenge.fresh()  # 2**-64 to collide
