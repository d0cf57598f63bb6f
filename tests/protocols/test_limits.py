"""Values at and beyond the protocol's limits (issue 19 items 2 and 3, issue 17 item 6).

Every unsigned integer on the wire is ``0..2**63 - 1`` unless its format names a narrower range
(``docs/protocol.md`` §1, integer ranges): encoders refuse more with ``EncodeError``, decoders with ``DecodeError``
(``malformed`` for envelopes), so no storage engine ever meets a value it cannot hold. A bignum, however large, is a
``DecodeError`` at every entry point, never the ``ValueError`` of Python's int-to-str digit limit.
"""

from __future__ import annotations

import datetime as dt

import cbor2
import nacl.public
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import cbor
from protocols.acks import ACK_DOMAIN, MAX_ACK_BYTES, MAX_ACK_ENTRIES, Ack, Rejected, sign_ack, verify_ack
from protocols.cbor import MAX_UINT, Fields
from protocols.envelope import ENVELOPE_DOMAIN, open_envelope, seal
from protocols.errors import AuthenticationError, DecodeError, EncodeError, EnvelopeError, EnvelopeRejection, quote
from protocols.keys import HubIdentity, sign_detached
from protocols.messages import DOWN_DOMAIN, AlarmSnooze, DownMessage, sign_message, verify_message
from protocols.record import MeasurementBody, Record, decode_record, peek_record_hub
from protocols.topics import decode_uplink

T0 = dt.datetime(2026, 3, 14, 9, 0, tzinfo=dt.UTC)
HUB = HubIdentity("home-a", nacl.signing.SigningKey(b"\x0a" * 32))
PLATFORM = nacl.signing.SigningKey(b"\x01" * 32)
BOX = nacl.public.PrivateKey(b"\x02" * 32)
BIGNUM = b"\xc2\x59\x07\x00" + b"\xff" * 1792  # the reproducer of issue 19 item 2
OVER = (2**63, 2**64 - 1)


def canon(value: object) -> bytes:
    return bytes(cbor2.dumps(value, canonical=True))


def with_item(value: dict[str, object], key: str, raw: bytes) -> bytes:
    """The deterministic encoding of the map ``value`` with the item under ``key`` replaced by the bytes ``raw``."""
    keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
    head = bytes([0xA0 + len(keys)])
    return head + b"".join(canon(k) + (raw if k == key else canon(value[k])) for k in keys)


def record(seq: int = 7) -> Record:
    body = MeasurementBody(uuid=0x2A35, raw=b"\x1e\x78\x00", values={"systolic": 120})
    return Record(bytes(16), "home-a", seq, T0, body, device_id="cuff")


def ack_body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {"v": 1, "hub": "home-a", "ack_seq": 1, "at": 0, "stored": [], "rejected": []}
    return body | changes


def down_body(**changes: object) -> dict[str, object]:
    snooze = {"alarm_id": "a-1", "by": "Mei Lin", "duration_s": 600, "at": 0}
    body: dict[str, object] = {"v": 1, "hub": "home-a", "seq": 9, "at": 0, "type": "alarm_snooze", "body": snooze}
    return body | changes


def inner(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {"v": 1, "hub": "home-a", "seq": 1, "sealed_at": 0, "records": [record().to_cbor()]}
    return body | changes


def signed_ack(body: bytes) -> bytes:
    return sign_detached(PLATFORM, ACK_DOMAIN, body) + body


def signed_down(body: bytes) -> bytes:
    return sign_detached(PLATFORM, DOWN_DOMAIN, body) + body


def sealed(body: bytes) -> bytes:
    plaintext = sign_detached(HUB.signing_key, ENVELOPE_DOMAIN, body) + body
    return bytes(nacl.public.SealedBox(BOX.public_key).encrypt(plaintext))


def open_(data: bytes) -> object:
    return open_envelope(data, BOX, {"home-a": HUB.verify_key}, expected_hub="home-a")


# --- the bignum reproducer at every entry point ---------------------------------------------------------------------


def test_the_issue_19_bignum_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="tags are not part of the carehub data model"):
        cbor.loads(BIGNUM)
    with pytest.raises(DecodeError):
        cbor.loads(b"\xc3\x59\x07\x00" + b"\xff" * 1792)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: decode_uplink(with_item({"v": 1, "envelopes": []}, "envelopes", BIGNUM)), id="uplink"),
        pytest.param(lambda: decode_uplink(with_item({"v": 1, "envelopes": []}, "v", BIGNUM)), id="uplink.v"),
        pytest.param(lambda: decode_record(BIGNUM), id="record"),
        pytest.param(lambda: peek_record_hub(BIGNUM), id="record.hub"),
        pytest.param(lambda: verify_ack(signed_ack(BIGNUM), PLATFORM.verify_key, "home-a"), id="ack"),
        pytest.param(
            lambda: verify_ack(
                signed_ack(with_item(ack_body(), "stored", b"\x81" + BIGNUM)), PLATFORM.verify_key, "home-a"
            ),
            id="ack.stored",
        ),
        pytest.param(lambda: verify_message(signed_down(BIGNUM), PLATFORM.verify_key, "home-a", None), id="down"),
        pytest.param(
            lambda: verify_message(
                signed_down(with_item(down_body(), "seq", BIGNUM)), PLATFORM.verify_key, "home-a", 1
            ),
            id="down.seq",
        ),
    ],
)
def test_a_bignum_is_a_decode_error_at_every_entry_point(call: object) -> None:
    with pytest.raises(DecodeError):
        call()  # type: ignore[operator]


