"""What every simulated meter shares: GATT plumbing, advertising habits, clock, battery, memory, bonding.

A :class:`SimDevice` is attached to a bumble :class:`~bumble.device.Device` (on a local or relayed link) with
``async with meter.attach(bumble_device):``. It then behaves like the real product:

* it sleeps (does not advertise) until a measurement is taken, then advertises, connectable, with its service UUID
  and local name for ``advertise_seconds`` of its clock, and goes back to sleep when nobody connected;
* it keeps measurements taken while no hub was subscribed in a bounded memory (oldest overwritten) and indicates
  them once a hub subscribes, dropping each only after the ATT layer confirmed the indication;
* its clock drifts by ``clock_drift_ppm`` and resets to ``default_clock`` when the battery is changed;
* its battery runs down per measurement and per day;
* bonded products refuse unencrypted access and, when ``max_bonds`` is set, pairing with further centrals.

Device Information (0x180A), Battery (0x180F) and Current Time (0x1805) services are part of every device.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import ClassVar

from bumble import att, gatt
from bumble.core import UUID
from bumble.device import Connection, Device
from bumble.pairing import PairingConfig, PairingDelegate

from gateway.aio import raise_if_cancelling
from protocols.datetime_ import DateTime
from protocols.gatt.common import BatteryLevel, CurrentTime
from sim.ble.world import advertising_data
from sim.clock import Clock
from sim.devices.options import DEFAULT_CLOCK, DeviceOptions

_log = logging.getLogger(__name__)

MeasureField = tuple[str | tuple[str, ...], bool]
"""A ``measure`` value's type ("number", "bool" or the allowed words) and whether a scenario must give it."""


#: ATT error codes used by the health profiles (GLS 1.0 §2.6 / common profile CSS Part B §1.2).
ATT_PROCEDURE_ALREADY_IN_PROGRESS = 0x80
ATT_CCCD_IMPROPERLY_CONFIGURED = 0x81
ATT_OUT_OF_RANGE = 0xFF

# Properties and permissions used throughout.
P = gatt.Characteristic.Properties
READABLE = gatt.Characteristic.Permissions.READABLE
WRITEABLE = gatt.Characteristic.Permissions.WRITEABLE
READ_ENC = gatt.Characteristic.Permissions.READ_REQUIRES_ENCRYPTION
WRITE_ENC = gatt.Characteristic.Permissions.WRITE_REQUIRES_ENCRYPTION


def uuid16(value: int) -> UUID:
    """A 16-bit SIG UUID."""
    return UUID.from_16_bits(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Produced:
    """One entry of the ground-truth log: a measurement as the device produced it.

    Attributes:
        device: the scenario device id.
        kind: the device kind (``"blood_pressure"``).
        uuid: the characteristic the bytes are sent on (``"2A35"``).
        sequence: the device's running measurement number (the RACP sequence number for glucose).
        taken_at: the home's wall time when it was taken (timezone-aware).
        device_time: the device's own clock at that moment (what the bytes carry; local, no zone).
        values: the values the scenario asked for (``{"systolic": 142, ...}``).
        raw: the bytes exactly as the device sends them.
        extra: further characteristic bytes sent with it (glucose context: ``{"2A34": b"..."}``).
    """

    device: str
    kind: str
    uuid: str
    sequence: int
    taken_at: datetime
    device_time: datetime
    values: Mapping[str, float | int | str | bool]
    raw: bytes
    extra: Mapping[str, bytes] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (bytes as hex)."""
        return {
            "device": self.device,
            "kind": self.kind,
            "uuid": self.uuid,
            "sequence": self.sequence,
            "taken_at": self.taken_at.isoformat(),
            "device_time": self.device_time.isoformat(),
            "values": dict(self.values),
            "raw": self.raw.hex(),
            "extra": {k: v.hex() for k, v in self.extra.items()},
        }


class DeviceClock:
    """A device's own clock: local time without a zone, drifting by ``drift_ppm`` against the home clock."""

    def __init__(self, clock: Clock, drift_ppm: float, start: datetime) -> None:
        self._clock = clock
        self._drift = drift_ppm / 1e6
        self._base = start
        self._ref = clock.monotonic()

    def now(self) -> datetime:
        """What the device's clock reads now."""
        elapsed = self._clock.monotonic() - self._ref
        return self._base + timedelta(seconds=elapsed * (1.0 + self._drift))

    def set(self, value: datetime) -> None:
        """Set the clock (a Current Time write)."""
        self._base = value.replace(tzinfo=None)
        self._ref = self._clock.monotonic()

    def reset(self) -> None:
        """Back to the factory default, as after a battery change."""
        self.set(DEFAULT_CLOCK)


class Battery:
    """A battery level that only goes down, except when the battery is replaced."""

    def __init__(self, level: float) -> None:
        self._level = level

    @property
    def level(self) -> int:
        """The level as reported over GATT, 0..100."""
        return max(0, min(100, round(self._level)))

    def drain(self, percent: float) -> None:
        """Use ``percent`` of capacity."""
        self._level = max(0.0, self._level - percent)

    def set(self, percent: float) -> None:
        """Force a level (a scenario's ``battery_low``)."""
        self._level = max(0.0, min(100.0, percent))

    def replace(self) -> None:
        """A fresh battery."""
        self._level = 100.0


@dataclasses.dataclass(slots=True)
class _Stored:
    produced: Produced


class _Delegate(PairingDelegate):
    """Just Works pairing that refuses a new central once ``max_bonds`` centrals are bonded."""

    def __init__(self, owner: SimDevice, connection: Connection) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT)
        self._owner = owner
        self._connection = connection

    async def accept(self) -> bool:
        return self._owner.may_bond(str(self._connection.peer_address))


