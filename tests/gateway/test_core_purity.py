"""Issue 13: the hub's deciding parts are sans-I/O. Imported alone, in a fresh interpreter, none of them (nor anything
they import) loads asyncio, an event loop, SQLite, MQTT or the Bluetooth stack. The alarm and pendant cores used to
import ``gateway.feedback`` for the cue vocabulary, and with it asyncio and subprocess machinery; the vocabulary now
lives in ``gateway.cues``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gateway.cues
import gateway.feedback

_IO_MODULES = frozenset({"asyncio", "uvloop", "sqlite3", "aiomqtt", "paho", "bleak", "bumble", "subprocess"})

_PURE = (
    "gateway.cues",
    "gateway.panic",
    "gateway.panic_actions",
    "gateway.alarms",
    "gateway.rules",
    "gateway.observations",
    "gateway.findings",
    "gateway.bp_crisis",
    "gateway.rule_levels",
    "gateway.core.alarm_records",
    "gateway.core.pendant_link",
    "gateway.core.measurements",
    "gateway.core.device_reports",
    "gateway.core.downlink",
    "gateway.core.sealer",
    "gateway.core.counters",
)


@pytest.mark.parametrize("module", _PURE)
def test_core_module_loads_no_io(module: str) -> None:
    probe = (
        "import sys\n"
        f"import {module}\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(_IO_MODULES)!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.split() == [], f"{module} loads {done.stdout.strip()}"


def test_feedback_gives_the_same_cue_types() -> None:
    """``gateway.feedback`` shows cues of the one vocabulary (not a copy of it)."""
    assert gateway.feedback.Cue is gateway.cues.Cue
    assert gateway.feedback.Light is gateway.cues.Light
    assert gateway.feedback.Sound is gateway.cues.Sound
