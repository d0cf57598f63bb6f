# Patterns on the fake LED pin and PWM buzzer, with a recording sleep (no real time passes).
import asyncio

import feedback
import frames
import hal
import machine
from support import check, equal


class _Rec:
    def __init__(self):
        self.board = hal.Board()
        self.led = machine.pins[hal.PIN_LED]
        self.steps = []  # (led, tone, ms)
        self.pwm = self.board._buzzer

    async def sleep(self, ms):
        self.steps.append((self.led.value(), self.pwm.tone(), ms))
        await asyncio.sleep_ms(0)


async def _play(state):
    r = _Rec()
    p = feedback.Player(r.board.led, r.board.tone, r.sleep)
    p.show(state)
    while p.playing:
        await asyncio.sleep_ms(0)
    equal((r.led.value(), r.pwm.tone()), (0, 0), "LED and buzzer off at the end")
    return r.steps


async def test_every_hub_state_has_a_distinct_pattern():
    seen = {}
    for state in (frames.FB_HELP_CALLED, frames.FB_ANSWERED, frames.FB_CANCELLED, frames.FB_LOW_BATTERY,
                  frames.FB_NOT_CONNECTED, frames.FB_CHECKIN_OK, feedback.PRESSED, feedback.NOT_PROVISIONED):
        steps = await _play(state)
        check(steps, "empty pattern", state)
        key = tuple(steps)
        check(key not in seen, "pattern shared by", state, seen.get(key))
        seen[key] = state


async def test_answered_pattern_exact():
    steps = await _play(frames.FB_ANSWERED)
    equal(steps, [(1, 1000, 300), (1, 1500, 300), (1, 0, 2400)], "answered")


async def test_help_called_repeats_for_a_minute():
    steps = await _play(frames.FB_HELP_CALLED)
    equal(sum(ms for _, _, ms in steps), 60_000, "one minute")
    check(sum(1 for _, hz, _ in steps if hz) == 30, "a beep every 2 s")


async def test_idle_shows_nothing_and_new_state_cancels_old():
    r = _Rec()

    async def never(ms):
        r.steps.append(ms)
        await asyncio.Event().wait()

    p = feedback.Player(r.board.led, r.board.tone, never)
    p.show(frames.FB_HELP_CALLED)
    await asyncio.sleep_ms(0)
    equal((r.led.value(), r.pwm.tone()), (1, 1500), "help called playing")
    p.show(frames.FB_IDLE)
    await asyncio.sleep_ms(0)
    equal((r.led.value(), r.pwm.tone(), p.playing), (0, 0, False), "stopped by IDLE")