class SimDevice(abc.ABC):
    """Base of every simulated meter; subclasses add their profile service and measurement logic."""

    KIND: ClassVar[str] = ""
    SERVICE_UUID: ClassVar[int] = 0
    #: What a scenario's ``measure`` event may give this device (the keyword arguments of its ``measure``): value
    #: name -> (type, required); types are "number", "bool" or a tuple of allowed words.
    MEASURE_FIELDS: ClassVar[Mapping[str, MeasureField]] = MappingProxyType({})

    def __init__(
        self,
        options: DeviceOptions,
        clock: Clock,
        *,
        on_produced: Callable[[Produced], None] | None = None,
    ) -> None:
        self.options = options
        self.clock = clock
        start = options.clock_start or clock.now().replace(tzinfo=None)
        self.device_clock = DeviceClock(clock, options.clock_drift_ppm, start)
        self.battery = Battery(options.battery)
        self.produced: list[Produced] = []
        self.bonded: set[str] = set()
        self._on_produced = on_produced
        self._sequence = 0
        self._bdev: Device | None = None
        self._connection: Connection | None = None
        self._in_range = True
        self._advertising = False
        self._advertise_until = 0.0
        self._adv_kick = asyncio.Event()
        self._deliver_kick = asyncio.Event()
        self._subscriptions: dict[int, tuple[bool, bool]] = {}
        self._stored: dict[int, deque[_Stored]] = {}
        self._indicated: dict[int, gatt.Characteristic[bytes]] = {}
        self._waiters: set[asyncio.Event] = set()
        self._battery_char: gatt.Characteristic[bytes] | None = None
        self._time_char: gatt.Characteristic[bytes] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._spawned: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ public state

    @property
    def id(self) -> str:
        """The scenario device id."""
        return self.options.id

    @property
    def bumble_device(self) -> Device:
        """The bumble device this meter is attached to."""
        if self._bdev is None:
            raise RuntimeError(f"{self.id} is not attached to a link")
        return self._bdev

    @property
    def advertising(self) -> bool:
        """Whether the device is advertising right now."""
        return self._advertising

    @property
    def connected(self) -> bool:
        """Whether a central is connected."""
        return self._connection is not None

    @property
    def in_range(self) -> bool:
        """Whether the hub can hear the device."""
        return self._in_range

    def stored_count(self, characteristic_uuid: int | None = None) -> int:
        """How many measurements wait to be indicated (for one characteristic, or all)."""
        if characteristic_uuid is None:
            return sum(len(q) for q in self._stored.values())
        return len(self._stored.get(characteristic_uuid, ()))

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; re-checked whenever the device's state changes."""
        while not predicate():
            waiter = asyncio.Event()
            self._waiters.add(waiter)
            await waiter.wait()

    # ------------------------------------------------------------------ lifecycle

    @contextlib.asynccontextmanager
    async def attach(self, device: Device) -> AsyncIterator[SimDevice]:
        """Build the GATT database on the powered-on ``device`` and run the device's habits until exit.

        ``device`` comes from :func:`sim.ble.open_peripheral_device` (whoever opened it takes it off the air).
        """
        self._bdev = device
        device.pairing_config_factory = lambda connection: PairingConfig(
            sc=True, mitm=False, bonding=True, delegate=_Delegate(self, connection)
        )
        device.add_services(self._all_services(device))
        device.on(device.EVENT_CONNECTION, self._on_connection)
        device.on("characteristic_subscription", self._on_subscription)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                habits = [
                    tg.create_task(self._advertiser(), name=f"{self.id}-advertiser"),
                    tg.create_task(self._deliverer(), name=f"{self.id}-deliverer"),
                    tg.create_task(self._daily_drain(), name=f"{self.id}-battery"),
                ]
                try:
                    yield self
                finally:
                    self._tg = None
                    for task in [*habits, *self._spawned]:
                        task.cancel()
        finally:
            if self._advertising and self._connection is None:
                await device.stop_advertising()
            self._advertising = False
            self._connection = None
            self._bdev = None

    # ------------------------------------------------------------------ hooks for subclasses

    @abc.abstractmethod
    def profile_services(self, device: Device) -> Iterable[gatt.Service]:
        """The device's own profile service(s)."""

    def bond_permissions(self, read: bool = True, write: bool = False) -> att.Attribute.Permissions:
        """Attribute permissions, with encryption required when the product requires bonding."""
        perms = att.Attribute.Permissions(0)
        if read:
            perms |= READABLE | (READ_ENC if self.options.bonding_required else 0)
        if write:
            perms |= WRITEABLE | (WRITE_ENC if self.options.bonding_required else 0)
        return perms

    def cccd(self, device: Device, characteristic: gatt.Characteristic[bytes]) -> gatt.Descriptor:
        """A CCCD that, on bonded products, can only be written over an encrypted link."""
        perms = READABLE | WRITEABLE
        if self.options.bonding_required:
            perms |= WRITE_ENC
        return gatt.Descriptor(
            gatt.GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
            perms,
            device.gatt_server.make_descriptor_value(characteristic),
        )

    def characteristic(
        self,
        device: Device,
        uuid: int | UUID,
        properties: gatt.Characteristic.Properties,
        *,
        read: Callable[[Connection], bytes] | None = None,
        write: Callable[[Connection, bytes], None] | None = None,
    ) -> gatt.Characteristic[bytes]:
        """A characteristic with this product's security and, if it notifies or indicates, its CCCD."""
        value: gatt.CharacteristicValue[bytes] | None = None
        if read is not None or write is not None:
            value = gatt.CharacteristicValue(read=read, write=write)
        char: gatt.Characteristic[bytes] = gatt.Characteristic(
            uuid16(uuid) if isinstance(uuid, int) else uuid,
            properties,
            self.bond_permissions(read=read is not None or not (properties & (P.WRITE)), write=write is not None),
            value if value is not None else b"",
        )
        if properties & (P.NOTIFY | P.INDICATE):
            char.descriptors = [self.cccd(device, char)]
        return char

    def spawn(self, coro: Coroutine[object, object, None], *, name: str) -> asyncio.Task[None]:
        """Run ``coro`` in the device's task group (cancelled when the device is detached)."""
        if self._tg is None:
            coro.close()
            raise RuntimeError(f"{self.id} is not attached to a link")
        task = self._tg.create_task(coro, name=name)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    def store_for_indication(self, characteristic: gatt.Characteristic[bytes], produced: Produced) -> None:
        """Keep ``produced`` until a subscribed hub confirms its indication (bounded, oldest dropped)."""
        handle = characteristic.handle
        queue = self._stored.setdefault(handle, deque(maxlen=self.options.memory_size))
        self._indicated[handle] = characteristic
        queue.append(_Stored(produced))
        self._deliver_kick.set()

    def register_indicated(self, characteristic: gatt.Characteristic[bytes]) -> None:
        """Declare a characteristic whose stored records are delivered on subscription."""
        self._stored.setdefault(characteristic.handle, deque(maxlen=self.options.memory_size))
        self._indicated[characteristic.handle] = characteristic

    def record(self, uuid: str, values: Mapping[str, float | int | str | bool], raw: bytes, **extra: bytes) -> Produced:
        """Log a measurement in the ground-truth log and drain the battery for it."""
        self._sequence += 1
        return self.record_with_sequence(self._sequence, uuid, values, raw, **extra)

    def record_with_sequence(
        self, sequence: int, uuid: str, values: Mapping[str, float | int | str | bool], raw: bytes, **extra: bytes
    ) -> Produced:
        """Like :meth:`record` with a sequence number chosen by the device (glucose)."""
        produced = Produced(
            device=self.id,
            kind=self.KIND,
            uuid=uuid,
            sequence=sequence,
            taken_at=self.clock.now(),
            device_time=self.device_clock.now(),
            values=dict(values),
            raw=raw,
            extra=dict(extra),
        )
        self.produced.append(produced)
        self.battery.drain(self.options.battery_per_measurement)
        if self._on_produced is not None:
            self._on_produced(produced)
        self._notify_changed()
        return produced

    def device_datetime(self) -> DateTime:
        """The device clock as a GATT Date Time (what the device stamps its records with)."""
        return DateTime.from_datetime(self.device_clock.now())

    def is_subscribed(self, characteristic: gatt.Characteristic[bytes], *, indicate: bool) -> bool:
        """Whether the connected hub enabled indications (or notifications) on ``characteristic``."""
        if self._connection is None:
            return False
        notify_on, indicate_on = self._subscriptions.get(characteristic.handle, (False, False))
        return indicate_on if indicate else notify_on

    async def notify(self, characteristic: gatt.Characteristic[bytes], value: bytes) -> bool:
        """Notify the connected, subscribed hub; ``False`` when nobody listens."""
        connection = self._connection
        if connection is None or not self.is_subscribed(characteristic, indicate=False):
            return False
        await self.bumble_device.notify_subscriber(connection, characteristic, value)
        return True

    async def indicate(self, characteristic: gatt.Characteristic[bytes], value: bytes) -> bool:
        """Indicate to the connected, subscribed hub; ``True`` only once the ATT confirmation arrived."""
        connection = self._connection
        if connection is None or not self.is_subscribed(characteristic, indicate=True):
            return False
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_lost(*_: object) -> None:
            if not lost.done():
                lost.set_result(None)

        connection.on(connection.EVENT_DISCONNECTION, on_lost)
        sending = asyncio.ensure_future(self.bumble_device.indicate_subscriber(connection, characteristic, value))
        try:
            await asyncio.wait({sending, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connection.remove_listener(connection.EVENT_DISCONNECTION, on_lost)
        if not sending.done():
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            return False
        try:
            sending.result()
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ habits

    def wake(self) -> None:
        """Start (or extend) the advertising window, as after a measurement."""
        self._advertise_until = self.clock.monotonic() + self.options.advertise_seconds
        self._adv_kick.set()

    async def set_in_range(self, in_range: bool) -> None:
        """Move the device out of the hub's reach (drops any link, stops advertising) or back."""
        self._in_range = in_range
        if not in_range and self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.disconnect()
        if in_range and self.stored_count() > 0:
            self.wake()
        self._adv_kick.set()
        self._notify_changed()

    def change_battery(self) -> None:
        """A new battery: full level, and the clock resets to its factory default."""
        self.battery.replace()
        self.device_clock.reset()
        self._notify_changed()

    def set_battery(self, percent: float) -> None:
        """Force the battery level (a scenario's ``battery_low``)."""
        self.battery.set(percent)
        self._notify_changed()

    def may_bond(self, peer: str) -> bool:
        """Whether pairing with ``peer`` is accepted under ``max_bonds``."""
        limit = self.options.max_bonds
        return limit is None or peer in self.bonded or len(self.bonded) < limit

    # ------------------------------------------------------------------ internals

    def _notify_changed(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            waiter.set()

    def _all_services(self, device: Device) -> list[gatt.Service]:
        opts = self.options
        info = gatt.Service(
            gatt.GATT_DEVICE_INFORMATION_SERVICE,
            [
                gatt.Characteristic(uuid16(0x2A29), P.READ, READABLE, opts.manufacturer.encode()),
                gatt.Characteristic(uuid16(0x2A24), P.READ, READABLE, opts.model.encode()),
                gatt.Characteristic(uuid16(0x2A25), P.READ, READABLE, opts.serial.encode()),
                gatt.Characteristic(uuid16(0x2A26), P.READ, READABLE, opts.firmware.encode()),
            ],
        )
        battery: gatt.Characteristic[bytes] = gatt.Characteristic(
            uuid16(0x2A19),
            P.READ | P.NOTIFY,
            READABLE,
            gatt.CharacteristicValue[bytes](read=lambda _c: bytes(BatteryLevel(self.battery.level))),
        )
        battery.descriptors = [self.cccd(device, battery)] if self.options.bonding_required else []
        self._battery_char = battery
        current_time = self.characteristic(
            device,
            0x2A2B,
            P.READ | P.WRITE | P.NOTIFY,
            read=lambda _c: bytes(CurrentTime.from_datetime(self.device_clock.now())),
            write=self._write_current_time,
        )
        self._time_char = current_time
        return [
            info,
            gatt.Service(gatt.GATT_BATTERY_SERVICE, [battery]),
            gatt.Service(gatt.GATT_CURRENT_TIME_SERVICE, [current_time]),
            *self.profile_services(device),
        ]

    def _write_current_time(self, _connection: Connection, value: bytes) -> None:
        try:
            when = CurrentTime.from_bytes(value).device_time
        except ValueError as error:
            raise att.ATT_Error(ATT_OUT_OF_RANGE) from error
        if when is None:
            raise att.ATT_Error(ATT_OUT_OF_RANGE)
        self.device_clock.set(when)
        _log.info("%s: clock set to %s", self.id, when)
        self._notify_changed()

    def _on_connection(self, connection: Connection) -> None:
        if self._connection is not None or not self._in_range:
            connection.abort_on("disconnection", connection.disconnect())
            return
        self._connection = connection
        self._advertising = False
        self._subscriptions.clear()
        connection.on(connection.EVENT_DISCONNECTION, lambda _reason: self._on_disconnection(connection))
        connection.on(connection.EVENT_PAIRING, lambda _keys: self._on_paired(connection))
        self._notify_changed()

    def _on_paired(self, connection: Connection) -> None:
        self.bonded.add(str(connection.peer_address))
        self._notify_changed()

    def _on_disconnection(self, connection: Connection) -> None:
        if self._connection is connection:
            self._connection = None
            self._subscriptions.clear()
            self._adv_kick.set()
            self._notify_changed()

    def _on_subscription(
        self, bearer: object, characteristic: gatt.Characteristic[bytes], notify: bool, indicate: bool
    ) -> None:
        if bearer is not self._connection:
            return
        self._subscriptions[characteristic.handle] = (notify, indicate)
        if indicate:
            self._deliver_kick.set()
        self.on_subscribed(characteristic, notify=notify, indicate=indicate)
        self._notify_changed()

    def on_subscribed(self, characteristic: gatt.Characteristic[bytes], *, notify: bool, indicate: bool) -> None:
        """Called when the hub changes a CCCD (subclasses may react)."""
        del characteristic, notify, indicate

    async def _advertiser(self) -> None:
        device = self.bumble_device
        while True:
            should = self._in_range and self._connection is None and self.clock.monotonic() < self._advertise_until
            if should and not self._advertising:
                await device.start_advertising(
                    advertising_data=self._advertising_data(), auto_restart=False, advertising_interval_min=20
                )
                self._advertising = True
                _log.info("%s: advertising", self.id)
            elif not should and self._advertising:
                if self._connection is None:
                    await device.stop_advertising()
                self._advertising = False
                _log.info("%s: asleep", self.id)
                self._notify_changed()
            # bumble sends HCI commands through asyncio.wait_for, which can lose this task's cancellation.
            raise_if_cancelling()
            self._adv_kick.clear()
            if self._advertising:
                remaining = self._advertise_until - self.clock.monotonic()
                sleeper = asyncio.ensure_future(self.clock.sleep(remaining))
                kicked = asyncio.ensure_future(self._adv_kick.wait())
                # Let the sleeper register with the clock before anyone learns that the window is open, so a
                # test that then advances a manual clock past the window always wakes it.
                await asyncio.sleep(0)
                self._notify_changed()
                try:
                    await asyncio.wait({sleeper, kicked}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    kicked.cancel()
            else:
                await self._adv_kick.wait()

    def _advertising_data(self) -> bytes:
        return advertising_data(name=self.options.name, service_uuids=self.advertised_uuids())

    def advertised_uuids(self) -> list[str]:
        """The service UUIDs carried in the advertisement."""
        return [f"{self.SERVICE_UUID:04X}"]

    async def _deliverer(self) -> None:
        while True:
            raise_if_cancelling()  # indications go through bumble, which can lose a cancellation
            await self._deliver_kick.wait()
            self._deliver_kick.clear()
            for handle, queue in self._stored.items():
                characteristic = self._indicated[handle]
                while queue and self.is_subscribed(characteristic, indicate=True):
                    head = queue[0]
                    if not await self.indicate(characteristic, head.produced.raw):
                        break
                    if queue and queue[0] is head:
                        queue.popleft()
                    self._notify_changed()

    async def _daily_drain(self) -> None:
        day = 86_400.0
        while True:
            await self.clock.sleep(day)
            self.battery.drain(self.options.battery_per_day)
            self._notify_changed()
