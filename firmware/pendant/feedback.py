# What the resident sees and hears: one LED and a piezo buzzer (PWM), driven by patterns.
#
# A pattern is a flat tuple of steps (duration ms, LED on 0/1, tone Hz or 0 for silence), played `repeat` times.
# Showing a new pattern cancels the one playing (the newest state is the truth). Patterns:
#
#   state            LED                          buzzer                         repeat
#   PRESSED (local)  on 200 ms                    one 2 kHz chirp                once: "your press registered"
#   HELP_CALLED      slow blink 500/500           a 1.5 kHz beep every 2 s       30 (one minute)
#   ANSWERED         on 3 s                       rising chime 1 kHz, 1.5 kHz    once
#   CANCELLED        off                          three low 600 Hz beeps         once
#   LOW_BATTERY      double blink                 one 400 Hz beep                3
#   NOT_CONNECTED    fast flicker 100/100         falling 1.2 kHz, 800 Hz        3
#   CHECKIN_OK       on 1 s                       one 2.5 kHz chirp              once
#   NOT_PROVISIONED  3 long blinks                one long 300 Hz tone           once
#   IDLE             off                          silent                         (stops anything playing)
#
# Concurrency cases: show() while a pattern plays cancels that task and starts the new one; the cancelled task always
# ends with LED off and buzzer silent (finally), so no state leaks; show(IDLE) only stops.

import asyncio

import frames
from micropython import const

_TYPING = const(0)  # firmware/mypy.ini treats this as true: typing exists for mypy only, never on the pendant
if _TYPING:
    from typing import Awaitable, Callable

PRESSED = const(100)
NOT_PROVISIONED = const(101)

_PATTERNS = {
    PRESSED: (1, (200, 1, 2000)),
    frames.FB_HELP_CALLED: (30, (150, 1, 1500, 350, 1, 0, 500, 0, 0, 500, 1, 0, 500, 0, 0)),
    frames.FB_ANSWERED: (1, (300, 1, 1000, 300, 1, 1500, 2400, 1, 0)),
    frames.FB_CANCELLED: (1, (150, 0, 600, 150, 0, 0, 150, 0, 600, 150, 0, 0, 150, 0, 600)),
    frames.FB_LOW_BATTERY: (3, (100, 1, 400, 100, 0, 0, 100, 1, 0, 1000, 0, 0)),
    frames.FB_NOT_CONNECTED: (3, (100, 1, 1200, 100, 0, 0, 100, 1, 800, 100, 0, 0, 100, 1, 0, 500, 0, 0)),
    frames.FB_CHECKIN_OK: (1, (100, 1, 2500, 900, 1, 0)),
    NOT_PROVISIONED: (1, (700, 1, 300, 300, 0, 0, 700, 1, 0, 300, 0, 0, 700, 1, 0)),
}


def pattern(state: int) -> tuple[int, tuple[int, ...]] | None:
    """(repeat, steps) for a state, or None for IDLE and unknown states (nothing to show)."""
    return _PATTERNS.get(state)


class Player:
    """Plays one pattern at a time on `led(on)` and `tone(hz)`; `sleep_ms` is injectable for tests."""

    def __init__(
        self, led: Callable[[bool], None], tone: Callable[[int], None],
        sleep_ms: Callable[[int], Awaitable[None]] = asyncio.sleep_ms,
    ) -> None:
        self._led = led
        self._tone = tone
        self._sleep_ms = sleep_ms
        self._task: asyncio.Task[None] | None = None
        self.state = frames.FB_IDLE

    def show(self, state: int) -> None:
        self.stop()
        self.state = state
        p = pattern(state)
        if p is not None:
            self._task = asyncio.create_task(self._play(p[0], p[1]))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._led(False)
        self._tone(0)

    @property
    def playing(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _play(self, repeat: int, steps: tuple[int, ...]) -> None:
        try:
            for _ in range(repeat):
                for i in range(0, len(steps), 3):
                    self._led(bool(steps[i + 1]))
                    self._tone(steps[i + 2])
                    await self._sleep_ms(steps[i])
        finally:
            self._led(False)
            self._tone(0)
