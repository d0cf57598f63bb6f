"""tests/fhir: the GATT value strategies of tests/protocols are importable here (``from strategies import ...``)."""

from __future__ import annotations

import sys
from pathlib import Path

_STRATEGIES = str(Path(__file__).resolve().parent.parent / "protocols")
if _STRATEGIES not in sys.path:
    sys.path.insert(0, _STRATEGIES)
