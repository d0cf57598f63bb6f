"""The provisioning error tree: every error says what happened and what the installer should do next.

Every failed step leaves the hub's existing files untouched; the message's second half is the one-line fix.
"""

from __future__ import annotations

__all__ = [
    "BondRefusedError",
    "ConfigWriteError",
    "DeviceNotFoundError",
    "EnrollmentRejectedError",
    "InstallationTestError",
    "LockedOutError",
    "NotInitialisedError",
    "ProvisionError",
    "ThresholdInputError",
    "WrongPinError",
]


class ProvisionError(Exception):
    """A provisioning step that could not be done.

    Attributes:
        what: what happened, one sentence.
        fix: what to do about it, one line.
    """

    def __init__(self, what: str, fix: str) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what} - {fix}")


class NotInitialisedError(ProvisionError):
    """A step needs a hub that has been through ``carehub provision init``."""


class ConfigWriteError(ProvisionError):
    """A file could not be written (full disk, read-only storage); the previous file is unchanged."""


class EnrollmentRejectedError(ProvisionError):
    """The platform refused to register the hub's public key."""


class DeviceNotFoundError(ProvisionError):
    """Nothing advertises at the address the installer chose."""


class BondRefusedError(ProvisionError):
    """The device refused to pair (bond) with the hub."""


class BluetoothUnavailableError(ProvisionError):
    """The hub's own Bluetooth stack cannot be used: no system D-Bus, no bluetoothd, no adapter, or it is off.

    A setup problem, not a device's: the commands exit with status 2, as for bad input.
    """


class ThresholdInputError(ProvisionError):
    """A threshold edit or profile name that cannot be used.

    Attributes:
        key: the offending threshold key or profile, as typed.
    """

    def __init__(self, key: str, what: str, fix: str) -> None:
        self.key = key
        super().__init__(what, fix)


class InstallationTestError(ProvisionError):
    """The installation test could not run at all (as opposed to a device that failed it)."""


class WrongPinError(ProvisionError):
    """The installer PIN did not match."""


class LockedOutError(ProvisionError):
    """Too many wrong PINs: logins are refused until the lockout ends.

    Attributes:
        retry_after_s: seconds until a PIN is accepted again.
    """

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            "too many wrong PINs", f"wait {max(1, round(retry_after_s))} s, then type the PIN shown on the hub"
        )
