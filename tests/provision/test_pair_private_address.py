"""Pairing again a meter typed at a resolvable private address, on the simulated radio (issue 14 item 3).

The hub keeps a bond under the meter's identity address (what the meter distributed with its IRK when it bonded).
A meter that lost its bond and is typed at the private address it advertises now must still have that old bond
forgotten first: the hub's key store resolves the private address with the bond's IRK. Otherwise the hub encrypts
with the stale keys, the meter (which has none) refuses, and pairing fails instead of pairing afresh. Once bonded, the
meter is reported by its identity address (what provisioning stores and the daemon matches), as bleak's BlueZ backend
reports it after bluetoothd's Address change.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bleak import BleakClient
from bleak.exc import BleakDeviceNotFoundError
from bumble import hci

import sim.ble
from gateway.config import DeviceKind
from gateway.provision.radio import open_radio, pair_device
from sim.clock import ManualClock
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.options import DeviceOptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CUFF = "C0:00:00:00:44:01"
OTHER = "C0:00:00:00:44:02"
BOUND = 15.0
_links = itertools.count()


def _cuff() -> BloodPressureCuff:
    clock = ManualClock(datetime(2024, 3, 4, 7, 0, tzinfo=UTC))
    return BloodPressureCuff(DeviceOptions(id="cuff", address=CUFF, name="Cuff", bonding_required=True), clock)


async def test_a_meter_typed_at_its_private_address_loses_the_old_bond_and_pairs_afresh(tmp_path: Path) -> None:
    link = f"local:private-{next(_links)}"
    async with open_radio(link, keystore=tmp_path / "bonds.json") as (scanner, client):
        cuff = _cuff()
        async with sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio, cuff.attach(radio):
            cuff.wake()
            first = await pair_device(CUFF, scanner_backend=scanner, client_backend=client, give_up_after=BOUND)
        assert first.address == CUFF
        # Batteries out: the cuff comes back without its bond (its key store was in memory), advertising under a
        # resolvable private address made from its IRK; the hub still holds the old bond under the identity.
        cuff = _cuff()
        async with sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio:
            rpa = hci.Address.generate_private_address(radio.irk)
            # Before it advertises: its advertising set takes the device's address, the link routes by the
            # controller's.
            await radio.send_command(hci.HCI_LE_Set_Random_Address_Command(random_address=rpa))
            radio.random_address = rpa
            private = str(rpa.to_string(False)).upper()
            assert private != CUFF
            async with cuff.attach(radio):
                cuff.wake()
                again = await pair_device(
                    private, expect=DeviceKind.BLOOD_PRESSURE, scanner_backend=scanner, client_backend=client,
                    give_up_after=BOUND,
                )  # fmt: skip
                assert cuff.bonded
        assert again.address == CUFF  # known by its identity once bonded, as under BlueZ


async def test_a_private_address_no_bond_resolves_to_is_not_bonded(tmp_path: Path) -> None:
    """Forgetting a bond resolves only with the hub's own bonds' IRKs: another meter's private address forgets
    nothing."""
    link = f"local:private-{next(_links)}"
    clock = ManualClock(datetime(2024, 3, 4, 7, 0, tzinfo=UTC))
    cuff = BloodPressureCuff(DeviceOptions(id="cuff", address=CUFF, name="Cuff", bonding_required=True), clock)
    async with (
        sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio,
        cuff.attach(radio),
        open_radio(link, keystore=tmp_path / "bonds.json") as (scanner, client),
    ):
        cuff.wake()
        await pair_device(CUFF, scanner_backend=scanner, client_backend=client, give_up_after=BOUND)
        stranger = hci.Address.generate_private_address(bytes.fromhex(OTHER.replace(":", "")) * 2 + b"\0" * 4)
        with pytest.raises(BleakDeviceNotFoundError):
            await BleakClient(stranger.to_string(False), backend=client).unpair()
        hub = await sim.ble.get_central(sim.ble.parse_link(link))
        assert hub.device.keystore is not None
        assert await hub.device.keystore.get(CUFF) is not None  # the cuff's bond is untouched
