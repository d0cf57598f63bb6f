"""The simulated pendant (`sim/devices/pendant.py`) answers the hub exactly as the firmware (`firmware/pendant/`) does.

One script of GATT operations, as a hub performs them over an unencrypted link, is played against both: the
simulated pendant through bleak over the in-process BLE simulation, and the firmware under the MicroPython unix port
(`firmware/tests/hub_bridge.py`: the whole pendant on the fake radio, whose ATT answers follow the permission flags
the firmware registers). Every answer must be the same: read values and ATT statuses, indicated frames (event type,
counter, battery, tag), the ATT status of each write and what the pendant then did (acted on it or ignored it, what is
pending, what it shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pytest
from bleak import BleakClient
from bleak.exc import BleakGATTProtocolError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.ble
from gateway.aio import run
from protocols.pendant import (
    CONFIRM_CHAR_UUID,
    DEVICE_INFO_CHAR_UUID,
    EVENT_CHAR_UUID,
    FEEDBACK_CHAR_UUID,
    KEY_CHECK_CHAR_UUID,
    ConfirmFrame,
    FeedbackFrame,
    FeedbackState,
    KeyChallenge,
    PendantEvent,
    PendantEventType,
    compute_tag,
)
from sim.clock import ManualClock
from sim.devices.options import DeviceOptions
from sim.devices.pendant import Pendant

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
MICROPYTHON = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which("micropython")
MICROPYPATH = ":".join(
    [".frozen", str(FIRMWARE / "tests" / "fakes"), str(FIRMWARE / "pendant"), str(FIRMWARE / "tests")]
)
KEY = bytes(range(32))
PENDANT_ID = "pendant-0001"
STRANGER = bytes(range(100, 132))
GESTURES: dict[str, PendantEventType] = {
    "press": PendantEventType.PRESS,
    "long": PendantEventType.CANCEL,
    "double": PendantEventType.CHECKIN,
}
# The firmware reads its battery from the ADC; the fake's 1.95 V (x2 divider) is 64 %. The simulated one is set so.
BATTERY = 64
_links = itertools.count()


@dataclass(frozen=True, slots=True)
class Frame:
    """An Event frame as the hub sees it (the uptime is the pendant's own clock, so it is left out)."""

    event: PendantEventType
    counter: int
    battery: int | None
    authentic: bool

    @classmethod
    def of(cls, raw: bytes) -> Frame:
        event = PendantEvent.from_bytes(raw)
        return cls(event.event, event.counter, event.battery, event.tag_valid(PENDANT_ID, KEY))


@dataclass(frozen=True, slots=True)
class Read:
    status: int
    frame: Frame | None
    raw_if_not_event: bytes


@dataclass(frozen=True, slots=True)
class Wrote:
    status: int
    acted: bool
    pending: tuple[int, ...]
    shown: FeedbackState | None  # what the pendant shows, when it acted on a Feedback


@dataclass(frozen=True, slots=True)
class KeyChecked:
    """A key challenge written (docs/protocol.md §9.7): ATT status, whether the pendant answered, the value after."""

    status: int
    acted: bool
    value: bytes


_READ_UUIDS = {"event": EVENT_CHAR_UUID, "info": DEVICE_INFO_CHAR_UUID, "keycheck": KEY_CHECK_CHAR_UUID}


class PendantUnderTest(Protocol):
    async def read(self, what: str) -> Read: ...
    async def keycheck(self, data: bytes) -> KeyChecked: ...
    async def gesture(self, name: str) -> int: ...
    async def indication(self) -> Frame: ...
    async def repeat(self) -> Frame: ...
    async def write(self, what: str, data: bytes) -> Wrote: ...


def _read(status: int, value: bytes, what: str) -> Read:
    if what == "event" and value:
        return Read(status, Frame.of(value), b"")
    return Read(status, None, value)


class SimPendant:
    """The simulated pendant, reached by a bleak client that never pairs."""

    def __init__(self, pendant: Pendant, clock: ManualClock, client: BleakClient) -> None:
        self.pendant = pendant
        self.clock = clock
        self.client = client
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.received = 0

    def on_indication(self, _char: object, data: bytearray) -> None:
        self.received += 1
        self.frames.put_nowait(bytes(data))

    async def read(self, what: str) -> Read:
        uuid = str(_READ_UUIDS[what])
        try:
            value = bytes(await self.client.read_gatt_char(uuid))
        except BleakGATTProtocolError as error:
            return Read(int(error.code), None, b"")
        return _read(0, value, what)

    async def gesture(self, name: str) -> int:
        return (await self.pendant.press(GESTURES[name])).sequence

    async def indication(self) -> Frame:
        async with asyncio.timeout(10):
            return Frame.of(await self.frames.get())

    async def repeat(self) -> Frame:
        pendant = self.pendant
        await pendant.wait_for(lambda: len(pendant.indications) == self.received and pendant.repeat_armed)
        await self.clock.advance(pendant.repeat_seconds)
        return await self.indication()

    async def write(self, what: str, data: bytes) -> Wrote:
        uuid = str(CONFIRM_CHAR_UUID if what == "confirm" else FEEDBACK_CHAR_UUID)
        ignored = len(self.pendant.rejected)
        try:
            await self.client.write_gatt_char(uuid, data, response=True)
        except BleakGATTProtocolError as error:
            return Wrote(int(error.code), False, tuple(self.pendant.pending), None)
        acted = len(self.pendant.rejected) == ignored
        shown = self.pendant.showing if acted and what == "feedback" else None
        return Wrote(0, acted, tuple(self.pendant.pending), shown)

    async def keycheck(self, data: bytes) -> KeyChecked:
        uuid = str(KEY_CHECK_CHAR_UUID)
        ignored = len(self.pendant.rejected)
        try:
            await self.client.write_gatt_char(uuid, data, response=True)
        except BleakGATTProtocolError as error:
            return KeyChecked(int(error.code), False, b"")
        acted = len(self.pendant.rejected) == ignored
        return KeyChecked(0, acted, bytes(await self.client.read_gatt_char(uuid)))


class FirmwarePendant:
    """The firmware in a MicroPython process (hub_bridge.py), connected by the fake radio's central, unencrypted."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    async def _ask(self, line: str) -> list[str]:
        return await asyncio.to_thread(self._ask_blocking, line)

    def _ask_blocking(self, line: str) -> list[str]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        if not answer:
            assert self.proc.stderr is not None
            pytest.fail(f"firmware bridge died on {line!r}: {self.proc.stderr.read()}")
        return answer

    async def read(self, what: str) -> Read:
        _, status, value = await self._ask(f"read {what}")
        return _read(int(status), b"" if value == "-" else bytes.fromhex(value), what)

    async def gesture(self, name: str) -> int:
        _, counter = await self._ask(f"gesture {name}")
        return int(counter)

    async def indication(self) -> Frame:
        _, value = await self._ask("again")
        return Frame.of(bytes.fromhex(value))

    async def repeat(self) -> Frame:
        return await self.indication()

    async def write(self, what: str, data: bytes) -> Wrote:
        _, status, _, acted, _, pending, _, state = await self._ask(f"write {what} {data.hex() or '-'}")
        counters = () if pending == "-" else tuple(int(c) for c in pending.split(","))
        shown = FeedbackState(int(state)) if acted == "1" and what == "feedback" else None
        return Wrote(int(status), acted == "1", counters, shown)

    async def keycheck(self, data: bytes) -> KeyChecked:
        _, status, _, acted, _, _ = await self._ask(f"keycheck {data.hex() or '-'}")
        _, _, value = await self._ask("read keycheck")
        return KeyChecked(int(status), acted == "1", b"" if value == "-" else bytes.fromhex(value))


def confirm(counter: int, key: bytes = KEY) -> bytes:
    return bytes(ConfirmFrame(counter).sign(PENDANT_ID, key))


def feedback(state: FeedbackState, counter: int, seq: int, key: bytes = KEY) -> bytes:
    return bytes(FeedbackFrame(state, counter, seq).sign(PENDANT_ID, key))


CHALLENGE = bytes(KeyChallenge(bytes(range(0xA0, 0xA8))))

SCRIPT: list[tuple[str, Callable[[PendantUnderTest], Awaitable[object]]]] = [
    ("device info, unencrypted", lambda p: p.read("info")),
    ("key check before any challenge", lambda p: p.read("keycheck")),
    ("key challenge", lambda p: p.keycheck(CHALLENGE)),
    ("key challenge of another version", lambda p: p.keycheck(b"\x02" + CHALLENGE[1:])),
    ("key challenge, too short", lambda p: p.keycheck(CHALLENGE[:-1])),
    ("event before any event", lambda p: p.read("event")),
    ("press", lambda p: p.gesture("press")),
    ("its indication", lambda p: p.indication()),
    ("event read = the pending frame", lambda p: p.read("event")),
    ("repeat until confirmed", lambda p: p.repeat()),
    ("confirm under a stranger's key", lambda p: p.write("confirm", confirm(1, STRANGER))),
    ("confirm of a counter never sent", lambda p: p.write("confirm", confirm(5))),
    ("confirm that is no frame", lambda p: p.write("confirm", b"\x01\x02")),
    ("confirm, too long", lambda p: p.write("confirm", confirm(1) + bytes(12))),
    ("feedback help_called", lambda p: p.write("feedback", feedback(FeedbackState.HELP_CALLED, 1, 0))),
    ("feedback forged", lambda p: p.write("feedback", feedback(FeedbackState.ANSWERED, 1, 1, STRANGER))),
    ("feedback replayed", lambda p: p.write("feedback", feedback(FeedbackState.HELP_CALLED, 1, 0))),
    ("feedback for a counter never sent", lambda p: p.write("feedback", feedback(FeedbackState.ANSWERED, 2, 0))),
    ("feedback with an unknown state", lambda p: p.write("feedback", _unknown_state_feedback())),
    ("still repeating", lambda p: p.repeat()),
    ("confirm", lambda p: p.write("confirm", confirm(1))),
    ("confirm again (crossed a repeat)", lambda p: p.write("confirm", confirm(1))),
    ("event read keeps the last frame", lambda p: p.read("event")),
    ("long press", lambda p: p.gesture("long")),
    ("the cancel indicated at once", lambda p: p.indication()),
    ("double press queued behind it", lambda p: p.gesture("double")),
    ("event read = the oldest pending", lambda p: p.read("event")),
    ("the cancel repeated, not the check-in", lambda p: p.repeat()),
    ("one confirm covers both", lambda p: p.write("confirm", confirm(3))),
    ("event read after both confirmed", lambda p: p.read("event")),
    ("an old confirm replayed", lambda p: p.write("confirm", confirm(2))),
    ("feedback checkin_ok", lambda p: p.write("feedback", feedback(FeedbackState.CHECKIN_OK, 3, 0))),
    ("feedback idle", lambda p: p.write("feedback", feedback(FeedbackState.IDLE, 3, 1))),
    ("key challenge with events confirmed", lambda p: p.keycheck(CHALLENGE)),
]


def _unknown_state_feedback() -> bytes:
    header = bytes([1, 9, 1, 0, 0, 0, 0, 0])
    return header + compute_tag(KEY, b"F", PENDANT_ID, header)


Script = list[tuple[str, Callable[[PendantUnderTest], Awaitable[object]]]]


async def _play(pendant: PendantUnderTest, script: Script = SCRIPT) -> list[tuple[str, object]]:
    return [(name, await step(pendant)) for name, step in script]


async def _sim_transcript(script: Script = SCRIPT) -> list[tuple[str, object]]:
    clock = ManualClock(datetime(2024, 3, 4, 18, 20, tzinfo=UTC))
    options = DeviceOptions(
        id="pendant-1",
        address="C0:00:00:00:00:0B",
        name="Care",
        key=KEY,
        battery=BATTERY,
        battery_per_measurement=0,
        battery_per_day=0,
    )
    pendant = Pendant(options, clock, pendant_id=PENDANT_ID)
    link = f"local:conformance{next(_links)}"
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(sim.ble.open_central(link))
        bumble_device = await stack.enter_async_context(
            sim.ble.open_peripheral_device(link, options.address, options.name)
        )
        await stack.enter_async_context(pendant.attach(bumble_device))
        pendant.wake()
        await pendant.wait_for(lambda: pendant.advertising)
        _, backend = sim.ble.backend_for(link)
        client = await stack.enter_async_context(BleakClient(options.address, backend=backend, pair=False, timeout=10))
        under_test = SimPendant(pendant, clock, client)
        await client.start_notify(str(EVENT_CHAR_UUID), under_test.on_indication)
        return await _play(under_test, script)


@contextlib.contextmanager
def _firmware(root: Path) -> Iterator[FirmwarePendant]:
    assert MICROPYTHON is not None
    proc = subprocess.Popen(
        [MICROPYTHON, str(FIRMWARE / "tests" / "hub_bridge.py"), str(root), KEY.hex(), PENDANT_ID, "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MICROPYPATH": MICROPYPATH},
    )
    try:
        yield FirmwarePendant(proc)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def firmware(tmp_path: Path) -> Iterator[FirmwarePendant]:
    if MICROPYTHON is None:
        pytest.skip("micropython is not installed")
    with _firmware(tmp_path) as pendant:
        yield pendant


async def test_the_simulated_pendant_answers_like_the_firmware(firmware: FirmwarePendant) -> None:
    expected = await _play(firmware)
    got = await _sim_transcript()
    for (name, want), (_, answer) in zip(expected, got, strict=True):
        assert answer == want, name


async def test_the_script_exercises_what_matters(firmware: FirmwarePendant) -> None:
    # Guards the comparison above against vacuity: the firmware's own answers are the documented ones.
    answers = dict(await _play(firmware))
    no_frame = Read(0, None, b"")
    assert answers["event before any event"] == no_frame
    first = Frame(PendantEventType.PRESS, 1, BATTERY, authentic=True)
    assert answers["its indication"] == first
    assert answers["event read = the pending frame"] == Read(0, first, b"")
    for forged in ("confirm under a stranger's key", "confirm of a counter never sent", "confirm that is no frame"):
        assert answers[forged] == Wrote(0, acted=False, pending=(1,), shown=None), forged
    assert answers["feedback help_called"] == Wrote(0, True, (1,), FeedbackState.HELP_CALLED)
    assert answers["feedback replayed"] == Wrote(0, False, (1,), None)
    assert answers["confirm"] == Wrote(0, True, (), None)
    assert answers["confirm again (crossed a repeat)"] == Wrote(0, True, (), None)
    cancel = Frame(PendantEventType.CANCEL, 2, BATTERY, authentic=True)
    assert answers["the cancel repeated, not the check-in"] == cancel
    assert answers["event read after both confirmed"] == Read(0, cancel, b"")
    assert answers["an old confirm replayed"] == Wrote(0, True, (), None)
    assert answers["feedback idle"] == Wrote(0, True, (), FeedbackState.IDLE)
    assert answers["key check before any challenge"] == Read(0, None, b"")
    answer = bytes(KeyChallenge.from_bytes(CHALLENGE).answer(PENDANT_ID, KEY))
    assert answers["key challenge"] == KeyChecked(0, True, answer)
    assert answers["key challenge, too short"] == KeyChecked(0, False, CHALLENGE[:-1])
    assert answers["key challenge with events confirmed"] == KeyChecked(0, True, answer)


# -- any sequence of writes, reads and gestures --------------------------------------------------------------------


def _raw_confirm(counter: int, key: bytes) -> bytes:
    header = bytes([1]) + counter.to_bytes(4, "little")
    return header + compute_tag(key, b"C", PENDANT_ID, header)


def _raw_feedback(state: int, counter: int, seq: int, key: bytes) -> bytes:
    header = bytes([1, state]) + counter.to_bytes(4, "little") + seq.to_bytes(2, "little")
    return header + compute_tag(key, b"F", PENDANT_ID, header)


keys = st.sampled_from([KEY, STRANGER])
operations = st.one_of(
    st.sampled_from(list(GESTURES)).map(lambda g: (f"gesture {g}", lambda p: p.gesture(g))),
    st.just(("read event", lambda p: p.read("event"))),
    st.builds(
        lambda c, k: (f"confirm {c} {k == KEY}", lambda p: p.write("confirm", _raw_confirm(c, k))),
        st.integers(0, 6),
        keys,
    ),
    st.builds(
        lambda st_, c, q, k: (
            f"feedback {st_} {c} {q} {k == KEY}",
            lambda p: p.write("feedback", _raw_feedback(st_, c, q, k)),
        ),
        st.integers(0, 7),
        st.integers(0, 6),
        st.integers(0, 3),
        keys,
    ),
    st.builds(
        lambda data: (f"keycheck {data.hex()}", lambda p: p.keycheck(data)),
        st.one_of(st.binary(min_size=8, max_size=8).map(lambda n: bytes(KeyChallenge(n))), st.binary(max_size=32)),
    ),
    st.just(("read keycheck", lambda p: p.read("keycheck"))),
    st.builds(
        lambda what, data: (f"{what} {data.hex()}", lambda p: p.write(what, data)),
        st.sampled_from(["confirm", "feedback"]),
        st.binary(max_size=32),
    ),
)


@pytest.mark.skipif(MICROPYTHON is None, reason="micropython is not installed")
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=1, max_size=25))
def test_any_sequence_of_operations_gets_the_same_answers(script: Script) -> None:
    with tempfile.TemporaryDirectory() as root, _firmware(Path(root)) as firmware:
        expected = run(_play(firmware, script))
    got = run(_sim_transcript(script))
    for (name, want), (_, answer) in zip(expected, got, strict=True):
        assert answer == want, name
