"""The down-message store (:mod:`community.down_types`) in SQL, one statement set for both engines.

The engines differ only in their placeholders (``?`` for SQLite, ``%s`` for psycopg) and in how a statement runs;
:class:`SqliteDownStore` and :class:`PostgresDownStore` are mixins that the two storage classes take on. Times are
stored as Unix seconds (double precision), like the readings' ``received_at``.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final, LiteralString, TypeVar

from community.down_types import DownState, QueuedDown
from community.storage_common import StorageError

__all__ = ["PG_DOWN_SCHEMA", "SQLITE_DOWN_SCHEMA", "PostgresDownStore", "SqliteDownStore"]

_T = TypeVar("_T")

SQLITE_DOWN_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS down_messages (hub TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,"
    " payload BLOB NOT NULL, state TEXT NOT NULL, queued_at REAL NOT NULL, sends INTEGER NOT NULL DEFAULT 0,"
    " sent_at REAL, confirmed_at REAL, reason TEXT, detail TEXT, PRIMARY KEY (hub, seq))",
    "CREATE INDEX IF NOT EXISTS down_messages_open ON down_messages (state, sent_at) WHERE state IN ('queued', 'sent')",
)
PG_DOWN_SCHEMA: Final = (
    "CREATE TABLE down_messages (hub text NOT NULL, seq bigint NOT NULL, type text NOT NULL, payload bytea NOT NULL,"
    " state text NOT NULL, queued_at double precision NOT NULL, sends integer NOT NULL DEFAULT 0,"
    " sent_at double precision, confirmed_at double precision, reason text, detail text, PRIMARY KEY (hub, seq))",
    "CREATE INDEX down_messages_open ON down_messages (state, sent_at) WHERE state IN ('queued', 'sent')",
)

_COLUMNS: Final = "hub, seq, type, payload, state, queued_at, sends, sent_at, confirmed_at, reason, detail"
_OPEN: Final = "('queued', 'sent')"


def _ts(t: _dt.datetime) -> float:
    if t.tzinfo is None:
        raise ValueError("down-message times must be timezone-aware")
    return t.timestamp()


def _when(value: object) -> _dt.datetime | None:
    return None if value is None else _dt.datetime.fromtimestamp(float(str(value)), _dt.UTC)


def _row(row: Sequence[Any]) -> QueuedDown:
    hub, seq, kind, payload, state, queued, sends, sent, confirmed, reason, detail = row
    return QueuedDown(
        hub=str(hub),
        seq=int(seq),
        message_type=str(kind),
        payload=bytes(payload),
        state=DownState(state),
        queued_at=_dt.datetime.fromtimestamp(float(queued), _dt.UTC),
        sends=int(sends),
        sent_at=_when(sent),
        confirmed_at=_when(confirmed),
        reason=None if reason is None else str(reason),
        detail=None if detail is None else str(detail),
    )


def _check_confirmation(state: DownState) -> None:
    if state not in (DownState.APPLIED, DownState.REFUSED):
        raise ValueError(f"a hub confirms a down-message as applied or refused, not {state.value}")


def _listing(hub: str | None, open_only: bool, sent_before: _dt.datetime | None, mark: str) -> tuple[str, list[object]]:
    where: list[str] = []
    params: list[object] = []
    if hub is not None:
        where.append(f"hub = {mark}")
        params.append(hub)
    if open_only:
        where.append(f"state IN {_OPEN}")
    if sent_before is not None:
        where.append(f"(sent_at IS NULL OR sent_at < {mark})")
        params.append(_ts(sent_before))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {_COLUMNS} FROM down_messages{clause} ORDER BY hub, seq", params  # noqa: S608  constants only


class SqliteDownStore:
    """Down-message methods of :class:`community.storage.SqliteStorage` (which provides ``_db`` and ``_run_db``)."""

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    async def _run_db(self, fn: Callable[[], _T]) -> _T:
        raise NotImplementedError

    async def queue_down(self, down: QueuedDown) -> None:
        """Store a down-message before it is first published (state ``queued``)."""
        row = (down.hub, down.seq, down.message_type, down.payload, DownState.QUEUED.value, _ts(down.queued_at))

        def insert() -> None:
            try:
                self._db().execute(
                    "INSERT INTO down_messages (hub, seq, type, payload, state, queued_at) VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                raise StorageError(f"down-message {down.seq} for {down.hub} is already stored") from exc

        await self._run_db(insert)

    async def mark_down_sent(self, hub: str, seq: int, at: _dt.datetime) -> None:
        """Count a publish of an open down-message (``queued`` or ``sent`` becomes ``sent``)."""
        await self._run_db(
            lambda: self._db().execute(
                f"UPDATE down_messages SET state = 'sent', sends = sends + 1, sent_at = ?"  # noqa: S608  constants
                f" WHERE hub = ? AND seq = ? AND state IN {_OPEN}",
                (_ts(at), hub, seq),
            )
        )

    async def confirm_down(
        self,
        hub: str,
        seq: int,
        state: DownState,
        *,
        at: _dt.datetime,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        """The hub applied or refused message ``seq``; open messages before it can no longer apply (expired)."""
        _check_confirmation(state)

        def update() -> None:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "UPDATE down_messages SET state = ?, confirmed_at = ?, reason = ?, detail = ?"
                    " WHERE hub = ? AND seq = ? AND state IN ('queued', 'sent', 'expired')",
                    (state.value, _ts(at), reason, detail, hub, seq),
                )
                db.execute(
                    f"UPDATE down_messages SET state = 'expired', confirmed_at = ?, reason = ?"  # noqa: S608
                    f" WHERE hub = ? AND seq < ? AND state IN {_OPEN}",
                    (_ts(at), f"message {seq} was confirmed first", hub, seq),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run_db(update)

    async def down_messages(
        self, hub: str | None = None, *, open_only: bool = False, sent_before: _dt.datetime | None = None
    ) -> list[QueuedDown]:
        """Stored down-messages by hub and seq; only open ones, only those not published since a time, if asked."""
        query, params = _listing(hub, open_only, sent_before, "?")
        return await self._run_db(lambda: [_row(r) for r in self._db().execute(query, params).fetchall()])


class PostgresDownStore:
    """Down-message methods of :class:`community.storage_pg.PostgresStorage` (which provides ``_rows`` and
    ``_execute_all``)."""

    async def _rows(self, query: LiteralString, params: Sequence[object] = ()) -> list[Any]:
        raise NotImplementedError

    async def _execute_all(self, statements: Sequence[tuple[LiteralString, Sequence[object]]]) -> None:
        raise NotImplementedError

    async def queue_down(self, down: QueuedDown) -> None:
        """Store a down-message before it is first published (state ``queued``)."""
        rows = await self._rows(
            "INSERT INTO down_messages (hub, seq, type, payload, state, queued_at) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (hub, seq) DO NOTHING RETURNING seq",
            (down.hub, down.seq, down.message_type, down.payload, DownState.QUEUED.value, _ts(down.queued_at)),
        )
        if not rows:
            raise StorageError(f"down-message {down.seq} for {down.hub} is already stored")

    async def mark_down_sent(self, hub: str, seq: int, at: _dt.datetime) -> None:
        """Count a publish of an open down-message (``queued`` or ``sent`` becomes ``sent``)."""
        await self._execute_all(
            [
                (
                    "UPDATE down_messages SET state = 'sent', sends = sends + 1, sent_at = %s"
                    " WHERE hub = %s AND seq = %s AND state IN ('queued', 'sent')",
                    (_ts(at), hub, seq),
                )
            ]
        )

    async def confirm_down(
        self,
        hub: str,
        seq: int,
        state: DownState,
        *,
        at: _dt.datetime,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        """The hub applied or refused message ``seq``; open messages before it can no longer apply (expired)."""
        _check_confirmation(state)
        await self._execute_all(
            [
                (
                    "UPDATE down_messages SET state = %s, confirmed_at = %s, reason = %s, detail = %s"
                    " WHERE hub = %s AND seq = %s AND state IN ('queued', 'sent', 'expired')",
                    (state.value, _ts(at), reason, detail, hub, seq),
                ),
                (
                    "UPDATE down_messages SET state = 'expired', confirmed_at = %s, reason = %s"
                    " WHERE hub = %s AND seq < %s AND state IN ('queued', 'sent')",
                    (_ts(at), f"message {seq} was confirmed first", hub, seq),
                ),
            ]
        )

    async def down_messages(
        self, hub: str | None = None, *, open_only: bool = False, sent_before: _dt.datetime | None = None
    ) -> list[QueuedDown]:
        """Stored down-messages by hub and seq; only open ones, only those not published since a time, if asked."""
        query, params = _listing(hub, open_only, sent_before, "%s")
        return [_row(r) for r in await self._rows(query, params)]
