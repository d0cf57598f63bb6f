"""``carehub demo`` with the console (issue 18): the simulated family doctor answers the day's panic call and takes
on its critical alarms through the console's HTTP API, and the audit log says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from community.console.audit import SqliteAuditStore, audit_path, verify
from sim.broker import mosquitto_available
from sim.demo import DemoOptions, play_demo


@pytest.mark.integration
@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
def test_the_demo_doctor_acts_through_the_console(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = play_demo(DemoOptions(speed=86400, workdir=tmp_path, seed=7, console="127.0.0.1:0"), say=lines.append)
    assert summary.ok
    # The day's own story is checked by tests/integration/test_demo.py; here: the doctor answered through the console.
    # (A clean-clone run under load once saw the 17:40 press land on the still-open first call: (1, 1, 0).)
    assert summary.panic_answered >= 1
    [announced] = [line for line in lines if line.startswith("console: http://127.0.0.1:")]
    assert "log in as dr-li" in announced
    with SqliteAuditStore(audit_path(tmp_path / "platform.sqlite")) as store:
        entries = list(store.entries())
    verify(entries)
    acks = [e for e in entries if e.action == "alarm.ack"]
    assert acks
    assert {e.actor for e in acks} == {"dr-li"}
    assert any(e.detail.startswith("demo-hub/panic-") for e in acks)
