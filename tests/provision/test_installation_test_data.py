"""Issue 16 item 2: the installation test's readings are test data end to end, never the resident's.

Through the real entry points: a blank hub is set up with the CLI (init from a bundle, enroll, a resident, a cuff and
a pendant paired over the radio relay), then ``carehub provision test`` runs the real gateway against the reference
platform on a real Mosquitto while the simulated cuff measures the issue's 148/92 and the pendant is pressed. Then:

- the hub raised no alarm (148/92 is over the default notice thresholds of 140/90: a real reading would alarm), and
  the press was no call for help (no alarm record, no ``alarm_id``);
- the platform stored both records marked ``installation_test`` and offered neither to the caregiver as an alarm;
- ``carehub platform readings`` (a real process) shows the mark in its table and its JSON;
- the console's figures (vital readings, risk tier, upload rate) and the FHIR export leave them out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import typer
from provision_kit import BOUND, CUFF, PENDANT, Home, Platform, invoke, ok, pendant_pairing, write_bundle

from carehub.provision_cli import app
from community.console.analytics import resident_overview, vital_readings
from community.fhir.resources import build_export

ROOT = Path(__file__).resolve().parents[2]
cli = typer.Typer()
cli.add_typer(app, name="provision")
cli.command("noop")(lambda: None)  # a second command keeps "provision" a subcommand


run = functools.partial(invoke, cli)


def carehub(*args: str) -> subprocess.CompletedProcess[str]:
    """``carehub ARGS`` as a real process (its console-script entry point)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", "from carehub.cli import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND * 2,
        check=False,
    )


async def test_the_installation_test_is_test_data_end_to_end(tmp_path: Path, platform: Platform, home: Home) -> None:
    config = tmp_path / "hub" / "hub.toml"
    c = ("--config", str(config))
    bundle = write_bundle(platform, tmp_path / "bundle.json", "hub-0002")
    key_id = platform.identity.public.key_id
    ok(await run("provision", "init", *c, "--bundle", str(bundle), "--link", home.link, "--platform-key-id", key_id))
    ok(await run("provision", "enroll", *c, "--platform-config", str(platform.config)))
    ok(await run("provision", "resident", "r1", *c, "--name", "Wang Fang"))
    home.cuff.wake()
    home.pendant.wake()
    ok(await run("provision", "pair", CUFF, *c, "--resident", "r1", "--kind", "blood_pressure"))
    ok(await run("provision", "pair", PENDANT, *c, *pendant_pairing()))

    test = asyncio.create_task(run("provision", "test", *c, "--installer", "Li Wei", "--timeout", str(BOUND)))
    await home.cuff.measure(148, 92, 70)  # the test reading: over 140/90, a notice if it were the resident's
    await home.pendant.press()
    assert "PASSED" in ok(await test)

    stored = await platform.storage.readings("hub-0002")
    kinds = [r.kind for r in stored]
    assert "alarm" not in kinds, [r.body for r in stored if r.kind == "alarm"]
    (measurement,) = [r for r in stored if r.kind == "measurement"]
    assert measurement.body["installation_test"] is True
    assert measurement.resident_id == "r1"
    assert measurement.values is not None
    assert measurement.values["systolic"] == 148
    (press,) = [r for r in stored if r.kind == "panic"]
    assert press.body["installation_test"] is True
    assert press.body["event"] == "press"
    assert press.alarm_id is None
    assert platform.worker.alarms.empty(), "a test record was offered to the caregiver as an alarm"

    # carehub platform readings: the mark in the table and in the JSON.
    table = await asyncio.to_thread(carehub, "platform", "readings", "--config", str(platform.config))
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if CUFF in line or PENDANT in line]
    assert len(rows) >= 2
    assert any("TEST 148/92 mmHg" in line for line in rows), table.stdout
    assert any("TEST panic press" in line for line in rows), table.stdout
    assert "installation-test data" in table.stdout
    listed = await asyncio.to_thread(carehub, "platform", "readings", "--config", str(platform.config), "--json")
    assert listed.returncode == 0, listed.stderr
    marks = {r["record_id"]: r["installation_test"] for r in json.loads(listed.stdout)}
    assert marks[measurement.record_id] is True
    assert marks[press.record_id] is True
    assert all(mark is False for rid, mark in marks.items() if rid not in {measurement.record_id, press.record_id})

    # The console's figures and the FHIR export leave them out.
    assert vital_readings(stored) == ()
    overview = resident_overview("r1", stored, plan=None, now=measurement.hub_time + dt.timedelta(hours=1))
    assert [r for r in overview.risk.reasons if r.record_id is not None] == []  # a real 148/92: a notice reading
    assert overview.latest.blood_pressure is None
    assert overview.alarms == ()
    export = build_export(stored)
    assert export.count("Observation") == 0
    assert export.count("Communication") == 0
    assert export.count("Flag") == 0
    assert export.skipped["installation-test measurement"] == 1
    assert export.skipped["installation-test panic"] == 1
