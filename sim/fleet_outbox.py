"""A light, in-memory outbox for the fleet's protocol-level hubs, behind the real :class:`gateway.outbox.Outbox`'s
interface.

The real outbox runs each hub's SQLite file on a thread of its own: 10,000 hubs in one process are 10,000 threads
fighting for the interpreter lock, and the fleet, not the platform, became the bottleneck (README "Platform at
scale"). A fleet hub needs the outbox's contract, not its durability: the same rows offered in the same order
(priority lane first, each lane oldest first, ``exclude`` skipped, the byte and count limits of a batch), deletes
that report what was present, sequence numbers never handed out twice, cursors, and the ``item_put`` /
``priority_put`` events the uplink waits on. :class:`MemoryOutbox` keeps exactly that in dictionaries, with no
thread and no disk, so the hub's own :class:`gateway.uplink.Uplink` (window, resend backoff, priority lane) runs
over it unchanged. ``tests/sim/test_fleet_outbox.py`` runs the same operations against both and compares them.

What it does not do: it has no byte budget (no eviction; a fleet sizes its backlog) and no disk reserve, and nothing
survives the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from gateway.disk_reserve import FullDiskEpisode, ReserveStatus
from gateway.errors import OutboxClosedError
from gateway.outbox import Outbox
from gateway.outbox_rows import CursorValue, Eviction, Lane, OutboxItem, OutboxStats, PutResult
from gateway.outbox_schema import SEQ_KEY

__all__ = ["MemoryOutbox"]

_UNLIMITED = 1 << 62


class MemoryOutbox(Outbox):
    """The outbox contract in memory (see the module docstring); every method is safe to call from the event loop.

    Args:
        name: shown as :attr:`path` (the hub id, for logs).
    """

    def __init__(self, name: str) -> None:  # the real __init__ starts a database thread: deliberately not called
        self.path = Path(name)
        self.max_bytes = _UNLIMITED
        self.priority_put = asyncio.Event()
        self.item_put = asyncio.Event()
        self.evicted = asyncio.Event()
        self._lanes: tuple[dict[int, OutboxItem], dict[int, OutboxItem]] = ({}, {})
        self._sorted = [True, True]  # each lane's dict is in ascending seq order (puts usually arrive in order)
        self._cursors: dict[str, CursorValue] = {}
        self._next_seq = 0
        self._bytes = 0
        self._commits = 0
        self._closed = False

    def close(self) -> None:
        """Refuse every later call, as a closed outbox does."""
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise OutboxClosedError(self.path, "the outbox is closed")

    async def put(self, item: OutboxItem, *, cursors: Mapping[str, CursorValue] | None = None) -> PutResult:
        """Store one envelope (see :meth:`gateway.outbox.Outbox.put`)."""
        return await self.put_many((item,), cursors=cursors)

    async def put_many(
        self,
        items: Iterable[OutboxItem],
        *,
        cursors: Mapping[str, CursorValue] | None = None,
        settle: Eviction | None = None,
    ) -> PutResult:
        """Store envelopes and cursor updates, all or none (see :meth:`gateway.outbox.Outbox.put_many`).

        Raises:
            ValueError: an envelope sequence number is already in the outbox (nothing is stored).
        """
        self._check()
        del settle  # nothing is ever evicted here, so there is no log to settle
        batch = tuple(items)
        seen: set[int] = set()
        for item in batch:
            seq = item.envelope_seq
            if seq in seen or any(seq in lane for lane in self._lanes):
                raise ValueError(f"envelope seq {seq} is already in the outbox")
            seen.add(seq)
        if cursors:
            for key, value in cursors.items():
                _check_cursor(key, value)
        for item in batch:
            lane = self._lanes[item.lane]
            if lane and item.envelope_seq < next(reversed(lane)):
                self._sorted[item.lane] = False
            lane[item.envelope_seq] = item
            self._bytes += item.size
        if cursors:
            self._cursors.update(cursors)
        self._commits += 1
        if batch:
            self.item_put.set()
            if any(item.lane is Lane.PRIORITY for item in batch):
                self.priority_put.set()
        return PutResult(None, False)

    def _lane(self, lane: Lane) -> dict[int, OutboxItem]:
        rows = self._lanes[lane]
        if not self._sorted[lane]:
            ordered = dict(sorted(rows.items()))
            rows.clear()
            rows.update(ordered)
            self._sorted[lane] = True
        return rows

    async def peek_batch(self, limit: int, max_bytes: int, *, exclude: Collection[int] = ()) -> list[OutboxItem]:
        """The next envelopes to send: priority lane first, then oldest first (as the real outbox)."""
        self._check()
        if limit <= 0:
            return []
        out: list[OutboxItem] = []
        used = 0
        for lane in (Lane.PRIORITY, Lane.ROUTINE):
            for seq, item in self._lane(lane).items():
                if seq in exclude:
                    continue
                if out and used + item.size > max_bytes:
                    return out
                out.append(item)
                used += item.size
                if len(out) >= limit:
                    return out
        return out

    async def ack(self, envelope_seqs: Collection[int]) -> int:
        """Delete the envelopes named; returns how many were present."""
        self._check()
        deleted = 0
        for seq in envelope_seqs:
            for lane in self._lanes:
                item = lane.pop(seq, None)
                if item is not None:
                    deleted += 1
                    self._bytes -= item.size
                    break
        if envelope_seqs:
            self._commits += 1
        return deleted

    async def allocate_seqs(self, count: int = 1) -> range:
        """Reserve ``count`` envelope sequence numbers; they are never handed out again."""
        self._check()
        if count <= 0:
            raise ValueError(f"count must be > 0, got {count}")
        start = self._next_seq
        self._next_seq += count
        self._commits += 1
        return range(start, self._next_seq)

    async def get_cursor(self, key: str, default: CursorValue | None = None) -> CursorValue | None:
        """A cursor's value, or ``default``."""
        self._check()
        if key == SEQ_KEY:
            return self._next_seq
        return self._cursors.get(key, default)

    async def set_cursor(self, key: str, value: CursorValue) -> None:
        """Set one cursor."""
        self._check()
        _check_cursor(key, value)
        self._cursors[key] = value
        self._commits += 1

    async def pending_evictions(self) -> Eviction | None:
        """Always ``None``: nothing is ever evicted."""
        self._check()
        return None

    async def stats(self) -> OutboxStats:
        """Row counts and bytes."""
        self._check()
        priority, routine = (len(lane) for lane in self._lanes)
        return OutboxStats(
            rows=priority + routine,
            priority_rows=priority,
            routine_rows=routine,
            total_bytes=self._bytes,
            max_bytes=self.max_bytes,
            over_limit=False,
            commits=self._commits,
            evicted_rows_total=0,
            evicted_bytes_total=0,
        )

    async def disk_reserve(self) -> tuple[ReserveStatus | None, FullDiskEpisode | None]:
        """No disk, no reserve."""
        self._check()
        return None, None


def _check_cursor(key: str, value: object) -> None:
    """The real outbox's rules for a cursor write (:func:`gateway.outbox_schema.write_cursor`)."""
    if key == SEQ_KEY:
        raise ValueError(f"{key!r} is reserved for the envelope sequence counter")
    if not isinstance(value, int | str | bytes) or isinstance(value, bool):
        raise TypeError(f"cursor values are int, str or bytes, not {type(value).__name__}")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ValueError(f"cursor {key!r}: {value} does not fit a signed 64-bit integer")
