"""Passkey pairing over the simulated radio (issue 14 item 3): a cuff that shows a 6-digit PIN and bonds only by
passkey entry (`sim.devices.quirks.PasskeyCuff`), paired through the one passkey seam (`gateway.ble_passkey`) that
the BlueZ agent answers from too; Just Works meters pair as before through the same seam."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakGATTProtocolError

import sim.ble
from gateway.ble_errors import classify_error
from gateway.ble_passkey import FixedPasskey, NoPasskey, PasskeyDesk, PromptedPasskey
from gateway.config import DeviceKind
from gateway.events import ErrorClass
from gateway.provision.radio import PasskeyNeededError, PasskeyRejectedError, open_radio, pair_device
from sim.ble.client import PairingFailedError
from sim.clock import ManualClock
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.options import DeviceOptions
from sim.devices.quirks import QUIRKS, PasskeyCuff

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BOUND = 20.0
CUFF = "C0:00:00:00:61:01"
PIN = 284_913
_links = itertools.count()


@contextlib.asynccontextmanager
async def meter(link: str, *, passkey: bool) -> AsyncIterator[BloodPressureCuff]:
    options = DeviceOptions(id="cuff", address=CUFF, name="Cuff", bonding_required=True)
    clock = ManualClock(datetime(2024, 3, 4, 7, 0, tzinfo=UTC))
    cuff = PasskeyCuff(options, clock, passkey=PIN) if passkey else BloodPressureCuff(options, clock)
    async with sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio, cuff.attach(radio):
        await cuff.measure(128, 82)  # it advertises after a measurement
        yield cuff


def _bonds(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {peer: keys for namespace in data.values() for peer, keys in namespace.items()}


@pytest.fixture
def link() -> str:
    return f"local:passkey-{next(_links)}"


async def test_the_pin_the_meter_shows_bonds_it(link: str, tmp_path: Path) -> None:
    desk = PasskeyDesk()
    async with (
        meter(link, passkey=True) as cuff,
        open_radio(link, keystore=tmp_path / "bonds.json", desk=desk) as (
            scanner,
            client,
        ),
    ):
        result = await pair_device(
            CUFF, expect=DeviceKind.BLOOD_PRESSURE, scanner_backend=scanner, client_backend=client,
            give_up_after=BOUND, desk=desk, passkeys=FixedPasskey(PIN),
        )  # fmt: skip
    assert result.address == CUFF
    assert isinstance(cuff, PasskeyCuff)
    assert cuff.shown == [PIN]
    assert len(_bonds(tmp_path / "bonds.json")) == 1


@pytest.mark.parametrize(
    ("source", "error", "words"),
    [
        (FixedPasskey(PIN + 1), PasskeyRejectedError, f"refused the PIN {PIN + 1:06d}"),
        (NoPasskey(), PasskeyNeededError, "shows a 6-digit PIN and asked for it"),
        (PromptedPasskey(lambda _address: _none()), PasskeyNeededError, "asked for it, but none was given"),
    ],
)
async def test_a_wrong_or_missing_pin_is_a_typed_error_and_no_bond(
    link: str, tmp_path: Path, source: object, error: type[Exception], words: str
) -> None:
    desk = PasskeyDesk()
    async with meter(link, passkey=True), open_radio(link, keystore=tmp_path / "bonds.json", desk=desk) as (s, c):
        with pytest.raises(error) as failed:
            await pair_device(
                CUFF, scanner_backend=s, client_backend=c, give_up_after=BOUND, desk=desk,
                passkeys=source,  # type: ignore[arg-type]
            )  # fmt: skip
    assert words in str(failed.value.what)  # type: ignore[attr-defined]
    assert "nothing was saved" in failed.value.fix  # type: ignore[attr-defined]
    assert _bonds(tmp_path / "bonds.json") == {}


async def _none() -> int | None:
    return None


async def test_just_works_meters_pair_through_the_same_seam(link: str, tmp_path: Path) -> None:
    desk = PasskeyDesk()
    async with meter(link, passkey=False), open_radio(link, keystore=tmp_path / "bonds.json", desk=desk) as (s, c):
        with desk.pairing(CUFF, NoPasskey()) as log:
            pass
        result = await pair_device(CUFF, scanner_backend=s, client_backend=c, give_up_after=BOUND, desk=desk)
    assert result.kind is DeviceKind.BLOOD_PRESSURE
    assert not log.was_asked
    assert len(_bonds(tmp_path / "bonds.json")) == 1


async def test_bleak_pair_over_the_sim_backend_needs_the_right_pin(link: str) -> None:
    """bleak's own pair() on the sim backend: without the PIN the meter refuses (a typed SMP failure, classified
    AUTH) and its encrypted attributes stay closed; with it the link is encrypted and they open."""
    desk = PasskeyDesk()
    scanner, client_backend = sim.ble.backend_for(link)
    async with meter(link, passkey=True), sim.ble.open_central(link) as central:
        sim.ble.world.answer_pairing_with(central.device, desk)
        device = await BleakScanner.find_device_by_address(CUFF, timeout=BOUND, backend=scanner)
        assert device is not None
        async with BleakClient(device, timeout=BOUND, backend=client_backend) as bleak_client:
            with pytest.raises(BleakGATTProtocolError):
                await bleak_client.read_gatt_char("00002a49-0000-1000-8000-00805f9b34fb")  # BP Feature: encrypted
            with desk.pairing(CUFF, FixedPasskey(PIN - 1)) as log, pytest.raises(PairingFailedError) as wrong:
                await bleak_client.pair()
            assert log.asked == [CUFF]
            assert wrong.value.reason == "CONFIRM_VALUE_FAILED"
            assert classify_error(wrong.value) is ErrorClass.AUTH
        async with BleakClient(device, timeout=BOUND, backend=client_backend) as bleak_client:
            with pytest.raises(PairingFailedError) as refused:
                await bleak_client.pair()  # no pairing in progress at the desk: nobody to type the PIN
            assert refused.value.reason == "PASSKEY_ENTRY_FAILED"
        async with BleakClient(device, timeout=BOUND, backend=client_backend) as bleak_client:
            with desk.pairing(CUFF, FixedPasskey(PIN)):
                await bleak_client.pair()
            feature = await bleak_client.read_gatt_char("00002a49-0000-1000-8000-00805f9b34fb")
    assert len(feature) == 2


def test_the_passkey_cuff_is_in_the_quirk_zoo() -> None:
    assert QUIRKS["passkey-cuff"].build is PasskeyCuff
