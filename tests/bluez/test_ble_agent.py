"""The hub's own BlueZ pairing agent (`gateway.ble_agent`) against the stand-in bluetoothd: registered through
``AgentManager1`` as the default agent, asked by bluetoothd for the passkey a display-only meter shows, answering
from the installer's passkey (through `gateway.provision.radio.pair_device`, the path `carehub provision pair` takes
on a Pi) or refusing with ``org.bluez.Error.Rejected`` when no pairing is in progress (the daemon)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakDBusError
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from mock_bluetoothd import Bluetoothd, device_path

import gateway.ble
import sim.ble
from gateway.ble_agent import AGENT_PATH, CAPABILITY, AgentRegistrationError, address_of, bluez_agent
from gateway.ble_errors import auth_cursor_key, classify_error
from gateway.ble_passkey import FixedPasskey, NoPasskey, PasskeyDesk
from gateway.config import DeviceKind, GatewayConfig, parse_config
from gateway.events import DeviceReport, ErrorClass, PendantFrame, Reading
from gateway.provision.radio import PasskeyNeededError, PasskeyRejectedError, open_radio, pair_device
from sim.clock import ManualClock
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.options import DeviceOptions
from sim.devices.quirks import PasskeyCuff
from sim.devices.vitals import Scale

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

START = datetime(2024, 3, 4, 7, 0, tzinfo=UTC)
BOUND = 15.0
CUFF = "C0:00:00:00:41:01"
PIN = 407_215
SCALE = "C0:00:00:00:41:02"


@contextlib.asynccontextmanager
async def meter(link: str, *, passkey: bool) -> AsyncIterator[BloodPressureCuff]:
    options = DeviceOptions(id="cuff", address=CUFF, name="Cuff", bonding_required=True)
    clock = ManualClock(START)
    cuff = PasskeyCuff(options, clock, passkey=PIN) if passkey else BloodPressureCuff(options, clock)
    async with sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio, cuff.attach(radio):
        await cuff.measure(128, 82)  # it advertises after a measurement
        yield cuff


class Sink:
    """The BLE manager's sink, recording; `changed` is set after every call."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.cursors: dict[str, int] = {}
        self.changed = asyncio.Event()

    async def store_readings(self, readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
        self.readings.extend(readings)
        if cursor is not None:
            self.cursors[cursor[0]] = cursor[1]
        self.changed.set()

    async def get_cursor(self, key: str) -> int | None:
        return self.cursors.get(key)

    async def report(self, event: DeviceReport) -> None:
        del event
        self.changed.set()

    async def pendant_frame(self, frame: PendantFrame) -> bytes | None:
        del frame
        return None

    async def until(self, predicate: Callable[[], object]) -> None:
        async with asyncio.timeout(BOUND):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def _config(tmp_path: Path, devices: Sequence[tuple[str, str]]) -> GatewayConfig:
    lines = ["[hub]", 'id = "agent-hub"', 'key_file = "hub.key"', "[platform]", 'public_key_file = "platform.pub"']
    lines += ["[broker]", 'url = "mqtt://127.0.0.1:1"', "[storage]", 'path = "outbox.sqlite"']
    lines += ["[[residents]]", 'id = "r1"', 'name = "Resident"']
    for address, kind in devices:
        lines += ["[[devices]]", f'address = "{address}"', f'kind = "{kind}"', 'resident = "r1"']
    return parse_config("\n".join(lines) + "\n", tmp_path / "hub.toml")


def test_a_device_path_names_its_address() -> None:
    assert address_of(device_path(CUFF)) == CUFF
    assert address_of("/org/bluez/hci0") == "/org/bluez/hci0"


async def test_the_agent_registers_as_bluetoothds_default_and_unregisters(bluetoothd: Bluetoothd) -> None:
    async with bluez_agent(PasskeyDesk()):
        agent = bluetoothd.default_agent
        assert agent is not None
        assert (agent.path, agent.capability) == (AGENT_PATH, CAPABILITY)
    assert bluetoothd.default_agent is None
    assert bluetoothd.agents == {}


async def test_without_bluetoothd_the_agent_is_refused_with_a_typed_error(system_bus: str) -> None:
    with pytest.raises(AgentRegistrationError) as refused:
        async with bluez_agent(PasskeyDesk()):
            pass
    assert refused.value.dbus_error == "org.freedesktop.DBus.Error.ServiceUnknown"


async def test_a_passkey_request_with_no_pairing_in_progress_is_rejected(
    bluetoothd: Bluetoothd, system_bus: str
) -> None:
    """What bluetoothd gets when a meter asks the daemon for a PIN (nobody there to type it)."""
    async with bluez_agent(PasskeyDesk()) as agent:
        assert bluetoothd.default_agent is not None
        bus = await MessageBus(bus_address=system_bus).connect()
        try:
            reply = await bus.call(
                Message(
                    destination=bluetoothd.default_agent.owner,
                    path=AGENT_PATH,
                    interface="org.bluez.Agent1",
                    member="RequestPasskey",
                    signature="o",
                    body=[device_path(CUFF)],
                )
            )
        finally:
            bus.disconnect()
    assert reply is not None
    assert reply.message_type is MessageType.ERROR
    assert reply.error_name == "org.bluez.Error.Rejected"
    assert agent.requests == [f"RequestPasskey {CUFF}"]


async def test_provisioning_types_the_pin_through_the_agent(bluetoothd: Bluetoothd, link: str) -> None:
    desk = PasskeyDesk()
    async with meter(link, passkey=True) as cuff, open_radio(None, desk=desk) as (scanner, client):
        assert (scanner, client) == (None, None)  # bleak's BlueZ backend
        result = await pair_device(
            CUFF, expect=DeviceKind.BLOOD_PRESSURE, give_up_after=BOUND, desk=desk, passkeys=FixedPasskey(PIN)
        )
    assert result.address == CUFF
    assert isinstance(cuff, PasskeyCuff)
    assert cuff.shown == [PIN]
    assert bluetoothd.agent_calls == ["RequestPasskey"]
    device = bluetoothd.device_of(CUFF)
    assert device is not None
    assert device.paired


@pytest.mark.parametrize(
    ("source", "error", "words"),
    [
        (FixedPasskey(PIN - 7), PasskeyRejectedError, f"refused the PIN {PIN - 7:06d}"),
        (NoPasskey(), PasskeyNeededError, "asked for it, but none was given"),
    ],
)
async def test_a_wrong_or_missing_pin_through_bluez_is_a_typed_error(
    bluetoothd: Bluetoothd, link: str, source: FixedPasskey | NoPasskey, error: type[Exception], words: str
) -> None:
    desk = PasskeyDesk()
    async with meter(link, passkey=True), open_radio(None, desk=desk):
        with pytest.raises(error) as failed:
            await pair_device(CUFF, give_up_after=BOUND, desk=desk, passkeys=source)
    assert words in failed.value.what  # type: ignore[attr-defined]
    cause = failed.value.__cause__
    assert isinstance(cause, BleakDBusError)
    assert cause.dbus_error in ("org.bluez.Error.AuthenticationFailed", "org.bluez.Error.AuthenticationRejected")
    assert classify_error(cause) is ErrorClass.AUTH
    device = bluetoothd.device_of(CUFF)
    assert device is not None
    assert not device.paired


async def test_just_works_through_the_agent_asks_nothing(bluetoothd: Bluetoothd, link: str) -> None:
    desk = PasskeyDesk()
    async with meter(link, passkey=False), open_radio(None, desk=desk):
        result = await pair_device(CUFF, give_up_after=BOUND, desk=desk)
    assert result.kind is DeviceKind.BLOOD_PRESSURE
    assert bluetoothd.agent_calls == []
    device = bluetoothd.device_of(CUFF)
    assert device is not None
    assert device.paired


async def test_pairing_again_forgets_the_old_bond_first(bluetoothd: Bluetoothd, link: str) -> None:
    """A meter that lost its bond is paired afresh: the hub's old bond is removed (RemoveDevice) before Pair."""
    desk = PasskeyDesk()
    async with meter(link, passkey=True), open_radio(None, desk=desk):
        await pair_device(CUFF, give_up_after=BOUND, desk=desk, passkeys=FixedPasskey(PIN))
        first = bluetoothd.device_of(CUFF)
        assert first is not None
        assert first.paired
        await pair_device(CUFF, give_up_after=BOUND, desk=desk, passkeys=FixedPasskey(PIN))
    assert bluetoothd.agent_calls == ["RequestPasskey", "RequestPasskey"]
    assert [c for c in bluetoothd.calls if c.startswith("Pair")] == [f"Pair {CUFF}", f"Pair {CUFF}"]


async def test_bleak_alone_cannot_bond_the_passkey_meter_while_the_daemons_agent_runs(
    bluetoothd: Bluetoothd, link: str
) -> None:
    """The daemon's agent (no pairing in progress) refuses the PIN: bluetoothd fails Pair, classified AUTH."""
    async with meter(link, passkey=True), bluez_agent(PasskeyDesk()) as agent:
        device = await BleakScanner.find_device_by_address(CUFF, timeout=BOUND)
        assert device is not None
        async with BleakClient(device, timeout=BOUND) as client:
            with pytest.raises(BleakDBusError) as failed:
                await client.pair()
    assert classify_error(failed.value) is ErrorClass.AUTH
    assert agent.requests == [f"RequestPasskey {CUFF}"]


async def test_the_daemon_pairs_a_scale_on_demand_and_refuses_a_pin_it_cannot_type(
    bluetoothd: Bluetoothd, link: str, tmp_path: Path
) -> None:
    """The hub's BLE manager on bleak's BlueZ backend registers the agent; a scale whose CCCD needs encryption is
    bonded when its subscription is refused and read; a cuff wanting its PIN fails as AUTH, counted for the doctor."""
    clock = ManualClock(START)
    scale = Scale(DeviceOptions(id="scale", address=SCALE, name="Scale", bonding_required=True), clock)
    cuff = PasskeyCuff(DeviceOptions(id="cuff", address=CUFF, name="Cuff"), clock, passkey=PIN)
    sink = Sink()
    config = _config(tmp_path, [(SCALE, "scale"), (CUFF, "blood_pressure")])
    async with (
        sim.ble.open_peripheral_device(link, SCALE, "Scale") as scale_radio,
        scale.attach(scale_radio),
        sim.ble.open_peripheral_device(link, CUFF, "Cuff") as cuff_radio,
        cuff.attach(cuff_radio),
        gateway.ble.BleManager(config, sink) as manager,
    ):
        assert bluetoothd.default_agent is not None
        assert bluetoothd.default_agent.path == AGENT_PATH
        produced = await scale.measure(81.0)
        await cuff.measure(131, 84)
        await sink.until(lambda: sink.readings and sink.cursors.get(auth_cursor_key(CUFF)))
        assert manager.stats.failures[ErrorClass.AUTH] >= 1
    assert [r.data for r in sink.readings if r.device.address == SCALE] == [produced.raw]
    assert scale.bonded
    assert cuff.shown == [PIN]  # it showed its PIN; nobody could type it
    assert "RequestPasskey" in bluetoothd.agent_calls
    scale_device = bluetoothd.device_of(SCALE)
    assert scale_device is not None
    assert scale_device.paired


async def test_a_passkey_meter_paired_by_the_installer_is_read_by_the_daemon(
    bluetoothd: Bluetoothd, link: str, tmp_path: Path
) -> None:
    """Provisioning types the PIN through the hub's agent once; the daemon (its own agent, nobody to type a PIN)
    then reads the cuff over the bond, without asking again."""
    clock = ManualClock(START)
    cuff = PasskeyCuff(DeviceOptions(id="cuff", address=CUFF, name="Cuff"), clock, passkey=PIN)
    sink = Sink()
    desk = PasskeyDesk()
    async with sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio, cuff.attach(radio):
        cuff.wake()
        async with open_radio(None, desk=desk):
            await pair_device(CUFF, give_up_after=BOUND, desk=desk, passkeys=FixedPasskey(PIN))
        assert bluetoothd.agent_calls == ["RequestPasskey"]
        async with gateway.ble.BleManager(_config(tmp_path, [(CUFF, "blood_pressure")]), sink):
            produced = await cuff.measure(127, 81)
            await sink.until(lambda: sink.readings)
    assert [r.data for r in sink.readings] == [produced.raw]
    assert bluetoothd.agent_calls == ["RequestPasskey"]  # the bond was used, nobody asked for the PIN again
    assert cuff.shown == [PIN]
    assert sink.cursors.get(auth_cursor_key(CUFF), 0) == 0


async def test_a_restarted_bluetoothd_is_given_the_agent_again(system_bus: str, link: str) -> None:
    """bluetoothd forgets its agents when it restarts; the hub's agent registers again when org.bluez reappears."""
    first = Bluetoothd(system_bus, link)
    await first.__aenter__()
    try:
        async with bluez_agent(PasskeyDesk()) as agent:
            assert first.default_agent is not None
            agent.registered.clear()
            await first.__aexit__(None, None, None)  # bluetoothd stops ...
            async with Bluetoothd(system_bus, link) as second:  # ... and starts again, with no agent
                async with asyncio.timeout(BOUND):
                    await agent.registered.wait()
                assert second.default_agent is not None
                assert second.default_agent.path == AGENT_PATH
                assert agent.registrations == 2
    finally:
        await sim.ble.close_centrals()