def test_a_record_version_bignum_is_a_decode_error() -> None:
    """``_record_fields`` formats the version into its message: it must never meet a huge int."""
    encoded = cbor.loads(record().to_cbor())
    assert isinstance(encoded, dict)
    with pytest.raises(DecodeError):
        decode_record(with_item(encoded, "v", BIGNUM))


@pytest.mark.parametrize("body", [BIGNUM, with_item(inner(), "seq", BIGNUM), with_item(inner(), "records", BIGNUM)])
def test_a_bignum_envelope_is_malformed_before_its_signature_is_checked(body: bytes) -> None:
    unsigned = bytes(nacl.public.SealedBox(BOX.public_key).encrypt(bytes(64) + body))  # anyone can seal this
    for data in (unsigned, sealed(body)):
        with pytest.raises(EnvelopeError) as info:
            open_(data)
        assert info.value.reason is EnvelopeRejection.MALFORMED


def test_every_tag_cbor2_knows_is_refused_before_its_decoder_runs() -> None:
    """A cbor2 upgrade that decodes a new tag itself (dates, regexes, MIME...) must not reach untrusted bytes."""
    for tag in [*range(70_000), 2**32 - 1, 2**32, 2**64 - 1]:
        data = cbor2.dumps(cbor2.CBORTag(tag, 0))
        with pytest.raises(DecodeError, match="tags are not part of the carehub data model"):
            cbor.loads(data)


# --- integer ranges -------------------------------------------------------------------------------------------------


def test_max_uint_is_the_signed_64_bit_limit() -> None:
    assert MAX_UINT == 2**63 - 1
    assert cbor.is_uint(MAX_UINT)
    assert not cbor.is_uint(2**63)
    assert not cbor.is_uint(-1)
    assert not cbor.is_uint(True)


@given(st.integers(0, MAX_UINT))
def test_fields_uint_accepts_the_documented_range(value: int) -> None:
    assert Fields({"n": value}, "t", frozenset({"n"})).uint("n") == value


@given(st.one_of(st.integers(2**63, 2**64 - 1), st.integers(-(2**64), -1)))
def test_fields_uint_refuses_beyond_it(value: int) -> None:
    with pytest.raises(DecodeError, match=str(MAX_UINT)):
        Fields(cbor.loads(canon({"n": value})), "t", frozenset({"n"})).uint("n")


@pytest.mark.parametrize("value", OVER)
def test_acks_beyond_the_range_are_refused_both_ways(value: int) -> None:
    for body in (ack_body(stored=[value]), ack_body(ack_seq=value), ack_body(rejected=[[value, "malformed"]])):
        with pytest.raises(DecodeError):
            verify_ack(signed_ack(canon(body)), PLATFORM.verify_key, "home-a")
    with pytest.raises(EncodeError):
        Ack("home-a", 1, T0, stored=(value,))
    with pytest.raises(EncodeError):
        Ack("home-a", value, T0)
    with pytest.raises(EncodeError):
        Ack("home-a", 1, T0, rejected=(Rejected(value, EnvelopeRejection.MALFORMED),))


def test_acks_at_the_limit_round_trip() -> None:
    ack = Ack("home-a", MAX_UINT, T0, stored=(0, MAX_UINT), rejected=(Rejected(MAX_UINT, EnvelopeRejection.REPLAYED),))
    assert verify_ack(sign_ack(ack, PLATFORM), PLATFORM.verify_key, "home-a") == ack


@pytest.mark.parametrize("value", OVER)
def test_down_messages_beyond_the_range_are_refused_both_ways(value: int) -> None:
    with pytest.raises(DecodeError):
        verify_message(signed_down(canon(down_body(seq=value))), PLATFORM.verify_key, "home-a", None)
    with pytest.raises(DecodeError):
        verify_message(signed_down(canon(down_body(seq=value))), PLATFORM.verify_key, "home-a", MAX_UINT)
    with pytest.raises(EncodeError):
        DownMessage("home-a", value, T0, AlarmSnooze("a-1", "Mei Lin", 600, T0))


