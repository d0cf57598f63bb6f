"""BLE failures, classified once, by type, at the BLE boundary: which class a session failure belongs to
(`gateway.events.ErrorClass`) and how long each class waits before the device is tried again."""

from __future__ import annotations

from bleak.exc import (
    BleakCharacteristicNotFoundError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)

from gateway.backoff import RetryPolicy
from gateway.events import ErrorClass

__all__ = [
    "ATT_AUTH",
    "ATT_BUSY",
    "DBUS_CLASSES",
    "RETRY",
    "ProtocolViolationError",
    "auth_cursor_key",
    "classify_error",
]


class ProtocolViolationError(BleakError):
    """The device answered in a way the profile does not allow."""


# ATT error codes (Core Spec Vol 3 Part F 3.4.1.1): the peer wants a bond, or encryption with a bond's keys.
ATT_AUTH = frozenset(
    {
        BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHENTICATION,  # 0x05
        BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHORIZATION,  # 0x08
        BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION_KEY_SIZE,  # 0x0C
        BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION,  # 0x0F
    }
)
# The peer is busy; the same request may succeed later.
ATT_BUSY = frozenset(
    {
        BleakGATTProtocolErrorCode.PREPARE_QUEUE_FULL,  # 0x09
        BleakGATTProtocolErrorCode.INSUFFICIENT_RESOURCE,  # 0x11
        BleakGATTProtocolErrorCode.PROCEDURE_ALREADY_IN_PROGRESS,  # 0xFE
    }
)
# BlueZ's D-Bus error names (bluez doc/org.bluez.Device.rst and the GATT interfaces); bleak turns those that carry an
# ATT code into BleakGATTProtocolError itself. Names not listed are TRANSIENT (e.g. org.bluez.Error.Failed,
# InProgress, NotReady, and D-Bus's own NoReply).
DBUS_CLASSES = {
    "org.bluez.Error.AuthenticationFailed": ErrorClass.AUTH,
    "org.bluez.Error.AuthenticationCanceled": ErrorClass.AUTH,
    "org.bluez.Error.AuthenticationRejected": ErrorClass.AUTH,
    "org.bluez.Error.AuthenticationTimeout": ErrorClass.AUTH,
    "org.bluez.Error.NotPermitted": ErrorClass.AUTH,  # left over by bleak's mapping: "Not paired"
    "org.bluez.Error.NotAuthorized": ErrorClass.AUTH,
    "org.bluez.Error.NotConnected": ErrorClass.GONE,
    "org.bluez.Error.DoesNotExist": ErrorClass.GONE,
    "org.freedesktop.DBus.Error.UnknownObject": ErrorClass.GONE,  # the device object is gone (out of range)
    "org.bluez.Error.NotSupported": ErrorClass.PROTOCOL,
    "org.bluez.Error.InvalidArguments": ErrorClass.PROTOCOL,
    "org.bluez.Error.ImproperlyConfigured": ErrorClass.PROTOCOL,
}
# How long each class waits before the device is tried again (at its next advertisement after that).
RETRY = {
    ErrorClass.GONE: RetryPolicy(base=1.0, cap=30.0),  # out of range: its next advertisement says it is back
    ErrorClass.TRANSIENT: RetryPolicy(base=1.0, cap=300.0),
    ErrorClass.PROTOCOL: RetryPolicy(base=30.0, cap=1800.0),  # retrying soon would fail the same way
    ErrorClass.AUTH: RetryPolicy(base=60.0, cap=3600.0),  # a lost bond needs the installer, not a tight loop
}


def auth_cursor_key(address: str) -> str:
    """The outbox cursor counting a device's AUTH failures in a row (0 once a session succeeds again): stored in the
    clear so that ``carehub doctor`` can tell the installer which meter lost its bond and needs pairing again."""
    return f"auth:{address.upper()}"


def classify_error(exc: BaseException) -> ErrorClass:
    """Classify a session failure once, here, at the BLE boundary: by type (the ATT error code, BlueZ's D-Bus
    error name); only a plain :class:`BleakError`, which carries nothing else, is judged by its message."""
    if isinstance(exc, BleakDeviceNotFoundError):
        return ErrorClass.GONE
    if isinstance(exc, TimeoutError):
        return ErrorClass.TRANSIENT
    if isinstance(exc, ProtocolViolationError | BleakCharacteristicNotFoundError):
        return ErrorClass.PROTOCOL
    if isinstance(exc, BleakGATTProtocolError):
        if exc.code in ATT_AUTH:
            return ErrorClass.AUTH
        return ErrorClass.TRANSIENT if exc.code in ATT_BUSY else ErrorClass.PROTOCOL
    if isinstance(exc, BleakDBusError):
        return DBUS_CLASSES.get(exc.dbus_error, ErrorClass.TRANSIENT)
    if isinstance(exc, BleakError):
        text = str(exc).lower()
        if "not connected" in text or "disconnected" in text or "link to the peer was lost" in text:
            return ErrorClass.GONE
        if text.startswith("pair ") or any(word in text for word in ("pairing", "authentication", "encrypt")):
            return ErrorClass.AUTH  # bleak's own pairing errors; the sim names the operation ("pair <address>: ...")
    return ErrorClass.TRANSIENT
