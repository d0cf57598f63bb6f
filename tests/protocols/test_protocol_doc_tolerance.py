"""``docs/protocol.md`` revision 5 (issue 14 item 5): the vectors of a tolerated measurement (§3.1 ``tolerated``) and
of a raw reading (§3.8) are what the reference implementation produces, and both decode back."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from protocols import gatt
from protocols.errors import DecodeError
from protocols.record import (
    MeasurementBody,
    RawReadingBody,
    Record,
    RecordKind,
    measurement_record_id,
    raw_reading_record_id,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
T = dt.datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=dt.UTC)
PADDED = bytes.fromhex("0478005000640048000000")  # 120/80/100 mmHg, pulse 72, then two bytes of padding
UNDECODABLE = bytes.fromhex("1e7800500060000000")  # the flags promise a time stamp that is not there


@pytest.fixture(scope="module")
def doc_hex() -> str:
    """Code blocks with their line breaks removed, so a vector wrapped over lines is one."""
    doc = DOC.read_text(encoding="utf-8")
    return doc + "".join("".join(block.split()) for block in re.findall(r"```\n(.*?)```", doc, flags=re.DOTALL))


def tolerated_record() -> Record:
    tolerated = gatt.decode_tolerant(0x2A35, PADDED)
    assert tolerated.tolerances == {gatt.DecodeTolerance.TRAILING_BYTES}
    rid = measurement_record_id("bp-cuff-1", 0x2A35, PADDED, None, None, T)
    values = tolerated.measurement.as_dict()
    body = MeasurementBody(0x2A35, PADDED, values, "resident-1", tolerated=tolerated.tolerances)
    return Record(rid, "home-0042", 42, T, body, "bp-cuff-1", None)


def raw_record() -> Record:
    with pytest.raises(DecodeError) as refused:
        gatt.decode_tolerant(0x2A35, UNDECODABLE)
    rid = raw_reading_record_id("bp-cuff-1", 0x2A35, UNDECODABLE, T)
    body = RawReadingBody(0x2A35, UNDECODABLE, str(refused.value), "resident-1")
    return Record(rid, "home-0042", 43, T, body, "bp-cuff-1", None)


def test_the_tolerated_measurement_vector(doc_hex: str) -> None:
    record = tolerated_record()
    encoded = record.to_cbor()
    assert record.record_id.hex() in doc_hex
    assert encoded.hex() in doc_hex
    assert Record.from_cbor(encoded) == record
    assert f"({len(encoded)} bytes" in doc_hex


def test_the_raw_reading_vector(doc_hex: str) -> None:
    record = raw_record()
    encoded = record.to_cbor()
    assert record.kind is RecordKind.RAW_READING
    assert record.record_id.hex() in doc_hex
    assert encoded.hex() in doc_hex
    assert Record.from_cbor(encoded) == record
    assert f"({len(encoded)} bytes" in doc_hex
    assert "2A35 at offset 7: Time Stamp needs 7 bytes, 2 left" in doc_hex
