"""The indication journal: durable lines written off the caller's thread, torn tails ignored, emptied once nothing is
outstanding, bounded, sealed at rest."""

from __future__ import annotations

import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.journal
from gateway.journal import IndicationJournal, JournalEntry

AT = datetime(2026, 11, 25, 7, 30, tzinfo=UTC)


def test_entries_survive_reopening_until_released(tmp_path: Path) -> None:
    path = tmp_path / "hub.journal"
    with IndicationJournal(path) as journal:
        journal.append(JournalEntry("C0:11:00:00:00:01", 0x2A35, b"\x06\x82\x00", AT))
        journal.append(JournalEntry("C0:11:00:00:00:03", 0x2A9D, b"\x00\x10\x27", AT))
    with IndicationJournal(path) as reopened:
        assert [(e.address, e.uuid, e.data, e.received_at) for e in reopened.pending()] == [
            ("C0:11:00:00:00:01", 0x2A35, b"\x06\x82\x00", AT),
            ("C0:11:00:00:00:03", 0x2A9D, b"\x00\x10\x27", AT),
        ]
        reopened.release()  # stored again: nothing of this run is outstanding
        reopened.flush()
        assert reopened.pending() == []


def test_truncates_only_when_nothing_is_in_flight(tmp_path: Path) -> None:
    with IndicationJournal(tmp_path / "j") as journal:
        a = journal.append(JournalEntry("A", 1, b"a", AT))
        b = journal.append(JournalEntry("B", 2, b"b", AT))
        assert a is not None
        assert b is not None
        assert a != b
        journal.release([b])
        journal.flush()
        assert [(e.address, e.number) for e in journal.pending()] == [("A", a), ("B", b)]
        journal.release([b])  # twice: still only B
        journal.flush()
        assert len(journal.pending()) == 2
        journal.release([a])
        journal.flush()
        assert journal.pending() == []


def test_an_entry_is_read_back_by_its_number(tmp_path: Path) -> None:
    """What a full queue left to the journal alone is found again in the same run."""
    with IndicationJournal(tmp_path / "j") as journal:
        numbers = [journal.append(JournalEntry("A", 0x2A35, bytes([n]), AT)) for n in range(5)]
        journal.flush()
        wanted = {numbers[1], numbers[3]}
        assert [e.data for e in journal.pending() if e.number in wanted] == [b"\x01", b"\x03"]


def test_a_release_of_an_entry_the_disk_refused_changes_nothing(tmp_path: Path) -> None:
    """Only entries that reached the file count as outstanding: releasing one that did not empties nothing early."""
    real_write = os.write
    failing = threading.Event()

    def write(fd: int, data: bytes) -> int:
        if failing.is_set():
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    with IndicationJournal(tmp_path / "j", writer=write) as journal:
        kept = journal.append(BP)
        journal.flush()
        failing.set()
        refused = journal.append(BP)
        journal.flush()
        assert journal.unjournaled == 1
        failing.clear()
        assert refused is not None
        journal.release([refused])
        journal.flush()
        assert len(journal.pending()) == 1  # the first entry still waits for its commit
        assert kept is not None
        journal.release([kept])
        journal.flush()
        assert journal.pending() == []


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with IndicationJournal(path) as journal:
        journal.append(JournalEntry("A", 0x2A35, b"\x01", AT))
    with path.open("ab") as raw:
        raw.write(b"C0:11:00:00:00:01 2a35 06")  # the crash came mid-write: never confirmed to the meter
    assert [e.address for e in IndicationJournal(path).pending()] == ["A"]


