"""bleak client backend over bumble: connect, bond, discover, read, write, subscribe on the simulated radio."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bumble import core, smp
from bumble.device import Connection
from bumble.gatt_client import CharacteristicProxy, ServiceProxy
from bumble.keys import PairingKeys

from sim.ble.central import Central, get_central
from sim.ble.config import LinkSpec, current_settings
from sim.ble.errors import classify, translated
from sim.ble.scanner import bleak_uuid

__all__ = ["BumbleClient", "PairingFailedError"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# The ATT MTU the hub asks for (the largest LE allows, Core v5.4 Vol 3 Part F 3.2.8); the peer may grant less.
_PREFERRED_MTU = 517
_CCCD = "00002902-0000-1000-8000-00805f9b34fb"


class PairingFailedError(BleakError):
    """The peer (or the hub's own side) ended pairing with an SMP *Pairing Failed* reason (Core v5.4 Vol 3 Part H
    3.5.5): e.g. ``CONFIRM_VALUE_FAILED`` for a mistyped passkey, ``PASSKEY_ENTRY_FAILED`` when none was typed,
    ``AUTHENTICATION_REQUIREMENTS`` when the meter wants MITM protection the hub could not give. The message starts
    with ``pair <address>:``, as every pairing failure of this backend does.

    Attributes:
        reason: the SMP reason's name.
        code: its number.
    """

    def __init__(self, address: str, reason: str, code: int) -> None:
        super().__init__(f"pair {address}: pairing failed, SMP {reason} (0x{code:02X})")
        self.reason = reason
        self.code = code


class _PairingFailureRaised(logging.Filter):
    """bumble's SMP logs every pairing failure as a warning; this backend raises it (:class:`PairingFailedError`),
    so the log line would only repeat it, and a command's one-line error would get a second line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("pairing failure")


logging.getLogger("bumble.smp").addFilter(_PairingFailureRaised())


def _drop_subscriber(client: Any, proxy: CharacteristicProxy[bytes], deliver: Callable[[bytes], None]) -> None:
    """Undo what bumble's ``subscribe`` registered before its CCCD write failed (it keeps the subscriber, so a
    subscription tried again after pairing would deliver every value twice), without writing the CCCD again."""
    for table in (client.notification_subscribers, client.indication_subscribers):
        subscribers = table.get(proxy.handle)
        if subscribers is None:
            continue
        subscribers.discard(deliver)
        if subscribers <= {proxy}:
            del table[proxy.handle]


def _properties(flags: int) -> list[CharacteristicPropertyName]:
    return [name for bit, name in CHARACTERISTIC_PROPERTIES.items() if bit <= 0x80 and flags & bit]


