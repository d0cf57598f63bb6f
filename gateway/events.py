"""What the BLE layer tells the hub's core, as typed events (issue 13: no string-keyed dicts across this seam).

The BLE manager (`gateway.ble`) produces one :data:`DeviceEvent` for everything it learns about a provisioned
device; the hub (`gateway.hub`) consumes them through the :class:`gateway.ble.ReadingSink` protocol:

- :class:`Reading`: a measurement notification as it came off the air (batched with a RACP cursor);
- :class:`PendantFrame`: an event frame from a panic pendant (answered with a confirm frame, or not);
- the :data:`DeviceReport` variants: :class:`BatteryLevel`, :class:`LinkUp`, :class:`LinkDown`,
  :class:`LinkFailed`, :class:`ClockCorrected` and :class:`Misbehaviour`.

Every variant reaches a record or a counter; the consumers match on the union with ``assert_never`` so that a
variant added here without a consumer is a mypy error, not a silent loss. Events carry data only: validating it
(a battery level above 100 is misbehaviour, not a battery record) is the core's job (`gateway.core.device_reports`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

from gateway.config import DeviceConfig

__all__ = [
    "BatteryLevel",
    "ClockCorrected",
    "DeviceEvent",
    "DeviceReport",
    "ErrorClass",
    "LinkDown",
    "LinkFailed",
    "LinkUp",
    "Misbehaviour",
    "PendantFrame",
    "Reading",
]


class ErrorClass(enum.StrEnum):
    """How a failed BLE session is treated (classified once, by `gateway.ble.classify_error`)."""

    GONE = "gone"  # the device stopped advertising or dropped the link: wait for its next advertisement
    TRANSIENT = "transient"  # timeouts, busy controller: retry after a backoff
    AUTH = "auth"  # bonding refused or insufficient authentication: report, retry slowly
    PROTOCOL = "protocol"  # the device broke the GATT contract (missing service, ATT error, RACP failure)


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement notification as it came off the air, with the session's clock knowledge.

    Attributes:
        device: the provisioned device it came from.
        uuid: the 16-bit characteristic UUID.
        data: the characteristic value as received.
        received_at: hub time of arrival (UTC-aware).
        clock_offset: device clock minus hub clock, when the session found the device clock wrong.
        session_start: when the device's session started on the hub's clock (UTC-aware), for a device that stamps
            readings relative to it (a CGM, ``protocols.profiles`` ``session_clock``); None otherwise.
    """

    device: DeviceConfig
    uuid: int
    data: bytes
    received_at: datetime
    clock_offset: timedelta | None = None
    session_start: datetime | None = None


@dataclass(frozen=True, slots=True)
class PendantFrame:
    """An Event frame written by a panic pendant (authenticated by the core, `protocols.pendant`)."""

    device: DeviceConfig
    data: bytes


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """The Battery Level characteristic (0x2A19) as read; the core checks the 0..100 range."""

    device: DeviceConfig
    level: int


@dataclass(frozen=True, slots=True)
class LinkUp:
    """A session connected (and bonded, where the kind requires it)."""

    device: DeviceConfig


@dataclass(frozen=True, slots=True)
class LinkDown:
    """A session ended normally (the device disconnected or was released when idle)."""

    device: DeviceConfig


@dataclass(frozen=True, slots=True)
class LinkFailed:
    """A session failed; the device is retried after a backoff.

    Attributes:
        device: the device.
        error_class: the failure's class (`gateway.ble.classify_error`).
        detail: the error's text, for the record and the log.
    """

    device: DeviceConfig
    error_class: ErrorClass
    detail: str


@dataclass(frozen=True, slots=True)
class ClockCorrected:
    """The hub wrote its time to a device whose clock was off by more than the tolerance.

    Attributes:
        device: the device.
        device_time: the device's time before, as it reported it (local, no zone), if it could be read as text.
        offset: device clock minus hub clock before the correction; ``None`` when the device's time was no date.
    """

    device: DeviceConfig
    device_time: str | None
    offset: timedelta | None


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    """A device sent what its profile does not allow (a value that does not decode, a range violation).

    Attributes:
        device: the device.
        reason: what was wrong.
        raw: the offending bytes (may be empty).
    """

    device: DeviceConfig
    reason: str
    raw: bytes = b""


DeviceReport: TypeAlias = BatteryLevel | LinkUp | LinkDown | LinkFailed | ClockCorrected | Misbehaviour
"""What a session reports besides readings and pendant frames; each becomes a ``device_status`` record."""

DeviceEvent: TypeAlias = Reading | PendantFrame | DeviceReport
"""Everything the BLE layer tells the core."""
