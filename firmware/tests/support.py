# Shared helpers for the firmware tests: temporary store folders, a hub that signs frames with the pendant key, and
# a pendant assembled on the fake board with millisecond timings.
import asyncio
import os

import frames
from hmac_sha256 import hmac_sha256

import bluetooth
import machine

KEY = bytes(range(32))
PID = b"pendant-01"
_dirs = []


class Failed(AssertionError):
    pass


def check(cond, *what) -> None:
    if not cond:
        raise Failed(" ".join(str(w) for w in what))


def equal(got, want, what="") -> None:
    if got != want:
        raise Failed("%s: got %r, want %r" % (what, got, want))


def reset(wake=machine.PWRON_RESET) -> None:
    machine.reset_state(wake)
    machine.ADC.uv = 1_950_000


def tmpdir() -> str:
    base = "/tmp/carehub-fw-%d-%d" % (os.getpid() if hasattr(os, "getpid") else 0, len(_dirs))
    path = base
    n = 0
    while True:
        try:
            os.mkdir(path)
            break
        except OSError:
            n += 1
            path = "%s-%d" % (base, n)
    _dirs.append(path)
    return path


def cleanup() -> None:
    while _dirs:
        path = _dirs.pop()
        for name in os.listdir(path):
            os.remove(path + "/" + name)
        os.rmdir(path)


def sign(label: bytes, header: bytes, key=KEY, pid=PID) -> bytes:
    return header + hmac_sha256(key, label, bytes((len(pid),)), pid, header)[:16]


def confirm(counter: int, key=KEY, pid=PID) -> bytes:
    import struct

    return sign(b"C", struct.pack("<BI", 1, counter), key, pid)


def feedback(state: int, counter: int, seq: int, key=KEY, pid=PID) -> bytes:
    import struct

    return sign(b"F", struct.pack("<BBIH", 1, state, counter, seq), key, pid)


def parse_event(frame: bytes):
    import struct

    return struct.unpack("<BBIBI", frame[:11])


async def wait(flag, ms=2000) -> None:
    """Await a ThreadSafeFlag/Event; fail (not hang) if it never comes."""
    try:
        await asyncio.wait_for_ms(flag.wait(), ms)
    except asyncio.TimeoutError:
        raise Failed("timed out waiting")


async def until(cond, ms=10000) -> None:
    """Yield to the firmware's tasks until cond() holds; fail after ms (a guard, not a synchronisation sleep)."""
    import time

    deadline = time.ticks_add(time.ticks_ms(), ms)
    while not cond():
        if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
            raise Failed("condition not reached")
        await asyncio.sleep_ms(0)


def fast_timings(**over):
    import app

    kw = dict(
        connect_wait_ms=40, retry_ms=30, awake_ms=20, call_awake_ms=60, heartbeat_give_up_ms=500, feed_ms=5,
        debounce_ms=2, long_ms=60, double_ms=25,
    )
    kw.update(over)
    return app.Timings(**kw)


async def _yield(ms):
    await asyncio.sleep_ms(0)


class Rig:
    """A provisioned pendant on the fake board: board, store, player, link, pendant, ble (the fake radio)."""

    def __init__(self, root=None, provision=True, timings=None, sleep_ms=None) -> None:
        import app
        import feedback as fb
        import hal
        import store
        from ble_link import Link, Secrets

        self.root = root if root is not None else tmpdir()
        if provision and root is None:
            store.provision(self.root, PID, KEY)
        self.board = hal.Board()
        self.store = store.Store(self.root)
        # Patterns run on a sleep that only yields, so a 3 s chime does not hold a test for 3 s.
        self.player = fb.Player(self.board.led, self.board.tone, sleep_ms or _yield)
        self.ble = self.board.ble_on()
        self.pendant = app.Pendant(self.board, self.store, self.player, timings or fast_timings())
        self.link = Link(
            self.ble, self.board.uuid, Secrets(self.root + "/bonds"), frames.device_info(PID), self.pendant.wake
        )
        self.fake = bluetooth.last

    def button_pin(self):
        import hal

        return machine.pins[hal.PIN_BUTTON]

    def events(self):
        """(event type, counter) of every indication, in order."""
        return [(parse_event(v)[1], parse_event(v)[2]) for _, _, v in self.fake.indications]
