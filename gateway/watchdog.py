"""The systemd watchdog (issue 17 item 3): ``WATCHDOG=1`` only while the hub is making progress.

A deadlocked hub is a live process to systemd, and a resident without alarms. The service unit runs the hub as
``Type=notify`` with ``WatchdogSec=``; :class:`Watchdog` tells systemd over ``NOTIFY_SOCKET`` (through the
``sdnotify`` package, which speaks systemd's notification protocol):

- ``READY=1`` once the hub runs (the gateway is open: outbox, uplink, BLE manager started), ``STOPPING=1`` when it
  is asked to stop, and ``STATUS=`` lines saying what it is doing or which part is stuck;
- ``WATCHDOG=1`` every third of the interval systemd asks for (``WATCHDOG_USEC``), and only when

  (a) the event loop is responsive: the pings are sent by a coroutine on the hub's own loop, so a loop blocked by a
      call that never returns sends none, and
  (b) each watched part is making progress (:class:`ProgressTracker`): the BLE manager is scanning, or its scan
      loop is visibly retrying (its failure counters move); the uplink is connected, or its reconnect loop is
      visibly cycling (connects, connection failures, crashes). A part that shows neither for its window (a scan
      or a connection attempt that never returns) is stuck.

  systemd kills and restarts a hub that misses its pings for ``WatchdogSec``.

Both parts are observed through what they already publish (:attr:`gateway.ble.BleManager.scanning` and
:class:`gateway.ble.BleStats`, :attr:`gateway.uplink.Uplink.connected` and
:class:`gateway.uplink_acks.UplinkMetrics`); neither is changed for the watchdog.

Without ``NOTIFY_SOCKET`` (a hub run by hand, the tests) nothing is sent; stalls are still logged.

Test hook: when the environment has ``CAREHUB_TEST_STALL_S=<seconds>``, SIGUSR2 makes the hub send
``STATUS=test stall: ...`` and then block its event loop in ``time.sleep`` for that long
(:func:`install_stall_hook`), the way a blocking call in a coroutine would. Nothing installs it otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from gateway.ble import BleManager
    from gateway.uplink import Uplink

__all__ = [
    "STALL_ENV",
    "Notifier",
    "Probe",
    "ProgressTracker",
    "Reading",
    "Watchdog",
    "WatchdogUnavailableError",
    "ble_probe",
    "install_stall_hook",
    "uplink_probe",
    "watchdog_interval",
]

_log = logging.getLogger(__name__)

STALL_ENV: Final = "CAREHUB_TEST_STALL_S"
"""The test hook's environment variable (see the module docstring)."""

#: Seconds between progress checks when systemd asks for no watchdog (no ``WATCHDOG_USEC``): stalls are logged.
_UNWATCHED_CHECK_S: Final = 10.0
#: How long a BLE scan may be neither running nor visibly retrying. Its retries wait at most a minute
#: (gateway.ble's scan retry cap); a scanner start that has not come back in three of those is stuck.
_BLE_WINDOW_S: Final = 180.0
#: The shortest window of the uplink: its reconnect delay (reconnect_max_s, 30 s by default) plus a connection
#: attempt that may wait for the operating system's TCP connect timeout (about two minutes on Linux) on a network
#: that drops packets; an outage must not look like a hang, or the hub would restart all through it.
_UPLINK_MIN_WINDOW_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class Reading:
    """What a probe sees of its part at one moment.

    Attributes:
        settled: the part is in the state where waiting is its job (scanning, connected).
        marker: counters that move whenever the part does something (a retry, a failure, a session).
    """

    settled: bool
    marker: tuple[int, ...]


class Probe:
    """A watched part: its name, its progress window in seconds, and how to read it."""

    def __init__(self, name: str, window_s: float, read: Callable[[], Reading]) -> None:
        if window_s <= 0:
            raise ValueError(f"a progress window must be positive, got {window_s!r}")
        self.name = name
        self.window_s = window_s
        self.read = read


def ble_probe(manager: BleManager) -> Probe:
    """The BLE manager: settled while it scans; its scan retries, sessions and failures are its progress."""

    def read() -> Reading:
        stats = manager.stats
        marker = (stats.scan_failures, stats.sessions, stats.readings, stats.storage_failures, stats.unknown_adverts)
        return Reading(manager.scanning.is_set(), (*marker, sum(stats.failures.values())))

    return Probe("ble", _BLE_WINDOW_S, read)


def uplink_probe(uplink: Uplink) -> Probe:
    """The uplink: settled while connected (MQTT keepalive ends a dead session); its reconnect loop is its progress."""
    settings = uplink.settings
    window = max(_UPLINK_MIN_WINDOW_S, 2 * settings.backoff_cap + 2 * settings.keepalive + 60.0)

    def read() -> Reading:
        m = uplink.metrics
        return Reading(uplink.connected.is_set(), (m.connects, m.connection_failures, m.crashes, m.frames_sent))

    return Probe("uplink", window, read)


class ProgressTracker:
    """Whether one part made progress within its window, on an injected monotonic clock.

    The part made progress at the moment of a reading that is settled, or whose marker differs from the one before.
    """

    def __init__(self, probe: Probe, monotonic: Callable[[], float]) -> None:
        self.probe = probe
        self._monotonic = monotonic
        self._marker: tuple[int, ...] | None = None
        self._last_progress = monotonic()

    def stalled_for(self) -> float | None:
        """Read the part: None while it is making progress, else the seconds since it last did."""
        reading = self.probe.read()
        now = self._monotonic()
        if reading.settled or reading.marker != self._marker:
            self._last_progress = now
            self._marker = reading.marker
            return None
        idle = now - self._last_progress
        return idle if idle > self.probe.window_s else None


