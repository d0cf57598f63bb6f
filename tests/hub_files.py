"""A freshly provisioned hub and the meters that ask the installer for something, shared by the tests of
``carehub provision pair`` (tests/cli, through the real entry point) and of the installer page (tests/provision).

The hub: ``carehub provision init`` with a broker nobody listens on (pairing needs none) and resident ``r1``. The
meters: a cuff that shows a 6-digit PIN (issue 14 item 3) and a two-user UDS scale guarded by consent codes (issue 14
item 6), on the simulated radio, their clocks at a fixed time.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import sim.ble
from gateway.provision.files import HubPaths
from gateway.provision.steps import init_hub, set_resident
from protocols.keys import PlatformIdentity
from sim.clock import ManualClock
from sim.devices.base import SimDevice
from sim.devices.options import DeviceOptions
from sim.devices.quirks import PasskeyCuff
from sim.devices.uds_scale import UdsScale

#: The scale's users and their consent codes.
SCALE_USERS = {1: 1234, 2: 4321}


def new_hub(
    tmp_path: Path, link: str | None = None, *, hub_id: str = "hub-0001", broker: str = "mqtt://127.0.0.1:9"
) -> HubPaths:
    """``tmp_path/hub/hub.toml`` initialised with a fresh platform key, its radio ``link`` (None: the default) and
    ``broker`` (by default a port nobody listens on), and resident ``r1``."""
    paths = HubPaths.for_config(tmp_path / "hub" / "hub.toml")
    init_hub(
        paths,
        hub_id=hub_id,
        platform=PlatformIdentity.generate().public,
        broker_url=broker,
        username=None,
        password=None,
        link=link,
    )
    set_resident(paths, "r1", name="Wang Fang")
    return paths


def bonded_peers(paths: HubPaths) -> list[str]:
    """The peers the hub's bond store holds (none when it has no file yet)."""
    if not paths.bonds.exists():
        return []
    data = json.loads(paths.bonds.read_text(encoding="utf-8"))
    return [peer for namespace in data.values() for peer in namespace]


def _clock() -> ManualClock:
    return ManualClock(datetime(2024, 3, 4, 7, 0, tzinfo=UTC))


def passkey_cuff(address: str, pin: int) -> PasskeyCuff:
    """A blood-pressure cuff that shows ``pin`` and pairs only with it, advertising for an hour once woken."""
    options = DeviceOptions(id="cuff", address=address, name="Cuff", advertise_seconds=3600)
    return PasskeyCuff(options, _clock(), passkey=pin)


def family_scale(address: str) -> UdsScale:
    """A UDS scale with the users of :data:`SCALE_USERS`, advertising for an hour once woken."""
    options = DeviceOptions(id="scale", address=address, name="Family scale", advertise_seconds=3600)
    return UdsScale(options, _clock(), users=dict(SCALE_USERS))


@contextlib.asynccontextmanager
async def awake_on(link: str, device: SimDevice) -> AsyncIterator[None]:
    """``device`` on the air of ``link`` and woken (advertising) until exit."""
    options = device.options
    async with sim.ble.open_peripheral_device(link, options.address, options.name) as radio, device.attach(radio):
        device.wake()
        yield
