"""Glucose as people read it: mg/dL (default) or mmol/L, converted from the SI units the meter sent.

A Glucose Measurement (0x2A18) carries its concentration in kg/L or mol/L (GLS 1.0 §3.106). Records keep those
values exactly as decoded; only what is shown to a person is converted:

- kg/L to mg/dL: 1 kg/L = 10^6 mg / 10 dL = 10^5 mg/dL;
- mol/L to mmol/L: x 1000;
- between the two, thresholds.md's units line: mg/dL = mmol/L x 18.016
  (:func:`protocols.thresholds.mmol_per_l_to_mg_dl`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

from protocols.thresholds import mmol_per_l_to_mg_dl

__all__ = ["GlucoseDisplay", "clinical_glucose", "clinical_values", "parse_glucose_display"]

# thresholds.md units line: mg/dL = mmol/L x 18.016.
_MG_DL_PER_MMOL_L: Final = 18.016
_MG_DL_PER_KG_L: Final = 100_000.0
_MMOL_PER_MOL: Final = 1000.0


class GlucoseDisplay(enum.Enum):
    """The unit glucose is shown in."""

    MG_DL = "mg/dL"
    MMOL_L = "mmol/L"

    @property
    def decimals(self) -> int:
        """Digits after the point worth showing: whole mg/dL to a tenth, mmol/L to a hundredth."""
        return 1 if self is GlucoseDisplay.MG_DL else 2


_NAMES: Final = {
    "mgdl": GlucoseDisplay.MG_DL,
    "mg/dl": GlucoseDisplay.MG_DL,
    "mmol": GlucoseDisplay.MMOL_L,
    "mmol/l": GlucoseDisplay.MMOL_L,
}


def parse_glucose_display(text: str) -> GlucoseDisplay:
    """``mgdl`` / ``mg/dL`` or ``mmol`` / ``mmol/L`` (any case), as typed after ``--units``.

    Raises:
        ValueError: anything else (the message lists the choices).
    """
    try:
        return _NAMES[text.strip().lower()]
    except KeyError:
        raise ValueError(f"--units {text!r}: expected mgdl (mg/dL) or mmol (mmol/L)") from None


def clinical_glucose(concentration: float, si_unit: str, display: GlucoseDisplay) -> float:
    """``concentration`` in ``si_unit`` (``"kg/L"`` or ``"mol/L"``, as a 0x2A18 decode names it) in ``display``.

    Raises:
        ValueError: ``si_unit`` is neither kg/L nor mol/L.
    """
    if si_unit == "kg/L":
        mg_dl = concentration * _MG_DL_PER_KG_L
        value = mg_dl if display is GlucoseDisplay.MG_DL else mg_dl / _MG_DL_PER_MMOL_L
    elif si_unit == "mol/L":
        mmol_l = concentration * _MMOL_PER_MOL
        value = mmol_per_l_to_mg_dl(mmol_l) if display is GlucoseDisplay.MG_DL else mmol_l
    else:
        raise ValueError(f"glucose unit {si_unit!r}: expected kg/L or mol/L")
    return round(value, display.decimals)


def clinical_values(values: Mapping[str, Any], display: GlucoseDisplay) -> dict[str, Any]:
    """A decoded measurement's values for a person: a glucose ``concentration`` with ``unit`` kg/L or mol/L is shown
    in ``display`` (the SI value kept as ``concentration_si`` / ``unit_si``); anything else is returned as is."""
    shown = dict(values)
    concentration, unit = shown.get("concentration"), shown.get("unit")
    if unit not in ("kg/L", "mol/L") or isinstance(concentration, bool):
        return shown
    if not isinstance(concentration, int | float):
        return shown
    shown["concentration"] = clinical_glucose(float(concentration), str(unit), display)
    shown["unit"] = display.value
    shown["concentration_si"] = concentration
    shown["unit_si"] = unit
    return shown
