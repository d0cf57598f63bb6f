"""A whole simulated day on a manual clock: the ground-truth log holds exactly what the scenario asked for."""

from __future__ import annotations

import asyncio
from pathlib import Path

from protocols.gatt import decode
from sim.clock import ManualClock
from sim.home import Home
from sim.scenario import EventKind, load_scenario

EXAMPLE = Path(__file__).parents[2] / "sim" / "scenarios" / "hypertension-diabetes.toml"


async def test_example_day_produces_the_scenario_measurements():
    scenario = load_scenario(EXAMPLE)
    clock = ManualClock(scenario.start_time)
    lines: list[str] = []
    async with Home(scenario, link="local:home-test", clock=clock, on_event=lines.append) as home:
        runner = asyncio.create_task(home.run(), name="home-run")
        await clock.advance((scenario.end_time - scenario.start_time).total_seconds() + 1)
        async with asyncio.timeout(10):
            await runner
        glucose = home.devices["glucose-1"]
        assert not glucose.in_range or glucose.stored_count() == 0
    expected = [e for e in scenario.timeline if e.kind is EventKind.MEASURE]
    assert len(home.log) == len(expected)
    for event, produced in zip(sorted(expected, key=lambda e: e.at), home.log, strict=True):
        assert produced.device == event.device
        assert {k: produced.values[k] for k in event.values} == dict(event.values)
    for produced in home.log:
        decode(produced.uuid, produced.raw)
    bp = [p for p in home.log if p.device == "bp-1"]
    assert [p.values["systolic"] for p in bp] == [142, 192, 151]
    after_reset = [p for p in home.log if p.device == "glucose-1" and p.values["mg_dl"] == 168]
    assert after_reset[0].device_time.year == 2000
    pendant_kinds = [(p.device, p.values["event"]) for p in home.pendant_events]
    assert pendant_kinds == [
        ("pendant-1", "checkin"),
        ("pendant-1", "battery_low"),
        ("pendant-1", "press"),
        ("pendant-1", "cancel"),
    ]
    assert [p.sequence for p in home.pendant_events] == [1, 2, 3, 4]
    assert any("out of range" in line for line in lines)
