# The only module that touches hardware: pins, ADC, PWM buzzer, LED, deep sleep, watchdog and the BLE radio.
# Everything else imports this and MicroPython standard modules only, so it runs on the unix port with the fakes in
# firmware/tests/fakes.
#
# Pin map (ESP32-C3/ESP32 class board, see firmware/README.md): the button pin must be an RTC GPIO to wake the chip.

import asyncio
import time

import bluetooth
import esp32
import machine
from micropython import const

PIN_BUTTON = const(33)  # to ground, internal pull-up: pressed reads 0; RTC GPIO (ext0 wake)
PIN_LED = const(25)  # LED + 330 ohm to ground, active high
PIN_BUZZER = const(26)  # piezo through an NPN transistor, PWM
PIN_BATTERY = const(34)  # ADC1 channel 6, cell voltage through a 100k/100k divider
_DIVIDER = const(2)
_BUZZ_DUTY = const(32768)  # 50 % duty: loudest square wave for a piezo
_WDT_MS = const(8000)
_IO_NO_INPUT_OUTPUT = const(3)  # "just works" pairing: the pendant has no display or keyboard
_MTU = const(64)  # frames need ATT_MTU >= 30 (protocols.pendant.MIN_ATT_MTU)

Radio = bluetooth.BLE  # the radio's type, for annotations in ble_link
Uuid = bluetooth.UUID

ROOT = ""  # littlefs root: files live at /pendant.key, /ctr0, /ctr1, /bonds
GAP_NAME = "carehub-pendant"


class Board:
    """Owns every hardware object. Construct once per boot."""

    def __init__(self) -> None:
        self._button = machine.Pin(PIN_BUTTON, machine.Pin.IN, machine.Pin.PULL_UP)
        # The interrupt only sets a flag; button.watch() samples the level in task context (debounce lives there).
        self.button_flag = asyncio.ThreadSafeFlag()
        self._button.irq(self._on_edge, machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING)
        self._led = machine.Pin(PIN_LED, machine.Pin.OUT, value=0)
        self._buzzer = machine.PWM(machine.Pin(PIN_BUZZER), freq=2000, duty_u16=0)
        self._adc = machine.ADC(machine.Pin(PIN_BATTERY), atten=machine.ADC.ATTN_11DB)
        self._booted = time.ticks_ms()
        self.ble = bluetooth.BLE()

    def _on_edge(self, _pin: object) -> None:
        self.button_flag.set()

    def pressed(self) -> bool:
        return self._button.value() == 0

    def led(self, on: bool) -> None:
        self._led.value(1 if on else 0)

    def tone(self, hz: int) -> None:
        if hz:
            self._buzzer.freq(hz)
            self._buzzer.duty_u16(_BUZZ_DUTY)
        else:
            self._buzzer.duty_u16(0)

    def battery_mv(self) -> int:
        return self._adc.read_uv() * _DIVIDER // 1000

    def ticks_ms(self) -> int:
        return time.ticks_ms()

    def uptime_s(self) -> int:
        return time.ticks_diff(time.ticks_ms(), self._booted) // 1000

    def woke_by_button(self) -> bool:
        return machine.wake_reason() == machine.EXT0_WAKE

    def woke_by_timer(self) -> bool:
        return machine.wake_reason() == machine.TIMER_WAKE

    def watchdog(self) -> machine.WDT:
        """Start the watchdog (it cannot be stopped; deep sleep resets the chip anyway)."""
        return machine.WDT(timeout=_WDT_MS)

    def ble_on(self) -> bluetooth.BLE:
        """Radio on, bonding with LE Secure Connections, and the MTU the frames need."""
        self.ble.active(True)
        self.ble.config(gap_name=GAP_NAME, mtu=_MTU, bond=True, le_secure=True, mitm=False, io=_IO_NO_INPUT_OUTPUT)
        return self.ble

    def uuid(self, text: str) -> bluetooth.UUID:
        return bluetooth.UUID(text)

    def deepsleep(self, ms: int) -> None:
        """Sleep until the button is pressed or `ms` (0: no timer) pass; the chip then resets and runs main.py."""
        self.ble.active(False)
        self.led(False)
        self.tone(0)
        esp32.wake_on_ext0(self._button, esp32.WAKEUP_ALL_LOW)
        if ms > 0:
            machine.deepsleep(ms)
        machine.deepsleep()
