"""Pairing again, under BlueZ, a meter first bonded at a resolvable private address (issue 14 item 3).

bluetoothd keeps a device object under the path of the address it was first seen at (``dev_<private address>``) and
reports the identity address in its ``Address`` property once bonded: provisioning stores that identity. Pairing the
meter again by that identity (what ``carehub doctor`` tells the installer when the meter lost its bond) asked bleak to
remove ``dev_<identity>``, which does not exist: the stale bond stayed, bleak saw the device paired and did not pair
again, and "paired" was reported although the meter would refuse the stale keys. The hub now finds the bonded object
by its ``Address`` and removes it. Without the bond bluetoothd cannot resolve the meter's private addresses any more,
so the identity is not heard again: the installer is told to pair the address the meter shows now, which then pairs
afresh.
"""

import pytest
from mock_bluetoothd import Bluetoothd, device_path
from test_bluez_pairing import BOUND, CUFF, RPA, cuff_on

from gateway.config import DeviceKind
from gateway.provision.errors import DeviceNotFoundError
from gateway.provision.radio import pair_device

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ABSENT = 2.0  # seconds: how long pairing looks for the identity nobody advertises any more (a bound, not a sleep)


async def test_pairing_again_by_identity_removes_the_bond_kept_under_the_private_address(
    bluetoothd: Bluetoothd, link: str
) -> None:
    bluetoothd.use_private_address(CUFF, RPA)
    async with cuff_on(link, passkey=False):
        first = await pair_device(RPA, expect=DeviceKind.BLOOD_PRESSURE, give_up_after=BOUND)
        assert first.address == CUFF
        bonded = bluetoothd.device_of(CUFF)
        assert bonded is not None
        assert bonded.path == device_path(RPA)  # the object keeps the path it was first seen under

        with pytest.raises(DeviceNotFoundError) as gone:
            await pair_device(CUFF, expect=DeviceKind.BLOOD_PRESSURE, give_up_after=ABSENT)
        assert f"RemoveDevice {CUFF}" in bluetoothd.calls  # the stale bond is gone
        seen = bluetoothd.device_of(CUFF)
        assert seen is None or not seen.paired  # heard again, if at all, as a stranger at its private address
        assert "private address" in gone.value.fix

        again = await pair_device(RPA, expect=DeviceKind.BLOOD_PRESSURE, give_up_after=BOUND)
    assert again.address == CUFF
    assert [c for c in bluetoothd.calls if c.startswith("Pair")] == [f"Pair {RPA}", f"Pair {RPA}"]
