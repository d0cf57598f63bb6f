"""The hub's danger thresholds: the catalogue in :mod:`protocols.thresholds`, shared with the platform.

Every name is re-exported unchanged; see :mod:`protocols.thresholds` for the keys, units, defaults, sources and
validation rules.
"""

from __future__ import annotations

from protocols.thresholds import (
    DEFAULTS,
    PROFILES,
    SPECS,
    Cmp,
    Key,
    KeySpec,
    ThresholdError,
    ThresholdProblem,
    Thresholds,
    Tier,
    check_update,
    fahrenheit_to_celsius,
    kpa_to_mmhg,
    lb_to_kg,
    mmol_per_l_to_mg_dl,
    resolve_thresholds,
)

__all__ = [
    "DEFAULTS",
    "PROFILES",
    "SPECS",
    "Cmp",
    "Key",
    "KeySpec",
    "ThresholdError",
    "ThresholdProblem",
    "Thresholds",
    "Tier",
    "check_update",
    "fahrenheit_to_celsius",
    "kpa_to_mmhg",
    "lb_to_kg",
    "mmol_per_l_to_mg_dl",
    "resolve_thresholds",
]
