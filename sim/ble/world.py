"""Attach bumble devices to a simulated radio link (in-process ``LocalLink`` or the cross-process relay).

This is the seam both sides use:

- the hub's central (:mod:`sim.ble.central`) opens one device per process per link;
- virtual meters open theirs with :func:`open_peripheral_device` and add GATT services to it.

Leaving the context of :func:`open_device` is "the device vanished from the air": every link it had is terminated
(peers see a disconnection with reason *connection timeout*, as after a supervision timeout) and its advertising
stops.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

from bumble import hci, ll
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device, DeviceConfiguration
from bumble.host import Host
from bumble.keys import JsonKeyStore, MemoryKeyStore
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

from gateway.ble_passkey import PasskeySource
from sim.ble.config import LinkKind, LinkSpec, normalize_address, parse_link
from sim.ble.errors import RelayError
from sim.ble.keystore import DurableJsonKeyStore

__all__ = [
    "DEFAULT_ADVERTISING_INTERVAL_MS",
    "HubPairingDelegate",
    "SimController",
    "advertising_data",
    "answer_pairing_with",
    "drop_controller",
    "local_link",
    "open_device",
    "open_peripheral_device",
]

# Real meters advertise every 100 ms to 1 s; the simulation defaults to the fast end so scans and connects (which
# wait for the next advertisement) stay quick in tests. Peripheral authors can pass their own interval.
DEFAULT_ADVERTISING_INTERVAL_MS = 50.0

# What a peer sees when the other side disappears without a word (Core v5.4, Vol 1, Part F, 2: 0x08).
_CONNECTION_TIMEOUT = hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR

_local_links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, LocalLink]] = weakref.WeakKeyDictionary()


def local_link(name: str) -> LocalLink:
    """The process's ``LocalLink`` called ``name`` on the running event loop (created on first use)."""
    links = _local_links.setdefault(asyncio.get_running_loop(), {})
    link = links.get(name)
    if link is None:
        link = links[name] = LocalLink()  # type: ignore[no-untyped-call]  # bumble leaves __init__ unannotated
    return link


class SimController(Controller):
    """bumble's virtual controller, with ``LE Create Connection Cancel`` done as the spec says.

    bumble 0.0.236 acknowledges the cancel but keeps the connection pending and never reports the outcome, so a
    host whose connect times out waits forever and the abandoned attempt may still connect later. Here the cancel
    clears the pending attempt and reports an ``LE Connection Complete`` with status *Unknown Connection
    Identifier* (Core v5.4, Vol 4, Part E, 7.8.13).
    """

    def on_hci_le_create_connection_cancel_command(
        self, _command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        """Cancel the pending connection attempt, if any, and report it as failed."""
        if self.pending_le_connection is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        pending = self.pending_le_connection
        self.pending_le_connection = None
        result = hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)
        # The Command Complete goes out first; the Connection Complete follows it (call_soon keeps the order).
        asyncio.get_running_loop().call_soon(
            self.send_hci_packet,
            hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=pending.peer_address_type,
                peer_address=pending.peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            ),
        )
        return result


def drop_controller(controller: Controller, reason: int = _CONNECTION_TIMEOUT) -> None:
    """Take a virtual controller off the air: stop advertising and scanning, terminate its links.

    Peers get ``LL_TERMINATE_IND`` (so their hosts see a disconnection); the controller's own host, if still
    attached, sees the disconnection too. Idempotent.
    """
    controller.le_legacy_advertiser.stop()
    for advertising_set in controller.advertising_sets.values():
        advertising_set.stop()
    controller.le_scan_enable = False
    controller.pending_le_connection = None
    link = controller.link
    for connection in list(controller.le_connections.values()):
        if link is not None and link.find_le_controller(connection.peer_address) is not None:
            connection.send_ll_control_pdu(ll.TerminateInd(reason))
        controller.on_le_disconnected(connection, reason)
    if link is not None and controller in link.controllers:
        link.remove_controller(controller)


def _irk_for(address: str) -> bytes:
    # A stable identity resolving key per address (simulation only; a real device draws it at random once).
    return (bytes.fromhex(address.replace(":", "")) * 3)[:16]


@asynccontextmanager
async def open_device(
    link: str | LinkSpec,
    address: str,
    name: str,
    *,
    keystore: str | Path | None = None,
    io_capability: PairingDelegate.IoCapability = PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT,
    advertising_interval_ms: float = DEFAULT_ADVERTISING_INTERVAL_MS,
) -> AsyncIterator[Device]:
    """Open a powered-on bumble ``Device`` with a static random ``address`` on ``link``.

    Args:
        link: ``local[:name]`` or ``tcp:host:port`` (see :mod:`sim.ble.config`).
        address: static random address, ``AA:BB:CC:DD:EE:FF`` (top two bits set, e.g. ``C0:…`` or ``F0:…``).
        name: the GAP device name.
        keystore: JSON file for bond keys (bonds survive a restart); ``None`` keeps them in memory.
        io_capability: SMP IO capability; the default gives LE Secure Connections "Just Works".
        advertising_interval_ms: used when the device advertises.

    Raises:
        RelayError: a ``tcp:`` link whose relay is not reachable.
    """
    spec = parse_link(link)
    address = normalize_address(address)
    config = DeviceConfiguration(
        name=name,
        address=hci.Address(address, hci.Address.RANDOM_DEVICE_ADDRESS),
        irk=_irk_for(address),
        io_capability=io_capability,
        advertising_interval_min=advertising_interval_ms,
        advertising_interval_max=advertising_interval_ms,
    )
    if spec.kind is LinkKind.LOCAL:
        controller = SimController(f"{name}@{spec}", link=local_link(spec.name))
        device = Device(config=config, host=Host(controller, AsyncPipeSink(controller)))
        try:
            device.keystore = _keystore(address, keystore)
            await device.power_on()
            yield device
        finally:
            drop_controller(controller)
        return

    try:
        transport = await open_transport(f"tcp-client:{spec.host}:{spec.port}")
    except OSError as error:
        raise RelayError(f"cannot reach the BLE relay at {spec}: {error}") from error
    try:
        device = Device.from_config_with_hci(config, transport.source, transport.sink)
        device.keystore = _keystore(address, keystore)
        await device.power_on()
        yield device
    finally:
        await transport.close()


