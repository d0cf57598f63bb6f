"""Group commit of the hub's records: what is handed over in one loop turn is one fsynced outbox transaction (I/O).

:meth:`Committer.commit` is awaited by every input of the hub (`gateway.hub`) with the record drafts it made and the
cursors that must not outlive them (a meter's RACP position, a pendant's counter state, the down-message ``seq``).
Everything handed over in the same turn of the event loop (meters reporting together, a RACP batch, an alarm and
the reading that raised it) is numbered, sealed (`gateway.core.sealer`) and committed in one transaction; each
caller returns once that transaction is fsynced. Nothing waits for a timer.

A commit that carries a priority draft succeeds on a full file system as long as the outbox's disk reserve lasts
(:mod:`gateway.disk_reserve`): the store gives the reserve up for it, so a press is stored and confirmed as usual;
a commit of routine drafts only fails with ``DiskFullError`` meanwhile (the meter keeps its readings).

When a commit fails (``OutboxError``: a full disk with the reserve used up, a broken card) every caller gets the
error and nothing of it is stored. Its priority drafts (alarm steps, panic events) are kept and offered again with
the next commit, and so is each cursor registered with :meth:`Committer.defer`, whose callback runs once it is
stored: a pendant's press is accepted (and its re-send confirmed as a repeat) only with the commit that stored it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.core.counters import HubCounters
from gateway.core.sealer import Draft, Sealer, ordered
from gateway.errors import OutboxError
from gateway.outbox import CursorValue, Lane, Outbox

__all__ = ["Committer"]

_log = logging.getLogger(__name__)

_SEQ_BLOCK = 256  # record/envelope sequence numbers reserved per outbox transaction; a crash only leaves a gap
_UNSTORED_MAX = 4096  # priority drafts of failed commits kept for the next commit


@dataclass(slots=True)
class _Request:
    """One caller's drafts and cursors, committed with everything else handed over in the same loop turn."""

    drafts: Sequence[Draft]
    cursors: Mapping[str, CursorValue] | None


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A cursor to commit with the next commit, and what to do once it is stored."""

    value: Callable[[], CursorValue]
    on_stored: Callable[[], None]


class Committer:
    """The hub's path into the outbox.

    Args:
        outbox: the durable outbox.
        sealer: numbers and seals drafts.
        clock: its wall time stamps envelopes.
        counters: the hub's counters (commit failures, dropped drafts, eviction reports).
    """

    def __init__(self, outbox: Outbox, sealer: Sealer, clock: Clock, counters: HubCounters) -> None:
        self._outbox = outbox
        self._sealer = sealer
        self._now = clock.now
        self._counters = counters
        self._seqs: range = range(0)
        self._seq_lock = asyncio.Lock()
        self._to_seal: list[_Request] = []  # this loop turn's requests, until their sealer takes them
        self._sealer_task: asyncio.Task[None] | None = None  # the task that will commit them
        self._sealers: set[asyncio.Task[None]] = set()  # every commit not finished yet
        self._unstored: list[Draft] = []  # priority drafts of failed commits
        self._deferred: dict[str, _Deferred] = {}  # cursors of failed commits, by key

    @property
    def pending(self) -> bool:
        """Whether drafts or cursors of failed commits wait for the next commit."""
        return bool(self._unstored or self._deferred)

    def defer(self, key: str, value: Callable[[], CursorValue], on_stored: Callable[[], None]) -> None:
        """Commit cursor ``key`` (its value taken at commit time) with the next commit, then call ``on_stored``."""
        self._deferred[key] = _Deferred(value, on_stored)

    async def _next_seqs(self, count: int) -> range:
        """``count`` consecutive sequence numbers (a shorter rest of the reserved block is skipped: a gap, no reuse)."""
        async with self._seq_lock:
            if len(self._seqs) < count:
                self._seqs = await self._outbox.allocate_seqs(max(_SEQ_BLOCK, count))
            out, self._seqs = self._seqs[:count], self._seqs[count:]
            return out

    async def commit(self, drafts: Sequence[Draft], cursors: Mapping[str, CursorValue] | None = None) -> None:
        """Seal ``drafts`` and commit them, with the cursors, in one transaction; return once it is durable.

        Raises:
            OutboxError: the commit failed; nothing of it is stored (priority drafts are offered again later).
        """
        if not drafts and not cursors and not self.pending:
            return
        sealer = self._sealer_task
        if sealer is None:
            # The first caller of this loop turn: the sealer's first step runs after the other callers of the turn.
            sealer = self._sealer_task = asyncio.create_task(self._seal_together(), name="gateway.hub.seal")
            self._sealers.add(sealer)
            sealer.add_done_callback(self._sealers.discard)
        self._to_seal.append(_Request(drafts, cursors))
        # Shielded: a caller cancelled meanwhile (its session ending) does not cancel the others' commit.
        await asyncio.shield(sealer)

    async def settle(self) -> None:
        """Wait until what callers have handed over is committed (or failed); for shutdown, before the outbox closes.

        Commits already under way finish even when their callers were cancelled: the readings in them were confirmed
        to the meters, so they are stored rather than left to the indication journal's replay.
        """
        while self._sealers:
            await asyncio.gather(*self._sealers, return_exceptions=True)

    async def _seal_together(self) -> None:
        """Commit the drafts and cursors handed over in this loop turn (and earlier failures) in one transaction."""
        requests, self._to_seal, self._sealer_task = self._to_seal, [], None
        retry, self._unstored = self._unstored, []
        deferred, self._deferred = self._deferred, {}
        drafts = ordered([*retry, *(d for r in requests for d in r.drafts)])
        cursors: dict[str, CursorValue] = {}
        for request in requests:
            cursors.update(request.cursors or {})
        for key, later in deferred.items():
            cursors.setdefault(key, later.value())
        try:
            seqs = await self._next_seqs(len(drafts)) if drafts else range(0)
            items = self._sealer.seal(drafts, seqs, self._now())
            result = await self._outbox.put_many(items, cursors=cursors or None)
        except OutboxError as exc:
            self._counters.commit_failures += 1
            self._keep_unstored([d for d in drafts if d.lane is Lane.PRIORITY and d.standalone])
            self._deferred = {**deferred, **self._deferred}
            _log.error("outbox commit of %d record(s) failed: %s", len(drafts), exc)
            raise
        _log.debug(
            "outbox commit: %d record(s) (%d priority), %d cursor(s)",
            len(drafts),
            sum(d.lane is Lane.PRIORITY for d in drafts),
            len(cursors),
        )
        for later in deferred.values():
            later.on_stored()
        if result.evicted is not None:
            await self.report_evictions()

    def _keep_unstored(self, drafts: list[Draft]) -> None:
        kept = ordered([*drafts, *self._unstored])
        if len(kept) > _UNSTORED_MAX:
            dropped = len(kept) - _UNSTORED_MAX
            self._counters.unstored_dropped += dropped
            _log.error("%d priority record(s) of failed commits dropped: too many waiting for storage", dropped)
            kept = kept[-_UNSTORED_MAX:]
        self._unstored = kept

    async def report_evictions(self) -> None:
        """Turn evictions not yet reported into an eviction record, settled in the same transaction."""
        eviction = await self._outbox.pending_evictions()
        if eviction is None:
            return
        seq = (await self._next_seqs(1))[0]
        await self._outbox.put_many([self._sealer.eviction_report(eviction, seq, self._now())], settle=eviction)
        self._counters.evictions_reported += 1
