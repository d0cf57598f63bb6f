"""What the console itself keeps about alarms and threshold changes (issue 18 items 1 and 4).

The hub's own records (stored by the ingest worker) say what an alarm is; the console adds what its users did:
acknowledgements it sent, notes, alarms marked resolved (with the revision seen then, so a later step from the hub
opens the alarm again: :func:`community.console.analytics.open_alarms`), and the threshold changes it sent down with
their down-message ``seq`` (whose delivery the platform's down-box tracks: :mod:`community.down_types`).
Kept in SQLite beside the platform database: ``platform.db`` -> ``platform.console-web.db``.
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from community.storage_common import make_private

__all__ = ["AlarmAction", "ConsoleStore", "ConsoleStoreError", "ThresholdChange", "console_web_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm_actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, hub TEXT NOT NULL, alarm_id TEXT NOT NULL, action TEXT NOT NULL,
    actor TEXT NOT NULL, at TEXT NOT NULL, text TEXT NOT NULL, revision INTEGER, down_seq INTEGER);
CREATE TABLE IF NOT EXISTS threshold_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, resident TEXT NOT NULL, hub TEXT NOT NULL, actor TEXT NOT NULL,
    at TEXT NOT NULL, changes TEXT NOT NULL, down_seq INTEGER NOT NULL);
"""


class ConsoleStoreError(Exception):
    """The console's own database cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class AlarmAction:
    """One thing a console user did about an alarm: ``ack``, ``note`` or ``resolve``."""

    hub: str
    alarm_id: str
    action: str
    actor: str
    at: _dt.datetime
    text: str = ""
    revision: int | None = None
    down_seq: int | None = None


@dataclass(frozen=True, slots=True)
class ThresholdChange:
    """A threshold change sent down to a resident's hub as down-message ``down_seq``."""

    resident: str
    hub: str
    actor: str
    at: _dt.datetime
    changes: dict[str, float | None]
    down_seq: int


def console_web_path(database: Path) -> Path:
    """The console's own file beside the platform database."""
    return database.with_name(f"{database.stem}.console-web.db")


class ConsoleStore:
    """Alarm actions and threshold changes in one SQLite file."""

    def __init__(self, path: Path) -> None:
        try:
            make_private(path)
            self._conn = sqlite3.connect(path, isolation_level=None)
            self._conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ConsoleStoreError(f"cannot open the console database {path}: {exc}") from None

    def close(self) -> None:
        self._conn.close()

    def add_action(self, a: AlarmAction) -> None:
        self._conn.execute(
            "INSERT INTO alarm_actions (hub, alarm_id, action, actor, at, text, revision, down_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (a.hub, a.alarm_id, a.action, a.actor, a.at.isoformat(), a.text, a.revision, a.down_seq),
        )

    def actions(self, hub: str | None = None, alarm_id: str | None = None) -> list[AlarmAction]:
        rows = self._conn.execute(
            "SELECT hub, alarm_id, action, actor, at, text, revision, down_seq FROM alarm_actions"
            " WHERE (? IS NULL OR hub = ?) AND (? IS NULL OR alarm_id = ?) ORDER BY id",
            (hub, hub, alarm_id, alarm_id),
        ).fetchall()
        return [
            AlarmAction(h, i, act, who, _dt.datetime.fromisoformat(at), t, r, s) for h, i, act, who, at, t, r, s in rows
        ]

    def resolved(self) -> dict[tuple[str, str], int]:
        """Alarms marked resolved, with the revision seen when they were (the latest mark wins)."""
        out: dict[tuple[str, str], int] = {}
        for a in self.actions():
            if a.action == "resolve" and a.revision is not None:
                out[(a.hub, a.alarm_id)] = a.revision
        return out

    def add_threshold_change(self, c: ThresholdChange) -> None:
        self._conn.execute(
            "INSERT INTO threshold_changes (resident, hub, actor, at, changes, down_seq) VALUES (?, ?, ?, ?, ?, ?)",
            (c.resident, c.hub, c.actor, c.at.isoformat(), json.dumps(c.changes, sort_keys=True), c.down_seq),
        )

    def threshold_changes(self, resident: str) -> list[ThresholdChange]:
        rows = self._conn.execute(
            "SELECT resident, hub, actor, at, changes, down_seq FROM threshold_changes WHERE resident = ? ORDER BY id",
            (resident,),
        ).fetchall()
        return [
            ThresholdChange(r, h, who, _dt.datetime.fromisoformat(at), json.loads(ch), s)
            for r, h, who, at, ch, s in rows
        ]