class WatchdogUnavailableError(RuntimeError):
    """systemd waits for notifications (``NOTIFY_SOCKET`` is set) but they cannot be sent; the message says why."""


class Notifier:
    """Sends notifications to systemd over ``NOTIFY_SOCKET`` with :mod:`sdnotify`; does nothing without it.

    :mod:`sdnotify` (the ``pi`` extra) is imported only when ``NOTIFY_SOCKET`` is set, so a hub run by hand needs
    none. Its socket is made non-blocking: a systemd that does not read cannot block the hub's event loop. A message
    that cannot be sent is logged (systemd then restarts the hub for want of pings, which is the right outcome).

    Raises:
        WatchdogUnavailableError: ``NOTIFY_SOCKET`` is set but sdnotify is not installed or cannot connect to it
            (systemd would wait for READY=1 in vain, then kill the hub; better to say why at once).
    """

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self._notify: Callable[[str], None] | None = None
        address = os.environ.get("NOTIFY_SOCKET")  # what sdnotify connects to
        if not address:
            return
        try:
            import sdnotify  # noqa: PLC0415  only where systemd waits for it
        except ImportError:
            raise WatchdogUnavailableError(
                "NOTIFY_SOCKET is set (systemd runs the hub as Type=notify) but the sdnotify package is missing: "
                "install carehub[pi]"
            ) from None
        try:
            notifier = sdnotify.SystemdNotifier(debug=True)
        except OSError as exc:
            raise WatchdogUnavailableError(f"cannot reach systemd at NOTIFY_SOCKET={address} ({exc})") from None
        self._socket = notifier.socket
        self._socket.setblocking(False)
        self._notify = notifier.notify

    @property
    def enabled(self) -> bool:
        """True when there is a systemd to notify."""
        return self._notify is not None

    def send(self, *lines: str) -> None:
        """Send ``lines`` (``KEY=value`` each) as one notification."""
        if self._notify is None:
            return
        try:
            self._notify("\n".join(lines))
        except OSError as exc:
            _log.error("watchdog: notification %r not sent (%s)", lines, exc)

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._notify = None


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """systemd's watchdog interval in seconds for this process, or None when it asks for none.

    ``WATCHDOG_USEC`` is the interval; ``WATCHDOG_PID``, when set, names the process it is meant for.
    """
    env = os.environ if environ is None else environ
    text = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(text)
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


class Watchdog:
    """Pings systemd while every probe makes progress; see the module docstring.

    Args:
        notifier: where notifications go.
        probes: the watched parts.
        interval_s: systemd's watchdog interval (:func:`watchdog_interval`), or None when it asks for none.
        monotonic: the clock the progress windows are measured on.
    """

    def __init__(
        self,
        notifier: Notifier,
        probes: Sequence[Probe],
        *,
        interval_s: float | None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self._trackers = [ProgressTracker(p, monotonic) for p in probes]
        self._interval = interval_s
        self._stalled: frozenset[str] = frozenset()
        self.pings = 0
        """``WATCHDOG=1`` notifications sent."""

    @property
    def period_s(self) -> float:
        """Seconds between checks: a third of systemd's interval (it asks for at least half), so one late wake-up
        of a loaded Pi does not cost the hub its life."""
        return self._interval / 3 if self._interval is not None else _UNWATCHED_CHECK_S

    def check(self) -> bool:
        """Read every probe; send ``WATCHDOG=1`` when all make progress. Returns whether they did."""
        stalled = {t.probe.name: idle for t in self._trackers if (idle := t.stalled_for()) is not None}
        names = frozenset(stalled)
        if names != self._stalled:
            if names:
                what = ", ".join(f"{name} made no progress for {idle:.0f} s" for name, idle in sorted(stalled.items()))
                _log.error("watchdog: %s; no more WATCHDOG=1, systemd restarts the hub", what)
                self._notifier.send(f"STATUS=stuck: {what}")
            else:
                _log.warning("watchdog: every part makes progress again")
                self._notifier.send("STATUS=running")
            self._stalled = names
        if names:
            return False
        if self._interval is not None:
            self._notifier.send("WATCHDOG=1")
            self.pings += 1
        return True

    def ready(self, status: str) -> None:
        """Tell systemd the hub runs (``READY=1``)."""
        self._notifier.send("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        """Tell systemd the hub is shutting down (``STOPPING=1``)."""
        self._notifier.send("STOPPING=1", "STATUS=stopping")

    async def run(self) -> None:
        """Check (and ping) every :attr:`period_s` seconds until cancelled."""
        while True:
            self.check()
            await asyncio.sleep(self.period_s)


def install_stall_hook(
    loop: asyncio.AbstractEventLoop, notifier: Notifier, environ: Mapping[str, str] | None = None
) -> bool:
    """The test-only loop stall (module docstring): installed when ``CAREHUB_TEST_STALL_S`` is set; returns whether."""
    env = os.environ if environ is None else environ
    text = env.get(STALL_ENV)
    if not text:
        return False
    try:
        seconds = float(text)
    except ValueError:
        _log.error("%s=%r is not a number of seconds; no stall hook", STALL_ENV, text)
        return False

    def stall() -> None:
        _log.warning("test stall: blocking the event loop for %.1f s (SIGUSR2, %s)", seconds, STALL_ENV)
        notifier.send(f"STATUS=test stall: the event loop blocks for {seconds:g} s")
        time.sleep(seconds)  # blocking on purpose: this is the hang the watchdog must see

    loop.add_signal_handler(signal.SIGUSR2, stall)
    return True
