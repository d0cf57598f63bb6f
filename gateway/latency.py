"""Latency bookkeeping of the hub's inputs, for `carehub bench` and the demo (no effect on what the hub does).

Several inputs (a meter's readings, a pendant frame, the timer tick, the uplink's down-messages) interleave at every
await, so the time an input arrived and the time its cue was shown are kept per task in context variables, set by
:func:`handling_input` for one call. :class:`DeliveryTimer` remembers when each raised alarm's input arrived, until
the platform acks its record. Times are ``time.monotonic()``, not the loop's time: uvloop's is in whole
milliseconds, taken once per loop turn.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

__all__ = ["DeliveryTimer", "cue_shown", "handling_input", "input_at", "shown_at"]

_INPUT_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar("carehub_input_at", default=None)
"""Monotonic time the input being handled arrived (``None``: no input, e.g. the timer tick)."""
_SHOWN_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar("carehub_shown_at", default=None)
"""Monotonic time the cue for the input being handled was shown."""


@contextlib.contextmanager
def handling_input() -> Iterator[None]:
    """Mark the input arriving now for the rest of this call (and only this call) in the current task."""
    input_token = _INPUT_AT.set(time.monotonic())
    shown_token = _SHOWN_AT.set(None)
    try:
        yield
    finally:
        _SHOWN_AT.reset(shown_token)
        _INPUT_AT.reset(input_token)


def input_at() -> float | None:
    """When the input being handled arrived (``None`` outside :func:`handling_input`)."""
    return _INPUT_AT.get()


def shown_at() -> float | None:
    """When the cue for the input being handled was shown, if it was."""
    return _SHOWN_AT.get()


def cue_shown() -> None:
    """A cue for the input being handled was shown now."""
    _SHOWN_AT.set(time.monotonic())


class DeliveryTimer:
    """Raised alarms whose platform ack is awaited: when their input arrived and whether they are panic calls.

    Args:
        limit: at most this many are remembered (the oldest is forgotten first).
    """

    __slots__ = ("_limit", "_started")

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._started: dict[str, tuple[float, bool]] = {}

    def raised(self, record_id: str, *, panic: bool) -> None:
        """A raised alarm's record was made while handling an input (nothing to time outside one)."""
        started = _INPUT_AT.get()
        if started is None:
            return
        self._started[record_id] = (started, panic)
        if len(self._started) > self._limit:
            del self._started[next(iter(self._started))]

    def delivered(self, record_id: str) -> tuple[float, bool] | None:
        """Seconds from input to now and whether it was a panic call, for a remembered record; else ``None``."""
        started = self._started.pop(record_id, None)
        if started is None:
            return None
        return time.monotonic() - started[0], started[1]
