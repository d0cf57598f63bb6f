"""The platform's storage on PostgreSQL (production): :class:`community.storage.Storage` with psycopg 3 and a pool.

Same contract as the SQLite engine (``tests/platform/test_storage_contract.py`` runs one suite against both):

* :meth:`PostgresStorage.store_batch` is one transaction of a few statements whatever the batch size: the
  envelopes' ``(hub, seq)`` rows go in with ``ON CONFLICT DO NOTHING`` and the rows that went in say which envelopes
  are new; only their readings are inserted, again ``ON CONFLICT (hub, record_id) DO NOTHING``; then the refusals
  and the rejection counters. It returns after the commit, so an ack published after it names stored envelopes only.
  An envelope (or record id) that appears twice in one batch is stored once, at its first place, as SQLite's
  statement-per-row loop does. Envelope rows are inserted in key order, so two workers storing overlapping batches
  wait for each other instead of deadlocking.
* Workers may run side by side on one database: a re-sent envelope committed by another worker is seen as replayed
  (the unique key waits for the other transaction to finish).
* Every database failure (server down, connection lost, pool exhausted) is a :class:`StorageError` naming the
  database without its password: transient, never a refusal. The pool outlives a server restart: a lost connection
  makes it test its idle ones and replace the dead, reconnecting in the background with backoff, so the store
  serves again as soon as the server does (``tests/integration/test_pg_restart.py``).

Opening runs the pending schema migrations (:mod:`community.storage_pg_schema`) on a connection of its own, then opens
the pool.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Final, LiteralString, Self

import nacl.signing
import psycopg
import psycopg.conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from community.down_sql import PostgresDownStore
from community.storage import (
    Enrolment,
    EnvelopeOutcome,
    EnvelopeToStore,
    HubKeyChanges,
    Outcome,
    QuarantinedEnvelope,
    Refusal,
    StoredReading,
)
from community.storage_common import StorageError, seq_from_db, seq_to_db
from community.storage_pg_schema import MIGRATIONS, Migration, SchemaError, apply_migrations, current_version
from protocols.keys import HubPublicKey

__all__ = ["PostgresStorage", "display_url"]

DEFAULT_POOL_SIZE: Final = 4
DEFAULT_TIMEOUT_S: Final = 10.0

_Conn = psycopg.AsyncConnection[TupleRow]

_READING_COLUMNS: Final = (
    "hub, record_id, kind, record_seq, device, body::text, (extract(epoch FROM hub_time) * 1000000)::bigint,"
    " device_time, envelope_seq, received_at, resident, alarm_id"
)
_QUARANTINE_COLUMNS: Final = "id, received_at, topic_hub, claimed_hub, seq, reason, detail, size, digest"
# Only the constant column lists above are interpolated (S608).
_READINGS: Final = f"SELECT {_READING_COLUMNS} FROM readings ORDER BY id"  # noqa: S608
_READINGS_OF: Final = f"SELECT {_READING_COLUMNS} FROM readings WHERE hub = %s ORDER BY id"  # noqa: S608
_QUARANTINE: Final = f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine ORDER BY id"  # noqa: S608
_QUARANTINE_OF: Final = f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine WHERE topic_hub = %s ORDER BY id"  # noqa: S608


def display_url(url: str) -> str:
    """``url`` as it may be shown: ``postgresql://user@host:port/dbname``, no password or other parameters."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparseable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PostgresStorage(PostgresDownStore):
    """:class:`community.storage.Storage` on a PostgreSQL database; ``async with PostgresStorage(url) as storage``.

    Args:
        url: a libpq connection URL (``postgresql://user:password@host:port/dbname``; any libpq parameter).
        pool_size: at most this many connections (the ingest worker needs one per batch in flight).
        timeout_s: connecting, and waiting for a free pooled connection, fails after this long.
        migrations: the schema to migrate to (tests pass a longer list; operators never do).
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        migrations: tuple[Migration, ...] = MIGRATIONS,
    ) -> None:
        self.url = url
        self.name = display_url(url)
        self.timeout_s = timeout_s
        self._migrations = migrations
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool[_Conn] | None = None
        self.applied: list[Migration] = []
        """The migrations this store applied when it opened (empty: the schema was current)."""

    def _error(self, exc: BaseException) -> StorageError:
        return StorageError(f"platform database {self.name}: {_one_line(exc)}")

    async def __aenter__(self) -> Self:
        try:
            async with await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self.timeout_s))
            ) as conn:
                self.applied = await apply_migrations(conn, self._migrations)
            pool: AsyncConnectionPool[_Conn] = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                kwargs={"autocommit": True},
                timeout=self.timeout_s,
                open=False,
                name=self.name,
            )
            await pool.open(wait=True, timeout=self.timeout_s)
        except (psycopg.Error, SchemaError) as exc:
            raise self._error(exc) from exc
        self._pool = pool
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[_Conn]:
        """A pooled connection (autocommit: one statement, or an explicit ``conn.transaction()``)."""
        pool = self._pool
        if pool is None:
            raise StorageError(f"platform database {self.name} is not open")
        try:
            async with pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            # The server went away (a restart, a failover) or cannot be reached: the idle connections of the pool
            # are most likely dead as well. Test them now, so that once the server is back the next batch gets a
            # new connection rather than failing on a stale one (the pool reconnects in the background). Best
            # effort: the error raised is this one, whatever the check meets (a pool closed meanwhile).
            with contextlib.suppress(psycopg.Error):
                await pool.check()
            raise self._error(exc) from exc
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    async def _rows(self, query: LiteralString, params: Sequence[object] = ()) -> list[TupleRow]:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def _execute_all(self, statements: Sequence[tuple[LiteralString, Sequence[object]]]) -> None:
        """Run ``statements`` in one transaction."""
        async with self._conn() as conn, conn.transaction():
            for query, params in statements:
                await conn.execute(query, params)

    async def store_batch(
        self, envelopes: Sequence[EnvelopeToStore], refused: Sequence[Refusal] = ()
    ) -> list[EnvelopeOutcome]:
        """Store all envelopes, quarantine and count every refusal, in one transaction; return after it committed.

        Raises:
            StorageError: the database failed; nothing of the batch was written.
        """
        batch, refusals = tuple(envelopes), tuple(refused)
        async with self._conn() as conn, conn.transaction():
            new_envelopes = await self._insert_envelopes(conn, batch)
            first: list[EnvelopeToStore] = []
            for env in batch:
                key = (env.hub, env.envelope_seq)
                if key in new_envelopes:
                    new_envelopes.discard(key)
                    first.append(env)
            new_records = await self._insert_readings(conn, [r for env in first for r in env.readings])
            if refusals:
                await self._quarantine(conn, refusals)
        stored = {id(env) for env in first}
        outcomes: list[EnvelopeOutcome] = []
        for env in batch:
            if id(env) not in stored:
                outcomes.append(EnvelopeOutcome(env.hub, env.envelope_seq, Outcome.REPLAYED, (), ()))
                continue
            stored.discard(id(env))  # the same object given twice: stored at its first place only
            new: list[str] = []
            dup: list[str] = []
            for r in env.readings:
                record = (r.hub, r.record_id)
                if record in new_records:
                    new_records.discard(record)
                    new.append(r.record_id)
                else:
                    dup.append(r.record_id)
            outcomes.append(EnvelopeOutcome(env.hub, env.envelope_seq, Outcome.STORED, tuple(new), tuple(dup)))
        return outcomes

    @staticmethod
    async def _insert_envelopes(conn: _Conn, batch: Sequence[EnvelopeToStore]) -> set[tuple[str, int]]:
        """Insert the envelopes' keys; return those that were not stored before (as given, not biased)."""
        if not batch:
            return set()
        keys = sorted({(env.hub, seq_to_db(env.envelope_seq, "envelope seq")) for env in batch})
        cur = await conn.execute(
            "INSERT INTO envelopes (hub, seq) SELECT h, s FROM unnest(%b::text[], %b::bigint[]) AS t (h, s)"
            " ORDER BY h, s ON CONFLICT DO NOTHING RETURNING hub, seq",
            ([h for h, _ in keys], [s for _, s in keys]),
        )
        return {(str(h), seq_from_db(s)) for h, s in await cur.fetchall()}

    @staticmethod
    async def _insert_readings(conn: _Conn, readings: Sequence[StoredReading]) -> set[tuple[str, str]]:
        """Insert the readings in order; return the ``(hub, record_id)`` of those that were new."""
        if not readings:
            return set()
        cur = await conn.execute(
            "INSERT INTO readings (hub, record_id, kind, record_seq, device, body, hub_time, device_time,"
            " envelope_seq, received_at, resident, alarm_id)"
            " SELECT h, rid, k, rs, d, b::json, ht, dt, es, ra, res, al FROM unnest(%b::text[], %b::text[],"
            " %b::text[], %b::bigint[], %b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::bigint[],"
            " %b::float8[], %b::text[], %b::text[])"
            " WITH ORDINALITY AS t (h, rid, k, rs, d, b, ht, dt, es, ra, res, al, n) ORDER BY n"
            " ON CONFLICT (hub, record_id) DO NOTHING RETURNING hub, record_id",
            (
                [r.hub for r in readings],
                [r.record_id for r in readings],
                [r.kind for r in readings],
                [seq_to_db(r.record_seq, "record seq") for r in readings],
                [r.device for r in readings],
                [r.body_text for r in readings],
                [r.hub_time for r in readings],
                [r.device_time for r in readings],
                [seq_to_db(r.envelope_seq, "envelope seq") for r in readings],
                [float(r.received_at) for r in readings],
                [r.resident_id for r in readings],
                [r.alarm_id for r in readings],
            ),
        )
        return {(str(h), str(rid)) for h, rid in await cur.fetchall()}

    async def _quarantine(self, conn: _Conn, refusals: Sequence[Refusal]) -> None:
        await conn.execute(
            "INSERT INTO quarantine (received_at, topic_hub, claimed_hub, seq, reason, detail, size, digest)"
            " SELECT ra, th, ch, s, r, d, sz, dg FROM unnest(%b::float8[], %b::text[], %b::text[], %b::bigint[],"
            " %b::text[], %b::text[],"
            " %b::bigint[], %b::text[]) WITH ORDINALITY AS t (ra, th, ch, s, r, d, sz, dg, n) ORDER BY n",
            (
                [float(q.received_at) for q in refusals],
                [q.topic_hub for q in refusals],
                [q.claimed_hub for q in refusals],
                [None if q.envelope_seq is None else seq_to_db(q.envelope_seq, "envelope seq") for q in refusals],
                [q.reason.value for q in refusals],
                [q.detail for q in refusals],
                [q.size for q in refusals],
                [q.digest for q in refusals],
            ),
        )
        counts = collections.Counter((q.reason.value, q.topic_hub or "") for q in refusals)
        await self._bump(conn, counts)

    @staticmethod
    async def _bump(conn: _Conn, counts: collections.Counter[tuple[str, str]]) -> None:
        keys = sorted(counts)
        await conn.execute(
            "INSERT INTO rejections (reason, hub, count) SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[])"
            " ON CONFLICT (reason, hub) DO UPDATE SET count = rejections.count + excluded.count",
            ([r for r, _ in keys], [h for _, h in keys], [counts[k] for k in keys]),
        )

    async def count_rejection(self, reason: str, hub: str | None, count: int = 1) -> None:
        """Add to the rejection counter for ``(reason, hub)`` (hub ``""`` when unknown)."""
        async with self._conn() as conn:
            await self._bump(conn, collections.Counter({(reason, hub or ""): count}))

    async def count_rejections(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add to several rejection counters, keyed ``(reason, hub)`` (hub ``""`` when unknown), in one statement."""
        if counts:
            async with self._conn() as conn:
                await self._bump(conn, collections.Counter(counts))

    async def rejections(self) -> dict[str, int]:
        """Rejection totals per reason."""
        rows = await self._rows("SELECT reason, sum(count) FROM rejections GROUP BY reason")
        return {str(reason): int(total) for reason, total in rows}

    async def quarantine(self, hub: str | None = None) -> list[QuarantinedEnvelope]:
        """Refused envelopes and frames, oldest first; of one hub (the topic's) if given."""
        rows = await (self._rows(_QUARANTINE) if hub is None else self._rows(_QUARANTINE_OF, (hub,)))
        return [QuarantinedEnvelope.from_row(row) for row in rows]

    async def readings(self, hub: str | None = None) -> list[StoredReading]:
        """Stored readings, oldest first; of one hub if given."""
        rows = await (self._rows(_READINGS) if hub is None else self._rows(_READINGS_OF, (hub,)))
        return [StoredReading.from_row(row) for row in rows]

    async def enroll_hub(self, hub: HubPublicKey, residents: Sequence[str] = ()) -> None:
        """Register (or replace) a hub's Ed25519 verify key, and the residents it serves.

        Raises:
            ValueError: an invalid hub id, key or resident id (text of 1..256 characters).
        """
        await self.enroll_hubs([Enrolment(hub, tuple(residents))])

    async def enroll_hubs(self, enrolments: Sequence[Enrolment]) -> None:
        """Register (or replace) many hubs and their residents in one transaction (one registry generation; the
        last enrolment of a hub named twice wins)."""
        keys = {e.hub.hub_id: bytes(e.hub.verify_key) for e in enrolments}
        residents = sorted({(e.hub.hub_id, name) for e in enrolments for name in e.residents})
        if not keys:
            return
        hubs = sorted(keys)
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE hub_registry SET generation = generation + 1 WHERE id = 0 RETURNING generation"
            )
            row = await cur.fetchone()
            if row is None:
                raise StorageError(f"platform database {self.name}: the hub registry row is missing")
            await conn.execute(
                "INSERT INTO hubs (hub, verify_key, generation) SELECT h, k, %s FROM unnest(%b::text[], %b::bytea[])"
                " AS t (h, k) ON CONFLICT (hub) DO UPDATE SET verify_key = excluded.verify_key,"
                " generation = excluded.generation",
                (row[0], hubs, [keys[h] for h in hubs]),
            )
            if residents:
                await conn.execute(
                    "INSERT INTO residents (hub, resident) SELECT * FROM unnest(%b::text[], %b::text[])"
                    " ON CONFLICT DO NOTHING",
                    ([h for h, _ in residents], [r for _, r in residents]),
                )

    async def hubs(self) -> dict[str, nacl.signing.VerifyKey]:
        """Every enrolled hub and its verify key (for operators; ingest reads one hub at a time)."""
        rows = await self._rows("SELECT hub, verify_key FROM hubs")
        return {str(h): nacl.signing.VerifyKey(bytes(k)) for h, k in rows}

    async def hub_key(self, hub: str) -> nacl.signing.VerifyKey | None:
        """One hub's verify key, ``None`` if it is not enrolled (one row, by primary key)."""
        rows = await self._rows("SELECT verify_key FROM hubs WHERE hub = %s", (hub,))
        return nacl.signing.VerifyKey(bytes(rows[0][0])) if rows else None

    async def hub_keys(self, hubs: Sequence[str]) -> dict[str, nacl.signing.VerifyKey]:
        """The verify keys of those of ``hubs`` that are enrolled, in one statement (by primary key)."""
        if not hubs:
            return {}
        rows = await self._rows("SELECT hub, verify_key FROM hubs WHERE hub = ANY(%b::text[])", (list(hubs),))
        return {str(h): nacl.signing.VerifyKey(bytes(k)) for h, k in rows}

    async def hub_key_changes(self, since: int | None) -> HubKeyChanges:
        """The registry's generation and the hubs (re-)enrolled after generation ``since`` (``None``: the generation
        alone), in one statement (one snapshot): one row, plus one per changed hub (by index)."""
        if since is None:
            rows = await self._rows("SELECT generation, NULL, NULL FROM hub_registry WHERE id = 0")
        else:
            rows = await self._rows(
                "SELECT r.generation, h.hub, h.verify_key FROM hub_registry r"
                " LEFT JOIN hubs h ON h.generation > %s WHERE r.id = 0",
                (since,),
            )
        if not rows:
            raise StorageError(f"platform database {self.name}: the hub registry row is missing")
        keys = {str(h): nacl.signing.VerifyKey(bytes(k)) for _, h, k in rows if h is not None}
        return HubKeyChanges(int(rows[0][0]), keys)

    async def knows_resident(self, hub: str, resident_id: str) -> bool:
        """Whether ``resident_id`` was registered for ``hub`` at enrolment or named in one of its records."""
        rows = await self._rows(
            "SELECT EXISTS (SELECT 1 FROM residents WHERE hub = %s AND resident = %s)"
            " OR EXISTS (SELECT 1 FROM readings WHERE hub = %s AND resident = %s)",
            (hub, resident_id, hub, resident_id),
        )
        return bool(rows[0][0])

    async def knows_alarm(self, hub: str, alarm_id: str) -> bool:
        """Whether one of ``hub``'s alarm or panic records named ``alarm_id``."""
        rows = await self._rows(
            "SELECT EXISTS (SELECT 1 FROM readings WHERE hub = %s AND alarm_id = %s)", (hub, alarm_id)
        )
        return bool(rows[0][0])

    async def next_down_seq(self, hub: str) -> int:
        """Allocate the next down-message sequence number for ``hub`` (1, 2, ...); committed before it returns."""
        rows = await self._rows(
            "INSERT INTO down_seqs (hub, seq) VALUES (%s, 1)"
            " ON CONFLICT (hub) DO UPDATE SET seq = down_seqs.seq + 1 RETURNING seq",
            (hub,),
        )
        return int(rows[0][0])

    async def schema_version(self) -> int:
        """The highest migration applied (``schema_migrations``)."""
        async with self._conn() as conn:
            return await current_version(conn)
