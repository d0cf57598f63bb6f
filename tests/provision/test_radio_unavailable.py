"""The platform stack's "no Bluetooth here" errors become BluetoothUnavailableError with a fix; others pass."""

from __future__ import annotations

import pytest
from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError
from bleak.exc import BleakBluetoothNotAvailableReason as NotAvailable

from gateway.provision.errors import BluetoothUnavailableError
from gateway.provision.radio import _bluetooth_needed

NO_BLUEZ_FIX = "install bluez and start bluetoothd, or pass --link for the simulated radio"


@pytest.mark.parametrize(
    ("error", "what", "fix"),
    [
        (FileNotFoundError(2, "No such file or directory"), "no system D-Bus", NO_BLUEZ_FIX),
        (ConnectionRefusedError(111, "Connection refused"), "no system D-Bus", NO_BLUEZ_FIX),
        (BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", []), "bluetoothd is not running", NO_BLUEZ_FIX),
        (
            BleakBluetoothNotAvailableError("No Bluetooth adapters found.", NotAvailable.NO_BLUETOOTH),
            "No Bluetooth adapters found.",
            NO_BLUEZ_FIX,
        ),
        (
            BleakBluetoothNotAvailableError("off", NotAvailable.POWERED_OFF),
            "switched off",
            "rfkill unblock bluetooth",
        ),
    ],
)
def test_no_bluetooth_on_the_platform_stack_is_one_error_with_a_fix(error: Exception, what: str, fix: str) -> None:
    with pytest.raises(BluetoothUnavailableError) as info, _bluetooth_needed(platform=True):
        raise error
    assert what in info.value.what
    assert fix in info.value.fix
    assert info.value.__cause__ is error


@pytest.mark.parametrize(
    "error",
    [
        TimeoutError(),
        BleakError("device disconnected"),
        BleakDBusError("org.bluez.Error.AuthenticationFailed", []),
    ],
)
def test_other_errors_pass_unchanged(error: Exception) -> None:
    with pytest.raises(type(error)), _bluetooth_needed(platform=True):
        raise error


def test_the_simulated_radio_is_never_taken_for_missing_bluez() -> None:
    with pytest.raises(ConnectionRefusedError), _bluetooth_needed(platform=False):
        raise ConnectionRefusedError(111, "Connection refused")
