"""The hash-chained audit log (issue 18 item 5): tampering with any entry is detected."""

from __future__ import annotations

import datetime as _dt
import sqlite3
from pathlib import Path

import pytest
from cli_run import carehub
from hypothesis import given, settings
from hypothesis import strategies as st

from community.console.audit import (
    GENESIS,
    AuditEntry,
    AuditError,
    AuditLog,
    AuditTamperError,
    SqliteAuditStore,
    audit_path,
    verify,
)

T0 = _dt.datetime(2026, 3, 9, 8, 0, tzinfo=_dt.UTC)

_text = st.text(min_size=0, max_size=12)
_event = st.tuples(st.text(min_size=1, max_size=8), st.sampled_from(["view", "ack", "threshold", "denied"]),
                   st.none() | st.text(min_size=1, max_size=8), _text)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> _dt.datetime:
        self.now += _dt.timedelta(seconds=1)
        return self.now


def build(path: Path, events: list[tuple[str, str, str | None, str]]) -> list[AuditEntry]:
    with SqliteAuditStore(path) as store:
        log = AuditLog(store, Clock())
        return [log.record(*e) for e in events]


def raw(path: Path) -> sqlite3.Connection:
    """A connection of someone editing the file directly: the append-only triggers dropped."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    return conn


def check(path: Path) -> tuple[int, str]:
    with SqliteAuditStore(path) as store:
        return verify(store.entries())


@settings(max_examples=40, deadline=None)
@given(events=st.lists(_event, min_size=2, max_size=8), data=st.data())
def test_modified_deleted_or_reordered_entries_are_detected(tmp_path_factory: pytest.TempPathFactory,
                                                            events: list[tuple[str, str, str | None, str]],
                                                            data: st.DataObject) -> None:  # fmt: skip
    path = tmp_path_factory.mktemp("audit") / "platform.audit.db"
    entries = build(path, events)
    assert entries[0].prev_hash == GENESIS
    assert check(path) == (len(entries), entries[-1].hash)
    n = len(entries)
    tamper = data.draw(st.sampled_from(["modify", "delete", "reorder"]))
    conn = raw(path)
    if tamper == "modify":
        seq = data.draw(st.integers(1, n))
        column = data.draw(st.sampled_from(["actor", "action", "resident", "detail", "time"]))
        old = conn.execute(f"SELECT {column} FROM audit_log WHERE seq = ?", (seq,)).fetchone()[0]  # noqa: S608
        new = "2026-03-09T08:00:00.500000+00:00" if column == "time" else f"{old or ''}x"
        conn.execute(f"UPDATE audit_log SET {column} = ? WHERE seq = ?", (new, seq))  # noqa: S608
        match = f"entry {seq} was modified"
    elif tamper == "delete":
        seq = data.draw(st.integers(1, n - 1))  # deleting the head is indistinguishable from a shorter log
        conn.execute("DELETE FROM audit_log WHERE seq = ?", (seq,))
        match = "deleted or reordered"
    else:
        a = data.draw(st.integers(1, n - 1))
        one, two = conn.execute("SELECT * FROM audit_log WHERE seq IN (?, ?) ORDER BY seq", (a, a + 1)).fetchall()
        # seq is the row's position: moving entry a+1 before entry a means each takes the other's place
        conn.execute("DELETE FROM audit_log WHERE seq IN (?, ?)", (a, a + 1))
        conn.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (a, *two[1:]))
        conn.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (a + 1, *one[1:]))
        match = "deleted or reordered|does not link|was modified"
    conn.close()
    with pytest.raises(AuditTamperError, match=match):
        check(path)


def test_swapped_contents_in_place_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    build(path, [("dr-li", "view", "mrs-wang", ""), ("dr-li", "ack", "mrs-wang", "alarm 7"), ("n", "view", None, "")])
    conn = raw(path)
    one, two = conn.execute("SELECT * FROM audit_log WHERE seq IN (1, 2) ORDER BY seq").fetchall()
    conn.execute("DELETE FROM audit_log WHERE seq IN (1, 2)")
    conn.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (1, *two[1:]))
    conn.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (2, *one[1:]))
    conn.close()
    with pytest.raises(AuditTamperError, match="entry 1"):
        check(path)


def test_the_store_refuses_update_and_delete_and_chains_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    first = build(path, [("dr-li", "view", "mrs-wang", "")])
    with SqliteAuditStore(path) as store:
        second = AuditLog(store, Clock()).record("admin", "account-add", None, "nurse-zhao")
    assert (second.seq, second.prev_hash) == (2, first[0].hash)
    conn = sqlite3.connect(path, isolation_level=None)
    for sql in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()
    assert check(path)[0] == 2


def test_naive_times_are_refused(tmp_path: Path) -> None:
    with SqliteAuditStore(tmp_path / "a.db") as store, pytest.raises(AuditError, match="timezone-aware"):
        AuditLog(store, lambda: _dt.datetime(2026, 1, 1)).record("a", "view")  # noqa: DTZ001


def test_audit_verify_command(tmp_path: Path) -> None:
    assert carehub("platform", "init", "--dir", tmp_path).returncode == 0
    config = tmp_path / "platform.toml"
    missing = carehub("platform", "audit", "verify", "-c", config)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: no audit log at {tmp_path / 'platform.audit.db'}"
    path = audit_path(tmp_path / "platform.db")
    entries = build(path, [("dr-li", "view", "mrs-wang", ""), ("dr-li", "ack", "mrs-wang", "alarm 3")])
    ok = carehub("platform", "audit", "verify", "-c", config)
    assert (ok.returncode, ok.stdout.strip()) == (0, f"audit log intact: 2 entries, head {entries[-1].hash}")
    conn = raw(path)
    conn.execute("UPDATE audit_log SET detail = 'alarm 4' WHERE seq = 2")
    conn.close()
    bad = carehub("platform", "audit", "verify", "-c", config)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert lines == [f"error: audit log {path} is broken: entry 2 was modified: its hash does not match its content"]