def test_down_messages_at_the_limit_round_trip() -> None:
    message = DownMessage("home-a", MAX_UINT, T0, AlarmSnooze("a-1", "Mei Lin", 600, T0))
    assert verify_message(sign_message(message, PLATFORM), PLATFORM.verify_key, "home-a", MAX_UINT - 1) == message


@pytest.mark.parametrize("value", OVER)
def test_envelopes_beyond_the_range_are_malformed_and_never_sealed(value: int) -> None:
    with pytest.raises(EnvelopeError) as info:
        open_(sealed(canon(inner(seq=value))))
    assert info.value.reason is EnvelopeRejection.MALFORMED
    with pytest.raises(EncodeError):
        seal(HUB, BOX.public_key, value, T0, [record().to_cbor()])


def test_envelopes_at_the_limit_open() -> None:
    opened = open_(seal(HUB, BOX.public_key, MAX_UINT, T0, [record(MAX_UINT).to_cbor()]))
    assert opened.seq == MAX_UINT  # type: ignore[attr-defined]
    assert opened.decoded[0].seq == MAX_UINT  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", OVER)
def test_records_beyond_the_range_are_refused_both_ways(value: int) -> None:
    encoded = cbor.loads(record().to_cbor())
    assert isinstance(encoded, dict)
    with pytest.raises(DecodeError):
        decode_record(with_item(encoded, "seq", canon(value)))
    with pytest.raises(EnvelopeError) as info:
        open_(sealed(canon(inner(records=[with_item(encoded, "seq", canon(value))]))))
    assert info.value.reason is EnvelopeRejection.MALFORMED
    with pytest.raises(EncodeError):
        record(value)


def test_times_beyond_datetime_are_decode_errors() -> None:
    for value in (MAX_UINT, *OVER):
        with pytest.raises(DecodeError):
            verify_ack(signed_ack(canon(ack_body(at=value))), PLATFORM.verify_key, "home-a")


# --- error messages stay bounded ------------------------------------------------------------------------------------


def test_quote_never_formats_huge_values() -> None:
    assert quote(2**64 - 1) == str(2**64 - 1)
    assert quote(-(2**64)) == "<negative integer of 65 bits>"
    assert quote(2**20000) == "<integer of 20001 bits>"  # str() would raise ValueError
    assert quote("x" * 10_000).endswith("... (10000 in all)")
    assert len(quote(b"\x00" * 10_000)) < 200
    assert quote([1, 2]) == "<list>"


def test_wrong_keys_messages_are_bounded() -> None:
    value = {f"key-{i}-{'x' * 1000}": i for i in range(1000)}
    with pytest.raises(DecodeError) as info:
        Fields(value, "t", frozenset({"v"}))
    assert len(str(info.value)) < 400
    assert "996 more" in str(info.value)


def test_unsupported_versions_are_reported_without_their_value() -> None:
    frame = canon({"v": "x" * 100_000, "envelopes": [b"e"]})
    with pytest.raises(DecodeError) as info:
        decode_uplink(frame)
    assert len(str(info.value)) < 300


def test_the_largest_possible_ack_fits_max_ack_bytes() -> None:
    per_kind = MAX_ACK_ENTRIES // 2
    ack = Ack(
        "a" * 63,
        MAX_UINT,
        T0,
        stored=tuple(range(MAX_UINT - per_kind + 1, MAX_UINT + 1)),
        rejected=tuple(Rejected(MAX_UINT - i, EnvelopeRejection.UNKNOWN_HUB) for i in range(per_kind)),
    )
    signed = sign_ack(ack, PLATFORM)
    assert len(signed) <= MAX_ACK_BYTES
    worst = Ack("a" * 63, MAX_UINT, T0, rejected=(Rejected(MAX_UINT, EnvelopeRejection.UNKNOWN_HUB),) * MAX_ACK_ENTRIES)
    assert len(sign_ack(worst, PLATFORM)) <= MAX_ACK_BYTES
    assert verify_ack(sign_ack(worst, PLATFORM), PLATFORM.verify_key, "a" * 63) == worst


def test_an_oversized_ack_is_refused_before_its_signature_is_checked() -> None:
    body = canon(ack_body(stored=list(range(10**6, 10**6 + MAX_ACK_BYTES // 4))))  # 5 bytes each
    with pytest.raises(AuthenticationError, match="not a possible ack size"):
        verify_ack(signed_ack(body), PLATFORM.verify_key, "home-a")


def test_an_unsupported_record_version_is_reported_without_its_value() -> None:
    encoded = cbor.loads(record().to_cbor())
    assert isinstance(encoded, dict)
    with pytest.raises(DecodeError) as info:
        decode_record(with_item(encoded, "v", canon("x" * 7000)))
    assert len(str(info.value)) < 200
