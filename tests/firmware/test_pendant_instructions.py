"""What the hub tells the installer about the pendant matches the firmware (issue 16 item 3).

The hub used to say "press and hold the button for 5 seconds until its light blinks blue": in the firmware a hold
of 2 s or more is a cancel, and the LED is one on/off pin. The constants are read from the firmware itself, under
the MicroPython unix port.
"""

from __future__ import annotations

import re

from test_firmware import _mpy_eval, needs_micropython

from gateway.config import DeviceKind
from gateway.provision.radio import INSTRUCTIONS

PENDANT_TEXT = INSTRUCTIONS[DeviceKind.PENDANT].lower()


@needs_micropython
def test_the_pairing_instruction_uses_the_firmwares_gestures_and_times() -> None:
    lines = _mpy_eval(
        "import app, button, frames\n"
        "print(button.LONG_MS)\n"
        "print(app._GESTURE_EVENT[button.DOUBLE] == frames.EV_CHECKIN)\n"
        "print(app._GESTURE_EVENT[button.LONG] == frames.EV_CANCEL)\n"
        "print(app.AWAKE_MS)\n"
    )
    long_ms, double_is_checkin, long_is_cancel, awake_ms = lines
    assert (double_is_checkin, long_is_cancel) == ("True", "True")
    # a double press (a check-in) wakes it without a call for help
    assert "double-press" in PENDANT_TEXT
    assert "check-in" in PENDANT_TEXT
    # never a hold: any hold of LONG_MS or more is a cancel
    assert int(long_ms) == 2000
    assert not re.search(r"\bhold", PENDANT_TEXT)
    # it stays reachable for AWAKE_MS after a reset or a gesture
    assert int(awake_ms) == 60_000
    assert "for a minute" in PENDANT_TEXT


@needs_micropython
def test_the_instruction_promises_no_light_the_single_colour_led_cannot_show() -> None:
    pins = _mpy_eval("import hal\nprint([n for n in dir(hal) if n.startswith('PIN_LED')])")
    assert pins == ["['PIN_LED']"]  # one LED pin, on or off: no colours
    for colour in ("blue", "green", "red", "blink"):
        assert colour not in PENDANT_TEXT
    assert "light stays off" in PENDANT_TEXT
