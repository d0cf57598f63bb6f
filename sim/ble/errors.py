"""The one place where bumble's errors become bleak's.

Gateway code sees only bleak's exception tree (``bleak.exc``): ATT error responses become
:class:`~bleak.exc.BleakGATTProtocolError` with the ATT code, a peer that never shows up becomes
:class:`~bleak.exc.BleakDeviceNotFoundError`, and everything else bumble raises (HCI status errors, SMP failures,
timeouts, a link lost mid-request) becomes :class:`~bleak.exc.BleakError` with the cause chained.

Configuration and relay problems that are not Bluetooth errors have their own small tree rooted at
:class:`SimBleError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from bleak.exc import (
    CONTROLLER_ERROR_CODES,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
)
from bumble import att, core, hci
from bumble.transport.common import TransportLostError

__all__ = [
    "LinkConfigError",
    "RelayError",
    "SimBleError",
    "classify",
    "translated",
]

_T = TypeVar("_T")


class SimBleError(Exception):
    """Root of the simulated-radio errors that are not Bluetooth errors."""


class LinkConfigError(SimBleError, ValueError):
    """A link URL, address or related setting is malformed."""


class RelayError(SimBleError, OSError):
    """The cross-process relay could not be reached or started."""


def classify(error: BaseException, *, address: str, operation: str) -> BleakError:
    """Map one bumble (or transport) error to the bleak exception a gateway expects.

    Args:
        error: what bumble raised.
        address: the peer's address, for the message and for ``BleakDeviceNotFoundError``.
        operation: what was being done (``"read"``, ``"connect"``…), for the message.

    Returns:
        The bleak exception to raise ``from error``.
    """
    if isinstance(error, BleakError):
        return error
    if isinstance(error, att.ATT_Error):
        return BleakGATTProtocolError(error.error_code)
    if isinstance(error, hci.HCI_Error | hci.HCI_StatusError) and error.error_code is not None:
        text = CONTROLLER_ERROR_CODES.get(error.error_code, "Unknown controller error")
        if error.error_code == hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR:
            return BleakDeviceNotFoundError(address, f"{operation} {address}: {text}")
        return BleakError(f"{operation} {address}: HCI 0x{error.error_code:02X} {text}")
    if isinstance(error, core.ConnectionError):
        return BleakError(f"{operation} {address}: connection failed ({error})")
    if isinstance(error, TransportLostError):
        return BleakError(f"{operation} {address}: the simulated radio (HCI transport) is gone")
    if isinstance(error, core.TimeoutError | TimeoutError):
        return BleakError(f"{operation} {address}: timed out")
    if isinstance(error, asyncio.CancelledError):
        return BleakError(f"{operation} {address}: aborted, the link to the peer was lost")
    return BleakError(f"{operation} {address}: {type(error).__name__}: {error}")


_BUMBLE_ERRORS = (core.BaseBumbleError, TransportLostError, TimeoutError)


async def translated(awaitable: Awaitable[_T], *, address: str, operation: str) -> _T:
    """Await a bumble operation, re-raising its failures as bleak exceptions.

    bumble aborts a pending request by cancelling its future when the link drops; that arrives here as
    ``CancelledError`` although nobody cancelled *this* task. It becomes a ``BleakError`` unless this task really
    is being cancelled, in which case the cancellation propagates untouched.
    """
    try:
        return await awaitable
    except asyncio.CancelledError as error:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise classify(error, address=address, operation=operation) from error
    except _BUMBLE_ERRORS as error:
        raise classify(error, address=address, operation=operation) from error
