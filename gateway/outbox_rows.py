"""The outbox's typed rows and results: lanes, items, evictions, put results and statistics.

Plain frozen dataclasses and one enum, without I/O or heavy imports: the sans-I/O delivery core
(:mod:`gateway.delivery`) and the pure cores of :mod:`gateway.core` use them without loading SQLite or asyncio.
The store (:mod:`gateway.outbox_store`) and its async facade (:mod:`gateway.outbox`) produce and consume them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CursorValue", "Eviction", "Lane", "OutboxItem", "OutboxStats", "PutResult"]

CursorValue = int | str | bytes
"""What a cursor may hold: SQLite stores each of these exactly."""


class Lane(enum.IntEnum):
    """Which queue a row waits in; lower values are sent first."""

    PRIORITY = 0
    ROUTINE = 1


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One sealed envelope and the metadata needed to route, order, evict and acknowledge it.

    Attributes:
        envelope_seq: the per-hub monotonically increasing sequence number sealed inside the envelope.
        envelope: the sealed envelope, opaque to the outbox.
        lane: priority (alarms, panic events) or routine.
        kind: the record kind, for statistics and eviction reports (``"measurement"``, ``"alarm"``...).
        record_ids: the stable ids of the records inside the envelope, in order; they carry consecutive record
            sequence numbers from ``envelope_seq`` on.
        created: wall-clock time the row was made, seconds since the epoch.
    """

    envelope_seq: int
    envelope: bytes
    lane: Lane
    kind: str
    record_ids: tuple[str, ...]
    created: float

    def __post_init__(self) -> None:
        if self.envelope_seq < 0:
            raise ValueError(f"envelope_seq must be >= 0, got {self.envelope_seq}")
        if not self.envelope:
            raise ValueError("an outbox item needs a non-empty envelope")

    @property
    def size(self) -> int:
        """Bytes the row counts against the outbox budget (the envelope's length)."""
        return len(self.envelope)


@dataclass(frozen=True, slots=True)
class Eviction:
    """Routine rows dropped to keep the outbox within its budget, for the eviction-report record.

    An envelope's records are numbered consecutively from its sequence number (:attr:`OutboxItem.record_ids`), so
    the record sequence numbers evicted are known from the rows.

    Attributes:
        count: how many records (readings) were evicted.
        first_seq: the lowest evicted record sequence number.
        last_seq: the highest evicted record sequence number.
        seqs: every evicted envelope sequence number, ascending.
        record_ids: the ids of every record inside the evicted envelopes.
        size: the evicted bytes.
    """

    count: int
    first_seq: int
    last_seq: int
    seqs: tuple[int, ...]
    record_ids: tuple[str, ...]
    size: int

    @staticmethod
    def merge(rows: Sequence[tuple[int, tuple[str, ...], int]]) -> Eviction | None:
        """Summarise ``(seq, record_ids, size)`` rows; ``None`` when there are none."""
        if not rows:
            return None
        ordered = sorted(rows)
        return Eviction(
            count=sum(max(1, len(ids)) for _, ids, _ in ordered),
            first_seq=ordered[0][0],
            last_seq=max(seq + max(1, len(ids)) - 1 for seq, ids, _ in ordered),
            seqs=tuple(r[0] for r in ordered),
            record_ids=tuple(rid for r in ordered for rid in r[1]),
            size=sum(r[2] for r in ordered),
        )


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a committed put did besides storing its rows.

    Attributes:
        evicted: routine rows this put evicted (``None`` if none).
        over_limit: the outbox is above its byte budget because only priority rows are left to keep.
    """

    evicted: Eviction | None
    over_limit: bool


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A consistent snapshot of the outbox."""

    rows: int
    priority_rows: int
    routine_rows: int
    total_bytes: int
    max_bytes: int
    over_limit: bool
    commits: int
    evicted_rows_total: int
    evicted_bytes_total: int
