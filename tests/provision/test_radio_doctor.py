"""A device that refuses to bond (through the CLI, config untouched), the installation test when a device stays
silent (fake hub), and `carehub doctor` findings with their one-line fixes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import namedtuple
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hub_files import new_hub
from provision_kit import CUFF, make_home
from typer.testing import CliRunner

import sim.ble
from carehub.provision_cli import app
from gateway.config import DeviceKind, GatewayConfig, load_config
from gateway.outbox import Lane, OutboxItem, open_outbox
from gateway.provision.doctor import Status, outbox_summary, run_doctor
from gateway.provision.errors import BondRefusedError, InstallationTestError
from gateway.provision.radio import pair_device
from gateway.provision.steps import add_device
from gateway.provision.testrun import REPORT_DOMAIN, Arrival, run_installation_test
from protocols.keys import load_hub_identity, verify_detached
from sim.broker import MosquittoBroker

Usage = namedtuple("Usage", "total used free")


async def test_device_that_refuses_to_bond(tmp_path: Path) -> None:
    link = "local:refuses"
    paths = new_hub(tmp_path, link=link)
    before = paths.config.read_bytes()
    home = make_home(link, cuff_max_bonds=1)
    home.cuff.bonded = {"11:22:33:44:55:66"}  # already bonded to the resident's phone
    async with sim.ble.open_central(link), home.stack:
        await home.attach(home.cuff)
        home.cuff.wake()
        scanner, client = sim.ble.backend_for(link)
        with pytest.raises(BondRefusedError) as info:
            await pair_device(CUFF, expect=DeviceKind.BLOOD_PRESSURE, scanner_backend=scanner, client_backend=client)
    assert "refused to pair" in info.value.what
    assert "clear its pairings" in info.value.fix
    assert "hold the cuff's bluetooth" in info.value.fix.lower()
    assert paths.config.read_bytes() == before


async def test_pairing_a_device_that_is_not_there(tmp_path: Path, relay_link: str) -> None:
    paths = new_hub(tmp_path, link=relay_link)
    args = [
        "pair",
        "C0:00:00:00:00:99",
        "--config",
        str(paths.config),
        "--resident",
        "r1",
        "--kind",
        "scale",
        "--timeout",
        "0.5",
    ]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 1
    assert "nothing is advertising at C0:00:00:00:00:99" in result.output
    assert "Step on the scale" in result.output


class FakeHub:
    """A hub under test whose arrivals the test feeds; delivery is acknowledged at once."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.arrivals: asyncio.Queue[Arrival] = asyncio.Queue()

    async def wait_delivered(self) -> None:
        return


async def test_silent_device_fails_the_test_and_the_report_is_signed(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    add_device(paths, address=CUFF, kind=DeviceKind.BLOOD_PRESSURE, resident="r1")
    add_device(paths, address="C0:00:00:00:00:02", kind=DeviceKind.SCALE, resident="r1")
    config = load_config(paths.config)
    fake = FakeHub(config)
    fake.arrivals.put_nowait(Arrival(CUFF, "battery", 64, 0.0))
    fake.arrivals.put_nowait(Arrival(CUFF, "reading", None, asyncio.get_running_loop().time()))

    @contextlib.asynccontextmanager
    async def factory(_config: GatewayConfig, **_backends: object) -> AsyncIterator[FakeHub]:
        yield fake

    report = await run_installation_test(config, installer="Li Wei", per_device_timeout=0.2, hub_factory=factory)
    assert not report.passed
    cuff, scale = report.devices
    assert (cuff.ok, cuff.battery) == (True, 64)
    assert not scale.ok
    assert "no reading within 0.2 s" in scale.detail
    assert "Ask the resident to step on the scale." in scale.detail  # the test's prompt, not the pairing one
    identity = load_hub_identity(config.hub_key_file)
    verify_detached(identity.verify_key, REPORT_DOMAIN, report.canonical(), bytes.fromhex(report.signature))
    assert "FAILED" in report.to_text()


async def test_installation_test_without_devices_says_pair_first(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    with pytest.raises(InstallationTestError) as info:
        await run_installation_test(load_config(paths.config), installer="x")
    assert "carehub provision pair" in info.value.fix


async def test_doctor_healthy_hub_against_a_real_broker(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    paths = new_hub(tmp_path, broker=f"mqtt://{mosquitto.host}:{mosquitto.port}")
    checks = {c.name: c for c in await run_doctor(paths.config, broker_limit_s=5)}
    assert all(c.status is Status.OK for c in checks.values()), checks


async def test_doctor_finds_each_problem_with_a_fix(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    add_device(paths, address=CUFF, kind=DeviceKind.BLOOD_PRESSURE, resident="r1")
    paths.hub_key.chmod(0o644)
    config = load_config(paths.config)
    async with open_outbox(config.storage_path) as outbox:
        await outbox.put(OutboxItem(1, b"sealed", Lane.PRIORITY, "alarm", ("a",), 0.0))
        await outbox.set_cursor(f"racp:{CUFF}", 7)
    checks = {
        c.name: c
        for c in await run_doctor(
            paths.config,
            broker_limit_s=1,
            now=lambda: datetime(1970, 1, 1, tzinfo=UTC),
            disk_usage=lambda _p: Usage(10**9, 10**9 - 10**6, 10**6),
        )
    }
    assert checks["hub key"].status is Status.FAIL
    assert "chmod 600" in checks["hub key"].fix
    assert checks["clock"].status is Status.FAIL
    assert "timedatectl" in checks["clock"].fix
    assert checks["storage"].status is Status.FAIL
    assert checks["outbox"].status is Status.FAIL
    assert "1 alarm/panic" in checks["outbox"].detail
    assert checks["broker"].status is Status.FAIL
    assert "network" in checks["broker"].fix
    assert "next stored record #7" in checks[f"device {CUFF}"].detail
    assert "carehub provision test" in checks[f"device {CUFF}"].fix


async def test_doctor_reads_the_outbox_without_writing(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    config = load_config(paths.config)
    async with open_outbox(config.storage_path):
        pass
    before = config.storage_path.read_bytes()
    await run_doctor(paths.config, broker_limit_s=0.5)
    assert config.storage_path.read_bytes() == before
    with sqlite3.connect(config.storage_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_doctor_cli_on_a_broken_config(tmp_path: Path) -> None:
    import typer  # noqa: PLC0415

    from carehub.provision_cli import doctor_command  # noqa: PLC0415

    cli = typer.Typer()
    cli.command()(doctor_command)
    cli.command("unused")(lambda: None)
    bad = tmp_path / "hub.toml"
    bad.write_text("[hub]\nid = 'X'\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["doctor-command", "--config", str(bad), "--json"])
    assert result.exit_code == 1
    [check] = json.loads(result.output)
    assert check["check"] == "config"
    assert "hub.id" in check["detail"]


def test_doctor_reads_every_outbox_schema_it_can_migrate_and_refuses_newer(tmp_path: Path) -> None:
    from gateway.outbox import _MIGRATIONS, SCHEMA_VERSION  # noqa: PLC0415

    old = tmp_path / "v1.db"
    with sqlite3.connect(old) as conn:  # a hub not yet restarted since the upgrade: the gateway migrates at start
        _MIGRATIONS[0](conn)
        conn.execute("PRAGMA user_version = 1")
    summary = outbox_summary(old)
    assert summary is not None
    assert (summary["priority_rows"], summary["routine_rows"], summary["bytes"]) == (0, 0, 0)
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        _MIGRATIONS[0](conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(sqlite3.DatabaseError, match="schema version"):
        outbox_summary(newer)
