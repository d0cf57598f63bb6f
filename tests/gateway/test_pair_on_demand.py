"""Pairing as meters demand it, in the hub's BLE sessions over the simulated radio (issue 14 item 3): a scale (a kind
the hub does not bond up front) whose CCCD needs encryption is bonded when its subscription is refused and then read;
a meter that refuses to pair with the daemon (it wants the PIN it shows) fails as AUTH, waits the slow AUTH pace, and
is counted in the durable ``auth:<address>`` cursor that `carehub doctor` reads; a good session sets it back to 0."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bleak.backends.device import BLEDevice

import gateway.ble
import sim.ble
from gateway.ble_errors import RETRY, auth_cursor_key
from gateway.ble_passkey import PasskeyDesk
from gateway.clock import ManualClock as HubClock
from gateway.config import GatewayConfig, parse_config
from gateway.events import DeviceReport, ErrorClass, LinkFailed, PendantFrame, Reading
from gateway.provision.radio import open_radio, pair_device
from sim.clock import ManualClock
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.options import DeviceOptions
from sim.devices.quirks import PasskeyCuff
from sim.devices.vitals import Scale

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

START = datetime(2024, 3, 4, 7, 0, tzinfo=UTC)
BOUND = 20.0  # an upper bound on awaited events, never a sleep
SCALE = "C0:00:00:00:62:01"
CUFF = "C0:00:00:00:62:02"
_links = itertools.count()


class Sink:
    """The manager's sink, recording; `changed` is set after every call."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.cursors: dict[str, int] = {}
        self.reports: list[DeviceReport] = []
        self.changed = asyncio.Event()

    async def store_readings(self, readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
        self.readings.extend(readings)
        if cursor is not None:
            self.cursors[cursor[0]] = cursor[1]
        self.changed.set()

    async def get_cursor(self, key: str) -> int | None:
        return self.cursors.get(key)

    async def report(self, event: DeviceReport) -> None:
        self.reports.append(event)
        self.changed.set()

    async def pendant_frame(self, frame: PendantFrame) -> bytes | None:
        del frame
        return None

    async def until(self, predicate: object) -> None:
        async with asyncio.timeout(BOUND):
            while not predicate():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


def _config(tmp_path: Path, devices: Sequence[tuple[str, str]]) -> GatewayConfig:
    lines = [
        "[hub]",
        'id = "on-demand-hub"',
        'key_file = "hub.key"',
        "[platform]",
        'public_key_file = "platform.pub"',
        "[broker]",
        'url = "mqtt://127.0.0.1:1"',
        "[storage]",
        'path = "outbox.sqlite"',
        "[[residents]]",
        'id = "r1"',
        'name = "Resident"',
    ]
    for address, kind in devices:
        lines += ["[[devices]]", f'address = "{address}"', f'kind = "{kind}"', 'resident = "r1"']
    return parse_config("\n".join(lines) + "\n", tmp_path / "hub.toml")


async def test_a_scale_whose_cccd_needs_encryption_is_paired_on_demand(tmp_path: Path) -> None:
    link = f"local:on-demand-{next(_links)}"
    scale = Scale(DeviceOptions(id="scale", address=SCALE, name="Scale", bonding_required=True), ManualClock(START))
    scanner, client = sim.ble.backend_for(link)
    sink = Sink()
    try:
        async with (
            sim.ble.open_peripheral_device(link, SCALE, "Scale") as radio,
            scale.attach(radio),
            gateway.ble.BleManager(
                _config(tmp_path, [(SCALE, "scale")]), sink, scanner_backend=scanner, client_backend=client
            ),
        ):
            produced = await scale.measure(72.5)
            await sink.until(lambda: sink.readings)
    finally:
        await sim.ble.close_centrals()
    assert [r.data for r in sink.readings] == [produced.raw]
    assert scale.bonded  # the hub bonded when the CCCD write was refused
    assert not [r for r in sink.reports if isinstance(r, LinkFailed)]


async def test_a_meter_refusing_the_daemon_is_an_auth_failure_counted_for_the_doctor(tmp_path: Path) -> None:
    """The daemon has nobody to type the cuff's PIN: its pairing fails (AUTH), the retry waits the AUTH pace, and the
    auth cursor counts the failures in a row; a good session later sets it back to 0."""
    link = f"local:on-demand-{next(_links)}"
    cuff = PasskeyCuff(DeviceOptions(id="cuff", address=CUFF, name="Cuff"), ManualClock(START), passkey=123_456)
    scanner, client = sim.ble.backend_for(link)
    sink = Sink()
    clock = HubClock(monotonic=1000.0)
    config = _config(tmp_path, [(CUFF, "blood_pressure")])
    manager = gateway.ble.BleManager(config, sink, scanner_backend=scanner, client_backend=client, clock=clock)
    (cfg,) = config.devices
    key = auth_cursor_key(CUFF)
    try:
        async with sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio, cuff.attach(radio):
            await cuff.measure(131, 84)
            for attempt in (1, 2):
                await manager._session(cfg, BLEDevice(CUFF, "Cuff", None))
                assert sink.cursors[key] == attempt
                wait = manager._states[CUFF].not_before - clock.monotonic()
                policy = RETRY[ErrorClass.AUTH]
                assert wait >= attempt * policy.base * (1 - policy.jitter_fraction)  # not the transient pace
            assert cuff.shown == []  # Just Works was refused before any PIN was shown
            failures = [r for r in sink.reports if isinstance(r, LinkFailed)]
            assert [f.error_class for f in failures] == [ErrorClass.AUTH, ErrorClass.AUTH]
            assert "pair" in failures[0].detail
            await manager._note_auth(cfg, failed=False)  # what a good session does next
    finally:
        await sim.ble.close_centrals()
    assert sink.cursors[key] == 0


async def test_a_meter_that_lost_its_bond_is_an_auth_failure_until_the_installer_pairs_it_again(
    tmp_path: Path,
) -> None:
    """The cuff forgot the hub (batteries out, paired with a phone): the hub's stored keys no longer encrypt the link,
    the session fails as AUTH (counted for `carehub doctor`, which names the re-pair command); `provision pair`
    forgets the hub's old bond and pairs afresh, and the next session reads the cuff."""
    link = f"local:on-demand-{next(_links)}"
    clock = ManualClock(START)
    cuff = BloodPressureCuff(DeviceOptions(id="cuff", address=CUFF, name="Cuff", bonding_required=True), clock)
    sink = Sink()
    hub_clock = HubClock(monotonic=1000.0)
    config = _config(tmp_path, [(CUFF, "blood_pressure")])
    (cfg,) = config.devices
    key = auth_cursor_key(CUFF)
    desk = PasskeyDesk()
    async with (
        sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio,
        cuff.attach(radio),
        open_radio(link, keystore=tmp_path / "bonds.json", desk=desk) as (scanner, client),
    ):
        manager = gateway.ble.BleManager(
            config, sink, scanner_backend=scanner, client_backend=client, clock=hub_clock, idle_disconnect=0.2
        )
        cuff.wake()
        await pair_device(CUFF, scanner_backend=scanner, client_backend=client, give_up_after=BOUND, desk=desk)
        assert radio.keystore is not None
        await radio.keystore.delete_all()  # the cuff lost its bond; the hub still has its keys
        cuff.bonded.clear()
        await cuff.measure(131, 84)
        await manager._session(cfg, BLEDevice(CUFF, "Cuff", None))
        (failure,) = [r for r in sink.reports if isinstance(r, LinkFailed)]
        assert failure.error_class is ErrorClass.AUTH
        assert sink.cursors[key] == 1
        assert not sink.readings

        await pair_device(CUFF, scanner_backend=scanner, client_backend=client, give_up_after=BOUND, desk=desk)
        await manager._session(cfg, BLEDevice(CUFF, "Cuff", None))
    assert len(sink.readings) == 1
    assert sink.cursors[key] == 0
