"""The outbox's synchronous store: the SQLite connection and the group commit, run on the outbox's own thread.

The async facade (:class:`gateway.outbox.Outbox`) hands this store groups of :class:`Job` s; :meth:`OutboxStore.execute`
runs a group in one transaction and returns one outcome per job, only after the commit (so a caller is resumed only
once its row is on disk):

* Optimistically every job succeeds: no savepoint per job, and each run of consecutive puts shares one INSERT
  statement. If a job fails, the group is rolled back and run again with a savepoint per job, so a failure undoes
  only its own work.
* Two lanes: :attr:`Lane.PRIORITY` rows are never evicted; :attr:`Lane.ROUTINE` rows are evicted oldest first when
  the stored bytes exceed the budget, and every eviction is logged durably in the same transaction. When only
  priority rows remain the budget is exceeded rather than an alarm dropped, and :attr:`OutboxStats.over_limit` says
  so.
* Row and byte counts are kept in memory (rebuilt from the table after a rollback), so statistics and the eviction
  check cost no query.
* A full file system (issue 17 item 2): a reserve file next to the outbox is given up for essential writes (priority
  rows, acknowledgements) when a group fails with ``SQLITE_FULL``, routine writes are refused while it is released,
  and it is re-created once space returns; see :mod:`gateway.disk_reserve` for the design.

Everything here runs on one thread; nothing here awaits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.clock import Clock
from gateway.disk_reserve import (
    EPISODE_CURSOR,
    DiskFullError,
    DiskReserve,
    FullDiskEpisode,
    ReserveStatus,
    free_bytes,
    is_disk_full,
    reserve_path,
)
from gateway.errors import OutboxClosedError, OutboxError, OutboxUnwritableError
from gateway.outbox_rows import CursorValue, Eviction, Lane, OutboxItem, OutboxStats, PutResult
from gateway.outbox_schema import (
    INSERT,
    ROUTINE_OLDEST_FIRST,
    SEQ_KEY,
    classify_open_error,
    encode_row,
    prepare,
    read_cursor,
    rows_to_send,
    write_cursor,
)
from protocols import atomic

if TYPE_CHECKING:
    import asyncio

__all__ = ["Job", "OutboxStore", "Outcome"]

_log = logging.getLogger(__name__)

Outcome = tuple[bool, Any]
"""A job's result: ``(True, value)`` or ``(False, exception)`` for the awaiting caller to raise."""


@dataclass(slots=True)
class Job:
    """One call of the async API, waiting for the database thread.

    A put (``fn`` is None) is kept as data, so that consecutive puts in a group share one INSERT statement.
    """

    future: asyncio.Future[Any]
    fn: Callable[[Any], Any] | None  # receives the connection, or None before open; None for a put
    write: bool
    items: tuple[OutboxItem, ...] = ()
    priority: bool = False  # some of the items are in the priority lane
    cursors: Mapping[str, CursorValue] | None = None
    settle: Eviction | None = None
    essential: bool = False  # admitted while the disk reserve is released (priority puts, acks, sequence numbers)

    @property
    def routine_write(self) -> bool:
        """A write refused while the disk reserve is released."""
        return self.write and not (self.essential or self.priority)


