"""Installation-test data on the wire (issue 16 item 2, ``docs/protocol.md`` §3.10 and revision 6).

A measurement, raw reading or panic record made during ``carehub provision test`` carries ``installation_test``:
written only when true (so every other body is byte for byte what earlier revisions wrote), read back exactly,
refused when present with any other value, and the documented vectors are what the reference implementation makes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import cbor, gatt
from protocols.cbor import CborValue
from protocols.errors import DecodeError, EncodeError
from protocols.record import (
    MeasurementBody,
    PanicBody,
    PanicEventType,
    RawReadingBody,
    Record,
    measurement_record_id,
    panic_record_id,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
T = dt.datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=dt.UTC)
TEST_BP = bytes.fromhex("0494005c006f004600")  # 148/92 mmHg, mean 111, pulse 70: the installation test


def _measurement(test: bool, seq: int = 44) -> Record:
    values = gatt.decode(0x2A35, TEST_BP).as_dict()
    body = MeasurementBody(0x2A35, TEST_BP, values, "resident-1", installation_test=test)
    rid = measurement_record_id("bp-cuff-1", 0x2A35, TEST_BP, None, None, T)
    return Record(rid, "home-0042", seq, T, body, "bp-cuff-1", None)


def _press(test: bool, counter: int = 7, battery: int | None = 95, seq: int = 45) -> Record:
    rid = panic_record_id("pendant-1", counter, PanicEventType.PRESS)
    body = PanicBody("pendant-1", PanicEventType.PRESS, counter, battery, None, installation_test=test)
    return Record(rid, "home-0042", seq, T, body, "pendant-1", None)


def _raw(test: bool, raw: bytes = b"\x1e\x78", seq: int = 46) -> Record:
    body = RawReadingBody(0x2A35, raw, "2A35 at offset 1: too short", "resident-1", installation_test=test)
    return Record(bytes(16), "home-0042", seq, T, body, "bp-cuff-1", None)


def _body_map(record: Record) -> dict[str, CborValue]:
    decoded = cbor.loads(record.to_cbor(), "test")
    assert isinstance(decoded, dict)
    body = decoded["body"]
    assert isinstance(body, dict)
    return body


def _with_body(record: Record, body: dict[str, CborValue]) -> bytes:
    decoded = cbor.loads(record.to_cbor(), "test")
    assert isinstance(decoded, dict)
    decoded["body"] = body
    return cbor.dumps(decoded, "test")


@pytest.fixture(scope="module")
def doc_hex() -> str:
    doc = DOC.read_text(encoding="utf-8")
    return doc + "".join("".join(block.split()) for block in re.findall(r"```\n(.*?)```", doc, flags=re.DOTALL))


@given(
    test=st.booleans(),
    counter=st.integers(0, 2**32 - 1),
    battery=st.none() | st.integers(0, 100),
    seq=st.integers(0, 2**63 - 1),
    raw=st.binary(max_size=64),
)
def test_every_marked_kind_round_trips_and_the_key_is_written_only_when_true(
    test: bool, counter: int, battery: int | None, seq: int, raw: bytes
) -> None:
    for record in (_measurement(test, seq), _press(test, counter, battery, seq), _raw(test, raw, seq)):
        back = Record.from_cbor(record.to_cbor())
        assert back == record
        assert back.installation_test is test
        assert ("installation_test" in _body_map(record)) is test


def test_an_unmarked_record_is_exactly_what_earlier_revisions_wrote() -> None:
    """The §3 measurement example of revision 4 still decodes, as not test data, and encodes to the same bytes."""
    doc = DOC.read_text(encoding="utf-8")
    blocks = ["".join(b.split()) for b in re.findall(r"```\n(.*?)```", doc, flags=re.DOTALL)]
    example = next(b for b in blocks if b.startswith("a961760162696450e93e1bf727962b6718a84d1f31b60a07"))
    record = Record.from_cbor(bytes.fromhex(example))
    assert record.installation_test is False
    assert record.to_cbor().hex() == example


@pytest.mark.parametrize("value", [False, 1, "true", None])
@pytest.mark.parametrize("make", [_measurement, _press, _raw])
def test_a_key_with_anything_but_true_is_refused(make: Callable[[bool], Record], value: CborValue) -> None:
    record = make(True)
    body = _body_map(record)
    body["installation_test"] = value
    with pytest.raises(DecodeError, match="installation_test"):
        Record.from_cbor(_with_body(record, body))


def test_a_test_press_raises_no_alarm_and_the_flag_is_a_bool() -> None:
    with pytest.raises(EncodeError, match="raises no alarm"):
        PanicBody("pendant-1", PanicEventType.PRESS, 1, None, "panic-1", installation_test=True)
    with pytest.raises(EncodeError, match="installation_test must be bool"):
        MeasurementBody(0x2A35, TEST_BP, {}, installation_test=1)  # type: ignore[arg-type]


def test_the_documented_vectors(doc_hex: str) -> None:
    for record in (_measurement(True), _press(True)):
        encoded = record.to_cbor()
        assert record.record_id.hex() in doc_hex
        assert encoded.hex() in doc_hex, record.kind
        assert f"({len(encoded)} bytes" in doc_hex
        assert Record.from_cbor(encoded) == record
        assert Record.from_cbor(encoded).installation_test