@settings(deadline=None)  # each example fsyncs a file: its time is the disk's, not the code's
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=10))
def test_round_trip(items: list[tuple[int, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, IndicationJournal(Path(tmp) / "j") as journal:
        for uuid, data in items:
            journal.append(JournalEntry("C0:11:00:00:00:01", uuid, data, AT))
        journal.flush()
        assert [(e.uuid, e.data) for e in journal.pending()] == items


BP = JournalEntry("C0:11:00:00:00:01", 0x2A35, bytes.fromhex("1e8c0054005f00e8070304071e00"), AT)


def test_nothing_of_an_entry_is_readable_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with IndicationJournal(path) as journal:
        journal.append(BP)
        journal.flush()
        raw = path.read_bytes()
        for clue in (BP.address, BP.data.hex(), BP.data, BP.received_at.isoformat()):
            assert (clue.encode() if isinstance(clue, str) else clue) not in raw
        assert journal.key_path.stat().st_mode & 0o777 == 0o600
        assert [e.data for e in journal.pending()] == [BP.data]


def test_emptied_entries_cannot_be_read_even_with_the_hubs_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the file system freed at the truncation (recovered from the SD card) was sealed with a key now gone."""
    path = tmp_path / "j"
    with IndicationJournal(path) as journal:
        journal.append(BP)
        journal.flush()
        freed = path.read_bytes()
        old_key = journal.key_path.read_bytes()
        inode = journal.key_path.stat().st_ino
        journal.release([1])
        journal.flush()
        assert path.read_bytes() == b""
        assert journal.key_path.read_bytes() != old_key
        assert journal.key_path.stat().st_ino == inode  # overwritten in place, not left behind in a freed block
    path.write_bytes(freed)  # the thief's best case: the old blocks, the current key file, every other hub file
    assert IndicationJournal(path).pending() == []
    assert "cannot be read" in caplog.text


def test_a_replayed_journal_gets_a_new_key_once_emptied(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with IndicationJournal(path) as journal:
        journal.append(BP)
    with IndicationJournal(path) as restarted:  # after a crash: the same key reads what was left
        key = restarted.key_path.read_bytes()
        assert [e.data for e in restarted.pending()] == [BP.data]
        restarted.release()  # replayed into the outbox
        restarted.flush()
        assert restarted.pending() == []
        assert restarted.key_path.read_bytes() != key


def test_a_garbled_entry_is_skipped_and_the_others_kept(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with IndicationJournal(path) as journal:
        journal.append(BP)
        journal.flush()
        with path.open("ab") as raw:
            raw.write(b"00ff\n")  # not an entry of this journal
        journal.append(JournalEntry("C0:11:00:00:00:03", 0x2A9D, b"\x00", AT))
        journal.flush()
        assert [e.address for e in journal.pending()] == [BP.address, "C0:11:00:00:00:03"]


def test_a_lost_key_file_is_reported_not_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "j"
    with IndicationJournal(path) as journal:
        journal.append(BP)
    journal.key_path.unlink()
    assert IndicationJournal(path).pending() == []
    assert "no readable key" in caplog.text


def test_appending_does_no_io_on_the_callers_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """append runs in bleak's callback on the event loop: the writes and syncs happen on the journal's thread."""
    syncing: list[str] = []
    real_sync = os.fdatasync

    def fdatasync(fd: int) -> None:
        syncing.append(threading.current_thread().name)
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with IndicationJournal(tmp_path / "j") as journal:
        syncing.clear()  # opening (the key) happens in the caller's start-up
        numbers = [journal.append(BP) for _ in range(3)]
        journal.release(n for n in numbers if n is not None)
        journal.flush()
        assert journal.pending() == []
    assert syncing
    assert threading.current_thread().name not in syncing


def test_a_stalled_disk_bounds_what_waits_and_counts_what_is_not_journaled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = threading.Event()
    real_sync = os.fdatasync

    def stalled(fd: int) -> None:
        disk.wait()
        real_sync(fd)

    with IndicationJournal(tmp_path / "j", capacity=2) as journal:
        monkeypatch.setattr(os, "fdatasync", stalled)
        assert journal.append(BP) is not None
        assert journal.append(BP) is not None
        assert journal.append(BP) is None  # two wait for the disk: the third is not kept in memory
        assert journal.unjournaled == 1
        disk.set()
        journal.flush()
        assert len(journal.pending()) == 2
        assert journal.append(BP) is not None  # room again


def test_a_journal_that_is_not_open_refuses_entries(tmp_path: Path) -> None:
    journal = IndicationJournal(tmp_path / "j")
    with pytest.raises(RuntimeError, match="not open"):
        journal.append(BP)
    with pytest.raises(ValueError, match="capacity"):
        IndicationJournal(tmp_path / "k", capacity=0)


def test_closing_does_not_wait_forever_for_a_dead_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = threading.Event()
    real_sync = os.fdatasync

    def dead(fd: int) -> None:
        disk.wait()
        real_sync(fd)

    monkeypatch.setattr(gateway.journal, "_CLOSE_WAIT", 0.05)
    journal = IndicationJournal(tmp_path / "j")
    with journal:
        monkeypatch.setattr(os, "fdatasync", dead)
        journal.append(BP)
    assert "still writing" in caplog.text
    disk.set()  # let the writer finish, so the test leaves no thread blocked
    journal.flush()


def test_a_short_write_is_continued_not_counted_as_journaled(tmp_path: Path) -> None:
    """os.write may take only part of a batch (a filling disk, a signal); the rest was silently not written."""
    path = tmp_path / "hub.journal"

    def seven_bytes(fd: int, data: bytes) -> int:
        return os.write(fd, data[:7])

    with IndicationJournal(path, writer=seven_bytes) as journal:
        for n in range(5):
            journal.append(JournalEntry(f"C0:11:00:00:00:0{n}", 0x2A35, bytes([n]) * 9, AT))
        journal.flush()
        assert journal.unjournaled == 0
    assert [e.data for e in IndicationJournal(path).pending()] == [bytes([n]) * 9 for n in range(5)]
