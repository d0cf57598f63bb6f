"""Helpers shared by the profiles' observation mappings."""

from __future__ import annotations

import math
from collections.abc import Mapping

from protocols.vitals import Vital

__all__ = ["finite_values"]


def finite_values(values: Mapping[Vital, float | None]) -> dict[Vital, float]:
    """The values that are finite numbers (NaN, infinities and absent values count as no reading)."""
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
