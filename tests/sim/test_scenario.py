"""Scenario parsing: the example loads, the schedule is reproducible, and every error names the file and key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from protocols.devices import DeviceKind
from sim.scenario import EventKind, ScenarioError, load_scenario, parse_scenario

EXAMPLE = Path(__file__).parents[2] / "sim" / "scenarios" / "hypertension-diabetes.toml"

MINIMAL = """
[home]
name = "test home"
date = 2024-03-04
seed = 1

[[residents]]
id = "r1"
name = "Ann"

[[devices]]
id = "bp-1"
kind = "blood_pressure"
address = "C0:00:00:00:00:01"
name = "BP"
resident = "r1"

[[devices]]
id = "p-1"
kind = "pendant"
address = "C0:00:00:00:00:02"
name = "Pendant"
resident = "r1"
key = "00112233445566778899aabbccddeeff"

[[timeline]]
at = "07:30"
device = "bp-1"
kind = "measure"
systolic = 142
diastolic = 91
pulse = 72
"""


def test_example_scenario_loads_with_every_required_situation():
    scenario = load_scenario(EXAMPLE)
    kinds = {d.kind for d in scenario.devices}
    assert {DeviceKind.BLOOD_PRESSURE, DeviceKind.GLUCOSE, DeviceKind.SCALE, DeviceKind.PENDANT} <= kinds
    events = {(e.device, e.kind) for e in scenario.timeline}
    assert ("pendant-1", EventKind.PRESS) in events
    assert ("pendant-1", EventKind.CANCEL) in events
    assert ("pendant-1", EventKind.BATTERY_LOW) in events
    assert ("glucose-1", EventKind.BATTERY_CHANGE) in events
    assert ("glucose-1", EventKind.OUT_OF_RANGE) in events
    crisis = [e for e in scenario.timeline if e.device == "bp-1" and e.values.get("systolic", 0) > 180]
    assert crisis
    night_hypo = [e for e in scenario.timeline if e.device == "glucose-1" and e.values.get("mg_dl", 999) < 70]
    assert night_hypo
    assert night_hypo[0].at >= timedelta(hours=22)
    out = next(e for e in scenario.timeline if e.kind is EventKind.OUT_OF_RANGE)
    assert out.until is not None
    assert out.until - out.at >= timedelta(hours=2)
    assert scenario.device("bp-1").options.bonding_required
    assert scenario.device("bp-1").options.max_bonds == 1


def test_measure_values_are_kept_exactly():
    scenario = parse_scenario(MINIMAL)
    (event,) = scenario.timeline
    assert event.values == {"systolic": 142, "diastolic": 91, "pulse": 72}
    assert event.at == timedelta(hours=7, minutes=30)
    assert scenario.device("p-1").options.key == bytes.fromhex("00112233445566778899aabbccddeeff")


def test_schedule_is_reproducible_from_the_seed_and_keeps_device_order():
    scenario = load_scenario(EXAMPLE)
    first = scenario.schedule()
    assert first == scenario.schedule()
    assert [s.when for s in first] != [s.when for s in scenario.schedule(seed=scenario.seed + 1)]
    assert [s.when for s in first] == sorted(s.when for s in first)
    for scheduled in first:
        shift = scheduled.when - (scenario.midnight + scheduled.event.at)
        assert abs(shift.total_seconds()) <= scenario.jitter_seconds + 1
    press = next(s for s in first if s.event.kind is EventKind.PRESS)
    cancel = next(s for s in first if s.event.kind is EventKind.CANCEL)
    assert press.when < cancel.when


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        (("systolic = 142", 'systolic = "high"'), "timeline[0].systolic", "non-negative number"),
        (("systolic = 142\n", ""), "timeline[0].systolic", "required"),
        (('at = "07:30"', 'at = "7h30"'), "timeline[0].at", "HH:MM"),
        (('at = "07:30"', 'at = "25:30"'), "timeline[0].at", "00:00..23:59:59"),
        (('device = "bp-1"', 'device = "bp-9"'), "timeline[0].device", "devices' ids"),
        (('kind = "measure"', 'kind = "explode"'), "timeline[0].kind", "one of measure"),
        (("pulse = 72", "pulse = 72\nmg_dl = 100"), "timeline[0].mg_dl", "unknown key"),
        (('kind = "blood_pressure"', 'kind = "toaster"'), "devices[0].kind", "one of blood_pressure"),
        (('address = "C0:00:00:00:00:01"', 'address = "nowhere"'), "devices[0].address", "BLE address"),
        (('resident = "r1"\n\n[[devices]]', 'resident = "r2"\n\n[[devices]]'), "devices[0].resident", "residents"),
        (('key = "00112233445566778899aabbccddeeff"', 'key = "zz"'), "devices[1].key", "hex"),
        (("date = 2024-03-04", 'date = "yesterday"'), "home.date", "TOML date"),
        (("seed = 1", 'seed = 1\ntimezone = "Mars/Olympus"'), "home.timezone", "IANA"),
        (("[home]", "[home]\nsurprise = 1"), "home.surprise", "unknown key"),
    ],
)
def test_errors_name_the_file_the_key_and_the_expectation(change, key, expected):
    old, new = change
    assert old in MINIMAL
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(MINIMAL.replace(old, new, 1), "home.toml")
    error = caught.value
    assert error.file == "home.toml"
    assert error.key == key
    assert expected in error.expected
    assert str(error).startswith(f"home.toml: {key}: expected")


def test_pendant_events_only_on_pendants():
    text = MINIMAL + '\n[[timeline]]\nat = "08:00"\ndevice = "bp-1"\nkind = "press"\n'
    with pytest.raises(ScenarioError, match=r"timeline\[1\]\.kind"):
        parse_scenario(text)


def test_out_of_range_needs_an_end_after_its_start():
    text = MINIMAL + '\n[[timeline]]\nat = "08:00"\ndevice = "bp-1"\nkind = "out_of_range"\nuntil = "07:00"\n'
    with pytest.raises(ScenarioError, match=r"timeline\[1\]\.until"):
        parse_scenario(text)


def test_missing_file_and_bad_toml_are_scenario_errors(tmp_path):
    with pytest.raises(ScenarioError, match="readable TOML file"):
        load_scenario(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[home\n")
    with pytest.raises(ScenarioError, match=r"bad.toml: \(syntax\)"):
        load_scenario(bad)
