"""Pairing through BlueZ's agent API: bleak's BlueZ ``pair()`` against the stand-in bluetoothd, with a pairing agent
(``org.bluez.Agent1``) registered the way a hub's agent registers (``AgentManager1.RegisterAgent`` then
``RequestDefaultAgent``), and a cuff that shows a 6-digit passkey (as the Accu-Chek Guide and many cuffs do).

These check the stand-in's agent plumbing and bleak's side of it: Just Works needs no agent, a passkey is asked of
the agent and a right one bonds, a wrong one or an agent that refuses fails with BlueZ's error names, which the hub
classifies as AUTH (slow retry, reported to the installer).
"""

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakDBusError
from bumble.device import Device
from bumble.pairing import PairingConfig, PairingDelegate
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusUInt16, DBusUInt32
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method
from mock_bluetoothd import Bluetoothd

import sim.ble
from gateway.ble import classify_error
from gateway.config import DeviceKind
from gateway.events import ErrorClass
from gateway.provision.radio import pair_device
from sim.clock import ManualClock
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.options import DeviceOptions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

START = datetime(2024, 3, 4, 7, 0, tzinfo=UTC)
BOUND = 15.0
CUFF = "C0:00:00:00:40:01"
RPA = "4D:00:00:00:40:01"  # a resolvable private address (top bits 01)
PASSKEY = 284_913
AGENT_PATH = "/carehub/test/agent"


class TestAgent(ServiceInterface):
    """An ``org.bluez.Agent1`` that types `passkey` when asked (None: refuses, as an installer pressing Cancel)."""

    __test__ = False  # not a pytest class

    def __init__(self, passkey: int | None) -> None:
        super().__init__("org.bluez.Agent1")
        self.passkey = passkey
        self.asked: list[str] = []

    @dbus_method()
    def Release(self) -> None:  # noqa: N802  (D-Bus member names)
        self.asked.append("Release")

    @dbus_method()
    def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:  # noqa: N802
        self.asked.append(f"RequestPasskey {device}")
        if self.passkey is None:
            raise DBusError("org.bluez.Error.Canceled", "Canceled by the installer")
        return self.passkey

    @dbus_method()
    def DisplayPasskey(self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16) -> None:  # noqa: N802
        self.asked.append(f"DisplayPasskey {device} {passkey:06d} {entered}")

    @dbus_method()
    def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> None:  # noqa: N802
        self.asked.append(f"RequestConfirmation {device} {passkey:06d}")

    @dbus_method()
    def RequestAuthorization(self, device: DBusObjectPath) -> None:  # noqa: N802
        self.asked.append(f"RequestAuthorization {device}")

    @dbus_method()
    def Cancel(self) -> None:  # noqa: N802
        self.asked.append("Cancel")


@contextlib.asynccontextmanager
async def registered(bus_address: str, agent: TestAgent, capability: str) -> AsyncIterator[TestAgent]:
    """`agent` exported on its own connection and made bluetoothd's default agent, as a hub's agent would be."""
    bus = await MessageBus(bus_address=bus_address).connect()
    try:
        bus.export(AGENT_PATH, agent)
        for member, signature, body in (
            ("RegisterAgent", "os", [AGENT_PATH, capability]),
            ("RequestDefaultAgent", "o", [AGENT_PATH]),
        ):
            reply = await bus.call(
                Message(
                    destination="org.bluez",
                    path="/org/bluez",
                    interface="org.bluez.AgentManager1",
                    member=member,
                    signature=signature,
                    body=body,
                )
            )
            assert reply is not None
            assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        yield agent
    finally:
        bus.disconnect()


class _ShowsPasskey(PairingDelegate):
    """A meter with a display and no keyboard: it shows the passkey, the hub's side has to type it."""

    def __init__(self) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY)
        self.shown: list[int] = []

    async def generate_passkey(self) -> int:
        return PASSKEY

    async def display_number(self, number: int, digits: int) -> None:
        del digits
        self.shown.append(number)

    async def confirm(self, auto: bool = False) -> bool:
        del auto
        return False  # Just Works would give keys without MITM protection: the meter refuses to bond that way


