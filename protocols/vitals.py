"""What a reading measures, in canonical units, as the hub's rules judge it (pure values, shared by the device
profiles in ``protocols.profiles`` and the hub's observations in ``gateway.observations``)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Vital", "VitalReading"]


class Vital(enum.StrEnum):
    """What a value measures, with its canonical unit."""

    SYSTOLIC = "systolic"  # mmHg
    DIASTOLIC = "diastolic"  # mmHg
    MEAN_ARTERIAL = "mean_arterial"  # mmHg (reported, no rule: the MAP <65 trigger is unverified in thresholds.md)
    PULSE = "pulse"  # beats per minute, from a cuff, an oximeter or a heart-rate band
    GLUCOSE = "glucose"  # mg/dL, capillary blood from a meter's strip
    CGM_GLUCOSE = "cgm_glucose"  # mg/dL, interstitial fluid from a continuous glucose monitor (its own thresholds)
    SPO2 = "spo2"  # percent
    TEMPERATURE = "temperature"  # °C
    WEIGHT = "weight"  # kg
    BATTERY = "battery"  # percent of the device's battery


@dataclass(frozen=True, slots=True)
class VitalReading:
    """What a profile makes of one decoded measurement: its values in canonical units and whether the device
    flagged it as not trustworthy (reported, never alarmed on)."""

    values: Mapping[Vital, float] = field(default_factory=dict)
    unreliable: bool = False
