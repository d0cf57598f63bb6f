"""A stand-in for bluetoothd: BlueZ's ``org.bluez`` D-Bus API on a private bus, with the radio simulated by bumble.

bleak's BlueZ backend (the one the hub uses on a Raspberry Pi) talks only D-Bus, so this serves the part of BlueZ's
API that bleak and the hub use, with BlueZ's object layout, signals and error names (bluez ``doc/org.bluez.*.rst``):

* ``/org/bluez/hci0``: ``Adapter1`` (``StartDiscovery``/``StopDiscovery``/``SetDiscoveryFilter``/``RemoveDevice``)
  and ``AdvertisementMonitorManager1`` (``RegisterMonitor``/``UnregisterMonitor``). A registered monitor is read
  from its owner the way bluetoothd reads it (the ``InterfacesAdded`` its application emits), its ``or_patterns`` are
  validated as bluetoothd and the kernel validate them (a bad monitor is sent ``Release`` and never activated), and
  only adverts that match one of its patterns create or update devices while it is the only scan (passive
  scanning: no scan request, so no scan response is ever heard);
* ``/org/bluez/hci0/dev_XX_..``: ``Device1`` appearing through ``InterfacesAdded`` with the advertisement (``UUIDs``,
  ``ServiceData``, ``ManufacturerData``, ``Name``, ``RSSI``) and updated through ``PropertiesChanged``;
  ``Connect``/``Disconnect``/``Pair`` and the writable ``Trusted``;
* on connection, ``GattService1``/``GattCharacteristic1``/``GattDescriptor1`` objects (paths end in the attribute
  handle, as bluetoothd's do), then ``ServicesResolved``; ``ReadValue``/``WriteValue``/``StartNotify``/
  ``StopNotify``, values arriving as ``PropertiesChanged`` of ``Value``; ATT errors as
  ``org.bluez.Error.Failed "Operation failed with ATT error: 0x.."``.

Underneath, every radio operation goes through sim.ble's bumble backend on a bumble link, so the simulated meters of
`sim.devices` are what a hub behind this bluetoothd sees. What this cannot show (radio timing, bluetoothd's own
confirmation of indications, the kernel's pattern offload) is written down in ``sim/ble/README.md``.
"""

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bumble.device import Advertisement, Connection
from bumble.pairing import PairingConfig, PairingDelegate
from dbus_fast import Message, MessageType, PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusBytes, DBusDict, DBusInt16, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.constants import RequestNameReply
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

import sim.ble

_log = logging.getLogger(__name__)

BLUEZ = "org.bluez"
ADAPTER_PATH = "/org/bluez/hci0"
ADAPTER_ADDRESS = "00:1A:7D:DA:71:13"
MONITOR_MANAGER = "org.bluez.AdvertisementMonitorManager1"
MONITOR = "org.bluez.AdvertisementMonitor1"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"

# bluetoothd's checks of a monitor's or_patterns (src/adv_monitor.c): an AD type it knows (up to 3D information data,
# or manufacturer data), content 1..31 bytes that fits a legacy advertisement's 31 bytes from its start position; the
# kernel takes at most 16 patterns per monitor (HCI_MAX_ADV_MONITOR_NUM_PATTERNS).
_AD_MAX_LEN = 31
_AD_TYPE_LAST = 0x3D
_AD_MANUFACTURER = 0xFF
MAX_PATTERNS = 16

StrList = Annotated[list[str], DBusSignature("as")]


def device_path(address: str) -> str:
    """bluetoothd's object path for a device on hci0."""
    return f"{ADAPTER_PATH}/dev_{address.upper().replace(':', '_')}"


@dataclass(frozen=True, slots=True)
class OrPattern:
    """One of a monitor's or_patterns: `content` at `start` of an AD structure of type `ad_type`."""

    start: int
    ad_type: int
    content: bytes

    def matches(self, structures: Sequence[tuple[int, bytes]]) -> bool:
        end = self.start + len(self.content)
        return any(t == self.ad_type and d[self.start : end] == self.content for t, d in structures)


class MonitorRejectedError(ValueError):
    """A monitor bluetoothd would refuse (it sends the monitor ``Release`` and never activates it)."""


