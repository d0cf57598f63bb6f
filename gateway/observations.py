"""An observation: one reading from one device in canonical units, as the rules judge it. Pure values.

:class:`Vital` lives in ``protocols.vitals`` (the device profiles map measurements to it) and is re-exported here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.config import DeviceKind
from protocols.vitals import Vital

__all__ = ["Observation", "Vital"]


@dataclass(frozen=True, slots=True)
class Observation:
    """One reading from one device, in canonical units (see :class:`Vital`).

    Attributes:
        resident: the resident the device is provisioned for.
        device: the device's address or id.
        kind: what the device is (a pendant's battery is judged more strictly than a meter's).
        record_id: the reading's stable id (invariant 2), carried into findings' records by the gateway.
        at: when the reading was taken, UTC-aware: hub time, or device time corrected to hub time when known.
        values: the readings; NaN or infinite values count as absent.
        unreliable: the device flagged the reading (sensor status bits): reported, never alarmed on.
    """

    resident: str
    device: str
    kind: DeviceKind
    record_id: str
    at: datetime
    values: Mapping[Vital, float]
    unreliable: bool = False

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError(f"observation {self.record_id}: `at` must be timezone-aware, got {self.at!r}")

    def value(self, vital: Vital) -> float | None:
        """The finite value of `vital`, or None when absent or not a number."""
        v = self.values.get(vital)
        if v is None or not math.isfinite(v):
            return None
        return float(v)
