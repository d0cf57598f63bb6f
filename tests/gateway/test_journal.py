"""The indication journal: durable lines, torn tails ignored, emptied once nothing is in flight."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.journal import IndicationJournal, JournalEntry

AT = datetime(2026, 11, 25, 7, 30, tzinfo=UTC)


def test_entries_survive_reopening_until_done(tmp_path: Path) -> None:
    path = tmp_path / "hub.journal"
    with IndicationJournal(path) as journal:
        journal.append(JournalEntry("C0:11:00:00:00:01", 0x2A35, b"\x06\x82\x00", AT))
        journal.append(JournalEntry("C0:11:00:00:00:03", 0x2A9D, b"\x00\x10\x27", AT))
    with IndicationJournal(path) as reopened:
        assert [(e.address, e.uuid, e.data, e.received_at) for e in reopened.pending()] == [
            ("C0:11:00:00:00:01", 0x2A35, b"\x06\x82\x00", AT),
            ("C0:11:00:00:00:03", 0x2A9D, b"\x00\x10\x27", AT),
        ]
        reopened.done(0)
        assert reopened.pending() == []


def test_truncates_only_when_nothing_is_in_flight(tmp_path: Path) -> None:
    with IndicationJournal(tmp_path / "j") as journal:
        journal.append(JournalEntry("A", 1, b"a", AT))
        journal.append(JournalEntry("B", 2, b"b", AT))
        journal.done()
        assert len(journal.pending()) == 2
        journal.done()
        assert journal.pending() == []


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with IndicationJournal(path) as journal:
        journal.append(JournalEntry("A", 0x2A35, b"\x01", AT))
    with path.open("ab") as raw:
        raw.write(b"C0:11:00:00:00:01 2a35 06")  # the crash came mid-write: never confirmed to the meter
    assert [e.address for e in IndicationJournal(path).pending()] == ["A"]


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=10))
def test_round_trip(items: list[tuple[int, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, IndicationJournal(Path(tmp) / "j") as journal:
        for uuid, data in items:
            journal.append(JournalEntry("C0:11:00:00:00:01", uuid, data, AT))
        assert [(e.uuid, e.data) for e in journal.pending()] == items
