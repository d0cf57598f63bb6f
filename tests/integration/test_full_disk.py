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
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from relay_process import running_relay

from community.ingest import IngestWorker, WorkerSettings
from community.storage import SqliteStorage, StoredReading
from community.wire import PlatformCodec
from gateway.disk_reserve import DEFAULT_RESERVE_BYTES
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_pendant_key, save_platform_public_keys
from protocols.pendant import PendantEventType
from sim import ble as sim_ble
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
CAREHUB = (sys.executable, "-c", "from carehub.cli import main; main()")  # as tests/cli/clirun.py runs carehub
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def small_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


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


def config_text(broker: MosquittoBroker, link: str, disk: Path, marker: Path) -> str:
    notifier = f"import sys, pathlib; pathlib.Path({str(marker)!r}).write_text(sys.argv[-1])"
    return "\n".join(
        [
            "[hub]",
            f'id = "{HUB_ID}"',
            'key_file = "hub.key"',
            'timezone = "UTC"',
            "[platform]",
            'public_key_file = "platform.pub"',
            "[broker]",
            f'url = "{broker.url}"',
            "[storage]",
            f'path = "{disk / "outbox.sqlite"}"',
            "[ble]",
            f'link = "{link}"',
            "[alarms]",
            f"fallback_command = {json.dumps([sys.executable, '-c', notifier])}",
            "[[residents]]",
            'id = "r1"',
            'name = "Resident"',
            "[[devices]]",
            f'address = "{PENDANT}"',
            'kind = "pendant"',
            'resident = "r1"',
            'pendant_key_file = "pendant.key"',
        ]
    )


async def panic_records(storage: SqliteStorage, counter: int) -> list[StoredReading]:
    return [r for r in await storage.readings(HUB_ID) if r.kind == "panic" and r.body["counter"] == counter]


async def kinds(storage: SqliteStorage) -> list[str]:
    return [r.kind for r in await storage.readings(HUB_ID)]


def reserve_held(disk: Path) -> bool:
    reserve = disk / "outbox.sqlite-reserve"
    return reserve.exists() and reserve.stat().st_blocks * 512 >= DEFAULT_RESERVE_BYTES


async def until(predicate: Callable[[], object | Awaitable[object]], what: str) -> None:
    """Poll an outside process's observable state (a file, the platform's database) until it holds."""
    try:
        async with asyncio.timeout(BOUND):
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return
                await asyncio.sleep(0.05)  # another process's progress has no event to await here
    except TimeoutError:
        pytest.fail(f"waited {BOUND} s for {what}")


async def test_a_press_on_a_full_disk_is_stored_from_the_reserve_and_confirmed(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    hub = HubIdentity.generate(HUB_ID)
    platform = PlatformIdentity.generate()
    save_hub_identity(tmp_path / "hub.key", hub)
    save_platform_public_keys(tmp_path / "platform.pub", platform.public)
    save_pendant_key(tmp_path / "pendant.key", PENDANT, PENDANT_KEY)
    marker = tmp_path / "fallback-notified.txt"
    pendant = Pendant(
        DeviceOptions(id="pendant-1", address=PENDANT, name="Pendant", bonding_required=True, key=PENDANT_KEY),
        RealClock(),
    )
    with small_disk(tmp_path / "disk") as disk:
        async with contextlib.AsyncExitStack() as stack:
            link = await stack.enter_async_context(running_relay(BOUND))
            (tmp_path / "hub.toml").write_text(config_text(mosquitto, link, disk, marker), encoding="utf-8")
            storage = await stack.enter_async_context(SqliteStorage(tmp_path / "platform.sqlite"))
            await storage.enroll_hub(hub.public)
            settings = WorkerSettings(mosquitto.host, mosquitto.port, client_id="disk-test-platform")
            await stack.enter_async_context(IngestWorker(settings, storage, PlatformCodec(platform)))
            device = await stack.enter_async_context(sim_ble.open_peripheral_device(link, PENDANT, "Pendant"))
            await stack.enter_async_context(pendant.attach(device))
            log = tmp_path / "hub.log"
            daemon = await asyncio.create_subprocess_exec(  # the hub daemon as its unit runs it
                sys.executable,
                "-m",
                "gateway",
                "--config",
                str(tmp_path / "hub.toml"),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stack.enter_context(log.open("wb")),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            stack.push_async_callback(daemon.wait)
            stack.callback(daemon.kill)

            # A first press while there is room: everything is connected and works, and the reserve is held.
            first = await pendant.press(PendantEventType.PRESS)
            async with asyncio.timeout(BOUND):
                await pendant.wait_confirmed(first.sequence)
            await until(lambda: panic_records(storage, first.sequence), "the first press at the platform")
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
            await until(
                lambda: panic_records(storage, second.sequence), "the press made on the full disk at the platform"
            )
            await until(
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
            await until(lambda: reserve_held(disk), "the reserve put back once space returned")
            await until(lambda: panic_records(storage, third.sequence), "the press after the disk emptied")
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
