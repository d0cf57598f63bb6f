"""``docs/protocol.md`` is enough on its own (issue 15 item 11): every example in it is what the reference
implementation produces from the document's fixed keys, and its threshold-key table is the catalogue the hub and the
platform validate with. A change to the wire format that is not written down fails here."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import nacl.public
import nacl.signing
import pytest

from protocols import cbor
from protocols.acks import Ack, Rejected, sign_ack
from protocols.envelope import ENVELOPE_DOMAIN
from protocols.errors import EnvelopeRejection
from protocols.keys import HubIdentity, PlatformIdentity, key_id, sign_detached
from protocols.messages import AlarmAcknowledgement, DownMessage, sign_message
from protocols.record import MeasurementBody, Record, measurement_record_id
from protocols.thresholds import SPECS
from protocols.topics import encode_uplink

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
T = dt.datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=dt.UTC)
HUB = HubIdentity("home-0042", nacl.signing.SigningKey(b"\x11" * 32))
PLATFORM = PlatformIdentity(nacl.signing.SigningKey(b"\x22" * 32), nacl.public.PrivateKey(b"\x33" * 32))
RAW = bytes.fromhex("1e7800500060000000")


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def doc_hex(doc: str) -> str:
    """The document with line breaks inside code blocks removed, so a long vector wrapped over lines is one."""
    blocks = re.findall(r"```\n(.*?)```", doc, flags=re.DOTALL)
    return doc + "".join("".join(block.split()) for block in blocks)


def example_record() -> Record:
    """§3's example: a blood-pressure reading with a device timestamp, the first record of envelope 41."""
    rid = measurement_record_id("bp-cuff-1", 0x2A35, RAW, None, "2026-03-14T09:20:00", T)
    values = {"systolic": 120, "diastolic": 80, "unit": "mmHg"}
    body = MeasurementBody(0x2A35, RAW, values, "resident-1", False, None, False)
    return Record(rid, "home-0042", 41, T, body, "bp-cuff-1", "2026-03-14T09:20:00")


def test_the_example_keys_are_the_documents(doc: str) -> None:
    assert bytes(HUB.verify_key).hex() in doc
    assert key_id(HUB.verify_key) in doc
    assert bytes(PLATFORM.signing_key.verify_key).hex() in doc
    assert bytes(PLATFORM.box_key.public_key).hex() in doc
    assert f"platform key id `{PLATFORM.public.key_id}`" in doc


def test_the_example_record_envelope_and_frame(doc: str, doc_hex: str) -> None:
    record = example_record().to_cbor()
    assert record.hex() in doc_hex
    assert f"({len(record)} bytes, `seq` 41" in doc
    inner = cbor.dumps(
        {"v": 1, "hub": "home-0042", "seq": 41, "sealed_at": cbor.to_micros(T), "records": [record]}, "envelope"
    )
    assert f"inner ({len(inner)} bytes) starts\n`{inner[:36].hex()}`" in doc
    assert sign_detached(HUB.signing_key, ENVELOPE_DOMAIN, inner).hex() in doc_hex
    sealed_size = 32 + 16 + 64 + len(inner)  # ephemeral key, MAC, signature, inner
    assert f"the sealed envelope is {sealed_size} bytes" in doc
    frame = encode_uplink([bytes(sealed_size)])
    head = frame[: frame.index(bytes(4))]
    assert f"one envelope of {sealed_size} bytes" in doc
    assert head.hex() == "".join(re.search(r"Example head:\n`([0-9a-f ]+) \.\.\.`", doc).group(1).split())  # type: ignore[union-attr]


def test_the_example_ack_and_down_message(doc_hex: str) -> None:
    ack = Ack("home-0042", 1, T, (41,), (Rejected(40, EnvelopeRejection.CANNOT_OPEN),))
    assert sign_ack(ack, PLATFORM.signing_key).hex() in doc_hex
    body = AlarmAcknowledgement("alarm-7", "Mei Lin", T, role="daughter")
    assert sign_message(DownMessage("home-0042", 3, T, body), PLATFORM.signing_key).hex() in doc_hex


def test_the_threshold_key_table_is_the_catalogue(doc: str) -> None:
    rows = {}
    for line in doc.splitlines():
        match = re.fullmatch(r"\| `([a-z0-9_.]+)` \| (\S+) \| (\S+) \| (\S+) \| (\S+) \.\. (\S+) \|", line)
        if match:
            rows[match.group(1)] = match.groups()[1:]
    expected = {
        spec.key.value: (spec.unit, f"{spec.default:g}", spec.cmp.value, f"{spec.lo:g}", f"{spec.hi:g}")
        for spec in SPECS.values()
    }
    assert rows == expected
