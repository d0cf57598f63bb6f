"""`carehub doctor` reports the outbox's disk reserve and the last full-disk episode (issue 17 item 2): held and
clean is OK, a disk still full fails (exit status 1) with what to free, a missing reserve is a warning, a garbled
episode cursor one line. Through the carehub command's Typer app, as the other doctor tests."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from hub_files import new_hub
from typer.testing import CliRunner

from carehub.cli import build_app
from gateway.config import load_config
from gateway.disk_reserve import EPISODE_CURSOR, FullDiskEpisode, reserve_path
from gateway.outbox import open_outbox
from gateway.provision.doctor import Status
from gateway.provision.files import HubPaths

STARTED = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


async def write_episode(storage: Path, text: str | None) -> None:
    """Open the outbox as the hub does (its reserve is created) and set the episode cursor, or not."""
    async with open_outbox(storage) as outbox:
        if text is not None:
            await outbox.set_cursor(EPISODE_CURSOR, text)


def reserve_check(paths: HubPaths) -> tuple[Status, str, str]:
    result = CliRunner().invoke(build_app(), ["doctor", "--config", str(paths.config), "--json", "--timeout", "0.5"])
    checks = {c["check"]: (Status(c["status"]), c["detail"], c["fix"]) for c in json.loads(result.output)}
    failed = any(status is Status.FAIL for status, _, _ in checks.values())
    assert result.exit_code == (1 if failed else 0), result.output
    return checks["disk reserve"]


def test_a_held_reserve_and_a_past_episode_are_ok(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    storage = load_config(paths.config).storage_path
    asyncio.run(write_episode(storage, None))
    status, detail, _ = reserve_check(paths)
    assert status is Status.OK
    assert detail.startswith(f"2.0 MiB of 2.0 MiB held at {reserve_path(storage)}, ")
    assert "last full disk" not in detail
    asyncio.run(write_episode(storage, FullDiskEpisode(STARTED, STARTED + 90, 3, 12).encode()))
    status, detail, _ = reserve_check(paths)
    assert status is Status.OK
    assert detail.endswith(
        "; last full disk from 2027-01-15 08:00:00 UTC to 2027-01-15 08:01:30 UTC: 3 alarm/panic commit(s) stored "
        "from the reserve, 12 routine write(s) refused"
    )


def test_a_disk_still_full_fails_and_a_missing_reserve_warns(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    storage = load_config(paths.config).storage_path
    asyncio.run(write_episode(storage, FullDiskEpisode(STARTED, None, 1, 4).encode()))
    os.truncate(reserve_path(storage), 0)  # the hub gave it up for an alarm
    status, detail, fix = reserve_check(paths)
    assert status is Status.FAIL
    assert detail.startswith(f"0.0 MiB of 2.0 MiB held at {reserve_path(storage)}, ")
    assert "last full disk from 2027-01-15 08:00:00 UTC still full: 1 alarm/panic commit(s)" in detail
    assert fix == "free space (sudo journalctl --vacuum-size=50M): the hub re-creates the reserve once 4.0 MiB are free"

    asyncio.run(write_episode(storage, FullDiskEpisode(STARTED, STARTED + 1, 1, 4).encode()))
    reserve_path(storage).unlink()
    status, detail, fix = reserve_check(paths)
    assert status is Status.WARN
    assert detail.startswith("0.0 MiB of 2.0 MiB held")
    assert fix.startswith("free space or start the hub")


def test_a_garbled_episode_cursor_is_one_warning(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    asyncio.run(write_episode(load_config(paths.config).storage_path, "{not json"))
    status, detail, _ = reserve_check(paths)
    assert status is Status.WARN
    assert detail == "outbox cursor disk.full_episode: not a full-disk episode: '{not json'"
