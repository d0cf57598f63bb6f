"""tests/fhir: the GATT value strategies of tests/protocols (``from strategies import ...``) and the record store of
tests/console (``analytics_data.store``) are importable here (the carehub process runner, ``clirun``, is in tests/)."""

from __future__ import annotations

import sys
from pathlib import Path

for _helpers in ("protocols", "console"):  # strategies.py; analytics_data.py (store)
    _path = str(Path(__file__).resolve().parent.parent / _helpers)
    if _path not in sys.path:
        sys.path.insert(0, _path)
