"""gateway.watchdog: the progress logic on an injected clock, and what reaches a real notification socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.watchdog import Notifier, Probe, ProgressTracker, Reading, Watchdog, watchdog_interval


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Part:
    """A watched part whose state the test sets."""

    def __init__(self, name: str, window_s: float) -> None:
        self.reading = Reading(settled=False, marker=(0,))
        self.probe = Probe(name, window_s, lambda: self.reading)

    def step(self) -> None:
        self.reading = Reading(self.reading.settled, (self.reading.marker[0] + 1,))


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_a_part_that_stops_moving_is_stalled_after_its_window() -> None:
    clock, part = FakeClock(), Part("uplink", 300.0)
    tracker = ProgressTracker(part.probe, clock)
    assert tracker.stalled_for() is None
    clock.now += 300.0
    assert tracker.stalled_for() is None  # exactly the window: still fine
    clock.now += 1.0
    assert tracker.stalled_for() == 301.0
    part.step()  # a retry: progress
    assert tracker.stalled_for() is None
    clock.now += 250.0
    part.reading = Reading(settled=True, marker=part.reading.marker)  # connected: waiting is its job
    clock.now += 10_000.0
    assert tracker.stalled_for() is None
    part.reading = Reading(settled=False, marker=part.reading.marker)  # lost, and then nothing moves
    clock.now += 300.5
    assert tracker.stalled_for() == 300.5


@given(st.lists(st.tuples(st.floats(0.0, 400.0), st.booleans(), st.booleans()), max_size=40))
def test_stalled_exactly_when_no_progress_within_the_window(steps: list[tuple[float, bool, bool]]) -> None:
    clock, part = FakeClock(), Part("ble", 180.0)
    tracker = ProgressTracker(part.probe, clock)
    tracker.stalled_for()  # the first reading sets the marker
    last_progress = clock.now
    for advance, moved, settled in steps:
        clock.now += advance
        if moved:
            part.step()
        part.reading = Reading(settled, part.reading.marker)
        result = tracker.stalled_for()
        if moved or settled:
            last_progress = clock.now
            assert result is None
        elif clock.now - last_progress > 180.0:
            assert result == pytest.approx(clock.now - last_progress)
        else:
            assert result is None


def test_pings_only_while_every_part_makes_progress(systemd: socket.socket) -> None:
    clock, ble, uplink = FakeClock(), Part("ble", 180.0), Part("uplink", 300.0)
    notifier = Notifier()
    assert notifier.enabled
    watchdog = Watchdog(notifier, [ble.probe, uplink.probe], interval_s=30.0, monotonic=clock)
    assert watchdog.period_s == 10.0
    watchdog.ready("hub h running")
    assert watchdog.check()
    assert received(systemd) == ["READY=1\nSTATUS=hub h running", "WATCHDOG=1"]

    clock.now += 200.0
    uplink.step()  # the uplink retries; the BLE scan has not come back for 200 s
    assert not watchdog.check()
    assert received(systemd) == ["STATUS=stuck: ble made no progress for 200 s"]
    clock.now += 10.0
    assert not watchdog.check()
    assert received(systemd) == []  # no ping, and the status is not repeated
    ble.step()
    assert watchdog.check()
    assert received(systemd) == ["STATUS=running", "WATCHDOG=1"]
    watchdog.stopping()
    assert received(systemd) == ["STOPPING=1\nSTATUS=stopping"]
    assert watchdog.pings == 2
    notifier.close()


def test_no_interval_no_pings(systemd: socket.socket) -> None:
    watchdog = Watchdog(Notifier(), [Part("ble", 1.0).probe], interval_s=None, monotonic=FakeClock())
    assert watchdog.check()
    assert received(systemd) == []


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.send("READY=1")  # a no-op, not an error


def test_the_interval_systemd_asks_for() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=7) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None  # another process's
    assert watchdog_interval({}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=7) is None


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Probe("x", 0.0, lambda: Reading(settled=True, marker=()))
