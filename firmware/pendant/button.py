# The pendant's one button: debounce, press, long press (cancel) and double press (daily check-in).
#
# In the spirit of peterhinch's EButton, but split sans-I/O: Button is a pure state machine fed raw pin levels and
# times (so tests drive it with a fake clock), and watch() is the asyncio driver that feeds it from the pin interrupt
# (a ThreadSafeFlag set by the HAL's IRQ handler) and from its own deadlines.
#
# Gestures, with the timings below:
# - PRESS:  pressed and released, and no second press begins within _DOUBLE_MS of the release. A panic press is
#           therefore reported _DOUBLE_MS after release (the price of telling it from a check-in);
# - LONG:   held for _LONG_MS; reported while still held (the resident feels the answer), the release is then ignored;
# - DOUBLE: a second press begins within _DOUBLE_MS of the first release; reported at that second press, and that
#           press's release (or long hold) is then ignored.
# Every level change must stay stable for _DEBOUNCE_MS before it counts; contact bounce shorter than that is ignored.
#
# Concurrency cases for watch():
# - an edge while no deadline is pending: the flag wakes the driver, which samples the pin;
# - edges faster than the driver runs: the flag coalesces them; the driver samples the level once more after
#   _DEBOUNCE_MS (the debounce deadline), so the last level always wins;
# - a deadline (debounce, long, double window) with no edge: the wait times out and the driver samples anyway.

import asyncio
import time

from micropython import const

_TYPING = const(0)  # firmware/mypy.ini treats this as true: typing exists for mypy only, never on the pendant
if _TYPING:
    from typing import Callable

DEBOUNCE_MS = const(30)
LONG_MS = const(2000)
DOUBLE_MS = const(400)

NONE = const(0)
PRESS = const(1)
LONG = const(2)
DOUBLE = const(3)

_IDLE = const(0)  # released, nothing pending
_DOWN = const(1)  # first press held
_WAIT_SECOND = const(2)  # released after a short press; waiting for a second press
_IGNORE = const(3)  # held after LONG or DOUBLE was reported; waiting for release


class Button:
    """Pure gesture recogniser. Call update() with the raw level whenever the pin may have changed or a deadline passed."""

    def __init__(
        self, now: int, pressed: bool = False, debounce_ms: int = DEBOUNCE_MS, long_ms: int = LONG_MS,
        double_ms: int = DOUBLE_MS,
    ) -> None:
        # `pressed` is the level at start: True when the press woke the pendant from deep sleep (that press counts).
        self._debounce = debounce_ms
        self._long = long_ms
        self._double = double_ms
        self._raw = pressed
        self._raw_at = now
        self._stable = pressed
        self._state = _DOWN if pressed else _IDLE
        self._at = now  # when the current state began

    @property
    def idle(self) -> bool:
        """Released and nothing pending (no gesture can still be reported without a new edge)."""
        return self._state == _IDLE and self._raw == self._stable

    def deadline(self) -> int | None:
        """The tick at which update() must be called even if the pin does not change, or None."""
        best: int | None = None
        if self._raw != self._stable:
            best = time.ticks_add(self._raw_at, self._debounce)
        if self._state == _DOWN:
            t = time.ticks_add(self._at, self._long)
        elif self._state == _WAIT_SECOND:
            t = time.ticks_add(self._at, self._double)
        else:
            return best
        if best is None or time.ticks_diff(t, best) < 0:
            return t
        return best

    def update(self, pressed: bool, now: int) -> int:
        """Feed the raw level at `now`; returns the gesture recognised (PRESS, LONG, DOUBLE) or NONE."""
        if pressed != self._raw:
            self._raw = pressed
            self._raw_at = now
        if self._raw != self._stable and time.ticks_diff(now, self._raw_at) >= self._debounce:
            self._stable = self._raw
            gesture = self._edge(self._stable, self._raw_at)
            if gesture:
                return gesture
        return self._timers(now)

    def _edge(self, down: bool, at: int) -> int:
        state = self._state
        if down:
            if state == _IDLE:
                self._state, self._at = _DOWN, at
            elif state == _WAIT_SECOND:
                if time.ticks_diff(at, self._at) < self._double:
                    self._state, self._at = _IGNORE, at
                    return DOUBLE
                # The window had passed before this press: report the first one, and start a new press.
                self._state, self._at = _DOWN, at
                return PRESS
            return NONE
        if state == _DOWN:
            if time.ticks_diff(at, self._at) >= self._long:
                self._state, self._at = _IDLE, at
                return LONG
            self._state, self._at = _WAIT_SECOND, at
        elif state == _IGNORE:
            self._state, self._at = _IDLE, at
        return NONE

    def _timers(self, now: int) -> int:
        if self._raw != self._stable:
            return NONE  # an edge is settling: its debounce deadline comes first and decides (held long or not)
        if self._state == _DOWN and time.ticks_diff(now, self._at) >= self._long:
            self._state = _IGNORE
            return LONG
        if self._state == _WAIT_SECOND and time.ticks_diff(now, self._at) >= self._double:
            self._state = _IDLE
            return PRESS
        return NONE


async def watch(
    button: Button, flag: asyncio.ThreadSafeFlag, read_pressed: Callable[[], bool], ticks_ms: Callable[[], int],
    emit: Callable[[int], None],
) -> None:
    """Drive `button` forever: `flag` is the pin IRQ's ThreadSafeFlag, `read_pressed()` the level, `emit(gesture)`."""
    # Sample once at the start: the press that woke the chip may have ended before the IRQ was armed.
    gesture = button.update(read_pressed(), ticks_ms())
    if gesture:
        emit(gesture)
    while True:
        deadline = button.deadline()
        if deadline is None:
            await flag.wait()
        else:
            wait = time.ticks_diff(deadline, ticks_ms())
            if wait > 0:
                try:
                    await asyncio.wait_for_ms(flag.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        gesture = button.update(read_pressed(), ticks_ms())
        if gesture:
            emit(gesture)
