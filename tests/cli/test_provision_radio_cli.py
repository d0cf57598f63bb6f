"""`carehub provision scan` and `pair` on a hub without a usable Bluetooth stack, and `pair`'s checks before any
radio work (issue 16.4, 16.5): one line on standard error, exit status 2, no traceback. Through the real entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
from clirun import carehub, one_error_line
from hub_files import new_hub

from gateway.provision.steps import set_resident

CUFF = "C0:00:00:00:0E:01"
# The system bus is a socket that does not exist: bleak's BlueZ backend fails to connect (FileNotFoundError).
NO_DBUS = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/carehub-test/system_bus_socket"}
NO_BLUEZ = "error: Bluetooth is not available"
FIX = "Fix: install bluez and start bluetoothd, or pass --link for the simulated radio"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    paths = new_hub(tmp_path)
    set_resident(paths, "r2", name="Li Wei")
    return paths.config


@pytest.mark.parametrize(
    "args",
    [["provision", "scan", "--seconds", "1"], ["provision", "pair", CUFF, "--resident", "r1", "--timeout", "2"]],
    ids=["scan", "pair"],
)
def test_without_bluez_the_radio_commands_say_what_to_install(config: Path, args: list[str]) -> None:
    result = carehub(*args, "--config", config, env=NO_DBUS)
    line = one_error_line(result)
    assert line.startswith(NO_BLUEZ)
    assert line.endswith(FIX)
    assert result.returncode == 2
