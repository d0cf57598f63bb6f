"""Shared pieces of the provisioning tests: the platform, the simulated home, the installer page served, constants."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import typer
from aiohttp import web
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner
from typer.testing import CliRunner, Result

import sim.ble
from community.enrollment import create_bundle
from community.ingest import IngestWorker
from community.storage import SqliteStorage
from gateway.ble_passkey import PasskeyDesk
from gateway.config import GatewayConfig
from gateway.provision.doctor import Status, run_doctor
from gateway.provision.files import HubPaths
from gateway.provision.testrun import InstallationReport, run_installation_test
from gateway.provision.web import WebSettings, make_app
from protocols.keys import PlatformIdentity
from sim.broker import MosquittoBroker
from sim.clock import ManualClock
from sim.devices.base import SimDevice
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.options import DeviceOptions
from sim.devices.pendant import Pendant

BOUND = 60.0  # seconds: an upper bound for awaiting events, never a sleep
CUFF = "C0:00:00:00:00:01"
PENDANT = "C0:00:00:00:00:0A"
PENDANT_KEY = bytes(range(32))


@dataclass
class Platform:
    """The reference platform: its config, its public key file, its storage and a running ingest worker."""

    root: Path
    config: Path
    public_keys: Path
    identity: PlatformIdentity
    storage: SqliteStorage
    worker: IngestWorker
    broker: MosquittoBroker

    @property
    def broker_url(self) -> str:
        return f"mqtt://{self.broker.host}:{self.broker.port}"


@dataclass
class Home:
    """Simulated kit on a link: a cuff that needs bonding and a pendant with a factory key."""

    link: str
    clock: ManualClock
    cuff: BloodPressureCuff
    pendant: Pendant
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def attach(self, device: SimDevice) -> None:
        opts = device.options
        bumble = await self.stack.enter_async_context(
            sim.ble.open_peripheral_device(self.link, opts.address, opts.name)
        )
        await self.stack.enter_async_context(device.attach(bumble))


def pendant_pairing(key: bytes = PENDANT_KEY) -> tuple[str, ...]:
    """``carehub provision pair ADDRESS``'s arguments for a pendant of resident r1 holding ``key`` (by default the
    home pendant's factory key)."""
    return ("--resident", "r1", "--kind", "pendant", "--pendant-key", key.hex())


def make_home(link: str, *, cuff_max_bonds: int | None = None) -> Home:
    clock = ManualClock(datetime(2024, 3, 4, 7, 0, tzinfo=UTC))
    cuff = BloodPressureCuff(
        DeviceOptions(id="bp-1", address=CUFF, name="BP-Cuff", bonding_required=True, max_bonds=cuff_max_bonds),
        clock,
    )
    pendant = Pendant(
        DeviceOptions(id="pendant-1", address=PENDANT, name="Pendant", bonding_required=True, key=PENDANT_KEY), clock
    )
    return Home(link, clock, cuff, pendant)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` served on a free loopback port until exit; the value is its base URL (``http://127.0.0.1:PORT``)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def pairing_page(paths: HubPaths, link: str, device: SimDevice) -> AsyncIterator[str]:
    """The installer page for the hub at ``paths``, its radio the central on ``link`` (bonds in the hub's store),
    which answers the meters' passkey requests through the page's desk; ``device`` is on the air (not woken).
    The value is the page's base URL."""
    desk = PasskeyDesk()
    options = device.options
    async with (
        sim.ble.open_central(link, keystore=str(paths.bonds)) as central,
        sim.ble.open_peripheral_device(link, options.address, options.name) as radio,
        device.attach(radio),
    ):
        sim.ble.world.answer_pairing_with(central.device, desk)
        app = make_app(WebSettings(paths, link=link, scan_seconds=2.0), radio=sim.ble.backend_for(link), desk=desk)
        async with serving(app) as url:
            yield url


def write_test_report(paths: HubPaths, *devices: dict[str, object]) -> None:
    """The hub's last installation test report (``reports/latest.json``), finished 2026-12-03 09:00 UTC, with one
    entry per device (``address``, ``ok``, and ``battery`` or ``detail``)."""
    paths.reports.mkdir(parents=True, exist_ok=True)
    report = {"finished_at": "2026-12-03T09:00:00+00:00", "devices": list(devices)}
    (paths.reports / "latest.json").write_text(json.dumps(report), encoding="utf-8")


async def device_check(config: Path, address: str) -> tuple[Status, str, str]:
    """``carehub doctor``'s check of the device at ``address``: its status, detail and fix."""
    checks = {c.name: c for c in await run_doctor(config, broker_limit_s=0.2)}
    check = checks[f"device {address}"]
    return check.status, check.detail, check.fix


async def installation_test_prompting(
    config: GatewayConfig, scanner: type[BaseBleakScanner] | None, client: type[BaseBleakClient] | None
) -> asyncio.Task[InstallationReport]:
    """Start the installation test of ``config`` (installer Li Wei, each device within BOUND seconds) on the radio's
    backends (``gateway.provision.radio.open_radio``'s) and return its task once it prompts the installer to
    measure or press (its ``prompt`` progress event, awaited within BOUND seconds)."""
    prompted = asyncio.Event()

    def progress(kind: str, _data: Mapping[str, object]) -> None:
        if kind == "prompt":
            prompted.set()

    test = asyncio.create_task(
        run_installation_test(
            config,
            installer="Li Wei",
            per_device_timeout=BOUND,
            scanner_backend=scanner,
            client_backend=client,
            progress=progress,
        )
    )
    async with asyncio.timeout(BOUND):
        await prompted.wait()
    return test


def write_bundle(platform: Platform, path: Path, hub_id: str) -> Path:
    """A signed enrolment bundle at ``path`` for ``hub_id`` on the platform's broker, the hub id as its user name."""
    password = "not-checked-by-an-anonymous-broker"  # noqa: S105 - a test credential
    path.write_bytes(
        create_bundle(
            platform.identity, hub_id=hub_id, broker_url=platform.broker_url, username=hub_id, password=password
        )
    )
    return path


async def invoke(cli: typer.Typer, *args: str) -> Result:
    """Invoke ``carehub ARGS`` (the commands of ``cli``) on a worker thread, its own event loop, within 3 x BOUND."""
    runner = CliRunner()
    async with asyncio.timeout(BOUND * 3):
        return await asyncio.to_thread(runner.invoke, cli, list(args))


def ok(result: Result) -> str:
    """The output of a command that must have succeeded."""
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output
