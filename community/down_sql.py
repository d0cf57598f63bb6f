"""The down-message store (:mod:`community.down_types`) in SQL, one statement set for both engines.

:class:`DownSql` holds the statements and the logic, once. The engines differ only in their placeholders (``?`` for
SQLite, ``%s`` for psycopg) and in how a statement runs, which is all a :class:`DownSqlEngine` provides:
:class:`SqliteDownStore` and :class:`PostgresDownStore` provide it over what their storage class has (typed by
:class:`SqliteHost` and :class:`PostgresHost`), and the two storage classes take them on as mixins. Times are stored
as Unix seconds (double precision), like the readings' ``received_at``.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final, LiteralString, Protocol, TypeVar

from community.down_types import DownState, QueuedDown
from community.storage_common import StorageError

__all__ = [
    "PG_DOWN_SCHEMA",
    "SQLITE_DOWN_SCHEMA",
    "DownSql",
    "DownSqlEngine",
    "PostgresDownStore",
    "PostgresHost",
    "SqliteDownStore",
    "SqliteHost",
]

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
_INSERT: Final = (
    "INSERT INTO down_messages (hub, seq, type, payload, state, queued_at) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (hub, seq) DO NOTHING RETURNING seq"
)
_OPEN_HUBS: Final = f"SELECT DISTINCT hub FROM down_messages WHERE state IN {_OPEN}"  # noqa: S608  constants only
_SENT: Final = (
    f"UPDATE down_messages SET state = 'sent', sends = sends + 1, sent_at = ?"  # noqa: S608  constants only
    f" WHERE hub = ? AND seq = ? AND state IN {_OPEN}"
)
_CONFIRM: Final = (
    "UPDATE down_messages SET state = ?, confirmed_at = ?, reason = ?, detail = ?"
    " WHERE hub = ? AND seq = ? AND state IN ('queued', 'sent', 'expired')"
)
_EXPIRE: Final = (
    f"UPDATE down_messages SET state = 'expired', confirmed_at = ?, reason = ?"  # noqa: S608  constants only
    f" WHERE hub = ? AND seq < ? AND state IN {_OPEN}"
)


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


def _listing(hub: str | None, open_only: bool, sent_before: _dt.datetime | None) -> tuple[LiteralString, list[object]]:
    where: list[LiteralString] = []
    params: list[object] = []
    if hub is not None:
        where.append("hub = ?")
        params.append(hub)
    if open_only:
        where.append(f"state IN {_OPEN}")
    if sent_before is not None:
        where.append("(sent_at IS NULL OR sent_at < ?)")
        params.append(_ts(sent_before))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {_COLUMNS} FROM down_messages{clause} ORDER BY hub, seq", params  # noqa: S608  constants only


Statement = tuple[LiteralString, Sequence[object]]
"""One SQL statement written with ``?`` placeholders, and its parameters."""


class DownSqlEngine(Protocol):
    """What :class:`DownSql` needs of a storage engine: run statements written with ``?`` placeholders."""

    async def down_rows(self, statement: Statement) -> list[Sequence[Any]]:
        """Run one statement on its own (committed) and return its rows."""
        ...

    async def down_transaction(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one transaction."""
        ...


class DownSql:
    """The down-message methods of both storage classes (:class:`community.storage.Storage`), on any
    :class:`DownSqlEngine`."""

    async def queue_down(self: DownSqlEngine, down: QueuedDown) -> None:
        """Store a down-message before it is first published (state ``queued``); refuse a ``(hub, seq)`` stored
        before."""
        row = (down.hub, down.seq, down.message_type, down.payload, DownState.QUEUED.value, _ts(down.queued_at))
        if not await self.down_rows((_INSERT, row)):
            raise StorageError(f"down-message {down.seq} for {down.hub} is already stored")

    async def mark_down_sent(self: DownSqlEngine, hub: str, seq: int, at: _dt.datetime) -> None:
        """Count a publish of an open down-message (``queued`` or ``sent`` becomes ``sent``)."""
        await self.down_transaction([(_SENT, (_ts(at), hub, seq))])

    async def confirm_down(
        self: DownSqlEngine,
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
        when = _ts(at)
        await self.down_transaction(
            [
                (_CONFIRM, (state.value, when, reason, detail, hub, seq)),
                (_EXPIRE, (when, f"message {seq} was confirmed first", hub, seq)),
            ]
        )

    async def down_messages(
        self: DownSqlEngine,
        hub: str | None = None,
        *,
        open_only: bool = False,
        sent_before: _dt.datetime | None = None,
    ) -> list[QueuedDown]:
        """Stored down-messages by hub and seq; only open ones, only those not published since a time, if asked."""
        return [_row(r) for r in await self.down_rows(_listing(hub, open_only, sent_before))]

    async def open_down_hubs(self: DownSqlEngine) -> list[str]:
        """The hubs with open (``queued`` or ``sent``) down-messages, each once (by the open messages' index)."""
        return [str(hub) for (hub,) in await self.down_rows((_OPEN_HUBS, ()))]


class SqliteHost(Protocol):
    """What :class:`SqliteDownStore` needs of :class:`community.storage.SqliteStorage`."""

    def _db(self) -> sqlite3.Connection:
        """The open connection (autocommit: ``isolation_level=None``)."""
        ...

    async def _run_db(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the storage's database thread; a database error becomes :class:`StorageError`."""
        ...


class SqliteDownStore(DownSql):
    """:class:`DownSqlEngine` on SQLite (``?`` is SQLite's own placeholder)."""

    async def down_rows(self: SqliteHost, statement: Statement) -> list[Sequence[Any]]:
        """Run one statement (autocommitted) and return its rows."""
        query, params = statement
        return await self._run_db(lambda: self._db().execute(query, params).fetchall())

    async def down_transaction(self: SqliteHost, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one ``BEGIN IMMEDIATE`` transaction."""

        def run() -> None:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                for query, params in statements:
                    db.execute(query, params)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run_db(run)


class PostgresHost(Protocol):
    """What :class:`PostgresDownStore` needs of :class:`community.storage_pg.PostgresStorage`."""

    async def _rows(self, query: LiteralString, params: Sequence[object] = ()) -> list[Any]:
        """Run one statement on a pooled connection (committed) and return its rows."""
        ...

    async def _execute_all(self, statements: Sequence[tuple[LiteralString, Sequence[object]]]) -> None:
        """Run ``statements`` in one transaction."""
        ...


def _pg(query: LiteralString) -> LiteralString:
    """A statement of this module with psycopg's placeholders."""
    return query.replace("?", "%s")


class PostgresDownStore(DownSql):
    """:class:`DownSqlEngine` on PostgreSQL (psycopg's ``%s`` placeholders)."""

    async def down_rows(self: PostgresHost, statement: Statement) -> list[Sequence[Any]]:
        """Run one statement (committed) and return its rows."""
        query, params = statement
        return await self._rows(_pg(query), params)

    async def down_transaction(self: PostgresHost, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one transaction."""
        await self._execute_all([(_pg(query), params) for query, params in statements])
