"""Issue 17 item 3: a real ``carehub-hub`` process tells systemd READY=1 and pings WATCHDOG=1, and a blocked event
loop stops the pings within the watchdog interval.

The test plays systemd's part: it owns the unix datagram socket named by ``NOTIFY_SOCKET`` and sets
``WATCHDOG_USEC`` as systemd does for ``WatchdogSec=``. The hub runs on the simulated radio with a broker address
nobody listens on (its uplink keeps retrying, which is progress). The loop is blocked through the documented test
hook (``CAREHUB_TEST_STALL_S`` and SIGUSR2, :func:`gateway.watchdog.install_stall_hook`): a ``time.sleep`` on the
loop, the way a blocking call in a coroutine would hang it (SIGSTOP would stop the whole process instead).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from carehub.bench import provision

pytestmark = pytest.mark.integration

WATCHDOG_S = 3.0  # WatchdogSec= of this test's "unit": the hub pings every third of it
STALL_S = 4 * WATCHDOG_S  # how long the hook blocks the loop: longer than the interval the test listens for
STARTUP_BOUND = 90.0  # seconds for the hub to start on a loaded machine
RESUME_BOUND = 60.0  # seconds for the pings to come back once the stall is over
CAREHUB_HUB = (sys.executable, "-m", "gateway")
ROOT = Path(__file__).resolve().parents[2]


def environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env | extra


class SystemdSocket:
    """The notification socket systemd would own: every datagram is one notification."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[str] = []

    def next(self, timeout: float) -> str | None:
        """The next notification, or None when none came within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        text = data.decode()
        self.seen.append(text)
        return text

    def until(self, line: str, timeout: float) -> str:
        """Read notifications until one has ``line`` (a whole ``KEY=value`` line or its prefix)."""
        while (message := self.next(timeout)) is not None:
            if any(part.startswith(line) for part in message.split("\n")):
                return message
        pytest.fail(f"no {line!r} within {timeout} s; got {self.seen}")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], SystemdSocket, Path]]:
    home = provision(tmp_path, "mqtt://127.0.0.1:9", link="local:watchdog-test")
    systemd = SystemdSocket(tmp_path / "notify.sock")
    log = tmp_path / "hub.log"
    env = environment(
        {
            "NOTIFY_SOCKET": str(systemd.path),
            "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6)),
            "CAREHUB_TEST_STALL_S": str(STALL_S),
        }
    )
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [*CAREHUB_HUB, "--config", str(home.path), "--no-voice"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield proc, systemd, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        systemd.sock.close()


def test_ready_then_pings_and_a_blocked_loop_stops_them(
    hub: tuple[subprocess.Popen[bytes], SystemdSocket, Path],
) -> None:
    proc, systemd, log = hub
    ready = systemd.until("READY=1", STARTUP_BOUND)
    assert "STATUS=hub bench-hub running" in ready.split("\n")
    systemd.until("WATCHDOG=1", STARTUP_BOUND)
    systemd.until("WATCHDOG=1", STARTUP_BOUND)  # and again: pings, not one message

    proc.send_signal(signal.SIGUSR2)
    systemd.until("STATUS=test stall", RESUME_BOUND)
    # The loop is blocked from here on for STALL_S: not one notification may arrive within the watchdog interval,
    # so systemd would have killed this hub.
    late = systemd.next(WATCHDOG_S)
    assert late is None, f"the hub notified {late!r} while its event loop was blocked"

    # Once the loop runs again the hub is healthy and pings again (systemd would have restarted it meanwhile).
    systemd.until("WATCHDOG=1", STALL_S + RESUME_BOUND)
    proc.send_signal(signal.SIGTERM)
    systemd.until("STOPPING=1", RESUME_BOUND)
    assert proc.wait(timeout=RESUME_BOUND) == 0, log.read_text(encoding="utf-8")[-3000:]


def test_the_watchdog_kill_shows_where_the_hub_hung(
    hub: tuple[subprocess.Popen[bytes], SystemdSocket, Path],
) -> None:
    """systemd kills a hub that stopped pinging with SIGABRT (WatchdogSignal's default): its log then shows the
    stack of the blocked loop, so the hang can be found and fixed."""
    proc, systemd, log = hub
    systemd.until("READY=1", STARTUP_BOUND)
    proc.send_signal(signal.SIGUSR2)
    systemd.until("STATUS=test stall", RESUME_BOUND)
    assert systemd.next(WATCHDOG_S) is None
    proc.send_signal(signal.SIGABRT)
    assert proc.wait(timeout=RESUME_BOUND) == -signal.SIGABRT
    text = log.read_text(encoding="utf-8")
    assert "Fatal Python error: Aborted" in text, text[-3000:]
    assert 'gateway/watchdog.py", line' in text, text[-3000:]
    assert "in stall" in text, text[-3000:]


def test_without_sdnotify_a_notify_socket_is_one_line_refusal(tmp_path: Path) -> None:
    """systemd waits for READY=1 but the package that sends it is missing: the hub says so instead of being killed
    for silence after TimeoutStartSec."""
    home = provision(tmp_path, "mqtt://127.0.0.1:9", link="local:watchdog-missing")
    blocker = tmp_path / "nosdnotify"
    blocker.mkdir()
    (blocker / "sdnotify.py").write_text("raise ImportError('sdnotify hidden by the test')\n", encoding="utf-8")
    env = environment({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    env["PYTHONPATH"] = f"{blocker}:{env['PYTHONPATH']}"
    result = subprocess.run(
        [*CAREHUB_HUB, "--config", str(home.path), "--no-voice"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        "error: NOTIFY_SOCKET is set (systemd runs the hub as Type=notify) but the sdnotify package is missing: "
        "install carehub[pi]"
    ), result.stderr
    assert "Traceback" not in result.stderr