class BumbleClient(BaseBleakClient):
    """``BleakClient(device, backend=BumbleClient)`` on the link from :func:`sim.ble.configure`.

    On connect the client re-encrypts with stored bond keys when it has them (as BlueZ does), or pairs first when
    bleak's ``pair=True`` was given; then it exchanges the MTU and discovers services.
    """

    link: ClassVar[LinkSpec | None] = None

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, **kwargs)
        self._device_name = address_or_ble_device.name if isinstance(address_or_ble_device, BLEDevice) else None
        self._link = type(self).link or current_settings().link
        self._service_filter = services
        self._central: Central | None = None
        self._connection: Connection | None = None
        self._disconnecting = False
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}
        self._disconnected = asyncio.Event()

    # Connection state

    @property
    def name(self) -> str:
        """The peer's name as scanned, else its address."""
        return self._device_name or self.address

    @property
    def mtu_size(self) -> int:
        """The negotiated ATT MTU (23 before the exchange)."""
        if self._connection is None:
            return 23
        mtu: int = self._connection.att_mtu
        return mtu

    @property
    def is_connected(self) -> bool:
        """True between a successful ``connect`` and the link going down."""
        return self._connection is not None

    async def _call(self, awaitable: Awaitable[_T], operation: str) -> _T:
        return await translated(awaitable, address=self.address, operation=operation)

    def _require(self) -> Connection:
        if self._connection is None:
            raise BleakError(f"{self.address}: not connected")
        return self._connection

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect, re-encrypt or pair, exchange MTU, discover services; all within bleak's ``timeout``.

        Raises:
            BleakDeviceNotFoundError: nothing with this address advertised within the timeout.
            BleakError: any later step failed (the link is then closed again).
        """
        if self._connection is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        self._central = central = await get_central(self._link)
        peer = central.peer_address(self.address)
        try:
            connection = await central.connect(peer, give_up_after=self._timeout)
        except (core.TimeoutError, TimeoutError) as error:
            raise BleakDeviceNotFoundError(
                self.address, f"{self.address} was not found on {self._link} within {self._timeout} s"
            ) from error
        except (core.BaseBumbleError, asyncio.CancelledError) as error:
            task = asyncio.current_task()
            if isinstance(error, asyncio.CancelledError) and task is not None and task.cancelling():
                raise
            raise classify(error, address=self.address, operation="connect") from error
        self._connection = connection
        self._disconnected = asyncio.Event()
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            async with asyncio.timeout_at(deadline):
                if await self._bond_keys(connection) is not None:
                    await self._call(connection.encrypt(), "encrypt")
                elif pair:
                    await self._call(connection.pair(), "pair")
                await self._call(connection.gatt_client.request_mtu(_PREFERRED_MTU), "exchange MTU")
                self.services = await self._discover(connection)
        except BaseException:
            await self._teardown()
            raise
        self._follow_identity(connection)

    def _follow_identity(self, connection: Connection) -> None:
        """Name the peer by its identity address once the stack resolved its private address (with a bond's IRK, or
        the one it distributed while pairing), as bleak's BlueZ backend follows bluetoothd's ``Address`` change."""
        if connection.peer_resolvable_address is not None:
            self.address = str(connection.peer_address.to_string(False)).upper()

    async def _bond_keys(self, connection: Connection) -> PairingKeys | None:
        keystore = connection.device.keystore
        if keystore is None:
            return None
        keys: PairingKeys | None = await keystore.get(str(connection.peer_address))
        return keys if keys is not None and (keys.ltk is not None or keys.ltk_central is not None) else None

    async def _teardown(self) -> None:
        connection = self._connection
        if connection is None or self._disconnected.is_set():
            return
        self._disconnecting = True
        try:
            await self._call(connection.disconnect(), "disconnect")
        except BleakError as error:
            logger.info("%s: disconnect during teardown failed: %s", self.address, error)
        finally:
            self._forget()

    def _forget(self) -> None:
        self._connection = None
        self._subscriptions.clear()
        self._disconnected.set()

    def _on_disconnection(self, reason: int) -> None:
        solicited = self._disconnecting
        self._disconnecting = False
        self._forget()
        logger.info("%s disconnected (reason 0x%02X)", self.address, reason)
        if not solicited and self._disconnected_callback is not None:
            asyncio.get_running_loop().call_soon(self._disconnected_callback)

    async def disconnect(self) -> None:
        """Disconnect and wait until the link is down (no-op when not connected)."""
        if self._connection is None:
            return
        await self._teardown()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Pair with LE Secure Connections and bond; a no-op when already bonded and encrypted. What the hub's side
        answers (a passkey, a yes) is the hub central's pairing delegate (`sim.ble.world.answer_pairing_with`).

        Raises:
            PairingFailedError: the pairing ended with an SMP reason (a wrong or missing passkey among them).
            BleakError: the link failed meanwhile.
        """
        connection = self._require()
        if connection.is_encrypted and await self._bond_keys(connection) is not None:
            return
        try:
            await self._call(connection.pair(), "pair")
        except BleakError as error:
            cause = error.__cause__
            if (
                isinstance(cause, core.ProtocolError)
                and cause.error_namespace == "smp"
                and cause.error_code is not None
            ):
                raise PairingFailedError(self.address, cause.error_name, cause.error_code) from cause
            raise
        self._follow_identity(connection)

    async def unpair(self) -> None:
        """Forget the bond keys (the peer keeps its own) and disconnect.

        Bonds are kept under the peer's identity address; a resolvable private address is resolved with the bonds'
        IRKs, so the bond of a meter given at the private address it advertises now is found too.

        Raises:
            BleakDeviceNotFoundError: the hub holds no bond with the peer.
        """
        central = self._central or await get_central(self._link)
        keystore = central.device.keystore
        if self._connection is not None:
            await self._teardown()
        if keystore is None:
            return
        peer = central.peer_address(self.address)
        name = str(peer)
        if await keystore.get(name) is None:
            identity = smp.AddressResolver(await keystore.get_resolving_keys()).resolve(peer)
            if identity is None or await keystore.get(str(identity)) is None:
                raise BleakDeviceNotFoundError(self.address, f"{self.address} is not bonded")
            name = str(identity)
        await keystore.delete(name)

    # Services

    async def _discover(self, connection: Connection) -> BleakGATTServiceCollection:
        client = connection.gatt_client
        uuids = [core.UUID(u) for u in self._service_filter] if self._service_filter else []
        proxies: list[ServiceProxy] = await self._call(client.discover_services(uuids), "discover services")
        collection = BleakGATTServiceCollection()
        for service_proxy in proxies:
            service = BleakGATTService(service_proxy, service_proxy.handle, bleak_uuid(service_proxy.uuid))
            collection.add_service(service)
            characteristics: list[CharacteristicProxy[bytes]] = await self._call(
                client.discover_characteristics(uuids=(), service=service_proxy), "discover characteristics"
            )
            for proxy in characteristics:
                characteristic = BleakGATTCharacteristic(
                    proxy,
                    proxy.handle,
                    bleak_uuid(proxy.uuid),
                    _properties(int(proxy.properties)),
                    lambda: self.mtu_size - 3,
                    service,
                )
                collection.add_characteristic(characteristic)
                descriptors = await self._call(client.discover_descriptors(proxy), "discover descriptors")
                for descriptor in descriptors:
                    collection.add_descriptor(
                        BleakGATTDescriptor(descriptor, descriptor.handle, bleak_uuid(descriptor.type), characteristic)
                    )
        return collection

    # I/O

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        """Read a characteristic value (long values with Read Blob)."""
        return await self._read(characteristic.handle, use_cached)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        """Read a descriptor value."""
        return await self._read(descriptor.handle, use_cached)

    async def _read(self, handle: int, use_cached: bool) -> bytearray:
        client = self._require().gatt_client
        if use_cached and (cached := client.cached_values.get(handle)) is not None:
            return bytearray(cached[1])
        value: bytes = await self._call(client.read_value(handle), f"read 0x{handle:04X}")
        return bytearray(value)

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        """Write Request (``response=True``) or Write Command."""
        client = self._require().gatt_client
        await self._call(
            client.write_value(characteristic.handle, bytes(data), with_response=response),
            f"write 0x{characteristic.handle:04X}",
        )

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        """Write a descriptor (always with response)."""
        client = self._require().gatt_client
        await self._call(
            client.write_value(descriptor.handle, bytes(data), with_response=True),
            f"write descriptor 0x{descriptor.handle:04X}",
        )

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        """Enable notifications (preferred) or indications; ``callback`` gets each value as a ``bytearray``."""
        connection = self._require()
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        if characteristic.handle in self._subscriptions:
            raise BleakError(f"{self.address}: already subscribed to {characteristic.uuid}")
        if characteristic.get_descriptor(_CCCD) is None:
            raise BleakError(f"{self.address}: {characteristic.uuid} has no CCCD, so it cannot notify or indicate")

        def deliver(value: bytes) -> None:
            callback(bytearray(value))

        self._subscriptions[characteristic.handle] = deliver
        try:
            await self._call(
                connection.gatt_client.subscribe(proxy, deliver, prefer_notify=True),
                f"subscribe 0x{characteristic.handle:04X}",
            )
        except BaseException:
            self._subscriptions.pop(characteristic.handle, None)
            _drop_subscriber(connection.gatt_client, proxy, deliver)
            raise

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Disable notifications/indications and drop the callback."""
        connection = self._require()
        deliver = self._subscriptions.pop(characteristic.handle, None)
        if deliver is None:
            return
        await self._call(
            connection.gatt_client.unsubscribe(characteristic.obj, deliver),
            f"unsubscribe 0x{characteristic.handle:04X}",
        )
