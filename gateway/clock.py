"""Injected time for the outbox and the uplink: production uses the system clocks, tests pass their own."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Two readings of time: wall clock for timestamps stored or sent, monotonic for timeouts."""

    def wall(self) -> float:
        """Seconds since the Unix epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences are meaningful."""
        ...


class SystemClock:
    """The real clocks."""

    def wall(self) -> float:
        """Seconds since the Unix epoch (UTC)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds from :func:`time.monotonic`."""
        return time.monotonic()


class ManualClock:
    """A clock that moves only when a test advances it."""

    def __init__(self, wall: float = 1_700_000_000.0, monotonic: float = 0.0) -> None:
        self._wall = wall
        self._monotonic = monotonic

    def wall(self) -> float:
        """The current manual wall time."""
        return self._wall

    def monotonic(self) -> float:
        """The current manual monotonic time."""
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._wall += seconds
        self._monotonic += seconds