def parse_patterns(monitor_type: object, raw: object) -> tuple[OrPattern, ...]:
    """Validate a monitor's ``Type`` and ``Patterns`` as bluetoothd does.

    Raises:
        MonitorRejectedError: what bluetoothd would refuse, with the reason.
    """
    if monitor_type != "or_patterns":
        raise MonitorRejectedError(f"monitor type {monitor_type!r} is not supported")
    if not isinstance(raw, list) or not raw:
        raise MonitorRejectedError("an or_patterns monitor needs at least one pattern")
    if len(raw) > MAX_PATTERNS:
        raise MonitorRejectedError(f"{len(raw)} patterns; the kernel takes at most {MAX_PATTERNS} per monitor")
    patterns = []
    for item in raw:
        start, ad_type, content = item
        content = bytes(content)
        if not (0 < ad_type <= _AD_TYPE_LAST or ad_type == _AD_MANUFACTURER):
            raise MonitorRejectedError(f"AD type 0x{ad_type:02x} is not one bluetoothd accepts")
        if not 0 < len(content) <= _AD_MAX_LEN or start + len(content) > _AD_MAX_LEN:
            raise MonitorRejectedError(f"pattern {content.hex()} at {start} does not fit an advertisement")
        patterns.append(OrPattern(start, ad_type, content))
    return tuple(patterns)


def _dbus_error(exc: BaseException) -> DBusError:
    """A bumble-backend failure as bluetoothd reports it."""
    if isinstance(exc, BleakGATTProtocolError):
        return DBusError("org.bluez.Error.Failed", f"Operation failed with ATT error: 0x{int(exc.code):02x}")
    if isinstance(exc, TimeoutError):
        return DBusError("org.bluez.Error.Failed", "Operation timed out")
    return DBusError("org.bluez.Error.Failed", str(exc) or type(exc).__name__)


class Adapter1(ServiceInterface):
    def __init__(self, daemon: "Bluetoothd") -> None:
        super().__init__("org.bluez.Adapter1")
        self._daemon = daemon

    @dbus_method()
    async def StartDiscovery(self) -> None:  # noqa: N802  (D-Bus member names)
        if not self._daemon.powered:
            raise DBusError("org.bluez.Error.NotReady", "Resource Not Ready")
        await self._daemon.set_discovering(True)

    @dbus_method()
    async def StopDiscovery(self) -> None:  # noqa: N802
        if not self._daemon.discovering:
            raise DBusError("org.bluez.Error.Failed", "No discovery started")
        await self._daemon.set_discovering(False)

    @dbus_method()
    def SetDiscoveryFilter(self, filters: DBusDict) -> None:  # noqa: N802
        transport = filters.get("Transport")
        if transport is not None and transport.value not in ("le", "auto"):
            raise DBusError("org.bluez.Error.NotSupported", f"transport {transport.value!r}")
        uuids = filters.get("UUIDs")
        self._daemon.discovery_uuids = frozenset(u.lower() for u in uuids.value) if uuids is not None else frozenset()

    @dbus_method()
    async def RemoveDevice(self, device: DBusObjectPath) -> None:  # noqa: N802
        await self._daemon.remove_device(device)

    @dbus_property(PropertyAccess.READ)
    def Address(self) -> DBusStr:  # noqa: N802
        return ADAPTER_ADDRESS

    @dbus_property(PropertyAccess.READ)
    def AddressType(self) -> DBusStr:  # noqa: N802
        return "public"

    @dbus_property(PropertyAccess.READ)
    def Name(self) -> DBusStr:  # noqa: N802
        return "carehub-test"

    @dbus_property(PropertyAccess.READ)
    def Alias(self) -> DBusStr:  # noqa: N802
        return "carehub-test"

    @dbus_property(PropertyAccess.READ)
    def Powered(self) -> DBusBool:  # noqa: N802
        return self._daemon.powered

    @dbus_property(PropertyAccess.READ)
    def Discovering(self) -> DBusBool:  # noqa: N802
        return self._daemon.discovering

    @dbus_property(PropertyAccess.READ)
    def Roles(self) -> StrList:  # noqa: N802
        return ["central", "peripheral"]

    @dbus_property(PropertyAccess.READ)
    def UUIDs(self) -> StrList:  # noqa: N802
        return []


class MonitorManager1(ServiceInterface):
    """The properties of ``AdvertisementMonitorManager1``; its methods need the caller, so `Bluetoothd` answers
    them from a message handler."""

    def __init__(self) -> None:
        super().__init__(MONITOR_MANAGER)

    @dbus_property(PropertyAccess.READ)
    def SupportedMonitorTypes(self) -> StrList:  # noqa: N802
        return ["or_patterns"]

    @dbus_property(PropertyAccess.READ)
    def SupportedFeatures(self) -> StrList:  # noqa: N802
        return []


