"""The kinds of device a home can hold: one vocabulary for the hub, the simulated home and the platform.

A kind decides which GATT services the hub subscribes to (Bluetooth SIG assigned numbers: Blood Pressure 0x1810,
Glucose 0x1808, Pulse Oximeter 0x1822, Health Thermometer 0x1809, Weight Scale 0x181D, Heart Rate 0x180D, Continuous
Glucose Monitoring 0x181F; the pendant is carehub's own service, docs/protocol.md section 9). The values are the words
used in ``hub.toml``, scenario files and records. Everything else about a kind is its profile
(``protocols.profiles.registry``).
"""

from __future__ import annotations

import enum

__all__ = ["DeviceKind"]


class DeviceKind(enum.StrEnum):
    """What a provisioned (or simulated) device is."""

    BLOOD_PRESSURE = "blood_pressure"
    GLUCOSE = "glucose"
    OXIMETER = "oximeter"
    THERMOMETER = "thermometer"
    SCALE = "scale"
    HEART_RATE = "heart_rate"
    CGM = "cgm"  # continuous glucose monitor (CGM Service 0x181F)
    PENDANT = "pendant"
