"""The README's newcomer script, run for real: a separate process watching a simulated home over the relay."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sim.clock import ManualClock
from sim.home import Home
from sim.scenario import EventKind, load_scenario

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "sim" / "examples" / "watch_bp.py"
SCENARIO = ROOT / "sim" / "scenarios" / "hypertension-diabetes.toml"


async def test_watch_bp_prints_the_cuffs_reading(relay_link: str) -> None:
    scenario = load_scenario(SCENARIO)
    clock = ManualClock(scenario.start_time)
    async with Home(scenario, link=relay_link, clock=clock) as home:
        first_bp = next(s for s in home.schedule if s.event.device == "bp-1" and s.event.kind is EventKind.MEASURE)
        await home.apply(first_bp)  # the window stays open: the manual clock does not move
        watcher = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--link",
            relay_link,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(60):
                out, err = await watcher.communicate()
        finally:
            if watcher.returncode is None:
                watcher.kill()
                await watcher.wait()
    assert watcher.returncode == 0, err.decode(errors="replace")
    lines = out.decode().splitlines()
    assert lines[0] == "scanning for a blood pressure cuff ..."
    assert lines[1] == "connected to BPM-Cuff C0:11:00:00:00:01"
    assert lines[2] == "BP 142/91 mmHg, pulse 72/min at 2024-03-04 06:00"  # the cuff clock: the home clock at start
    assert home.log[0].values["systolic"] == 142
