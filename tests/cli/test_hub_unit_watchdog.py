"""Issue 17 item 3: the service unit asks for the watchdog the hub serves, and the Pi install brings its sender."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

from gateway.watchdog import Notifier, Watchdog

ROOT = Path(__file__).resolve().parents[2]


def _service() -> configparser.SectionProxy:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "carehub-hub.service", encoding="utf-8")
    return unit["Service"]


def test_the_unit_is_notify_with_a_watchdog_the_hub_pings_in_time() -> None:
    service = _service()
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    match = re.fullmatch(r"(\d+)s", service["WatchdogSec"])
    assert match is not None, service["WatchdogSec"]
    interval = float(match.group(1))
    # systemd passes WatchdogSec as WATCHDOG_USEC; the hub must ping at least twice per interval.
    period = Watchdog(Notifier(), [], interval_s=interval).period_s
    assert period <= interval / 2
    assert service["Restart"] == "always"  # a watchdog kill is restarted too


def test_the_pi_extra_installs_sdnotify() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert any(req.startswith("sdnotify") for req in extras["pi"])
