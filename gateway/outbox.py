"""The hub's durable outbox: sealed envelopes waiting for the platform's application-level ack.

Invariant 1 (durable before acknowledged) and invariant 4 (alarms first, never evicted) live here. This module is
the async facade; the parts it is made of:

* :mod:`gateway.outbox_rows`: the typed rows and results (:class:`Lane`, :class:`OutboxItem`, :class:`Eviction`,
  :class:`PutResult`, :class:`OutboxStats`), free of I/O, for the pure cores;
* :mod:`gateway.outbox_schema`: the SQLite schema, its migrations and the connection's set-up (WAL,
  ``synchronous=FULL``: a commit returns only after the WAL is fsynced; a database written by a newer carehub is
  refused);
* :mod:`gateway.outbox_store`: the synchronous store, its group commit and eviction, run on the outbox's thread;
* :mod:`gateway.disk_reserve`: the space held back so that alarms and panic calls are still stored when another
  program has filled the file system (issue 17 item 2).

How the facade works:

* All database work runs on ONE dedicated thread. The async API submits jobs to that thread and awaits futures
  the thread completes; the event loop never blocks on the disk.
* Group commit: the thread takes every job that is waiting, runs them in one transaction (each inside its own
  savepoint, so one failing job does not undo the others), commits once, and only then resolves the futures. A
  caller of :meth:`Outbox.put` is therefore resumed only after its row is on disk; under load many rows share a
  commit, when idle each row gets its own.
* Only sealed envelopes (opaque bytes) plus routing metadata are stored (invariant 3: nothing readable at rest).
* Two lanes: :attr:`Lane.PRIORITY` (alarms, panic events) is always fetched first and never evicted;
  :attr:`Lane.ROUTINE` rows are evicted oldest first when the outbox exceeds its byte budget.
* Every eviction is logged durably in the same transaction; :meth:`Outbox.pending_evictions` summarises the log
  and :meth:`Outbox.put_many` with ``settle=`` stores the eviction-report envelope and clears the log atomically.
* A small key-value table holds the gateway's cursors (RACP position per meter, pendant counters, the envelope
  sequence counter); :meth:`Outbox.put_many` with ``cursors=`` advances cursors in the same transaction as the rows,
  so a meter's cursor can never move past a reading that is not yet fsynced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from gateway.clock import Clock, SystemClock
from gateway.disk_reserve import DEFAULT_RESERVE_BYTES, FullDiskEpisode, ReserveStatus
from gateway.errors import OutboxClosedError, OutboxError
from gateway.outbox_rows import CursorValue, Eviction, Lane, OutboxItem, OutboxStats, PutResult
from gateway.outbox_schema import MIGRATIONS, SCHEMA_VERSION, read_cursor, read_eviction_log, write_cursor
from gateway.outbox_store import Job, OutboxStore, Outcome

__all__ = [
    "SCHEMA_VERSION",
    "CursorValue",
    "Eviction",
    "Lane",
    "Outbox",
    "OutboxItem",
    "OutboxStats",
    "PutResult",
    "open_outbox",
]

# The migrations under their former name here (``carehub doctor``'s tests build old schemas with them).
_MIGRATIONS: Final = MIGRATIONS

_T = TypeVar("_T")

_MAX_GROUP: Final = 2048  # jobs per commit; bounds the latency of the first job in a burst


def _nothing() -> None:
    """No hold to release."""


class Outbox:
    """The durable outbox. Create it with :func:`open_outbox`; every method is safe to call from the event loop."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        clock: Clock,
        group_commit: bool,
        commit_hook: Callable[[int], None] | None,
        reserve_bytes: int = 0,
    ) -> None:
        self._store = OutboxStore(
            path, max_bytes=max_bytes, clock=clock, commit_hook=commit_hook, reserve_bytes=reserve_bytes
        )
        self.path = path
        self.max_bytes = max_bytes
        self._max_group = _MAX_GROUP if group_commit else 1
        # Jobs submitted during one turn of the event loop travel to the thread together, as one list: one
        # cross-thread hand-over (and one wake-up of the thread) per turn instead of one per job.
        self._jobs: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._submitted: list[Job] = []
        self._thread = threading.Thread(target=self._run, name=f"outbox:{path.name}", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        #: Jobs handed to the database thread whose outcome the event loop has not received yet. A loop on
        #: simulated time (``sim.virtual_time``) keeps its clock still while this is not zero.
        self.jobs_in_flight = 0
        self._unhold: Callable[[], None] = _nothing
        #: Set whenever a put commits a priority row; the uplink clears it when it has looked.
        self.priority_put = asyncio.Event()
        #: Set whenever any put commits; the uplink clears it when it has looked.
        self.item_put = asyncio.Event()
        #: Set whenever a commit evicted rows; cleared by whoever settles the eviction report.
        self.evicted = asyncio.Event()

    # ---------------------------------------------------------------- lifecycle

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        hold_while = getattr(self._loop, "hold_while", None)  # a loop on simulated time waits for this thread
        if hold_while is not None:
            self._unhold = hold_while(lambda: self.jobs_in_flight > 0)
        self._thread.start()
        try:
            await self._submit(self._store.open, write=False)
        except BaseException:
            await self._stop()
            raise

    async def _stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        done = asyncio.get_running_loop().create_future()
        self._hand_over()
        self.jobs_in_flight += 1
        self._jobs.put([Job(done, self._store.close, write=False)])
        self._jobs.put(None)
        with contextlib.suppress(OutboxError):
            # Close the connection even if the awaiting task is being cancelled.
            await asyncio.shield(done)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._unhold()

    # ---------------------------------------------------------------- the database thread

    def _run(self) -> None:
        store = self._store
        waiting: collections.deque[Job] = collections.deque()
        stopping = False
        while not (stopping and not waiting):
            if not waiting:
                first = self._jobs.get()
                if first is None:
                    break
                waiting.extend(first)
            # Take whatever else the loop has handed over meanwhile: one commit serves it all.
            while not stopping:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                else:
                    waiting.extend(more)
            take = min(len(waiting), self._max_group)
            batch = [waiting.popleft() for _ in range(take)]
            self._resolve(batch, store.execute(batch))

    def _resolve(self, batch: list[Job], outcomes: list[Outcome]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed while we committed
            loop.call_soon_threadsafe(self._settle, batch, outcomes)

    # ---------------------------------------------------------------- the async API

    def _future(self) -> asyncio.Future[Any]:
        """A future for a job about to be submitted; the first job of a loop turn schedules the turn's hand-over."""
        if self._closed:
            raise OutboxClosedError(self.path, "the outbox is closed")
        loop = asyncio.get_running_loop()
        if not self._submitted:
            loop.call_soon(self._hand_over)
        return loop.create_future()

    def _enqueue(self, fn: Callable[[Any], _T], write: bool, essential: bool = False) -> asyncio.Future[_T]:
        future: asyncio.Future[_T] = self._future()
        self._submitted.append(Job(future, fn, write, essential=essential))
        return future

    def _enqueue_put(
        self, items: tuple[OutboxItem, ...], cursors: Mapping[str, CursorValue] | None, settle: Eviction | None
    ) -> asyncio.Future[PutResult]:
        future: asyncio.Future[PutResult] = self._future()
        priority = any(item.lane is Lane.PRIORITY for item in items)
        # The cursors are copied: the caller may reuse its mapping while the job waits for the thread.
        copied = dict(cursors) if cursors else None
        self._submitted.append(Job(future, None, True, items, priority, copied, settle))
        return future

    async def _submit(self, fn: Callable[[Any], _T], *, write: bool, essential: bool = False) -> _T:
        return await self._enqueue(fn, write, essential)

    def _hand_over(self) -> None:
        """Pass the jobs submitted since the last hand-over to the database thread (runs on the event loop)."""
        if self._submitted:
            self.jobs_in_flight += len(self._submitted)
            self._jobs.put(self._submitted)
            self._submitted = []

    def _settle(self, batch: list[Job], outcomes: list[Outcome]) -> None:
        """Complete a group's futures and signal what it stored (runs on the event loop after the commit).

        The events are set here, once per group, rather than by each caller: a row that is committed is
        signalled even when the task that put it has been cancelled meanwhile.
        """
        self.jobs_in_flight -= len(batch)
        stored = priority = evicted = False
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            if ok and job.items:
                stored = True
                priority = priority or job.priority
                if value.evicted is not None:
                    evicted = True
            future = job.future
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if stored:
            self.item_put.set()
        if priority:
            self.priority_put.set()
        if evicted:
            self.evicted.set()

    async def put(self, item: OutboxItem, *, cursors: Mapping[str, CursorValue] | None = None) -> PutResult:
        """Store one envelope; return only once it is committed and fsynced.

        Args:
            item: the envelope and its metadata.
            cursors: cursor updates committed in the same transaction as the row.

        Raises:
            ValueError: the envelope sequence number is already in the outbox.
            OutboxError: the database failed; the row is not stored.
        """
        return await self._enqueue_put((item,), cursors, None)

    async def put_many(
        self,
        items: Iterable[OutboxItem],
        *,
        cursors: Mapping[str, CursorValue] | None = None,
        settle: Eviction | None = None,
    ) -> PutResult:
        """Store envelopes, cursor updates and (optionally) settle an eviction report, all in one transaction.

        Args:
            items: the envelopes; all or none are stored.
            cursors: cursor updates that must not outlive the rows (e.g. the meter's RACP position).
            settle: an eviction summary from :meth:`pending_evictions` whose report is among ``items``; its log
                entries are cleared in the same transaction.

        Returns:
            What the commit evicted and whether the outbox is over its budget.
        """
        return await self._enqueue_put(tuple(items), cursors, settle)

    async def peek_batch(self, limit: int, max_bytes: int, *, exclude: Collection[int] = ()) -> list[OutboxItem]:
        """The next envelopes to send: priority lane first, then oldest first.

        Args:
            limit: at most this many items.
            max_bytes: stop before the batch would exceed this many envelope bytes (one item is always returned
                if any is waiting, however large).
            exclude: envelope sequence numbers to skip (those already in flight).
        """
        if limit <= 0:
            return []
        skip = frozenset(exclude)
        return await self._submit(lambda conn: self._store.peek(conn, limit, max_bytes, skip), write=False)

    async def ack(self, envelope_seqs: Collection[int]) -> int:
        """Delete the envelopes the platform has stored (or permanently rejected); returns how many were present."""
        seqs = tuple(envelope_seqs)
        if not seqs:
            return 0
        # Essential on a full disk: deleting delivered rows frees pages for the next alarm.
        return await self._submit(lambda conn: self._store.delete(conn, seqs), write=True, essential=True)

    async def allocate_seqs(self, count: int = 1) -> range:
        """Durably reserve ``count`` envelope sequence numbers; they are never handed out again."""
        if count <= 0:
            raise ValueError(f"count must be > 0, got {count}")
        # Essential on a full disk: an alarm cannot be sealed without its sequence numbers.
        return await self._submit(lambda conn: self._store.allocate(conn, count), write=True, essential=True)

    async def get_cursor(self, key: str, default: CursorValue | None = None) -> CursorValue | None:
        """A cursor's committed value, or ``default``."""
        return await self._submit(lambda conn: read_cursor(conn, key, default), write=False)

    async def set_cursor(self, key: str, value: CursorValue) -> None:
        """Durably set one cursor."""
        await self._submit(lambda conn: write_cursor(conn, key, value), write=True)

    async def pending_evictions(self) -> Eviction | None:
        """All evictions not yet settled by an eviction report (survives restarts)."""
        return await self._submit(read_eviction_log, write=False)

    async def stats(self) -> OutboxStats:
        """Row counts, bytes, commits and eviction totals."""
        return await self._submit(self._store.stats, write=False)

    async def disk_reserve(self) -> tuple[ReserveStatus | None, FullDiskEpisode | None]:
        """The disk reserve as it is on disk (``None`` when opened without one) and the last full-disk episode."""
        return await self._submit(self._store.reserve, write=False)


@contextlib.asynccontextmanager
async def open_outbox(
    path: Path | str,
    *,
    max_bytes: int = 64 * 1024 * 1024,
    clock: Clock | None = None,
    group_commit: bool = True,
    commit_hook: Callable[[int], None] | None = None,
    reserve_bytes: int = DEFAULT_RESERVE_BYTES,
) -> AsyncIterator[Outbox]:
    """Open (creating or migrating) the outbox at ``path`` and close it on exit.

    Args:
        path: the SQLite file; its directory is created if missing.
        max_bytes: budget for stored envelope bytes; routine rows are evicted beyond it.
        clock: wall clock for eviction timestamps.
        group_commit: ``False`` commits each job separately (the naive baseline for benchmarks).
        commit_hook: called on the database thread after every commit with the number of write jobs it held.
        reserve_bytes: space held back next to ``path`` for alarms and panic calls on a full file system
            (:mod:`gateway.disk_reserve`); 0 keeps no reserve.

    Raises:
        OutboxCorruptError: the file is not a usable SQLite database.
        OutboxUnwritableError: the file or its directory cannot be written.
        OutboxSchemaError: the file was written by a newer schema.
    """
    outbox = Outbox(
        Path(path),
        max_bytes=max_bytes,
        clock=clock or SystemClock(),
        group_commit=group_commit,
        commit_hook=commit_hook,
        reserve_bytes=reserve_bytes,
    )
    await outbox._start()
    try:
        yield outbox
    finally:
        await outbox._stop()
