"""The multi-user UDS scale (`sim.devices.uds_scale`) seen from the hub's side: bleak over the sim backend."""

from __future__ import annotations

import pytest
from bleak import BleakClient
from bleak.exc import BleakGATTProtocolError
from test_devices import Hub, Inbox, clock, hub, running, uuid

from protocols.gatt.uds import (
    Consent,
    DatabaseChangeIncrement,
    DeleteUserData,
    RegisterNewUser,
    UcpOpCode,
    UcpRequest,
    UcpResponse,
    UcpResult,
    UserIndex,
    decode_response,
)
from protocols.gatt.weight import WeightMeasurement
from sim.clock import ManualClock
from sim.devices.options import DeviceOptions
from sim.devices.quirks import QUIRKS
from sim.devices.uds_scale import (
    ATT_CCCD_IMPROPERLY_CONFIGURED,
    ATT_USER_DATA_ACCESS_NOT_PERMITTED,
    UdsScale,
)

__all__ = ["clock", "hub"]  # fixtures used by name

_UCP, _WEIGHT, _INDEX, _INCREMENT = uuid(0x2A9F), uuid(0x2A9D), uuid(0x2A9A), uuid(0x2A99)


def scale_options() -> DeviceOptions:
    return DeviceOptions(id="scale-1", address="C0:00:00:00:00:05", name="Family scale")


class Ucp:
    """The hub's side of the User Control Point."""

    def __init__(self, client: BleakClient) -> None:
        self.client = client
        self.inbox = Inbox()

    async def __aenter__(self) -> Ucp:
        await self.client.start_notify(_UCP, self.inbox)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.stop_notify(_UCP)

    async def ask(self, request: UcpRequest | bytes) -> UcpResponse:
        await self.client.write_gatt_char(_UCP, bytes(request), response=True)
        return decode_response(await self.inbox.next())


async def test_only_the_consented_users_weights_and_guests_are_sent(hub: Hub, clock: ManualClock) -> None:
    scale = UdsScale(scale_options(), clock)
    async with running(scale, hub):
        mine = [await scale.measure_as(1, 81.2), await scale.measure_as(1, 81.0)]
        theirs = await scale.measure_as(2, 64.5)
        guest = await scale.measure(90.0)
        await scale.wait_for(lambda: scale.advertising)
        weights = Inbox()
        async with hub.connect(scale, pair=False) as client, Ucp(client) as ucp:
            await client.start_notify(_WEIGHT, weights)
            assert await weights.next() == guest.raw  # before consent: the guest's only
            assert UserIndex.from_bytes(await client.read_gatt_char(_INDEX)).known is False
            with pytest.raises(BleakGATTProtocolError) as closed:
                await client.read_gatt_char(_INCREMENT)
            assert closed.value.code == ATT_USER_DATA_ACCESS_NOT_PERMITTED
            answer = await ucp.ask(Consent(1, 1234))
            assert answer == UcpResponse(UcpOpCode.CONSENT, UcpResult.SUCCESS)
            received = [await weights.next() for _ in mine]
            await scale.wait_for(lambda: scale.held(1) == 0)
            assert UserIndex.from_bytes(await client.read_gatt_char(_INDEX)) == UserIndex(1)
            assert DatabaseChangeIncrement.from_bytes(await client.read_gatt_char(_INCREMENT)).value == 0
        assert received == [p.raw for p in mine]
        assert [WeightMeasurement.from_bytes(raw).user_id for raw in received] == [1, 1]
        assert scale.held(2) == 1  # user 2's weight stays on the scale
        assert theirs.values == {"kg": 64.5, "user": 2}
        assert scale.consented_user is None  # consent lasted for that connection only


async def test_a_wrong_consent_code_is_not_authorized_and_sends_nothing(hub: Hub, clock: ManualClock) -> None:
    scale = UdsScale(scale_options(), clock)
    async with running(scale, hub):
        await scale.measure_as(1, 81.2)
        await scale.wait_for(lambda: scale.advertising)
        async with hub.connect(scale, pair=False) as client, Ucp(client) as ucp:
            assert (await ucp.ask(Consent(1, 4321))).result is UcpResult.USER_NOT_AUTHORIZED
            assert (await ucp.ask(Consent(3, 1234))).result is UcpResult.INVALID_PARAMETER  # nobody is user 3
            assert (await ucp.ask(DeleteUserData())).result is UcpResult.USER_NOT_AUTHORIZED
        assert scale.held(1) == 1


async def test_register_delete_and_bad_requests(hub: Hub, clock: ManualClock) -> None:
    scale = UdsScale(scale_options(), clock, users={0: 1}, max_users=2)
    async with running(scale, hub):
        await scale.measure(70.0)
        await scale.wait_for(lambda: scale.advertising)
        async with hub.connect(scale, pair=False) as client:
            with pytest.raises(BleakGATTProtocolError) as unconfigured:
                await client.write_gatt_char(_UCP, bytes(Consent(0, 1)), response=True)
            assert unconfigured.value.code == ATT_CCCD_IMPROPERLY_CONFIGURED
            async with Ucp(client) as ucp:
                assert await ucp.ask(RegisterNewUser(5555)) == UcpResponse(
                    UcpOpCode.REGISTER_NEW_USER, UcpResult.SUCCESS, 1
                )
                assert (await ucp.ask(RegisterNewUser(6))).result is UcpResult.OPERATION_FAILED  # full
                assert await ucp.ask(b"\x04") == UcpResponse(4, UcpResult.OP_CODE_NOT_SUPPORTED)
                assert await ucp.ask(b"\x02\x01\x10\x27") == UcpResponse(
                    UcpOpCode.CONSENT, UcpResult.INVALID_PARAMETER
                )  # code 10000
                assert (await ucp.ask(Consent(1, 5555))).result is UcpResult.SUCCESS
                assert (await ucp.ask(DeleteUserData())).result is UcpResult.SUCCESS
        assert scale.users == {0: 1}


def test_the_uds_scale_is_in_the_quirk_zoo(clock: ManualClock) -> None:
    quirk = QUIRKS["uds-scale"]
    assert isinstance(quirk.build(scale_options(), clock), UdsScale)
