"""Helpers of a session's transfer: the RACP cursor's progress, a measurement's own stamp, and batches taken from a
session's notification queue. Pure apart from draining an asyncio queue that is already full."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from gateway.ble_types import Notification
from protocols import gatt

__all__ = ["BATCH", "RacpProgress", "device_time", "take"]

BATCH = 256  # notifications stored in one commit at most


@dataclass(slots=True)
class RacpProgress:
    """How far a RACP transfer has come. Records normally arrive in ascending order; the cursor is the sequence number
    after the last record of the run that starts with the first one received and has no gap, so a record lost on
    the way (notifications are not confirmed) is asked for again. Once the meter answered success the cursor moves
    past the highest record (a gap is then a record the meter no longer has)."""

    key: str
    start: int
    seen: set[int] = field(default_factory=set)
    next: int | None = None  # the first sequence number not yet part of the contiguous run
    highest: int = -1
    committed: int | None = None  # the cursor value last handed to the sink
    received: int = 0  # records of this transfer, asked for and decoded (stored with the cursor)

    def saw(self, sequence_number: object) -> None:
        if not isinstance(sequence_number, int) or sequence_number < self.start:
            return  # not asked for: it does not move the cursor
        self.received += 1
        self.seen.add(sequence_number)
        self.highest = max(self.highest, sequence_number)
        if self.next is None:
            self.next = sequence_number
        while self.next in self.seen:
            self.seen.discard(self.next)
            self.next += 1

    def complete(self) -> None:
        if self.highest >= 0:
            self.next = max(self.next or 0, self.highest + 1)
            self.seen.clear()

    def take_cursor(self) -> tuple[str, int] | None:
        """The cursor to commit with the next store, None when it has not moved since the last."""
        if self.next is None or self.next <= self.start or self.next == self.committed:
            return None
        self.committed = self.next
        return (self.key, self.next)


def device_time(measurement: gatt.Measurement) -> datetime | None:
    """The meter's own stamp on a measurement (local, no zone), None when it has none or an unknown date."""
    stamp = getattr(measurement, "device_time", None)
    return stamp if isinstance(stamp, datetime) else None


def take(queue: asyncio.Queue[Notification], first: Notification | None = None) -> list[Notification]:
    """`first` and whatever else waits in `queue` right now, up to `BATCH` in all (in arrival order)."""
    items = [] if first is None else [first]
    while len(items) < BATCH and not queue.empty():
        items.append(queue.get_nowait())
    return items
