"""The hub daemon pairs on the simulated radio as it does on BlueZ (issue 14 item 3): one passkey desk, the BLE
manager's, answers the meters' pairing requests on both backends (`gateway.runner.open_daemon`).

The BlueZ side of each test is in ``tests/bluez/test_ble_agent.py`` (the daemon's agent refuses a PIN it cannot type;
a cuff paired once by the installer is read over the bond). Here the same stories run through the daemon's own
wiring on a ``[ble] link``: a passkey cuff (`sim.devices.quirks.PasskeyCuff`, the zoo's ``passkey-cuff``) asks the
hub for the PIN it shows (passkey entry, as BlueZ's KeyboardDisplay agent makes it), the daemon has none to give, the
pairing fails as AUTH and is counted for ``carehub doctor``; a scale needing encryption is paired with Just Works
because it is provisioned; and a cuff the installer paired with its PIN is read over the bond without a second PIN.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

import sim.ble
from gateway.app import Gateway
from gateway.ble_errors import auth_cursor_key
from gateway.ble_passkey import FixedPasskey, PasskeyDesk
from gateway.config import GatewayConfig, parse_config
from gateway.events import DeviceReport, ErrorClass, LinkFailed, Reading
from gateway.provision.radio import open_radio, pair_device
from gateway.runner import open_daemon
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
from sim.ble.config import reset_configuration
from sim.clock import ManualClock
from sim.devices.options import DeviceOptions
from sim.devices.quirks import QUIRKS, PasskeyCuff
from sim.devices.vitals import Scale

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

START = datetime(2024, 3, 4, 7, 0, tzinfo=UTC)
BOUND = 20.0  # seconds: an upper bound on awaiting an event, never a sleep
CUFF = "C0:00:00:00:42:01"
SCALE = "C0:00:00:00:42:02"
PIN = 407_215
_links = itertools.count()


class Probe:
    """What the daemon's BLE manager handed its sink (the hub), recorded once durable; `changed` after each call."""

    def __init__(self, gw: Gateway) -> None:
        self.readings: list[Reading] = []
        self.reports: list[DeviceReport] = []
        self.changed = asyncio.Event()
        hub = gw.hub
        store, report = hub.store_readings, hub.report

        async def store_readings(readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
            await store(readings, cursor)
            self.readings.extend(readings)
            self.changed.set()

        async def on_report(event: DeviceReport) -> None:
            await report(event)
            self.reports.append(event)
            self.changed.set()

        # The manager calls its sink through these attributes; the instance attributes shadow the methods.
        hub.store_readings = store_readings  # type: ignore[method-assign]
        hub.report = on_report  # type: ignore[method-assign]

    async def until(self, predicate: Callable[[], object]) -> None:
        async with asyncio.timeout(BOUND):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def _config(tmp_path: Path, link: str, devices: Sequence[tuple[str, str]]) -> GatewayConfig:
    save_hub_identity(tmp_path / "hub.key", HubIdentity.generate("passkey-hub"))
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    lines = ["[hub]", 'id = "passkey-hub"', 'key_file = "hub.key"', "[platform]", 'public_key_file = "platform.pub"']
    lines += ["[broker]", 'url = "mqtt://127.0.0.1:9"', "[storage]", 'path = "outbox.sqlite"']
    lines += ["[ble]", f'link = "{link}"', "[[residents]]", 'id = "r1"', 'name = "Resident"']
    for address, kind in devices:
        lines += ["[[devices]]", f'address = "{address}"', f'kind = "{kind}"', 'resident = "r1"']
    return parse_config("\n".join(lines) + "\n", tmp_path / "hub.toml")


@contextlib.asynccontextmanager
async def daemon(config: GatewayConfig) -> AsyncIterator[tuple[Gateway, Probe]]:
    try:
        async with open_daemon(config) as gw:
            yield gw, Probe(gw)  # before the manager's scan has run: nothing is missed
    finally:
        reset_configuration()  # open_daemon configured the process's simulated radio


def test_the_zoo_passkey_cuff_is_the_one_tested() -> None:
    assert QUIRKS["passkey-cuff"].build is PasskeyCuff


async def test_the_daemon_refuses_a_pin_it_cannot_type_and_pairs_a_provisioned_scale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As on BlueZ: the cuff shows its PIN and asks the hub (passkey entry, not Just Works), the daemon's desk has no
    pairing in progress and refuses, the session fails as AUTH and the auth cursor counts it for the doctor; the
    scale whose CCCD needs encryption is paired on demand with Just Works (it is provisioned) and read."""
    link = f"local:daemon-passkey-{next(_links)}"
    clock = ManualClock(START)
    cuff = PasskeyCuff(DeviceOptions(id="cuff", address=CUFF, name="Cuff"), clock, passkey=PIN)
    scale = Scale(DeviceOptions(id="scale", address=SCALE, name="Scale", bonding_required=True), clock)
    config = _config(tmp_path, link, [(CUFF, "blood_pressure"), (SCALE, "scale")])
    caplog.set_level(logging.WARNING, logger="gateway.ble_passkey")
    async with (
        sim.ble.open_peripheral_device(link, CUFF, "Cuff") as cuff_radio,
        cuff.attach(cuff_radio),
        sim.ble.open_peripheral_device(link, SCALE, "Scale") as scale_radio,
        scale.attach(scale_radio),
        daemon(config) as (gw, probe),
    ):
        await cuff.measure(131, 84)
        produced = await scale.measure(81.0)

        def auth_failed() -> bool:
            return any(isinstance(r, LinkFailed) and r.device.address == CUFF for r in probe.reports)

        await probe.until(lambda: probe.readings and auth_failed())
        failures = [r for r in probe.reports if isinstance(r, LinkFailed) and r.device.address == CUFF]
        assert {f.error_class for f in failures} == {ErrorClass.AUTH}
        failed_in_a_row = await gw.outbox.get_cursor(auth_cursor_key(CUFF))
        assert isinstance(failed_in_a_row, int)
        assert failed_in_a_row >= 1
        assert gw.ble is not None
        assert not gw.ble.passkeys.busy
    assert [r.data for r in probe.readings] == [produced.raw]  # the scale's, over a Just Works bond
    assert scale.bonded
    assert cuff.shown  # it showed its PIN and asked for it (passkey entry); nobody could type it
    assert set(cuff.shown) == {PIN}
    refusals = [r.getMessage() for r in caplog.records if "no pairing is in progress" in r.getMessage()]
    assert refusals
    assert refusals[0].startswith(CUFF)


async def test_a_passkey_cuff_paired_by_the_installer_is_read_by_the_daemon_without_a_second_pin(
    tmp_path: Path,
) -> None:
    """`carehub provision pair --passkey` on the simulated radio bonds the cuff once (the hub's bonds.json); the daemon
    then reads it over that bond and never asks for the PIN again."""
    link = f"local:daemon-passkey-{next(_links)}"
    clock = ManualClock(START)
    cuff = PasskeyCuff(DeviceOptions(id="cuff", address=CUFF, name="Cuff"), clock, passkey=PIN)
    config = _config(tmp_path, link, [(CUFF, "blood_pressure")])
    desk = PasskeyDesk()
    async with sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio, cuff.attach(radio):
        cuff.wake()
        async with open_radio(link, keystore=tmp_path / "bonds.json", desk=desk) as (scanner, client):
            await pair_device(
                CUFF, scanner_backend=scanner, client_backend=client, give_up_after=BOUND, desk=desk,
                passkeys=FixedPasskey(PIN),
            )  # fmt: skip
        assert cuff.shown == [PIN]
        async with daemon(config) as (gw, probe):
            produced = await cuff.measure(127, 81)
            await probe.until(lambda: probe.readings)
            assert await gw.outbox.get_cursor(auth_cursor_key(CUFF), 0) == 0
    assert [r.data for r in probe.readings] == [produced.raw]
    assert cuff.shown == [PIN]  # the bond was used: the daemon never asked for the PIN
    assert not [r for r in probe.reports if isinstance(r, LinkFailed)]
