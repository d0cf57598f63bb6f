"""Envelopes: sign then seal; every tampering, wrong key, unknown or mismatched hub is rejected with its reason."""

from __future__ import annotations

import datetime as dt

import nacl.public
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import cbor
from protocols.envelope import (
    ENVELOPE_DOMAIN,
    MAX_RECORDS_PER_ENVELOPE,
    ReplayWindow,
    SeqStatus,
    open_envelope,
    seal,
)
from protocols.errors import EncodeError, EnvelopeError, EnvelopeRejection
from protocols.keys import HubIdentity, PlatformIdentity, sign_detached
from protocols.record import EvictionBody, MeasurementBody, Record, RecordKind, status_record_id

T0 = dt.datetime(2026, 3, 14, 9, 0, tzinfo=dt.UTC)
HUB_A = HubIdentity("home-a", nacl.signing.SigningKey(b"\x0a" * 32))
HUB_B = HubIdentity("home-b", nacl.signing.SigningKey(b"\x0b" * 32))
PLATFORM = PlatformIdentity(nacl.signing.SigningKey(b"\x01" * 32), nacl.public.PrivateKey(b"\x02" * 32))
KNOWN = {"home-a": HUB_A.verify_key, "home-b": HUB_B.verify_key}


def status(hub: str, seq: int) -> bytes:
    body = EvictionBody(count=seq, first_seq=0, last_seq=seq, bytes_freed=10**9)
    return Record(status_record_id(hub, RecordKind.EVICTION, seq), hub, seq, T0, body).to_cbor()


def reading(hub: str, seq: int) -> bytes:
    body = MeasurementBody(uuid=0x2A35, raw=b"\x1e\x78\x00", values={"systolic": 120 + seq})
    return Record(bytes(16), hub, seq, T0, body, device_id="cuff").to_cbor()


def forge(signer: HubIdentity, inner: dict[str, cbor.CborValue]) -> bytes:
    """Build an envelope by hand from docs/protocol.md, bypassing seal()'s own checks."""
    data = cbor.dumps(inner)
    signed = sign_detached(signer.signing_key, ENVELOPE_DOMAIN, data) + data
    return bytes(nacl.public.SealedBox(PLATFORM.box_key.public_key).encrypt(signed))


def test_records_survive_seal_and_open_unchanged() -> None:
    records = [reading("home-a", 1), status("home-a", 2), reading("home-a", 3)]
    sealed = seal(HUB_A, PLATFORM.public.box_key, 41, T0, records)
    opened = open_envelope(sealed, PLATFORM.box_key, KNOWN, expected_hub="home-a")
    assert (opened.hub_id, opened.seq, opened.sealed_at) == ("home-a", 41, T0)
    assert opened.records == tuple(records)
    assert [r.to_cbor() for r in opened.decoded] == records
    assert [r.seq for r in opened.decoded] == [1, 2, 3]


def test_sealing_is_not_readable_and_not_repeatable() -> None:
    record = reading("home-a", 1)
    one = seal(HUB_A, PLATFORM.public.box_key, 1, T0, [record])
    two = seal(HUB_A, PLATFORM.public.box_key, 1, T0, [record])
    assert one != two  # a fresh ephemeral key per envelope
    assert b"home-a" not in one
    assert b"systolic" not in one


def test_every_single_bit_flip_is_rejected() -> None:
    sealed = seal(HUB_A, PLATFORM.public.box_key, 1, T0, [status("home-a", 1)])
    for bit in range(len(sealed) * 8):
        tampered = bytearray(sealed)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(EnvelopeError) as info:
            open_envelope(bytes(tampered), PLATFORM.box_key, KNOWN)
        assert info.value.reason is EnvelopeRejection.CANNOT_OPEN


@settings(max_examples=50)
@given(st.data())
def test_truncated_or_extended_envelopes_are_rejected(data: st.DataObject) -> None:
    sealed = seal(HUB_A, PLATFORM.public.box_key, 1, T0, [status("home-a", 1)])
    cut = data.draw(st.integers(0, len(sealed) - 1))
    for variant in (sealed[:cut], sealed + data.draw(st.binary(min_size=1, max_size=8))):
        with pytest.raises(EnvelopeError):
            open_envelope(variant, PLATFORM.box_key, KNOWN)


def test_wrong_platform_key_cannot_open() -> None:
    sealed = seal(HUB_A, PLATFORM.public.box_key, 1, T0, [status("home-a", 1)])
    with pytest.raises(EnvelopeError) as info:
        open_envelope(sealed, nacl.public.PrivateKey.generate(), KNOWN)
    assert info.value.reason is EnvelopeRejection.CANNOT_OPEN


