"""Issue 17 item 2 (and issue 19 item 1 before it), end to end on real processes and a really full file system: with
the outbox's disk reserve (:mod:`gateway.disk_reserve`) a panic press is still stored and confirmed to the pendant,
with its alarm record, while another program's log fills the disk; the resident gets the siren and the voice; the
press and the alarm reach the platform exactly once; once space returns the hub puts its reserve back by itself,
and ``carehub doctor`` reports the reserve and the full-disk episode.

OS processes: the carehub BLE relay and the hub daemon (``python -m gateway``, as its service runs it) with its
outbox on a 16 MiB tmpfs; in this process: Mosquitto (fixture), the reference platform and the simulated pendant on
the relayed radio. The tmpfs is filled by another file (someone else's log), not by the outbox's own byte budget.
Mounting needs root (CI runs as root); elsewhere the test is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from pathlib import Path

import pytest
from clirun import CAREHUB
from home_setup import running_home
from small_disk import small_disk

from community.storage import SqliteStorage, StoredReading
from gateway.disk_reserve import DEFAULT_RESERVE_BYTES
from protocols.keys import save_pendant_key
from protocols.pendant import PendantEventType
from sim.broker import MosquittoBroker, mosquitto_available
from sim.clock import RealClock
from sim.devices.options import DeviceOptions
from sim.devices.pendant import Pendant

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root"),
]

HUB_ID = "disk-hub"
PENDANT = "C0:33:00:00:00:01"
PENDANT_KEY = bytes(range(32))
BOUND = 60.0  # seconds for any one step
ROOT = Path(__file__).resolve().parents[2]


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte with another program's file."""
    filler = directory / "someone-elses.log"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"x" * chunk) == chunk:
                    pass
        os.fsync(fd)
    finally:
        os.close(fd)
    return filler


async def panic_records(storage: SqliteStorage, counter: int) -> list[StoredReading]:
    return [r for r in await storage.readings(HUB_ID) if r.kind == "panic" and r.body["counter"] == counter]


async def kinds(storage: SqliteStorage) -> list[str]:
    return [r.kind for r in await storage.readings(HUB_ID)]


def reserve_held(disk: Path) -> bool:
    reserve = disk / "outbox.sqlite-reserve"
    return reserve.exists() and reserve.stat().st_blocks * 512 >= DEFAULT_RESERVE_BYTES


async def test_a_press_on_a_full_disk_is_stored_from_the_reserve_and_confirmed(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    save_pendant_key(tmp_path / "pendant.key", PENDANT, PENDANT_KEY)
    marker = tmp_path / "fallback-notified.txt"
    notifier = f"import sys, pathlib; pathlib.Path({str(marker)!r}).write_text(sys.argv[-1])"
    pendant = Pendant(
        DeviceOptions(id="pendant-1", address=PENDANT, name="Pendant", bonding_required=True, key=PENDANT_KEY),
        RealClock(),
    )
    with small_disk(tmp_path / "disk", "16m") as disk:
        async with running_home(
            tmp_path,
            mosquitto,
            pendant,
            hub_id=HUB_ID,
            kind="pendant",
            bound=BOUND,
            outbox=disk / "outbox.sqlite",
            sections=["[alarms]", f"fallback_command = {json.dumps([sys.executable, '-c', notifier])}"],
            device_lines=['pendant_key_file = "pendant.key"'],
        ) as home:
            storage, log = home.storage, home.log
            daemon = await home.start_hub()  # the hub daemon as its unit runs it

            # A first press while there is room: everything is connected and works, and the reserve is held.
            first = await pendant.press(PendantEventType.PRESS)
            async with asyncio.timeout(BOUND):
                await pendant.wait_confirmed(first.sequence)
            await home.until_stored(lambda: panic_records(storage, first.sequence), "the first press at the platform")
            assert reserve_held(disk)
            cancel = await pendant.press(PendantEventType.CANCEL)
            async with asyncio.timeout(BOUND):
                await pendant.wait_confirmed(cancel.sequence)
            alarms_before = (await kinds(storage)).count("alarm")

            filler = fill(disk)  # someone else's log takes every byte left
            assert os.statvfs(disk).f_bavail == 0
            second = await pendant.press(PendantEventType.PRESS)
            async with asyncio.timeout(BOUND):
                await pendant.wait_confirmed(second.sequence)  # stored from the reserve, so confirmed (section 9.4)
            await home.until_stored(
                lambda: panic_records(storage, second.sequence), "the press made on the full disk at the platform"
            )
            await home.until_stored(
                lambda: _more_alarms(storage, alarms_before), "an alarm record made on the full disk at the platform"
            )
            assert filler.exists()
            text = log.read_text(errors="replace")
            # Given up for the press when SQLite needed a new block for it. SQLite may instead write the press into
            # pages its files already hold (the WAL is rewritten from its start after a checkpoint), and then the disk
            # being full never reaches it: one clean-clone run in about ten stored the press that way. Either way
            # the press is stored and confirmed; tests/gateway/test_disk_reserve.py covers the release itself.
            released = not reserve_held(disk)
            assert ("released the" in text) == released, text[-2000:]
            # The resident hears the ordinary "help is being called" (a stored call), not the can't-store siren.
            assert text.count("light=help_called sound=alarm") == 2, text[-2000:]
            assert "light=siren" not in text
            assert not marker.exists()  # stored, so the fallback notifier for an unstorable call did not run

            filler.unlink()  # the other program's log is rotated: space returns
            third = await pendant.press(PendantEventType.PRESS)  # a write that lets the hub see the space
            async with asyncio.timeout(BOUND):
                await pendant.wait_confirmed(third.sequence)
            # The reserve is put back before the third press's commit (OutboxStore._maintain_reserve runs first in
            # every batch that writes), and the pendant is confirmed only once the press is stored: it is back now.
            assert reserve_held(disk), home.tail()
            await home.until_stored(lambda: panic_records(storage, third.sequence), "the press after the disk emptied")
            assert daemon.returncode is None, log.read_text(errors="replace")[-2000:]
            for press in (first, second, third):
                assert len(await panic_records(storage, press.sequence)) == 1

            # carehub doctor, through its entry point, reports the reserve and the episode the hub recorded.
            doctor = await asyncio.create_subprocess_exec(  # the console-script entry point, as tests/cli runs it
                *CAREHUB,
                *("doctor", "--config", str(tmp_path / "hub.toml"), "--json", "--timeout", "5"),
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            async with asyncio.timeout(BOUND):
                out, _ = await doctor.communicate()
            found = {c["check"]: c for c in json.loads(out)}
            reserve = found["disk reserve"]
            assert reserve["status"] == "ok", reserve
            assert reserve["detail"].startswith("2.0 MiB of 2.0 MiB held at "), reserve
            if released:
                assert "last full disk from " in reserve["detail"], reserve
                assert re.search(
                    r"to \S+ \S+ UTC: [1-9]\d* alarm/panic commit\(s\) stored from the reserve", reserve["detail"]
                )
            else:  # SQLite never saw the disk full: there was no episode
                assert "last full disk" not in reserve["detail"], reserve


async def _more_alarms(storage: SqliteStorage, before: int) -> bool:
    return (await kinds(storage)).count("alarm") > before
