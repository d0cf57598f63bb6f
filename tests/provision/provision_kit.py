"""Shared pieces of the provisioning tests: the platform, the simulated home, the installer page served, constants."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

import sim.ble
from community.ingest import IngestWorker
from community.storage import SqliteStorage
from gateway.ble_passkey import PasskeyDesk
from gateway.provision.files import HubPaths
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
