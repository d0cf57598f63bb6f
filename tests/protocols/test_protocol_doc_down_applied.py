"""docs/protocol.md revision 7 (§3.7, §3.9): the down_applied record's id and body vectors are what the code makes."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from protocols import cbor
from protocols.record import DownAppliedBody, RecordKind, status_record_id

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")


def test_the_id_vector_is_what_the_code_makes() -> None:
    match = re.search(r'\["status", "home-0042", "down_applied", 3\]` → `([0-9a-f]{32})`', DOC)
    assert match, "§3.7 lost its down_applied vector"
    assert status_record_id("home-0042", RecordKind.DOWN_APPLIED, 3).hex() == match.group(1)


def test_the_body_vector_is_what_the_code_makes() -> None:
    match = re.search(r'`\{"down_seq": 3, "type": "alarm_ack"\}`: `([0-9a-f]+)`', DOC)
    assert match, "§3.9 lost its body vector"
    body = DownAppliedBody._from_map(cbor.loads(bytes.fromhex(match.group(1)), "body"))
    assert body == DownAppliedBody(3, "alarm_ack")
    assert cbor.dumps(body._to_map(), "body").hex() == match.group(1)


@given(seq=st.integers(0, 2**63 - 1), kind=st.sampled_from(["thresholds", "alarm_ack", "alarm_snooze"]))
def test_bodies_round_trip(seq: int, kind: str) -> None:
    body = DownAppliedBody(seq, kind)
    assert DownAppliedBody._from_map(cbor.loads(cbor.dumps(body._to_map(), "body"), "body")) == body
