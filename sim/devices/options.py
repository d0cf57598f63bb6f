"""Per-device product options, shared by the scenario parser and the simulated devices."""

from __future__ import annotations

import dataclasses
from datetime import datetime

#: Where a meter's clock lands after a battery change (many meters start at 2000-01-01 00:00).
DEFAULT_CLOCK = datetime(2000, 1, 1)  # noqa: DTZ001 - GATT Date Time is local time without a zone


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceOptions:
    """How one simulated product is configured (the scenario's per-device options).

    Attributes:
        id: the scenario's device id (``"bp-1"``).
        address: the static random BLE address (``"C0:00:00:00:00:01"``).
        name: the advertised local name.
        manufacturer/model/serial/firmware: Device Information strings.
        bonding_required: characteristics and CCCDs need an encrypted (bonded) link.
        max_bonds: how many centrals may bond; ``None`` for any number.
        memory_size: how many measurements the device keeps; the oldest is overwritten.
        clock_drift_ppm: how fast (positive) or slow the device clock runs.
        battery: initial battery level, percent.
        battery_per_measurement: percent used per measurement.
        battery_per_day: percent used per day of the device's life.
        advertise_seconds: how long the device advertises after a measurement.
        clock_start: the device clock's initial reading (local time); ``None`` means "set correctly at start".
        key: the pendant's per-device key (pendant only).
    """

    id: str
    address: str
    name: str
    manufacturer: str = "carehub sim"
    model: str = "generic"
    serial: str = "0000"
    firmware: str = "1.0.0"
    bonding_required: bool = False
    max_bonds: int | None = None
    memory_size: int = 100
    clock_drift_ppm: float = 0.0
    battery: float = 100.0
    battery_per_measurement: float = 0.05
    battery_per_day: float = 0.1
    advertise_seconds: float = 60.0
    clock_start: datetime | None = None
    key: bytes | None = None

    def __post_init__(self) -> None:
        if self.memory_size < 1:
            raise ValueError("memory_size must be at least 1")
        if not 0 <= self.battery <= 100:
            raise ValueError("battery must be within 0..100")
        if self.max_bonds is not None and self.max_bonds < 1:
            raise ValueError("max_bonds must be at least 1")
        if self.advertise_seconds <= 0:
            raise ValueError("advertise_seconds must be positive")