class OutboxStore:
    """The connection, the in-memory counts and the jobs; owned by the outbox's database thread.

    Args:
        path: the SQLite file.
        max_bytes: budget for stored envelope bytes; routine rows are evicted beyond it.
        clock: wall clock for eviction timestamps.
        commit_hook: called after every commit with the number of write jobs it held.
        reserve_bytes: space held back for the priority lane on a full disk (0: no reserve).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        clock: Clock,
        commit_hook: Callable[[int], None] | None,
        reserve_bytes: int = 0,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        if reserve_bytes < 0:
            raise ValueError(f"reserve_bytes must be >= 0, got {reserve_bytes}")
        self._reserve = DiskReserve(reserve_path(path), reserve_bytes) if reserve_bytes else None
        self._episode: FullDiskEpisode | None = None  # the last (or current) full-disk episode
        self._episode_dirty = False  # it changed since it was last committed to its cursor
        self.path = path
        self.max_bytes = max_bytes
        self._clock = clock
        self._commit_hook = commit_hook
        self._conn: sqlite3.Connection | None = None
        self._commits = 0
        self._rows = [0, 0]  # per lane
        self._bytes = 0
        self._evicted_rows_total = 0
        self._evicted_bytes_total = 0

    # ---------------------------------------------------------------- lifecycle (jobs run without a connection)

    def open(self, _conn: sqlite3.Connection | None = None) -> None:
        """Open (creating or migrating) the database.

        Raises:
            OutboxCorruptError, OutboxUnwritableError, OutboxSchemaError: see :func:`gateway.outbox.open_outbox`.
        """
        path = self.path
        try:
            atomic.make_directories(path.parent)  # durable in its parent too, or a power cut may take it away
        except OSError as exc:
            raise OutboxUnwritableError(path, f"cannot create directory {path.parent} ({exc})") from exc
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise classify_open_error(path, exc) from exc
        try:
            prepare(conn, path)
            self._recount(conn)
        except OutboxError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise classify_open_error(path, exc) from exc
        try:
            self._open_reserve(conn)
        except (OSError, sqlite3.Error) as exc:
            conn.close()
            raise OutboxUnwritableError(path, f"cannot set up the disk reserve {reserve_path(path)} ({exc})") from exc
        self._conn = conn

    def _open_reserve(self, conn: sqlite3.Connection) -> None:
        stored = read_cursor(conn, EPISODE_CURSOR, None)
        if stored is not None:
            try:
                self._episode = FullDiskEpisode.decode(stored)
            except ValueError as exc:  # a diagnostic record must not keep the hub from storing alarms
                _log.warning("outbox %s: ignoring cursor %s: %s", self.path, EPISODE_CURSOR, exc)
        if self._reserve is None:
            return
        if not self._reserve.ensure():
            _log.warning(
                "outbox %s: too little free space for the disk reserve (%d bytes); routine writes wait for space",
                self.path,
                self._reserve.size,
            )
            self._begin_episode()
        else:
            self._end_episode()

    def close(self, _conn: sqlite3.Connection | None = None) -> None:
        """Close the database (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---------------------------------------------------------------- group commit

    def execute(self, batch: list[Job]) -> list[Outcome]:
        """Run ``batch`` in one transaction (reads without one); one outcome per job, in order.

        On a full disk the reserve is given up for the group's essential jobs, which run again at once; routine
        writes are refused while it is released (see :mod:`gateway.disk_reserve`).
        """
        conn = self._conn
        if conn is None:
            # Only the open and close jobs run without a connection.
            return [self._call(job, None) for job in batch]
        reserve = self._reserve
        if reserve is None or not any(job.write for job in batch):
            return self._commit_group(batch, conn)
        self._maintain_reserve(reserve)
        outcomes: dict[int, Outcome] = {}
        if not reserve.held:
            self._refuse([i for i, job in enumerate(batch) if job.routine_write], outcomes)
        run = [i for i in range(len(batch)) if i not in outcomes]
        results = self._commit_group([batch[i] for i in run], conn)
        if any(not ok and isinstance(value, DiskFullError) for ok, value in results):
            self._begin_episode()
            if reserve.held and any(batch[i].write and not batch[i].routine_write for i in run):
                freed = reserve.release()
                _log.warning(
                    "outbox %s: the file system is full; released the %d-byte disk reserve for alarms and panic "
                    "calls, routine writes wait for space",
                    self.path,
                    freed,
                )
                self._refuse([i for i in run if batch[i].routine_write], outcomes)
                run = [i for i in run if i not in outcomes]
                results = self._commit_group([batch[i] for i in run], conn)
        for i, (ok, value) in zip(run, results, strict=True):
            if not ok and isinstance(value, DiskFullError) and batch[i].routine_write:
                self._count_refused(1)
            outcomes[i] = (ok, value)
        return [outcomes[i] for i in range(len(batch))]

    def _refuse(self, indexes: list[int], outcomes: dict[int, Outcome]) -> None:
        if not indexes:
            return
        error = DiskFullError(self.path, "the file system is full; the disk reserve is kept for alarms, not stored")
        for i in indexes:
            outcomes[i] = (False, error)
        self._count_refused(len(indexes))

    def _count_refused(self, count: int) -> None:
        episode = self._episode
        if episode is not None and episode.ended is None:
            self._episode = dataclasses.replace(episode, refused=episode.refused + count)
            self._episode_dirty = True

    def _begin_episode(self) -> None:
        if self._episode is None or self._episode.ended is not None:
            self._episode = FullDiskEpisode(started=self._clock.wall(), ended=None, priority_commits=0, refused=0)
            self._episode_dirty = True

    def _end_episode(self) -> None:
        episode = self._episode
        if episode is not None and episode.ended is None:
            self._episode = dataclasses.replace(episode, ended=self._clock.wall())
            self._episode_dirty = True
            _log.warning("outbox %s: space has returned; the disk reserve is in place again", self.path)

    def _maintain_reserve(self, reserve: DiskReserve) -> None:
        """Re-create a released reserve once space has returned, ending the full-disk episode."""
        episode_open = self._episode is not None and self._episode.ended is None
        if reserve.held and not episode_open:
            return
        try:
            held = reserve.ensure()
        except OSError as exc:
            _log.error("outbox %s: cannot re-create the disk reserve: %s", self.path, exc)
            return
        if held and free_bytes(self.path.parent) >= reserve.size:
            self._end_episode()

    def reserve(self, _conn: sqlite3.Connection | None = None) -> tuple[ReserveStatus | None, FullDiskEpisode | None]:
        """The reserve on disk (``None`` without one) and the last full-disk episode."""
        return (None if self._reserve is None else self._reserve.status()), self._episode

    def _episode_to_commit(self, batch: list[Job], outcomes: list[Outcome]) -> FullDiskEpisode | None:
        """The episode to write with this commit, counting it when it stores priority rows from the reserve."""
        episode = self._episode
        if episode is None:
            return None
        reserve = self._reserve
        from_reserve = reserve is not None and not reserve.held and episode.ended is None
        if from_reserve and any(ok and job.priority for job, (ok, _) in zip(batch, outcomes, strict=True)):
            return dataclasses.replace(episode, priority_commits=episode.priority_commits + 1)
        return episode if self._episode_dirty else None

    def _commit_group(self, batch: list[Job], conn: sqlite3.Connection) -> list[Outcome]:
        """Run ``batch`` in one transaction (reads without one); one outcome per job, in order."""
        outcomes: list[Outcome] = []
        in_txn = False
        try:
            if not any(job.write for job in batch):
                return [self._call(job, conn) for job in batch]
            conn.execute("BEGIN IMMEDIATE")
            in_txn = True
            # Optimistically, every job succeeds: no savepoint per job, and each run of consecutive puts
            # shares one INSERT statement.
            outcomes = self._optimistic(batch, conn)
            if not all(ok for ok, _ in outcomes):
                # A job failed, perhaps half way: undo the group, then give each job its own savepoint so a
                # failure undoes only its own work. The jobs only touch the database and the counters that
                # _recount rebuilds, so running them again is safe.
                conn.execute("ROLLBACK")
                in_txn = False
                self._recount(conn)
                if len(batch) > 1:
                    conn.execute("BEGIN IMMEDIATE")
                    in_txn = True
                    outcomes = [self._isolated(job, conn) for job in batch]
            if in_txn:
                episode = self._episode_to_commit(batch, outcomes)
                if episode is not None:
                    write_cursor(conn, EPISODE_CURSOR, episode.encode())
                conn.execute("COMMIT")
                in_txn = False
                if episode is not None:
                    self._episode, self._episode_dirty = episode, False
                self._commits += 1
                if self._commit_hook is not None:
                    self._commit_hook(sum(1 for job in batch if job.write))
        except sqlite3.Error as exc:
            if in_txn:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                with contextlib.suppress(sqlite3.Error):
                    self._recount(conn)
            kind = DiskFullError if is_disk_full(exc, self.path.parent) else OutboxError
            error = kind(self.path, f"commit failed, nothing in this group was stored ({exc})")
            outcomes = [(False, error)] * len(batch)
        return outcomes

    def _optimistic(self, batch: list[Job], conn: sqlite3.Connection) -> list[Outcome]:
        outcomes: list[Outcome] = []
        run: list[Job] = []
        for job in batch:
            if job.fn is None:
                run.append(job)
                continue
            outcomes.extend(self._call_puts(run, conn))
            run = []
            outcomes.append(self._call(job, conn))
        outcomes.extend(self._call_puts(run, conn))
        return outcomes

    def _call_puts(self, run: list[Job], conn: sqlite3.Connection) -> list[Outcome]:
        if not run:
            return []
        ok, value = self._guarded(lambda: self._insert_group(conn, run))
        return [(True, result) for result in value] if ok else [(False, value)] * len(run)

    def _isolated(self, job: Job, conn: sqlite3.Connection) -> Outcome:
        conn.execute("SAVEPOINT job")
        ok, value = self._call(job, conn)
        if not ok:
            conn.execute("ROLLBACK TO job")
            self._recount(conn)
        conn.execute("RELEASE job")
        return ok, value

    def _call(self, job: Job, conn: sqlite3.Connection | None) -> Outcome:
        fn = job.fn
        if fn is not None:
            return self._guarded(lambda: fn(conn))
        if conn is None:
            return False, OutboxClosedError(self.path, "the outbox is not open")
        return self._guarded(lambda: self._insert(conn, job.items, job.cursors, job.settle))

    def _guarded(self, fn: Callable[[], Any]) -> Outcome:
        try:
            return True, fn()
        except sqlite3.Error as exc:
            kind = DiskFullError if is_disk_full(exc, self.path.parent) else OutboxError
            return False, kind(self.path, str(exc))
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller, which re-raises it
            return False, exc

    def _recount(self, conn: sqlite3.Connection) -> None:
        rows = [0, 0]
        total = 0
        query = "SELECT lane, COUNT(*), COALESCE(SUM(size), 0) FROM outbox GROUP BY lane"
        for lane, count, size in conn.execute(query):
            rows[int(lane)] = int(count)
            total += int(size)
        self._rows = rows
        self._bytes = total
        self._evicted_rows_total = self._counter(conn, "evicted_rows")
        self._evicted_bytes_total = self._counter(conn, "evicted_bytes")

    @staticmethod
    def _counter(conn: sqlite3.Connection, name: str) -> int:
        found = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if found is None else int(found[0])

    @staticmethod
    def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + ?",
            (name, by, by),
        )

    # ---------------------------------------------------------------- jobs

    def _insert(
        self,
        conn: sqlite3.Connection,
        items: Sequence[OutboxItem],
        cursors: Mapping[str, CursorValue] | None,
        settle: Eviction | None,
    ) -> PutResult:
        for item in items:
            try:
                conn.execute(INSERT, encode_row(item))
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"envelope seq {item.envelope_seq} is already in the outbox") from exc
            self._rows[item.lane] += 1
            self._bytes += item.size
        if cursors:
            for key, value in cursors.items():
                write_cursor(conn, key, value)
        if settle is not None:
            conn.executemany("DELETE FROM eviction_log WHERE seq = ?", [(s,) for s in settle.seqs])
        evicted = self._evict(conn)
        return PutResult(evicted=evicted, over_limit=self._bytes > self.max_bytes)

    def _insert_group(self, conn: sqlite3.Connection, run: list[Job]) -> list[PutResult]:
        """Several puts in one statement (the optimistic path; any failure reruns each put alone)."""
        # Per-row work here is paid once per row under load: list comprehensions, no generator per row.
        rows = [encode_row(item) for put in run for item in put.items]
        conn.executemany(INSERT, rows)
        priority = [row[1] for row in rows].count(Lane.PRIORITY)
        self._rows[Lane.PRIORITY] += priority
        self._rows[Lane.ROUTINE] += len(rows) - priority
        self._bytes += sum([row[5] for row in rows])
        for put in run:
            if put.cursors:
                for key, value in put.cursors.items():
                    write_cursor(conn, key, value)
            if put.settle is not None:
                conn.executemany("DELETE FROM eviction_log WHERE seq = ?", [(s,) for s in put.settle.seqs])
        # Rows are evicted once for the group; the last put reports it (its caller settles the report).
        evicted = self._evict(conn)
        over = self._bytes > self.max_bytes
        kept = PutResult(evicted=None, over_limit=over)
        return [kept] * (len(run) - 1) + [PutResult(evicted=evicted, over_limit=over)]

    def _evict(self, conn: sqlite3.Connection) -> Eviction | None:
        excess = self._bytes - self.max_bytes
        if excess <= 0:
            return None
        victims: list[tuple[int, tuple[str, ...], int]] = []
        freed = 0
        for seq, record_ids, size in conn.execute(ROUTINE_OLDEST_FIRST):
            if freed >= excess:
                break
            victims.append((int(seq), tuple(json.loads(record_ids)), int(size)))
            freed += int(size)
        if not victims:
            return None
        now = self._clock.wall()
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(v[0],) for v in victims])
        conn.executemany(
            "INSERT OR REPLACE INTO eviction_log (seq, record_ids, size, evicted_at) VALUES (?, ?, ?, ?)",
            [(seq, json.dumps(list(ids)), size, now) for seq, ids, size in victims],
        )
        self._bump(conn, "evicted_rows", len(victims))
        self._bump(conn, "evicted_bytes", freed)
        self._rows[Lane.ROUTINE] -= len(victims)
        self._bytes -= freed
        self._evicted_rows_total += len(victims)
        self._evicted_bytes_total += freed
        eviction = Eviction.merge(victims)
        _log.warning(
            "outbox over budget (%d bytes): evicted %d routine envelope(s), seq %d..%d, %d bytes",
            self.max_bytes,
            len(victims),
            victims[0][0],
            victims[-1][0],
            freed,
        )
        return eviction

    def delete(self, conn: sqlite3.Connection, seqs: Collection[int]) -> int:
        """Delete the rows ``seqs``; returns how many were present."""
        deleted = 0
        for seq in seqs:
            found = conn.execute("DELETE FROM outbox WHERE seq = ? RETURNING lane, size", (seq,)).fetchone()
            if found is None:
                continue
            deleted += 1
            self._rows[int(found[0])] -= 1
            self._bytes -= int(found[1])
        return deleted

    def peek(self, conn: sqlite3.Connection, limit: int, max_bytes: int, exclude: frozenset[int]) -> list[OutboxItem]:
        """The next rows to send, priority lane first, oldest first, skipping ``exclude``."""
        out: list[OutboxItem] = []
        used = 0
        for seq, lane, kind, record_ids, created, size, envelope in rows_to_send(conn):
            if seq in exclude:
                continue
            if out and used + int(size) > max_bytes:
                break
            out.append(
                OutboxItem(
                    envelope_seq=int(seq),
                    envelope=bytes(envelope),
                    lane=Lane(int(lane)),
                    kind=str(kind),
                    record_ids=tuple(json.loads(record_ids)),
                    created=float(created),
                )
            )
            used += int(size)
            if len(out) >= limit:
                break
        return out

    def allocate(self, conn: sqlite3.Connection, count: int) -> range:
        """Reserve ``count`` envelope sequence numbers (in the caller's transaction)."""
        found = conn.execute(
            "UPDATE cursors SET value = value + ? WHERE key = ? RETURNING value", (count, SEQ_KEY)
        ).fetchone()
        end = int(found[0])
        return range(end - count, end)

    def stats(self, conn: sqlite3.Connection | None = None) -> OutboxStats:
        """Row counts, bytes, commits and eviction totals (from memory: no query)."""
        del conn
        return OutboxStats(
            rows=sum(self._rows),
            priority_rows=self._rows[Lane.PRIORITY],
            routine_rows=self._rows[Lane.ROUTINE],
            total_bytes=self._bytes,
            max_bytes=self.max_bytes,
            over_limit=self._bytes > self.max_bytes,
            commits=self._commits,
            evicted_rows_total=self._evicted_rows_total,
            evicted_bytes_total=self._evicted_bytes_total,
        )
