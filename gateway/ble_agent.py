"""The hub's BlueZ pairing agent: ``org.bluez.Agent1`` on the system bus, answering from a :class:`PasskeyDesk`.

bluetoothd asks the default agent whatever a pairing's method needs (bluez ``doc/org.bluez.Agent.rst``): the passkey
a display-only meter shows (``RequestPasskey``), a yes for numeric comparison (``RequestConfirmation``) or for a
Just Works pairing the peer started (``RequestAuthorization``). Without an agent bluetoothd pairs as NoInputNoOutput,
so a meter that shows a PIN can never bond. The agent registers with ``AgentManager1`` as ``KeyboardDisplay`` (the
installer types on the hub's behalf) and asks to be the default agent; it runs on the hub daemon (which has nobody
to type a PIN, so such requests are refused with ``org.bluez.Error.Rejected``) and during ``carehub provision
pair`` and the installer page (the PIN the installer gives).

The agent talks to bluetoothd on its own D-Bus connection (bleak keeps its own); the system bus is the one named by
``DBUS_SYSTEM_BUS_ADDRESS``, as for bleak.
"""

# No `from __future__ import annotations`: dbus-fast reads the D-Bus signatures from the live annotations.
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusStr, DBusUInt16, DBusUInt32
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method

from gateway.ble_passkey import PasskeyDesk

__all__ = ["AGENT_PATH", "CAPABILITY", "AgentRegistrationError", "BluezAgent", "address_of", "bluez_agent"]

_log = logging.getLogger(__name__)

AGENT_PATH: Final = "/org/carehub/agent"
#: The installer can type what the meter shows and read what the hub would show (logged, and on the page).
CAPABILITY: Final = "KeyboardDisplay"
_REJECTED: Final = "org.bluez.Error.Rejected"
_CANCELED: Final = "org.bluez.Error.Canceled"


class AgentRegistrationError(RuntimeError):
    """bluetoothd did not take the agent (no AgentManager1, or it refused).

    Attributes:
        dbus_error: the D-Bus error name of the refusal (e.g. ``org.freedesktop.DBus.Error.ServiceUnknown`` when
            bluetoothd is not running), or None when there was no reply.
    """

    def __init__(self, message: str, dbus_error: str | None = None) -> None:
        super().__init__(message)
        self.dbus_error = dbus_error


def address_of(device: str) -> str:
    """The Bluetooth address in a BlueZ device object path (``/org/bluez/hci0/dev_C0_00_00_00_00_01``)."""
    last = device.rsplit("/", 1)[-1]
    if not last.startswith("dev_"):
        return device
    return last.removeprefix("dev_").replace("_", ":").upper()


class BluezAgent(ServiceInterface):
    """``org.bluez.Agent1`` answering from `desk`; what it was asked is kept in :attr:`requests` (oldest first), how
    often bluetoothd took it in :attr:`registrations`."""

    def __init__(self, desk: PasskeyDesk) -> None:
        super().__init__("org.bluez.Agent1")
        self._desk = desk
        self.requests: list[str] = []
        self.registrations = 0  # with bluetoothd: once, and again after each restart of it
        self.registered = asyncio.Event()  # set at each registration

    @dbus_method()
    def Release(self) -> None:  # noqa: N802  (D-Bus member names)
        """bluetoothd no longer uses the agent (it is shutting down, or another agent replaced it)."""
        self.requests.append("Release")
        _log.info("bluetoothd released the pairing agent")

    @dbus_method()
    async def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:  # noqa: N802
        """The passkey the meter shows, from the pairing in progress; Rejected when there is none."""
        address = address_of(device)
        self.requests.append(f"RequestPasskey {address}")
        passkey = await self._desk.passkey_for(address)
        if passkey is None:
            raise DBusError(_REJECTED, f"no passkey for {address}: pair it with `carehub provision pair`")
        return passkey

    @dbus_method()
    def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:  # noqa: N802
        """Legacy BR/EDR PIN codes: the kit is LE only."""
        self.requests.append(f"RequestPinCode {address_of(device)}")
        raise DBusError(_REJECTED, "the hub pairs LE devices only")

    @dbus_method()
    def DisplayPinCode(self, device: DBusObjectPath, pincode: DBusStr) -> None:  # noqa: N802
        """Legacy BR/EDR: refused, as RequestPinCode."""
        del pincode
        self.requests.append(f"DisplayPinCode {address_of(device)}")
        raise DBusError(_REJECTED, "the hub pairs LE devices only")

    @dbus_method()
    def DisplayPasskey(self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16) -> None:  # noqa: N802
        """A meter with a keyboard types what the hub shows: logged for the installer."""
        address = address_of(device)
        self.requests.append(f"DisplayPasskey {address}")
        _log.warning("type %06d on %s (%d digits typed so far)", passkey, address, entered)

    @dbus_method()
    def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> None:  # noqa: N802
        """Numeric comparison: yes for a device the hub is pairing or keeps, Rejected otherwise."""
        address = address_of(device)
        self.requests.append(f"RequestConfirmation {address}")
        if not self._desk.confirm(address):
            raise DBusError(_REJECTED, f"{address} is not being paired")
        _log.info("confirmed %06d for %s", passkey, address)

    @dbus_method()
    def RequestAuthorization(self, device: DBusObjectPath) -> None:  # noqa: N802
        """A Just Works pairing the peer started: yes for a device the hub is pairing or keeps."""
        address = address_of(device)
        self.requests.append(f"RequestAuthorization {address}")
        if not self._desk.confirm(address):
            raise DBusError(_REJECTED, f"{address} is not being paired")

    @dbus_method()
    def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> None:  # noqa: N802
        """A bonded peer using a service of the hub's (BR/EDR profiles): yes for a device the hub keeps."""
        address = address_of(device)
        self.requests.append(f"AuthorizeService {address} {uuid}")
        if not self._desk.trusts(address):
            raise DBusError(_REJECTED, f"{address} is not one of the hub's devices")

    @dbus_method()
    def Cancel(self) -> None:  # noqa: N802
        """bluetoothd gave up the request in progress (the meter left, or timed out)."""
        self.requests.append("Cancel")
        _log.info("bluetoothd cancelled a pairing request")