def _keystore(address: str, path: str | Path | None) -> JsonKeyStore | MemoryKeyStore:
    if path is None:
        return MemoryKeyStore()
    return DurableJsonKeyStore(namespace=address, filename=str(path))


@asynccontextmanager
async def open_peripheral_device(
    link: str | LinkSpec,
    address: str,
    name: str,
    *,
    keystore: str | Path | None = None,
    io_capability: PairingDelegate.IoCapability = PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT,
    advertising_interval_ms: float = DEFAULT_ADVERTISING_INTERVAL_MS,
) -> AsyncIterator[Device]:
    """A device for a virtual meter: add services, then ``await device.start_advertising(...)``.

    Same arguments as :func:`open_device`. A typical peripheral::

        async with open_peripheral_device("local:home1", "F0:00:00:00:00:01", "BP meter") as device:
            device.add_service(my_service)
            await device.start_advertising(
                advertising_data=advertising_data(name="BP meter", service_uuids=["1810"]),
                auto_restart=True,  # advertise again after each disconnection, like a real meter
            )
            ...  # run the meter; leaving the block takes it off the air
    """
    async with open_device(
        link,
        address,
        name,
        keystore=keystore,
        io_capability=io_capability,
        advertising_interval_ms=advertising_interval_ms,
    ) as device:
        yield device


def advertising_data(
    *,
    name: str | None = None,
    service_uuids: Iterable[str] = (),
    manufacturer_data: Mapping[int, bytes] | None = None,
    service_data: Mapping[str, bytes] | None = None,
    tx_power: int | None = None,
) -> bytes:
    """Encode advertising data (flags: LE General Discoverable, BR/EDR not supported).

    UUIDs are given as bumble accepts them: ``"180F"`` or a full 128-bit string.
    """
    structures: list[tuple[int, bytes]] = [(AdvertisingData.FLAGS, bytes([0x06]))]
    if name is not None:
        structures.append((AdvertisingData.COMPLETE_LOCAL_NAME, name.encode()))
    uuids = [UUID(u) for u in service_uuids]
    for size, list_type in (
        (2, AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS),
        (4, AdvertisingData.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS),
        (16, AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS),
    ):
        same_size = [u.to_bytes() for u in uuids if len(u.to_bytes()) == size]
        if same_size:
            structures.append((list_type, b"".join(same_size)))
    for company, payload in (manufacturer_data or {}).items():
        structures.append((AdvertisingData.MANUFACTURER_SPECIFIC_DATA, company.to_bytes(2, "little") + payload))
    for uuid_text, payload in (service_data or {}).items():
        uuid_bytes = UUID(uuid_text).to_bytes()
        ad_type = {
            2: AdvertisingData.SERVICE_DATA_16_BIT_UUID,
            4: AdvertisingData.SERVICE_DATA_32_BIT_UUID,
            16: AdvertisingData.SERVICE_DATA_128_BIT_UUID,
        }[len(uuid_bytes)]
        structures.append((ad_type, uuid_bytes + payload))
    if tx_power is not None:
        structures.append((AdvertisingData.TX_POWER_LEVEL, tx_power.to_bytes(1, "little", signed=True)))
    return bytes(AdvertisingData(structures))


class _Desk(PasskeySource, Protocol):
    """What the hub's side of pairing consults (`gateway.ble_passkey.PasskeyDesk`): passkeys and yes/no answers."""

    def confirm(self, address: str) -> bool:
        """Yes or no to a numeric comparison the hub cannot display."""
        ...

    def trusts(self, address: str) -> bool:
        """Whether a Just Works pairing with `address` may go ahead."""
        ...


class HubPairingDelegate(PairingDelegate):
    """The hub's side of SMP on the simulated radio, answering as the hub's BlueZ agent does (`gateway.ble_agent`):
    KeyboardDisplay, the passkey a meter shows from the desk (none: the pairing fails with *passkey entry failed*),
    numeric comparison and Just Works only for a device the desk trusts."""

    def __init__(self, desk: _Desk, connection: Connection) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_KEYBOARD_INPUT)
        self._desk = desk
        self._connection = connection

    def _address(self) -> str:
        return str(self._connection.peer_address.to_string(False)).upper()

    async def get_number(self) -> int | None:
        """The passkey the meter shows, or None to refuse."""
        return await self._desk.passkey_for(self._address())

    async def compare_numbers(self, number: int, digits: int) -> bool:
        """Numeric comparison: yes for a trusted device (the hub has no display to compare on)."""
        del number, digits
        return self._desk.confirm(self._address())

    async def confirm(self, auto: bool = False) -> bool:
        """Just Works: yes for a trusted device."""
        del auto
        return self._desk.trusts(self._address())


def answer_pairing_with(device: Device, desk: _Desk) -> None:
    """Make the hub's bumble `device` pair as the hub's BlueZ agent does, asking `desk` (LE Secure Connections,
    bonding, MITM protection asked for where the meter can give it)."""
    device.pairing_config_factory = lambda connection: PairingConfig(
        sc=True, mitm=True, bonding=True, delegate=HubPairingDelegate(desk, connection)
    )
