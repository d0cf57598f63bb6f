"""The panic lifecycle's policy and rate limits: what the installer sets, and what bounds a flood of presses.

:class:`PanicPolicy` holds the installer's timings (ack timeout, cancel window, repeats, the daily check-in) and
the flood bounds, with the worst-case number of calls and records one pendant can cause in a given time.
:class:`PendantLimits` is one pendant's rate state on the monotonic clock. `gateway.panic` uses both.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from datetime import time, timedelta, tzinfo

__all__ = ["ECHO_KINDS", "Echo", "PanicPolicy", "PendantLimits"]


@dataclass(frozen=True, slots=True)
class PanicPolicy:
    """Installer-configurable timings, in the home's zone.

    Attributes:
        local_zone: the home's time zone (``[hub] timezone``); the check-in deadline is local time in it.
        ack_timeout: how long a call waits for the platform's ack before escalating locally.
        cancel_window: how long after the press the resident may still cancel.
        repeat_interval: how often an open call repeats its voice (and an escalated one its fallback).
        checkin_deadline: the local time by which the daily check-in is expected (None: no check-in).
        echo_interval: at most one record per pendant and event kind per interval for events that change nothing
            (a press joining an open call, a refused or stray cancel, a check-in); the first press of a call and a
            cancel that closes one are always recorded.
        cancel_limit: at most this many calls a pendant may cancel per `cancel_limit_window`; a further cancel is
            refused (the call stays open until a caregiver closes it), so press/cancel toggling opens a bounded
            number of calls.
        cancel_limit_window: see `cancel_limit`.
    """

    local_zone: tzinfo
    ack_timeout: timedelta = timedelta(seconds=5)
    cancel_window: timedelta = timedelta(seconds=60)
    repeat_interval: timedelta = timedelta(seconds=30)
    checkin_deadline: time | None = time(11, 0)
    echo_interval: timedelta = timedelta(seconds=30)
    cancel_limit: int = 3
    cancel_limit_window: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        for name in ("ack_timeout", "cancel_window", "repeat_interval", "echo_interval", "cancel_limit_window"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"panic policy: {name} must be positive")
        if self.cancel_limit < 1:
            raise ValueError("panic policy: cancel_limit must be at least 1")

    def max_calls(self, elapsed: timedelta) -> int:
        """The most calls one pendant's events can open in `elapsed` (monotonic) time, however many events come.

        A call is opened only by a press with no open call, so after the first only by a press following a
        cancel, and the resident may cancel at most `cancel_limit` calls in any `cancel_limit_window`. (A call a
        caregiver answers is closed by the platform, not by the pendant's events, and is not counted here.)
        """
        windows = int(elapsed / self.cancel_limit_window) + 1
        return 1 + self.cancel_limit * windows

    def max_records(self, elapsed: timedelta) -> int:
        """The most records one pendant's events and the ticks can emit in `elapsed` (monotonic) time.

        Per call at most five: the press, "raised", "escalated", and the honoured cancel with "cancelled" (or a
        caregiver's "acknowledged", which comes from the platform). Besides, at most one echo record per event kind
        (press, cancel, check-in) per `echo_interval`. Events are counted once per pendant counter: an event sent
        again because its records could not be stored makes those same records again (same ids), not new ones.
        """
        echoes = len(ECHO_KINDS) * (int(elapsed / self.echo_interval) + 1)
        return 5 * self.max_calls(elapsed) + echoes


class Echo(enum.Enum):
    """Events that change no call, each kind limited to one record per `PanicPolicy.echo_interval` per pendant."""

    PRESS = "press"  # a press joining an open call
    CANCEL = "cancel"  # a cancel refused, or with no call to cancel
    CHECKIN = "checkin"


ECHO_KINDS = tuple(Echo)


@dataclass(slots=True)
class PendantLimits:
    """Per-pendant rate state, on the monotonic clock."""

    echoed: dict[Echo, float] = field(default_factory=dict)  # when each echo kind was last recorded
    cancels: deque[float] = field(default_factory=deque)  # when the most recent honoured cancels happened

    def echo_due(self, kind: Echo, mono: float, interval: float) -> bool:
        """Whether an echo of `kind` may be recorded now (and, if so, count it)."""
        last = self.echoed.get(kind)
        if last is not None and mono - last < interval:
            return False
        self.echoed[kind] = mono
        return True

    def cancel_allowed(self, mono: float, limit: int, window: float) -> bool:
        """Whether one more cancel fits in the window (not yet counted: see :meth:`count_cancel`)."""
        while self.cancels and mono - self.cancels[0] >= window:
            self.cancels.popleft()
        return len(self.cancels) < limit

    def count_cancel(self, mono: float, limit: int) -> None:
        self.cancels.append(mono)
        while len(self.cancels) > limit:
            self.cancels.popleft()