def test_unknown_hub_is_rejected() -> None:
    sealed = seal(HUB_A, PLATFORM.public.box_key, 1, T0, [status("home-a", 1)])
    with pytest.raises(EnvelopeError) as info:
        open_envelope(sealed, PLATFORM.box_key, {"home-b": HUB_B.verify_key})
    assert info.value.reason is EnvelopeRejection.UNKNOWN_HUB


def test_envelope_signed_by_a_but_claiming_b_is_bad_signature() -> None:
    inner: dict[str, cbor.CborValue] = {
        "v": 1,
        "hub": "home-b",
        "seq": 1,
        "sealed_at": cbor.to_micros(T0),
        "records": [status("home-b", 1)],
    }
    with pytest.raises(EnvelopeError) as info:
        open_envelope(forge(HUB_A, inner), PLATFORM.box_key, KNOWN)
    assert info.value.reason is EnvelopeRejection.BAD_SIGNATURE


def test_record_claiming_another_hub_is_hub_mismatch() -> None:
    inner: dict[str, cbor.CborValue] = {
        "v": 1,
        "hub": "home-a",
        "seq": 1,
        "sealed_at": cbor.to_micros(T0),
        "records": [status("home-a", 1), reading("home-b", 2)],
    }
    with pytest.raises(EnvelopeError) as info:
        open_envelope(forge(HUB_A, inner), PLATFORM.box_key, KNOWN)
    assert info.value.reason is EnvelopeRejection.HUB_MISMATCH


def test_seal_refuses_records_of_another_hub() -> None:
    with pytest.raises(EncodeError, match="home-b"):
        seal(HUB_A, PLATFORM.public.box_key, 1, T0, [reading("home-b", 1)])


def test_envelope_on_another_hubs_topic_is_hub_mismatch() -> None:
    sealed = seal(HUB_A, PLATFORM.public.box_key, 1, T0, [status("home-a", 1)])
    with pytest.raises(EnvelopeError) as info:
        open_envelope(sealed, PLATFORM.box_key, KNOWN, expected_hub="home-b")
    assert info.value.reason is EnvelopeRejection.HUB_MISMATCH


@pytest.mark.parametrize(
    "inner",
    [
        {"v": 2, "hub": "home-a", "seq": 1, "sealed_at": 0, "records": [b"x"]},
        {"v": 1, "hub": "home-a", "seq": 1, "sealed_at": 0, "records": []},
        {"v": 1, "hub": "home-a", "seq": -1, "sealed_at": 0, "records": [b"x"]},
        {"v": 1, "hub": "home-a", "seq": 1, "records": [b"x"]},
        {"v": 1, "hub": "home-a", "seq": 1, "sealed_at": 0, "records": ["text"]},
        {"v": 1, "hub": "home-a", "seq": 1, "sealed_at": 0, "records": [b"not a record"]},
    ],
)
def test_malformed_inner_structures_are_rejected(inner: dict[str, cbor.CborValue]) -> None:
    with pytest.raises(EnvelopeError) as info:
        open_envelope(forge(HUB_A, inner), PLATFORM.box_key, KNOWN)
    assert info.value.reason is EnvelopeRejection.MALFORMED


def test_seal_limits() -> None:
    with pytest.raises(EncodeError):
        seal(HUB_A, PLATFORM.public.box_key, 1, T0, [])
    with pytest.raises(EncodeError):
        seal(HUB_A, PLATFORM.public.box_key, 1, T0, [status("home-a", 1)] * (MAX_RECORDS_PER_ENVELOPE + 1))
    with pytest.raises(EncodeError):
        seal(HUB_A, PLATFORM.public.box_key, -1, T0, [status("home-a", 1)])


def test_replay_window_classifies_sequence_numbers() -> None:
    window = ReplayWindow(size=4)
    assert window.check("home-a", 10) is SeqStatus.NEW
    assert window.high_water("home-a") is None
    window.mark("home-a", 10)
    assert window.check("home-a", 10) is SeqStatus.DUPLICATE
    assert window.check("home-a", 9) is SeqStatus.NEW  # out of order, not yet seen
    assert window.check("home-b", 10) is SeqStatus.NEW  # per hub
    window.mark("home-a", 9)
    window.mark("home-a", 12)
    assert window.check("home-a", 9) is SeqStatus.DUPLICATE
    assert window.check("home-a", 11) is SeqStatus.NEW
    assert window.check("home-a", 8) is SeqStatus.TOO_OLD
    assert window.high_water("home-a") == 12


@given(st.lists(st.integers(0, 200), max_size=200))
def test_replay_window_never_calls_a_marked_number_new(seqs: list[int]) -> None:
    window = ReplayWindow(size=16)
    marked: set[int] = set()
    for seq in seqs:
        before = window.check("h", seq)
        if seq in marked:
            assert before is not SeqStatus.NEW
        elif seq > max(marked, default=-1) - 16:
            assert before is SeqStatus.NEW
        window.mark("h", seq)
        marked.add(seq)
        assert window.check("h", seq) is not SeqStatus.NEW
