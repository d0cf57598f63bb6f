"""A write-ahead journal for indications: durable before the meter is told "received".

A meter that indicates a reading forgets it once the hub's Bluetooth stack confirms the indication, and the stack
confirms as soon as the notification callback returns (bumble, and the other stacks bleak drives in-process). The
outbox commit happens later, on its own thread. To keep invariant 1 (durable before acknowledged) the BLE layer
appends each indication's raw bytes here, with fdatasync, inside the callback, before it returns. Entries whose
readings have reached the outbox are dropped by truncating the file once nothing is in flight; after a crash,
:meth:`IndicationJournal.pending` returns what may not have reached the outbox, and the hub stores it again (record
ids are stable, so a reading stored twice is still stored once at the platform).

Format: one line per indication, ``ADDRESS UUID HEX ISO-TIME``; a torn last line (a crash mid-write) is ignored, as
its indication was never confirmed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["IndicationJournal", "JournalEntry"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One indication as received."""

    address: str
    uuid: int
    data: bytes
    received_at: datetime


class IndicationJournal:
    """Append-only, fsynced, truncated when everything in it is in the outbox. Used from the event loop only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self.inflight = 0

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def append(self, entry: JournalEntry) -> None:
        """Make `entry` durable (blocks for one fdatasync: a meter reading every few minutes, not a stream)."""
        line = f"{entry.address} {entry.uuid:04x} {entry.data.hex()} {entry.received_at.isoformat()}\n"
        os.write(self._fd, line.encode("ascii"))
        os.fdatasync(self._fd)
        self.inflight += 1

    def done(self, count: int = 1) -> None:
        """`count` journaled readings are now in the outbox; truncate once none is in flight."""
        self.inflight = max(0, self.inflight - count)
        if self.inflight == 0:
            os.ftruncate(self._fd, 0)
            os.fdatasync(self._fd)

    def pending(self) -> list[JournalEntry]:
        """Entries left by an earlier run (read before the first append)."""
        try:
            text = self.path.read_bytes().decode("ascii", errors="replace")
        except FileNotFoundError:
            return []
        entries = []
        for line in text.split("\n")[:-1]:  # the part after the last newline is torn or empty
            parts = line.split(" ")
            if len(parts) != 4:
                continue
            try:
                entries.append(
                    JournalEntry(parts[0], int(parts[1], 16), bytes.fromhex(parts[2]), datetime.fromisoformat(parts[3]))
                )
            except ValueError:
                continue
        return entries