class Device1(ServiceInterface):
    """A remote device. `address` is what bluetoothd reports (a resolvable private address until a bond gives it the
    identity); `identity` is the simulated meter's own address, which the radio connects to. The object path is the
    one the device was first seen under and stays when the address changes (as bluetoothd's does)."""

    def __init__(self, daemon: "Bluetoothd", address: str, identity: str, random: bool) -> None:
        super().__init__("org.bluez.Device1")
        self._daemon = daemon
        self.address = address
        self.identity = identity
        self.path = device_path(address)
        self.random = random
        self.local_name: str | None = None
        self.uuids: list[str] = []
        self.manufacturer: dict[int, bytes] = {}
        self.service_data: dict[str, bytes] = {}
        self.rssi = -127
        self.connected = False
        self.services_resolved = False
        self.paired = False
        self.trusted = False
        self.client: BleakClient | None = None
        self.gatt_paths: list[str] = []

    def learn(self, adv: AdvertisementData) -> dict[str, Any]:
        """Merge an advertisement as bluetoothd does (UUIDs accumulate, data replaced); the properties changed."""
        changed: dict[str, Any] = {"RSSI": adv.rssi}
        self.rssi = adv.rssi
        if adv.local_name and adv.local_name != self.local_name:
            self.local_name = changed["Name"] = changed["Alias"] = adv.local_name
        uuids = self.uuids + [u for u in adv.service_uuids if u not in self.uuids]
        if uuids != self.uuids:
            self.uuids = changed["UUIDs"] = uuids
        if adv.manufacturer_data and adv.manufacturer_data != self.manufacturer:
            self.manufacturer = changed["ManufacturerData"] = dict(adv.manufacturer_data)
        if adv.service_data and adv.service_data != self.service_data:
            self.service_data = changed["ServiceData"] = dict(adv.service_data)
        return changed

    @dbus_method()
    async def Connect(self) -> None:  # noqa: N802
        await self._daemon.connect(self)

    @dbus_method()
    async def Disconnect(self) -> None:  # noqa: N802
        await self._daemon.disconnect(self)

    @dbus_method()
    async def Pair(self) -> None:  # noqa: N802
        await self._daemon.pair(self)

    @dbus_property(PropertyAccess.READ)
    def Address(self) -> DBusStr:  # noqa: N802
        return self.address

    @dbus_property(PropertyAccess.READ)
    def AddressType(self) -> DBusStr:  # noqa: N802
        return "random" if self.random else "public"

    @dbus_property(PropertyAccess.READ)
    def Name(self) -> DBusStr:  # noqa: N802
        return self.local_name or ""

    @dbus_property(PropertyAccess.READ)
    def Alias(self) -> DBusStr:  # noqa: N802
        return self.local_name or self.address.replace(":", "-")

    @dbus_property(PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:  # noqa: N802
        return ADAPTER_PATH

    @dbus_property(PropertyAccess.READ)
    def UUIDs(self) -> StrList:  # noqa: N802
        return self.uuids

    @dbus_property(PropertyAccess.READ)
    def ManufacturerData(self) -> Annotated[dict[int, Variant], DBusSignature("a{qv}")]:  # noqa: N802
        return {k: Variant("ay", v) for k, v in self.manufacturer.items()}

    @dbus_property(PropertyAccess.READ)
    def ServiceData(self) -> Annotated[dict[str, Variant], DBusSignature("a{sv}")]:  # noqa: N802
        return {k: Variant("ay", v) for k, v in self.service_data.items()}

    @dbus_property(PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:  # noqa: N802
        return self.rssi

    @dbus_property(PropertyAccess.READ)
    def Connected(self) -> DBusBool:  # noqa: N802
        return self.connected

    @dbus_property(PropertyAccess.READ)
    def ServicesResolved(self) -> DBusBool:  # noqa: N802
        return self.services_resolved

    @dbus_property(PropertyAccess.READ)
    def Paired(self) -> DBusBool:  # noqa: N802
        return self.paired

    @dbus_property(PropertyAccess.READ)
    def Bonded(self) -> DBusBool:  # noqa: N802
        return self.paired

    @dbus_property(PropertyAccess.READ)
    def Blocked(self) -> DBusBool:  # noqa: N802
        return False

    @dbus_property(PropertyAccess.READWRITE)
    def Trusted(self) -> DBusBool:  # noqa: N802
        return self.trusted

    @Trusted.setter  # type: ignore[no-redef]
    def Trusted(self, value: DBusBool) -> None:  # noqa: N802
        self.trusted = value


class GattService1(ServiceInterface):
    def __init__(self, uuid: str, device: str) -> None:
        super().__init__("org.bluez.GattService1")
        self._uuid, self._device = uuid, device

    @dbus_property(PropertyAccess.READ)
    def UUID(self) -> DBusStr:  # noqa: N802
        return self._uuid

    @dbus_property(PropertyAccess.READ)
    def Primary(self) -> DBusBool:  # noqa: N802
        return True

    @dbus_property(PropertyAccess.READ)
    def Device(self) -> DBusObjectPath:  # noqa: N802
        return self._device

    @dbus_property(PropertyAccess.READ)
    def Includes(self) -> Annotated[list[str], DBusSignature("ao")]:  # noqa: N802
        return []


class GattCharacteristic1(ServiceInterface):
    def __init__(self, client: BleakClient, char: BleakGATTCharacteristic, service: str) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self._client, self._char, self._service = client, char, service
        self.value = b""
        self.notifying = False

    def _set_value(self, value: bytes) -> None:
        self.value = value
        self.emit_properties_changed({"Value": value})

    @dbus_method()
    async def ReadValue(self, options: DBusDict) -> DBusBytes:  # noqa: N802
        try:
            value = bytes(await self._client.read_gatt_char(self._char))
        except (BleakError, TimeoutError) as exc:
            raise _dbus_error(exc) from exc
        self._set_value(value)  # bluetoothd caches what it read, and says so
        return value

    @dbus_method()
    async def WriteValue(self, value: DBusBytes, options: DBusDict) -> None:  # noqa: N802
        kind = options.get("type")
        response = kind is None or kind.value == "request"
        if kind is not None and kind.value not in ("request", "command", "reliable"):
            raise DBusError("org.bluez.Error.InvalidArguments", "Invalid arguments in method call")
        try:
            await self._client.write_gatt_char(self._char, bytes(value), response=response)
        except (BleakError, TimeoutError) as exc:
            raise _dbus_error(exc) from exc

    @dbus_method()
    async def StartNotify(self) -> None:  # noqa: N802
        if not {"notify", "indicate"} & set(self._char.properties):
            raise DBusError("org.bluez.Error.NotSupported", "Operation is not supported")
        if self.notifying:
            return  # bluetoothd: another session of the same client is already notifying
        try:
            # bumble confirms an indication once this callback returned: like bluetoothd, before any client saw it.
            await self._client.start_notify(self._char, lambda _c, data: self._set_value(bytes(data)))
        except (BleakError, TimeoutError) as exc:
            raise _dbus_error(exc) from exc
        self.notifying = True
        self.emit_properties_changed({"Notifying": True})

    @dbus_method()
    async def StopNotify(self) -> None:  # noqa: N802
        if not self.notifying:
            raise DBusError("org.bluez.Error.Failed", "No notify session started")
        self.notifying = False
        self.emit_properties_changed({"Notifying": False})
        if self._client.is_connected:
            try:
                await self._client.stop_notify(self._char)
            except (BleakError, TimeoutError) as exc:
                raise _dbus_error(exc) from exc

    @dbus_property(PropertyAccess.READ)
    def UUID(self) -> DBusStr:  # noqa: N802
        return self._char.uuid

    @dbus_property(PropertyAccess.READ)
    def Service(self) -> DBusObjectPath:  # noqa: N802
        return self._service

    @dbus_property(PropertyAccess.READ)
    def Value(self) -> DBusBytes:  # noqa: N802
        return self.value

    @dbus_property(PropertyAccess.READ)
    def Notifying(self) -> DBusBool:  # noqa: N802
        return self.notifying

    @dbus_property(PropertyAccess.READ)
    def Flags(self) -> StrList:  # noqa: N802
        return list(self._char.properties)


class GattDescriptor1(ServiceInterface):
    def __init__(self, uuid: str, characteristic: str) -> None:
        super().__init__("org.bluez.GattDescriptor1")
        self._uuid, self._characteristic = uuid, characteristic

    @dbus_property(PropertyAccess.READ)
    def UUID(self) -> DBusStr:  # noqa: N802
        return self._uuid

    @dbus_property(PropertyAccess.READ)
    def Characteristic(self) -> DBusObjectPath:  # noqa: N802
        return self._characteristic

    @dbus_property(PropertyAccess.READ)
    def Value(self) -> DBusBytes:  # noqa: N802
        return b""


AGENT_MANAGER = "org.bluez.AgentManager1"
AGENT = "org.bluez.Agent1"
# An agent's capability as the SMP IO capability bluetoothd pairs with ("" means KeyboardDisplay).
_CAPABILITIES = {
    "": PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_KEYBOARD_INPUT,
    "KeyboardDisplay": PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_KEYBOARD_INPUT,
    "DisplayOnly": PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY,
    "DisplayYesNo": PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_YES_NO_INPUT,
    "KeyboardOnly": PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY,
    "NoInputNoOutput": PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT,
}


@dataclass(frozen=True, slots=True)
class Agent:
    """A registered pairing agent (``org.bluez.Agent1`` exported by `owner` at `path`)."""

    owner: str
    path: str
    capability: str


class _AgentDelegate(PairingDelegate):
    """The hub side of SMP, asking the default agent what bluetoothd would ask it; with no agent, NoInputNoOutput
    (Just Works only)."""

    def __init__(self, daemon: "Bluetoothd", connection: Connection) -> None:
        agent = daemon.default_agent
        capability = _CAPABILITIES[agent.capability] if agent else PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT
        super().__init__(io_capability=capability)
        self._daemon, self._agent, self._connection = daemon, agent, connection

    def _path(self) -> str:
        device = self._daemon.device_of(self._connection.peer_address.to_string(False))
        return device.path if device is not None else ""

    async def get_number(self) -> int | None:
        if self._agent is None:
            return None
        reply = await self._daemon.ask_agent(self._agent, "RequestPasskey", "o", [self._path()])
        if reply.message_type is MessageType.ERROR:
            return None
        passkey: int = reply.body[0]
        return passkey

    async def display_number(self, number: int, digits: int) -> None:
        del digits
        if self._agent is not None:
            await self._daemon.ask_agent(self._agent, "DisplayPasskey", "ouq", [self._path(), number, 0])

    async def compare_numbers(self, number: int, digits: int) -> bool:
        del digits
        if self._agent is None:
            return False
        reply = await self._daemon.ask_agent(self._agent, "RequestConfirmation", "ou", [self._path(), number])
        return reply.message_type is not MessageType.ERROR

    async def confirm(self, auto: bool = False) -> bool:
        del auto
        return True  # Just Works on a pairing the hub asked for: bluetoothd does not ask the agent


@dataclass(slots=True)
class Monitor:
    """A registered advertisement monitor: its owner, its path, its patterns once read, and what it was told."""

    owner: str
    path: str
    patterns: tuple[OrPattern, ...] = ()
    active: bool = False
    rejected: str | None = None
    found: set[str] = field(default_factory=set)


class Bluetoothd:
    """``org.bluez`` on the bus at `bus_address`, its radio sim.ble's bumble backend on `link`.

    An async context manager: entered, it owns the name ``org.bluez``; left, it disconnects every device, stops the
    scan and releases the name.
    """

    def __init__(self, bus_address: str, link: str, *, monitors: bool = True, powered: bool = True) -> None:
        self._address = bus_address
        self._link = link
        # False: a bluetoothd without the advertisement monitor API (before 5.56, or not started with --experimental
        # where the API is still experimental), so RegisterMonitor is an unknown method.
        self._monitors_supported = monitors
        self.powered = powered  # False: the adapter is off (rfkill, or bluetoothd still bringing it up)
        self._scanner_backend, self._client_backend = sim.ble.backend_for(link)
        self.agents: dict[tuple[str, str], Agent] = {}
        self.default_agent: Agent | None = None
        self.bus = MessageBus(bus_address=bus_address)
        self.discovering = False
        self.discovery_uuids: frozenset[str] = frozenset()
        self.monitors: dict[tuple[str, str], Monitor] = {}
        self.devices: dict[str, Device1] = {}  # by the address bluetoothd reports
        self.private_addresses: dict[str, str] = {}  # identity -> the resolvable private address on air now
        self.calls: list[str] = []  # the Device1/Adapter1 methods called, in order (for tests)
        self.agent_calls: list[str] = []  # the Agent1 methods called, in order
        self._agent_refusal: str | None = None
        self._scanner: BleakScanner | None = None
        self._scan_active = False
        self._scan_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()  # set whenever a monitor or device changes (tests await it)

    async def __aenter__(self) -> "Bluetoothd":
        await self.bus.connect()
        self._adapter = Adapter1(self)
        self.bus.export(ADAPTER_PATH, self._adapter)
        if self._monitors_supported:
            self.bus.export(ADAPTER_PATH, MonitorManager1())
        self.bus.add_message_handler(self._on_message)
        # Pairing goes through the registered agent, as bluetoothd's does: the hub's radio asks it for what the
        # chosen method needs (a passkey to type, a number to confirm) under the agent's IO capability.
        central = await sim.ble.get_central(sim.ble.parse_link(self._link))
        central.device.pairing_config_factory = lambda connection: PairingConfig(
            sc=True, mitm=True, bonding=True, delegate=_AgentDelegate(self, connection)
        )
        reply = await self.bus.request_name(BLUEZ)
        if reply is not RequestNameReply.PRIMARY_OWNER:
            raise RuntimeError(f"org.bluez is already owned on {self._address} ({reply})")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        for device in list(self.devices.values()):
            if device.client is not None:
                with contextlib.suppress(BleakError, TimeoutError):
                    await device.client.disconnect()
        await self._set_scan(None)
        self.bus.disconnect()
        await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- advertisement monitors -------------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> bool | Message:
        if msg.message_type is MessageType.SIGNAL:
            if msg.interface == OBJECT_MANAGER and msg.member == "InterfacesAdded":
                self._on_owner_interfaces(msg)
            return False
        if msg.message_type is MessageType.METHOD_CALL and msg.interface == AGENT_MANAGER:
            return self._on_agent_manager(msg)
        if msg.message_type is not MessageType.METHOD_CALL or msg.interface != MONITOR_MANAGER:
            return False
        if msg.path != ADAPTER_PATH:
            return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownObject", f"no object {msg.path}")
        if not self._monitors_supported:
            return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", f"no interface {MONITOR_MANAGER}")
        assert msg.sender is not None
        (path,) = msg.body
        key = (msg.sender, path)
        if msg.member == "RegisterMonitor":
            if key in self.monitors:
                return Message.new_error(msg, "org.bluez.Error.AlreadyExists", "Already Exists")
            self.monitors[key] = Monitor(msg.sender, path)
            self._spawn(self._watch_owner(msg.sender), "bluez.monitor.watch")
            return Message.new_method_return(msg)
        if msg.member == "UnregisterMonitor":
            if self.monitors.pop(key, None) is None:
                return Message.new_error(msg, "org.bluez.Error.DoesNotExist", "Does Not Exist")
            self._spawn(self._rescan(), "bluez.rescan")
            self.changed.set()
            return Message.new_method_return(msg)
        return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", f"no method {msg.member}")

    def _on_agent_manager(self, msg: Message) -> Message:
        """``org.bluez.AgentManager1`` at ``/org/bluez`` (bluez doc/org.bluez.AgentManager.rst)."""
        if msg.path != "/org/bluez":
            return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownObject", f"no object {msg.path}")
        assert msg.sender is not None
        key = (msg.sender, msg.body[0] if msg.body else "")
        if msg.member == "RegisterAgent":
            path, capability = msg.body
            if capability not in _CAPABILITIES:
                return Message.new_error(msg, "org.bluez.Error.InvalidArguments", "Invalid arguments in method call")
            if key in self.agents:
                return Message.new_error(msg, "org.bluez.Error.AlreadyExists", "Already Exists")
            self.agents[key] = Agent(msg.sender, path, capability or "KeyboardDisplay")
            if self.default_agent is None:
                self.default_agent = self.agents[key]
            return Message.new_method_return(msg)
        if msg.member == "RequestDefaultAgent":
            if key not in self.agents:
                return Message.new_error(msg, "org.bluez.Error.DoesNotExist", "Does Not Exist")
            self.default_agent = self.agents[key]
            return Message.new_method_return(msg)
        if msg.member == "UnregisterAgent":
            agent = self.agents.pop(key, None)
            if agent is None:
                return Message.new_error(msg, "org.bluez.Error.DoesNotExist", "Does Not Exist")
            if self.default_agent == agent:
                self.default_agent = next(iter(self.agents.values()), None)
            return Message.new_method_return(msg)
        return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", f"no method {msg.member}")

    async def ask_agent(self, agent: Agent, member: str, signature: str, body: list[Any]) -> Message:
        """Call the agent; an error reply (Rejected, Canceled) refuses the pairing and is remembered for Pair."""
        reply = await self.bus.call(
            Message(
                destination=agent.owner,
                path=agent.path,
                interface=AGENT,
                member=member,
                signature=signature,
                body=body,
            )
        )
        assert reply is not None
        self.agent_calls.append(member)
        if reply.message_type is MessageType.ERROR:
            self._agent_refusal = reply.error_name
        return reply

    def device_of(self, identity: str) -> Device1 | None:
        return next((d for d in self.devices.values() if d.identity == identity.upper()), None)

    async def _watch_owner(self, owner: str) -> None:
        """Listen for the monitor objects the owner exports (bleak exports it after RegisterMonitor returns)."""
        rule = f"type='signal',sender='{owner}',interface='{OBJECT_MANAGER}',member='InterfacesAdded'"
        await self.bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )

    def _on_owner_interfaces(self, msg: Message) -> None:
        path, interfaces = msg.body
        for (owner, root), monitor in self.monitors.items():
            if owner != msg.sender or not (path == root or path.startswith(root + "/")) or monitor.active:
                continue
            props = interfaces.get(MONITOR)
            if props is None:
                continue
            try:
                monitor.patterns = parse_patterns(
                    props["Type"].value, props.get("Patterns", Variant("a(yyay)", [])).value
                )
            except (MonitorRejectedError, KeyError, TypeError, ValueError) as exc:
                monitor.rejected = str(exc)
                _log.warning("monitor %s of %s rejected: %s", path, owner, exc)
                self._spawn(self._call_monitor(owner, path, "Release"), "bluez.monitor.release")
            else:
                monitor.path = path
                monitor.active = True
                self._spawn(self._call_monitor(owner, path, "Activate"), "bluez.monitor.activate")
                self._spawn(self._rescan(), "bluez.rescan")
            self.changed.set()

    async def _call_monitor(self, owner: str, path: str, member: str, body: list[Any] | None = None) -> None:
        reply = await self.bus.call(
            Message(
                destination=owner,
                path=path,
                interface=MONITOR,
                member=member,
                signature="o" if body else "",
                body=body or [],
            )
        )
        if reply is not None and reply.message_type is MessageType.ERROR:
            _log.warning("%s.%s on %s: %s %s", MONITOR, member, path, reply.error_name, reply.body)

    # -- the radio --------------------------------------------------------------------------------------------

    def set_powered(self, on: bool) -> None:
        """Switch the adapter on or off (``Powered`` changes, as when rfkill or bluetoothd's power-on settles)."""
        self.powered = on
        self._adapter.emit_properties_changed({"Powered": on})

    async def set_discovering(self, on: bool) -> None:
        self.calls.append("StartDiscovery" if on else "StopDiscovery")
        self.discovering = on
        await self._rescan()

    async def _rescan(self) -> None:
        """Scan actively while a client discovers, passively while only monitors are active, else not at all."""
        if self.discovering:
            await self._set_scan("active")
        elif any(m.active for m in self.monitors.values()):
            await self._set_scan("passive")
        else:
            await self._set_scan(None)

    async def _set_scan(self, mode: str | None) -> None:
        async with self._scan_lock:
            want_active = mode == "active"
            if self._scanner is not None and (mode is None or want_active != self._scan_active):
                await self._scanner.stop()
                self._scanner = None
            if mode is not None and self._scanner is None:
                self._scanner = BleakScanner(
                    self._on_advert,
                    scanning_mode="active" if want_active else "passive",
                    backend=self._scanner_backend,
                )
                self._scan_active = want_active
                await self._scanner.start()

    def _on_advert(self, device: BLEDevice, adv: AdvertisementData) -> None:
        raw = adv.platform_data[0] if adv.platform_data else None
        structures = list(raw.data.ad_structures) if isinstance(raw, Advertisement) else []
        random = isinstance(raw, Advertisement) and raw.address.is_random
        monitors = [m for m in self.monitors.values() if m.active and any(p.matches(structures) for p in m.patterns)]
        wanted = not self.discovery_uuids or bool(self.discovery_uuids & {u.lower() for u in adv.service_uuids})
        if not ((self.discovering and wanted) or monitors):
            return
        identity = device.address.upper()
        bonded = identity in self.devices and self.devices[identity].paired
        # Without a bond bluetoothd cannot resolve a private address: each one is a device of its own.
        address = identity if bonded else self.private_addresses.get(identity, identity)
        known = self.devices.get(address)
        if known is None:
            known = self.devices[address] = Device1(self, address, identity, random or address != identity)
            known.learn(adv)
            self.bus.export(known.path, known)
        else:
            changed = known.learn(adv)
            known.emit_properties_changed(changed)
        for monitor in monitors:
            if address not in monitor.found:
                monitor.found.add(address)
                self._spawn(self._call_monitor(monitor.owner, monitor.path, "DeviceFound", [known.path]), "bluez.found")
        self.changed.set()

    async def remove_device(self, path: str) -> None:
        device = next((d for d in self.devices.values() if d.path == path), None)
        if device is None:
            raise DBusError("org.bluez.Error.DoesNotExist", "Does Not Exist")
        self.calls.append(f"RemoveDevice {device.address}")
        await self.disconnect(device)
        if device.paired:
            # bluetoothd deletes the bond with the device (its keys under /var/lib/bluetooth): the next Pair pairs
            # afresh, asking the agent again.
            with contextlib.suppress(BleakDeviceNotFoundError):
                await BleakClient(device.identity, backend=self._client_backend).unpair()
        del self.devices[device.address]
        self.bus.unexport(path)

    # -- connections ------------------------------------------------------------------------------------------

    async def connect(self, device: Device1) -> None:
        self.calls.append(f"Connect {device.address}")
        if device.connected:
            raise DBusError("org.bluez.Error.AlreadyConnected", "Already Connected")
        client = BleakClient(
            BLEDevice(device.identity, device.local_name, None),
            disconnected_callback=lambda _c: self._on_link_lost(device),
            backend=self._client_backend,
        )
        try:
            await client.connect()
        except (BleakError, TimeoutError) as exc:
            raise DBusError("org.bluez.Error.Failed", f"le-connection-abort-by-local: {exc}") from exc
        device.client = client
        device.connected = True
        device.emit_properties_changed({"Connected": True})
        for service in client.services:
            service_path = f"{device.path}/service{service.handle:04x}"
            self.bus.export(service_path, GattService1(service.uuid, device.path))
            device.gatt_paths.append(service_path)
            for char in service.characteristics:
                char_path = f"{service_path}/char{char.handle:04x}"
                self.bus.export(char_path, GattCharacteristic1(client, char, service_path))
                device.gatt_paths.append(char_path)
                for desc in char.descriptors:
                    desc_path = f"{char_path}/desc{desc.handle:04x}"
                    self.bus.export(desc_path, GattDescriptor1(desc.uuid, char_path))
                    device.gatt_paths.append(desc_path)
        device.services_resolved = True
        device.emit_properties_changed({"ServicesResolved": True})

    async def disconnect(self, device: Device1) -> None:
        self.calls.append(f"Disconnect {device.address}")
        client = device.client
        if client is None:
            return
        with contextlib.suppress(BleakError, TimeoutError):
            await client.disconnect()
        self._on_link_lost(device)

    def _on_link_lost(self, device: Device1) -> None:
        if device.client is None:
            return
        device.client = None
        # bluetoothd drops the attribute objects of a device it holds no bond with.
        for path in reversed(device.gatt_paths):
            self.bus.unexport(path)
        device.gatt_paths.clear()
        device.connected = device.services_resolved = False
        device.emit_properties_changed({"ServicesResolved": False, "Connected": False})
        self.changed.set()

    async def pair(self, device: Device1) -> None:
        self.calls.append(f"Pair {device.address}")
        if device.paired:
            raise DBusError("org.bluez.Error.AlreadyExists", "Already Exists")
        if device.client is None:
            await self.connect(device)
        assert device.client is not None
        self._agent_refusal = None
        try:
            await device.client.pair()
        except (BleakError, TimeoutError) as exc:
            if self._agent_refusal == "org.bluez.Error.Canceled":
                raise DBusError("org.bluez.Error.AuthenticationCanceled", "Authentication Canceled") from exc
            if self._agent_refusal is not None:
                raise DBusError("org.bluez.Error.AuthenticationRejected", "Authentication Rejected") from exc
            raise DBusError("org.bluez.Error.AuthenticationFailed", f"Authentication Failed: {exc}") from exc
        device.paired = True
        changed: dict[str, Any] = {"Paired": True, "Bonded": True}
        if device.address != device.identity:
            # The bond brought the peer's identity address and IRK: bluetoothd reports the identity from now on, on
            # the same object, in the same PropertiesChanged as Paired, before Pair returns (bleak relies on it).
            del self.devices[device.address]
            device.address = device.identity
            self.devices[device.identity] = device
            changed["Address"] = device.identity
        device.emit_properties_changed(changed)
        self.changed.set()

    def use_private_address(self, identity: str, address: str) -> None:
        """From now on the device `identity` advertises under the resolvable private address `address` (bluetoothd
        resolves it to the identity once it holds the bond)."""
        first = int(address[:2], 16)
        if first >> 6 != 0b01:
            raise ValueError(f"{address} is not a resolvable private address (its top bits must be 01)")
        self.private_addresses[identity.upper()] = address.upper()
