"""The console's audit log: append-only and hash-chained (issue 18 item 5).

Every entry carries the hash of the one before it (``prev_hash``; the first carries 64 zeros) and its own ``hash``,
SHA-256 over a canonical JSON encoding of all its other fields including ``prev_hash``. Changing an entry breaks its
hash; deleting one leaves a gap in ``seq`` and a broken link; reordering breaks the sequence and the links.
:func:`verify` finds the first such break. ``carehub platform audit verify -c CONFIG`` runs it on the platform's log,
kept in its own SQLite file next to the platform database (``platform.db`` -> ``platform.audit.db``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol

import typer

from community.config import PlatformConfigError, load_platform_config
from community.storage_common import make_private

__all__ = [
    "GENESIS",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditStore",
    "AuditTamperError",
    "SqliteAuditStore",
    "app",
    "audit_path",
    "entry_hash",
    "verify",
]

GENESIS = "0" * 64


class AuditError(Exception):
    """The audit log cannot be read or written."""


class AuditTamperError(AuditError):
    """The chain is broken: an entry was modified, deleted or moved."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    time: _dt.datetime
    actor: str
    action: str
    resident: str | None
    detail: str
    prev_hash: str
    hash: str


def _canonical(
    *, seq: int, time: _dt.datetime, actor: str, action: str, resident: str | None, detail: str, prev_hash: str
) -> bytes:
    fields = {
        "seq": seq,
        "time": time.astimezone(_dt.UTC).isoformat(),
        "actor": actor,
        "action": action,
        "resident": resident,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(
    *, seq: int, time: _dt.datetime, actor: str, action: str, resident: str | None, detail: str, prev_hash: str
) -> str:
    """SHA-256 (hex) of the entry's canonical encoding."""
    return hashlib.sha256(
        _canonical(
            seq=seq, time=time, actor=actor, action=action, resident=resident, detail=detail, prev_hash=prev_hash
        )
    ).hexdigest()


def _recomputed(e: AuditEntry) -> str:
    return entry_hash(
        seq=e.seq,
        time=e.time,
        actor=e.actor,
        action=e.action,
        resident=e.resident,
        detail=e.detail,
        prev_hash=e.prev_hash,
    )


def verify(entries: Iterator[AuditEntry] | list[AuditEntry]) -> tuple[int, str]:
    """Check the chain in stored order; return (entry count, head hash) or raise :class:`AuditTamperError`."""
    prev, count = GENESIS, 0
    for position, e in enumerate(entries, start=1):
        if e.seq != position:
            raise AuditTamperError(f"entry at position {position} has seq {e.seq}: entries deleted or reordered")
        if e.prev_hash != prev:
            raise AuditTamperError(f"entry {e.seq} does not link to the entry before it")
        if _recomputed(e) != e.hash:
            raise AuditTamperError(f"entry {e.seq} was modified: its hash does not match its content")
        prev, count = e.hash, position
    return count, prev


class AuditStore(Protocol):
    """Where entries are kept; an engine only appends and reads back in order."""

    def append(self, entry: AuditEntry) -> None: ...

    def last(self) -> AuditEntry | None: ...

    def entries(self) -> Iterator[AuditEntry]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    resident TEXT, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def audit_path(database: Path) -> Path:
    """The audit file beside a platform database: ``platform.db`` -> ``platform.audit.db``."""
    return database.with_name(f"{database.stem}.audit.db")


class SqliteAuditStore:
    """The log in its own SQLite file; UPDATE and DELETE are refused by triggers (the chain catches the rest)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        if not create and not path.exists():
            raise AuditError(f"no audit log at {path}")
        try:
            make_private(path)  # who saw whose data, and password hashes: for the platform's user only
            self._conn = sqlite3.connect(path, isolation_level=None)
            self._conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"cannot open audit log {path}: {exc}") from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SqliteAuditStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def append(self, entry: AuditEntry) -> None:
        e = entry
        row = (e.seq, e.time.astimezone(_dt.UTC).isoformat(), e.actor, e.action, e.resident, e.detail)
        try:
            self._conn.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*row, e.prev_hash, e.hash))
        except sqlite3.Error as exc:
            raise AuditError(f"cannot append audit entry {e.seq}: {exc}") from None

    def _rows(self, sql: str) -> Iterator[AuditEntry]:
        try:
            rows = self._conn.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read the audit log: {exc}") from None
        for seq, time, actor, action, resident, detail, prev_hash, digest in rows:
            try:
                when = _dt.datetime.fromisoformat(time)
            except (TypeError, ValueError):
                raise AuditTamperError(f"entry {seq} has an unreadable time {time!r}") from None
            yield AuditEntry(seq, when, actor, action, resident, detail, prev_hash, digest)

    def last(self) -> AuditEntry | None:
        return next(self._rows("SELECT * FROM audit_log ORDER BY rowid DESC LIMIT 1"), None)

    def entries(self) -> Iterator[AuditEntry]:
        return self._rows("SELECT * FROM audit_log ORDER BY rowid")


class AuditLog:
    """Appends entries to a store, chaining each to the last one; ``clock`` gives the (aware) time of each."""

    def __init__(self, store: AuditStore, clock: Callable[[], _dt.datetime]) -> None:
        self._store = store
        self._clock = clock

    def record(self, actor: str, action: str, resident: str | None = None, detail: str = "") -> AuditEntry:
        last = self._store.last()
        seq, prev = (1, GENESIS) if last is None else (last.seq + 1, last.hash)
        time = self._clock()
        if time.tzinfo is None:
            raise AuditError("audit times must be timezone-aware")
        digest = entry_hash(
            seq=seq, time=time, actor=actor, action=action, resident=resident, detail=detail, prev_hash=prev
        )
        entry = AuditEntry(seq, time, actor, action, resident, detail, prev, digest)
        self._store.append(entry)
        return entry


# --- carehub platform audit ... ------------------------------------------------------------------------------------

app = typer.Typer(help="The console's hash-chained audit log.", no_args_is_help=True, add_completion=False)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(code)


@app.command("verify")
def verify_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="The platform's TOML config file.")],
) -> None:
    """Check every entry's hash and link; exit 1 naming the first broken entry."""
    try:
        path = audit_path(load_platform_config(config).database)
    except PlatformConfigError as exc:
        raise _fail(str(exc), 2) from None
    try:
        with SqliteAuditStore(path, create=False) as store:
            count, head = verify(store.entries())
    except AuditTamperError as exc:
        raise _fail(f"audit log {path} is broken: {exc}", 1) from None
    except AuditError as exc:
        raise _fail(str(exc), 2) from None
    typer.echo(f"audit log intact: {count} entries, head {head}")
