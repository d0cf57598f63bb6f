"""The BLE layer's vocabulary: what sessions deliver to (:class:`ReadingSink`), what they count (:class:`BleStats`)
and the small values they pass around. No I/O."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bleak import BleakClient

from gateway.events import DeviceReport, ErrorClass, PendantFrame, Reading

__all__ = [
    "BleStats",
    "DeviceInformation",
    "DeviceState",
    "Notification",
    "ReadingSink",
    "SessionStep",
    "uuid16",
]


def uuid16(short: int) -> str:
    """bleak's normalised 128-bit form of a 16-bit SIG UUID."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


class SessionStep(enum.Enum):
    """The best-effort steps of a session: each may fail without ending it."""

    CLOCK_READ = "clock read"
    CLOCK_WRITE = "clock write"
    BATTERY = "battery level"
    DEVICE_INFORMATION = "device information"
    RACP_REPORT = "RACP report"  # a report ended with a failure code after some records (which are kept)
    CONSENT = "UDS consent"  # a multi-user scale's User Data Service consent for the resident's user index


class ReadingSink(Protocol):
    """Where sessions deliver what they learn (typed events, `gateway.events`). Each returns once it is durable."""

    async def store_readings(self, readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
        """Decode, record, seal and fsync `readings`; set the durable `cursor` (key, value) in the same commit."""

    async def get_cursor(self, key: str) -> int | None:
        """A durable cursor (e.g. the next RACP sequence number of a glucose meter)."""

    async def report(self, event: DeviceReport) -> None:
        """Battery level, link changes and failures, clock corrections, misbehaviour: each becomes a record."""

    async def pendant_frame(self, frame: PendantFrame) -> bytes | None:
        """An event frame from a pendant; returns the confirm frame to write back, or None to stay silent."""


@dataclass(frozen=True, slots=True)
class DeviceInformation:
    """What a meter says it is (Device Information Service), for `carehub doctor`; None for what it did not say."""

    manufacturer: str | None
    model: str | None
    serial: str | None
    firmware: str | None


@dataclass(slots=True)
class BleStats:
    """Counters for `carehub doctor` and the demo summary."""

    unknown_devices: set[str] = field(default_factory=set)
    unknown_adverts: int = 0
    sessions: int = 0
    readings: int = 0
    malformed: int = 0
    overflowed: int = 0  # notifications beyond the per-device queue (journaled, or a pendant's repeated frame)
    failures: Counter[ErrorClass] = field(default_factory=Counter)
    scan_failures: int = 0  # scans that could not start or ended with an error (adapter off, bluetoothd restarting)
    storage_failures: int = 0  # sessions ended because the hub could not store their data (e.g. a full disk)
    step_failures: Counter[tuple[SessionStep, ErrorClass]] = field(default_factory=Counter)  # the session went on
    unassigned: int = 0  # readings of another (or the unknown) user of a multi-user meter: stored unassigned
    control_solution: int = 0  # glucose control-solution tests: stored flagged, never judged
    last_seen: dict[str, datetime] = field(default_factory=dict)
    device_information: dict[str, DeviceInformation] = field(default_factory=dict)  # read once per run and device


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification or indication waiting in its session's queue."""

    uuid: int
    data: bytes
    received_at: datetime
    journal_number: int | None  # the indication journal's entry that waits for this reading's commit


@dataclass(slots=True)
class DeviceState:
    attempts: int = 0  # consecutive failures of the class last_failure
    last_failure: ErrorClass | None = None
    not_before: float = 0.0
    pendant_client: BleakClient | None = None