def _passkey_only(radio: Device) -> _ShowsPasskey:
    delegate = _ShowsPasskey()
    radio.pairing_config_factory = lambda _connection: PairingConfig(
        sc=True, mitm=True, bonding=True, delegate=delegate
    )
    return delegate


@contextlib.asynccontextmanager
async def cuff_on(link: str, *, passkey: bool) -> AsyncIterator[tuple[BloodPressureCuff, _ShowsPasskey | None]]:
    options = DeviceOptions(id="cuff", address=CUFF, name="Cuff", bonding_required=True)
    cuff = BloodPressureCuff(options, ManualClock(START))
    async with sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio, cuff.attach(radio):
        shown = _passkey_only(radio) if passkey else None
        await cuff.measure(128, 82)  # it advertises after a measurement
        yield cuff, shown


async def _pair(**client: Any) -> None:
    device = await BleakScanner.find_device_by_address(CUFF, timeout=BOUND)
    assert device is not None
    async with BleakClient(device, timeout=BOUND, **client) as installer:
        await installer.pair()


async def test_just_works_needs_no_agent(bluetoothd: Bluetoothd, link: str) -> None:
    async with cuff_on(link, passkey=False):
        await _pair()
    assert bluetoothd.device_of(CUFF) is not None
    assert bluetoothd.device_of(CUFF).paired  # type: ignore[union-attr]
    assert bluetoothd.agent_calls == []


async def test_the_passkey_the_meter_shows_is_asked_of_the_agent_and_bonds(
    bluetoothd: Bluetoothd, link: str, system_bus: str
) -> None:
    async with (
        cuff_on(link, passkey=True) as (_cuff, shown),
        registered(system_bus, TestAgent(PASSKEY), "KeyboardOnly") as agent,
    ):
        await _pair()
    assert shown is not None
    assert shown.shown == [PASSKEY]
    device = bluetoothd.device_of(CUFF)
    assert device is not None
    assert device.paired
    assert agent.asked == [f"RequestPasskey {device.path}"]


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        (PASSKEY + 1, "org.bluez.Error.AuthenticationFailed"),  # mistyped
        (None, "org.bluez.Error.AuthenticationCanceled"),  # the installer cancelled
    ],
)
async def test_a_wrong_or_cancelled_passkey_fails_as_an_auth_error(
    bluetoothd: Bluetoothd, link: str, system_bus: str, typed: int | None, error: str
) -> None:
    async with (
        cuff_on(link, passkey=True),
        registered(system_bus, TestAgent(typed), "KeyboardDisplay"),
    ):
        with pytest.raises(BleakDBusError) as failed:
            await _pair()
    assert failed.value.dbus_error == error
    assert classify_error(failed.value) is ErrorClass.AUTH
    device = bluetoothd.device_of(CUFF)
    assert device is not None
    assert not device.paired


async def test_a_passkey_meter_does_not_bond_without_an_agent(bluetoothd: Bluetoothd, link: str) -> None:
    """No agent: bluetoothd pairs as NoInputNoOutput, which cannot enter the meter's passkey."""
    async with cuff_on(link, passkey=True):
        with pytest.raises(BleakDBusError) as failed:
            await _pair()
    assert classify_error(failed.value) is ErrorClass.AUTH
    device = bluetoothd.device_of(CUFF)
    assert device is not None
    assert not device.paired


async def test_provisioning_stores_the_identity_of_a_meter_found_at_a_private_address(
    bluetoothd: Bluetoothd, link: str
) -> None:
    """The installer pairs a cuff it found at a resolvable private address: the address provisioning keeps is the
    identity BlueZ reports once bonded (the private address would never be seen again)."""
    bluetoothd.use_private_address(CUFF, RPA)
    async with cuff_on(link, passkey=False):
        result = await pair_device(RPA, expect=DeviceKind.BLOOD_PRESSURE, give_up_after=BOUND)
    assert result.address == CUFF
    assert result.kind is DeviceKind.BLOOD_PRESSURE
