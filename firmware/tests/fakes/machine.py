# Fake `machine` for the unix port: records what the firmware did to the hardware. Tests only (never on a board).
# Pin IRQ handlers run under irqguard: no flash I/O inside them.
import irqguard

EXT0_WAKE = 2
TIMER_WAKE = 4
PWRON_RESET = 1

_wake_reason = PWRON_RESET
record = True  # heap_report.py turns off the write histories so they do not count as firmware heap
pins = {}  # pin id -> Pin
wdts = []
sleeps = []  # deepsleep arguments


class DeepSleep(Exception):
    """Raised by deepsleep(): on a board the chip resets; here the test catches it."""


def reset_state(wake: int = PWRON_RESET) -> None:
    global _wake_reason
    _wake_reason = wake
    pins.clear()
    wdts.clear()
    sleeps.clear()


def wake_reason() -> int:
    return _wake_reason


def deepsleep(ms: int = 0) -> None:
    sleeps.append(ms)
    raise DeepSleep(ms)


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, pin_id, mode=-1, pull=-1, value=None) -> None:
        self.id = pin_id
        self.mode = mode
        self.pull = pull
        self._value = 1 if pull == Pin.PULL_UP else 0
        if value is not None:
            self._value = value
        self.history = []  # values written
        self.handler = None
        pins[pin_id] = self

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = v
        if record:
            self.history.append(v)
        return None

    def irq(self, handler=None, trigger=0):
        self.handler = handler
        self.trigger = trigger

    def drive(self, level: int) -> None:
        """Test side: the outside world sets the level; the IRQ fires on a change."""
        if level != self._value:
            self._value = level
            if self.handler is not None:
                irqguard.call("pin %d" % self.id, self.handler, self)


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0) -> None:
        self.pin = pin
        self._freq = freq
        self._duty = duty_u16
        self.history = []  # (freq, duty) after each change of duty

    def freq(self, hz=None):
        if hz is None:
            return self._freq
        self._freq = hz
        return None

    def duty_u16(self, duty=None):
        if duty is None:
            return self._duty
        self._duty = duty
        if record:
            self.history.append((self._freq, duty))
        return None

    def tone(self) -> int:
        return self._freq if self._duty else 0


class ADC:
    ATTN_11DB = 3
    uv = 1_950_000  # what read_uv() returns (cell 3.9 V behind the 1:1 divider)

    def __init__(self, pin, atten=0) -> None:
        self.pin = pin
        self.atten = atten

    def read_uv(self) -> int:
        return ADC.uv


class WDT:
    def __init__(self, id=0, timeout=5000) -> None:
        self.timeout = timeout
        self.feeds = 0
        wdts.append(self)

    def feed(self) -> None:
        self.feeds += 1