async def _call(bus: MessageBus, member: str, signature: str, body: list[object]) -> Message:
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
    if reply is None:
        raise AgentRegistrationError(f"AgentManager1.{member}: no reply")
    return reply


def _check(reply: Message, member: str) -> None:
    if reply.message_type is MessageType.ERROR:
        detail = reply.body[0] if reply.body else ""
        raise AgentRegistrationError(
            f"AgentManager1.{member} refused: {reply.error_name} {detail}".strip(), reply.error_name
        )


async def _register(bus: MessageBus) -> None:
    _check(await _call(bus, "RegisterAgent", "os", [AGENT_PATH, CAPABILITY]), "RegisterAgent")
    _check(await _call(bus, "RequestDefaultAgent", "o", [AGENT_PATH]), "RequestDefaultAgent")


# bluetoothd taking (or retaking) its name on the bus: a restarted bluetoothd has forgotten every agent.
_BLUEZ_OWNER_RULE: Final = (
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    "member='NameOwnerChanged',arg0='org.bluez'"
)


@contextlib.asynccontextmanager
async def bluez_agent(desk: PasskeyDesk, *, bus_address: str | None = None) -> AsyncIterator[BluezAgent]:
    """Export the agent, register it with bluetoothd as ``KeyboardDisplay`` and make it the default agent; undone
    on exit. A bluetoothd that restarts meanwhile (it forgets its agents) is given the agent again.

    Raises:
        AgentRegistrationError: bluetoothd did not take it.
        OSError, dbus_fast.errors.AuthError: no system bus to talk to.
    """
    bus = MessageBus(bus_address=bus_address) if bus_address else MessageBus(bus_type=BusType.SYSTEM)
    await bus.connect()
    agent = BluezAgent(desk)
    again: set[asyncio.Task[None]] = set()

    async def register_again() -> None:
        try:
            await _register(bus)
        except AgentRegistrationError as exc:
            _log.error("the restarted bluetoothd did not take the pairing agent: %s", exc)
            return
        agent.registrations += 1
        agent.registered.set()
        _log.info("BlueZ pairing agent registered again with the restarted bluetoothd")

    def on_message(msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged":
            name, _old, new = msg.body
            if name == "org.bluez" and new:
                task = asyncio.get_running_loop().create_task(register_again(), name="ble.agent.register")
                again.add(task)
                task.add_done_callback(again.discard)

    try:
        bus.export(AGENT_PATH, agent)
        await _register(bus)
        agent.registrations = 1
        agent.registered.set()
        try:
            bus.add_message_handler(on_message)
            match = await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="AddMatch",
                    signature="s",
                    body=[_BLUEZ_OWNER_RULE],
                )
            )
            if match is None or match.message_type is MessageType.ERROR:
                _log.warning("cannot follow bluetoothd restarts; the agent is lost if it restarts")
            _log.info("BlueZ pairing agent registered (%s)", CAPABILITY)
            yield agent
        finally:
            bus.remove_message_handler(on_message)
            for task in list(again):
                task.cancel()
            if bus.connected:
                reply = await _call(bus, "UnregisterAgent", "o", [AGENT_PATH])
                if reply.message_type is MessageType.ERROR:
                    _log.info("UnregisterAgent: %s", reply.error_name)
    finally:
        bus.disconnect()
