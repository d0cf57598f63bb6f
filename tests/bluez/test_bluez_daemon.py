"""The whole hub daemon (`gateway.app.open_gateway`, as `carehub`'s runner starts it on a Pi: no ``backend=``, so
bleak's BlueZ backend) against the stand-in bluetoothd: it starts, scans, connects, pairs and reads a cuff, and the
reading becomes one sealed record in the outbox, opened as the platform would."""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mock_bluetoothd import Bluetoothd

import sim.ble
from gateway.app import open_gateway
from gateway.ble import Reading
from gateway.config import parse_config
from protocols.envelope import open_envelope
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
from protocols.record import MeasurementBody
from sim.broker import MosquittoBroker
from sim.clock import ManualClock
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.options import DeviceOptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

START = datetime(2024, 3, 4, 7, 0, tzinfo=UTC)
BOUND = 15.0
HUB_ID = "bluez-daemon-hub"
CUFF = "C0:00:00:00:50:01"


def _config_text(broker_url: str) -> str:
    return "\n".join(
        [
            "[hub]",
            f'id = "{HUB_ID}"',
            'key_file = "hub.key"',
            "[platform]",
            'public_key_file = "platform.pub"',
            "[broker]",
            f'url = "{broker_url}"',
            "[storage]",
            'path = "outbox.sqlite"',
            "[ble]",
            "clock_tolerance_s = 120",
            "[[residents]]",
            'id = "r1"',
            'name = "Resident"',
            "[[devices]]",
            f'address = "{CUFF}"',
            'kind = "blood_pressure"',
            'resident = "r1"',
            'name = "Cuff"',
        ]
    )


async def test_the_daemon_reads_a_paired_cuff_through_bluez(
    bluetoothd: Bluetoothd, link: str, tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    platform = PlatformIdentity.generate()
    hub = HubIdentity.generate(HUB_ID)
    save_hub_identity(tmp_path / "hub.key", hub)
    save_platform_public_keys(tmp_path / "platform.pub", platform.public)
    config = parse_config(_config_text(mosquitto.url), tmp_path / "hub.toml")
    assert config.ble_link is None  # the runner then gives bleak no backend: BlueZ over D-Bus
    clock = ManualClock(START)
    cuff = BloodPressureCuff(DeviceOptions(id="cuff", address=CUFF, name="Cuff", bonding_required=True), clock)
    stored = asyncio.Event()
    async with (
        sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio,
        cuff.attach(radio),
        open_gateway(config, clock=clock, ble=True) as gw,
    ):
        store = gw.hub.store_readings

        async def store_readings(readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
            await store(readings, cursor)
            if readings:
                stored.set()

        gw.hub.store_readings = store_readings  # type: ignore[method-assign]
        produced = await cuff.measure(150, 95, pulse=80)
        async with asyncio.timeout(BOUND):
            await stored.wait()
        items = await gw.outbox.peek_batch(10_000, 1 << 30)
        records = [
            r
            for item in items
            for r in open_envelope(item.envelope, platform.box_key, {HUB_ID: hub.verify_key}).decoded
            if r.device_id == CUFF and isinstance(r.body, MeasurementBody)
        ]
    assert [r.body.raw for r in records if isinstance(r.body, MeasurementBody)] == [produced.raw]
    device = bluetoothd.device_of(CUFF)
    assert device is not None
    assert device.paired
