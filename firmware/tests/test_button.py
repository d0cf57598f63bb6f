# Gesture recognition on a fake clock: the pure Button fed levels and times, and the asyncio driver on the fake pin.
import asyncio

import button
from support import Failed, equal, until


def _play(script, start_pressed=False):
    """script: (time ms, level) edges, with bounces; returns [(time, gesture)] polling every 1 ms to the end."""
    b = button.Button(0, start_pressed)
    out = []
    level = start_pressed
    edges = list(script)
    end = edges[-1][0] + 3000 if edges else 3000
    for now in range(0, end):
        while edges and edges[0][0] == now:
            level = edges.pop(0)[1]
        g = b.update(level, now)
        if g:
            out.append((now, g))
    return out


def test_single_press_after_double_window():
    out = _play([(100, True), (250, False)])
    equal([g for _, g in out], [button.PRESS], "gestures")
    t = out[0][0]
    equal(t, 250 + button.DOUBLE_MS, "reported when the double-press window closes")


def test_bounces_are_one_press():
    out = _play([(100, True), (102, False), (104, True), (106, False), (108, True), (300, False), (303, True),
                 (306, False)])
    equal([g for _, g in out], [button.PRESS], "gestures")


def test_long_press_reported_while_held_release_ignored():
    out = _play([(100, True), (100 + button.LONG_MS + 500, False)])
    equal(out, [(100 + button.LONG_MS, button.LONG)], "long press")


def test_double_press_is_checkin():
    out = _play([(100, True), (200, False), (400, True), (500, False)])
    equal(out, [(400 + button.DEBOUNCE_MS, button.DOUBLE)], "double, once the second press is stable")


def test_second_press_after_window_is_two_presses():
    gap = button.DOUBLE_MS + 100
    out = _play([(100, True), (200, False), (200 + gap, True), (300 + gap, False)])
    equal([g for _, g in out], [button.PRESS, button.PRESS], "two presses")


def test_double_then_hold_gives_no_long():
    out = _play([(100, True), (200, False), (300, True), (300 + button.LONG_MS + 100, False)])
    equal([g for _, g in out], [button.DOUBLE], "double only")


def test_waking_press_counts():
    # The press that woke the chip from deep sleep was released before the firmware ran.
    out = _play([(0, False)], start_pressed=True)
    equal([g for _, g in out], [button.PRESS], "waking press")


def test_glitch_shorter_than_debounce_ignored():
    out = _play([(100, True), (100 + button.DEBOUNCE_MS - 5, False)])
    equal(out, [], "glitch")


def test_deadline_and_idle():
    b = button.Button(0)
    equal(b.deadline(), None, "idle has no deadline")
    equal(b.idle, True, "idle")
    b.update(True, 10)
    equal(b.deadline(), 10 + button.DEBOUNCE_MS, "debounce deadline")
    b.update(True, 10 + button.DEBOUNCE_MS)
    equal(b.deadline(), 10 + button.LONG_MS, "long deadline")
    equal(b.idle, False, "held")


async def test_driver_on_fake_pin():
    # The asyncio driver with the HAL's IRQ flag and the fake pin; short timings so the waits are milliseconds.
    import hal
    import machine

    board = hal.Board()
    pin = machine.pins[hal.PIN_BUTTON]
    got = []
    flag = asyncio.ThreadSafeFlag()

    def emit(g):
        got.append(g)
        flag.set()

    b = button.Button(board.ticks_ms(), False, 2, 5000, 15)
    task = asyncio.create_task(button.watch(b, board.button_flag, board.pressed, board.ticks_ms, emit))
    pin.drive(0)  # pressed (pull-up, active low)
    await until(lambda: not b.idle and b._stable)  # the driver has debounced the press
    pin.drive(1)
    try:
        await asyncio.wait_for_ms(flag.wait(), 1000)
    except asyncio.TimeoutError:
        raise Failed("no gesture")
    task.cancel()
    equal(got, [button.PRESS], "gesture")
