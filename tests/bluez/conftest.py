"""BlueZ conformance fixtures: a private D-Bus system bus and a stand-in bluetoothd, per test.

bleak's BlueZ backend (the hub's on Linux, chosen when no ``backend=`` is given) connects to the *system* bus named by
``DBUS_SYSTEM_BUS_ADDRESS``; each test points that at its own ``dbus-daemon`` (never the machine's; a few
milliseconds to start, and the harness ends every process a test leaves behind) and gets
`mock_bluetoothd.Bluetoothd` owning ``org.bluez`` there, its radio a private bumble link.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mock_bluetoothd import Bluetoothd

import sim.ble

_links = itertools.count()

# A bus like the system bus but open to everyone in this test (the machine's policy would keep org.bluez for root
# and the bluetooth group).
_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def system_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private dbus-daemon; ``DBUS_SYSTEM_BUS_ADDRESS`` points at it for the test."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon is not installed (scripts/test installs it)")
    with tempfile.TemporaryDirectory(prefix="carehub-dbus-") as tmp:
        config = Path(tmp) / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=Path(tmp) / "system_bus_socket"))
        proc = subprocess.Popen(
            [daemon, f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # as non-root it complains it cannot raise its fd limit
            text=True,
        )
        try:
            assert proc.stdout is not None
            address = proc.stdout.readline().strip()  # printed once the bus listens
            if not address:
                raise RuntimeError(f"dbus-daemon exited with {proc.wait()} before listening")
            monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
            yield address
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def link() -> str:
    """A private bumble link for this test (meters and the stand-in bluetoothd's radio)."""
    return f"local:bluez-{next(_links)}"


@pytest.fixture
async def bluetoothd(system_bus: str, link: str) -> AsyncIterator[Bluetoothd]:
    """``org.bluez`` on the session's bus for this test, its radio on `link`."""
    try:
        async with Bluetoothd(system_bus, link) as daemon:
            yield daemon
    finally:
        await sim.ble.close_centrals()
