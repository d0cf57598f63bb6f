"""Meters and the pendant over Bluetooth LE, through bleak's public API only.

The manager scans (passively with BlueZ or_patterns where every provisioned kind can be recognised by its advertising
PDU, actively otherwise: `gateway.discovery`) and connects when a *provisioned* device advertises (meters advertise for
a short time after a measurement and sleep otherwise, so there is nothing to poll). Strangers are ignored and counted
(invariant 6). Each connection is one session task:

1. bond when the device kind requires it (blood pressure and glucose meters);
2. subscribe to the kind's measurement characteristics, first: what the meter sends from now on is kept whatever
   the following steps do;
3. best-effort steps, each failing on its own (classified, counted in ``BleStats.step_failures``, reported when the
   device refused; only a lost link ends the session): read the Current Time and, when the device clock is off by
   more than the configured tolerance, write the hub's time and report the correction (a meter refusing the write,
   as Omron cuffs do with ATT 0x80, keeps its wrong clock and its readings are still corrected); read the battery
   level; once per run, read the Device Information strings (``BleStats.device_information``). Readings stamped
   on the clock the hub read are corrected with its offset and flagged; those stamped on another clock (before a
   reset, after the hub set it) keep their own time (`gateway.core.measurements`);
4. for a glucose meter, ask the Record Access Control Point for every record with a sequence number at or above the
   device's cursor, and advance the cursor in the same transactions that make the records durable (invariant 1),
   as they arrive, up to the last contiguous record (past every record the meter reported once it answered
   success); a procedure that then fails (e.g. 0x08 "procedure not completed") or never answers keeps them. A
   failure after some records is reported, the session ends and the next connection asks for the rest; with
   nothing received, or silence, the session fails and the device is retried at its class's pace;
5. hand what arrives to the :class:`ReadingSink` in batches, each returning once it is fsynced;
6. when the session ends with the link still up, undo the subscriptions (``stop_notify``).

Concurrency: bleak delivers notifications through callbacks on the event loop; a callback only appends the value to
the indication journal (written by the journal's own thread, `gateway.journal`) and to its session's bounded queue,
which the session drains in order, a batch per commit. No stack lets the hub slow a meter down (BlueZ confirms an
indication itself; bumble when the callback returns), so the queue is larger than a meter's memory, and what a full
queue cannot take is read back from the journal once it has drained (``docs/ble.md``). A session ends when the device
disconnects or falls idle; failures are classified once, by type (:func:`classify_error`), and the device is retried
after a per-device delay that depends on the class (`gateway.backoff.RetryPolicy`), never in a tight loop. At most
`max_connections` sessions run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakCharacteristicNotFoundError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)

from gateway.aio import raise_if_cancelling
from gateway.backoff import RetryPolicy
from gateway.config import DeviceConfig, DeviceKind, GatewayConfig
from gateway.core.measurements import ClockFinding, Filing, filing_of, is_control_solution
from gateway.discovery import ScanMode, ScanPlan, plan_scan
from gateway.errors import OutboxError
from gateway.events import (
    BatteryLevel,
    ClockCorrected,
    DeviceReport,
    ErrorClass,
    LinkDown,
    LinkFailed,
    LinkUp,
    Misbehaviour,
    PendantFrame,
    Reading,
)
from gateway.journal import IndicationJournal, JournalEntry
from protocols import gatt
from protocols.errors import DecodeError
from protocols.pendant import CONFIRM_CHAR_UUID, EVENT_CHAR_UUID, FEEDBACK_CHAR_UUID

__all__ = [
    "BleManager",
    "DeviceInformation",
    "ErrorClass",
    "Reading",
    "ReadingSink",
    "SessionStep",
    "classify_error",
    "uuid16",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def uuid16(short: int) -> str:
    """bleak's normalised 128-bit form of a 16-bit SIG UUID."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


# What each kind of device is subscribed to (GATT assigned numbers); what it advertises is in gateway.discovery.
_MEASUREMENTS: dict[DeviceKind, tuple[int, ...]] = {
    DeviceKind.BLOOD_PRESSURE: (0x2A35,),
    DeviceKind.GLUCOSE: (0x2A18, 0x2A34),
    DeviceKind.OXIMETER: (0x2A5E, 0x2A5F),
    DeviceKind.THERMOMETER: (0x2A1C,),
    DeviceKind.SCALE: (0x2A9D,),
    DeviceKind.HEART_RATE: (0x2A37,),
    DeviceKind.PENDANT: (),
}
_NEEDS_BOND = frozenset({DeviceKind.BLOOD_PRESSURE, DeviceKind.GLUCOSE, DeviceKind.PENDANT})
_BATTERY_LEVEL = 0x2A19
# Device Information Service strings (DIS 1.1): manufacturer, model, serial number, firmware revision.
_DEVICE_INFORMATION = (0x2A29, 0x2A24, 0x2A25, 0x2A26)
_CURRENT_TIME = 0x2A2B
_RACP = 0x2A52
# Notifications of one device waiting to be stored: more than a meter's memory holds (glucose meters keep up to about
# a thousand records, cuffs a few hundred), so a whole RACP transfer fits even while a commit is slow; a queue that is
# full nonetheless leaves the reading to the journal (read back when it has drained). About 200 bytes each.
_QUEUE_LIMIT = 2048
_BATCH = 256  # notifications stored in one commit at most
_DEFERRED_LIMIT = 65_536  # readings a session reads back from the journal after an overflow (numbers, 28 bytes each)
_RACP_RESPONSES = 2  # RACP responses waiting to be read (one per request)
_RACP_SILENCE = 60.0  # seconds a RACP transfer may go without a record or the response
# How far a reading's stamp may run past the device clock the hub read, on that same clock, beyond the time elapsed
# since the read: the Date Time stamps' whole seconds and the meter's own rounding.
_STAMP_SLACK = timedelta(seconds=2)


class SessionStep(enum.Enum):
    """The best-effort steps of a session: each may fail without ending it."""

    CLOCK_READ = "clock read"
    CLOCK_WRITE = "clock write"
    BATTERY = "battery level"
    DEVICE_INFORMATION = "device information"
    RACP_REPORT = "RACP report"  # a report ended with a failure code after some records (which are kept)


# ATT error codes (Core Spec Vol 3 Part F 3.4.1.1): the peer wants a bond, or encryption with a bond's keys.
_ATT_AUTH = frozenset(
    {
        BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHENTICATION,  # 0x05
        BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHORIZATION,  # 0x08
        BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION_KEY_SIZE,  # 0x0C
        BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION,  # 0x0F
    }
)
# The peer is busy; the same request may succeed later.
_ATT_BUSY = frozenset(
    {
        BleakGATTProtocolErrorCode.PREPARE_QUEUE_FULL,  # 0x09
        BleakGATTProtocolErrorCode.INSUFFICIENT_RESOURCE,  # 0x11
        BleakGATTProtocolErrorCode.PROCEDURE_ALREADY_IN_PROGRESS,  # 0xFE
    }
)
# BlueZ's D-Bus error names (bluez doc/org.bluez.Device.rst and the GATT interfaces); bleak turns those that carry an
# ATT code into BleakGATTProtocolError itself. Names not listed are TRANSIENT (e.g. org.bluez.Error.Failed,
# InProgress, NotReady, and D-Bus's own NoReply).
_DBUS_CLASSES = {
    "org.bluez.Error.AuthenticationFailed": ErrorClass.AUTH,
    "org.bluez.Error.AuthenticationCanceled": ErrorClass.AUTH,
    "org.bluez.Error.AuthenticationRejected": ErrorClass.AUTH,
    "org.bluez.Error.AuthenticationTimeout": ErrorClass.AUTH,
    "org.bluez.Error.NotPermitted": ErrorClass.AUTH,  # left over by bleak's mapping: "Not paired"
    "org.bluez.Error.NotAuthorized": ErrorClass.AUTH,
    "org.bluez.Error.NotConnected": ErrorClass.GONE,
    "org.bluez.Error.DoesNotExist": ErrorClass.GONE,
    "org.freedesktop.DBus.Error.UnknownObject": ErrorClass.GONE,  # the device object is gone (out of range)
    "org.bluez.Error.NotSupported": ErrorClass.PROTOCOL,
    "org.bluez.Error.InvalidArguments": ErrorClass.PROTOCOL,
    "org.bluez.Error.ImproperlyConfigured": ErrorClass.PROTOCOL,
}
# A scan that failed is started again after this (the adapter was off or bluetoothd restarting).
_SCAN_RETRY = RetryPolicy(base=2.0, cap=60.0)
# How long each class waits before the device is tried again (at its next advertisement after that).
_RETRY = {
    ErrorClass.GONE: RetryPolicy(base=1.0, cap=30.0),  # out of range: its next advertisement says it is back
    ErrorClass.TRANSIENT: RetryPolicy(base=1.0, cap=300.0),
    ErrorClass.PROTOCOL: RetryPolicy(base=30.0, cap=1800.0),  # retrying soon would fail the same way
    ErrorClass.AUTH: RetryPolicy(base=60.0, cap=3600.0),  # a lost bond needs the installer, not a tight loop
}


def classify_error(exc: BaseException) -> ErrorClass:
    """Classify a session failure once, here, at the BLE boundary: by type (the ATT error code, BlueZ's D-Bus
    error name); only a plain :class:`BleakError`, which carries nothing else, is judged by its message."""
    if isinstance(exc, BleakDeviceNotFoundError):
        return ErrorClass.GONE
    if isinstance(exc, TimeoutError):
        return ErrorClass.TRANSIENT
    if isinstance(exc, _ProtocolViolationError | BleakCharacteristicNotFoundError):
        return ErrorClass.PROTOCOL
    if isinstance(exc, BleakGATTProtocolError):
        if exc.code in _ATT_AUTH:
            return ErrorClass.AUTH
        return ErrorClass.TRANSIENT if exc.code in _ATT_BUSY else ErrorClass.PROTOCOL
    if isinstance(exc, BleakDBusError):
        return _DBUS_CLASSES.get(exc.dbus_error, ErrorClass.TRANSIENT)
    if isinstance(exc, BleakError):
        text = str(exc).lower()
        if "not connected" in text or "disconnected" in text or "link to the peer was lost" in text:
            return ErrorClass.GONE
        if text.startswith("pair ") or any(word in text for word in ("pairing", "authentication", "encrypt")):
            return ErrorClass.AUTH  # bleak's own pairing errors; the sim names the operation ("pair <address>: ...")
    return ErrorClass.TRANSIENT


class _ProtocolViolationError(BleakError):
    """The device answered in a way the profile does not allow."""


class ReadingSink(Protocol):
    """Where sessions deliver what they learn (typed events, `gateway.events`). Each returns once it is durable."""

    async def store_readings(self, readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
        """Decode, record, seal and fsync `readings`; set the durable `cursor` (key, value) in the same commit."""

    async def get_cursor(self, key: str) -> int | None:
        """A durable cursor (e.g. the next RACP sequence number of a glucose meter)."""

    async def report(self, event: DeviceReport) -> None:
        """Battery level, link changes and failures, clock corrections, misbehaviour: each becomes a record."""

    async def pendant_frame(self, frame: PendantFrame) -> bytes | None:
        """An event frame from a pendant; returns the confirm frame to write back, or None to stay silent."""


@dataclass(frozen=True, slots=True)
class DeviceInformation:
    """What a meter says it is (Device Information Service), for `carehub doctor`; None for what it did not say."""

    manufacturer: str | None
    model: str | None
    serial: str | None
    firmware: str | None


@dataclass(slots=True)
class BleStats:
    """Counters for `carehub doctor` and the demo summary."""

    unknown_devices: set[str] = field(default_factory=set)
    unknown_adverts: int = 0
    sessions: int = 0
    readings: int = 0
    malformed: int = 0
    overflowed: int = 0  # notifications beyond the per-device queue (journaled, or a pendant's repeated frame)
    failures: Counter[ErrorClass] = field(default_factory=Counter)
    scan_failures: int = 0  # scans that could not start or ended with an error (adapter off, bluetoothd restarting)
    storage_failures: int = 0  # sessions ended because the hub could not store their data (e.g. a full disk)
    step_failures: Counter[tuple[SessionStep, ErrorClass]] = field(default_factory=Counter)  # the session went on
    unassigned: int = 0  # readings of another (or the unknown) user of a multi-user meter: stored unassigned
    control_solution: int = 0  # glucose control-solution tests: stored flagged, never judged
    last_seen: dict[str, datetime] = field(default_factory=dict)
    device_information: dict[str, DeviceInformation] = field(default_factory=dict)  # read once per run and device


@dataclass(frozen=True, slots=True)
class _Notification:
    """A notification or indication waiting in its session's queue."""

    uuid: int
    data: bytes
    received_at: datetime
    journal_number: int | None  # the indication journal's entry that waits for this reading's commit


@dataclass(slots=True)
class _DeviceState:
    attempts: int = 0  # consecutive failures of the class last_failure
    last_failure: ErrorClass | None = None
    not_before: float = 0.0
    pendant_client: BleakClient | None = None


class BleManager:
    """Connect-on-advertise sessions for every provisioned device. An async context manager owning its tasks."""

    def __init__(
        self,
        config: GatewayConfig,
        sink: ReadingSink,
        *,
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        connect_timeout: float = 10.0,
        idle_disconnect: float = 5.0,
        journal: IndicationJournal | None = None,
    ) -> None:
        self._config = config
        self._sink = sink
        self._scanner_backend = scanner_backend
        self._client_backend = client_backend
        self._now = now
        self._monotonic = monotonic or asyncio.get_running_loop().time
        self._rng = rng or random.Random()  # noqa: S311  backoff jitter, not cryptography
        self._timeout = connect_timeout
        self._idle_disconnect = idle_disconnect
        self._journal = journal
        self._slots = asyncio.Semaphore(config.ble_max_connections)
        self._states: dict[str, _DeviceState] = {d.address: _DeviceState() for d in config.devices}
        self._active: set[str] = set()
        self._tasks: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[None]] = set()  # the scan and the sessions, cancelled on exit
        self._stack = contextlib.AsyncExitStack()
        self.stats = BleStats()
        self.scanning = asyncio.Event()

    @property
    def journal(self) -> IndicationJournal | None:
        """The indication journal the sessions append to, if any."""
        return self._journal

    async def __aenter__(self) -> Self:
        await self._replay_journal()
        async with contextlib.AsyncExitStack() as stack:
            self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
            self._start(self._scan(), "ble.scan")
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in list(self._running):
            task.cancel()
        await self._stack.__aexit__(None, None, None)

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self._tasks is None:
            coro.close()
            raise RuntimeError("the BLE manager is not running")
        task = self._tasks.create_task(coro, name=name)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _replay_journal(self) -> None:
        """Store what an earlier run confirmed to meters but may not have committed (stable ids make it harmless)."""
        if self._journal is None:
            return
        readings = []
        for entry in await asyncio.to_thread(self._journal.pending):
            cfg = self._config.device(entry.address)
            if cfg is not None:
                readings.append(Reading(cfg, entry.uuid, entry.data, entry.received_at))
        if readings:
            _log.info("replaying %d journaled indication(s) from before a restart", len(readings))
            await self._sink.store_readings(readings)
        self._journal.release()  # stored: the journal may be emptied

    def _release(self, items: Sequence[_Notification]) -> None:
        """The readings of `items` are committed (or reported as misbehaviour): release their journal entries."""
        numbers = [item.journal_number for item in items if item.journal_number is not None]
        if self._journal is not None and numbers:
            self._journal.release(numbers)

    async def write_pendant_state(self, address: str, frame: bytes) -> bool:
        """Write a feedback frame to a connected pendant; False when it is not connected right now."""
        state = self._states.get(address.upper())
        client = state.pendant_client if state else None
        if client is None or not client.is_connected:
            return False
        try:
            await client.write_gatt_char(str(FEEDBACK_CHAR_UUID), frame, response=True)
        except (BleakError, TimeoutError) as exc:
            self.stats.failures[classify_error(exc)] += 1
            return False
        return True

    # -- scanning ---------------------------------------------------------------------------------------------

    async def _scan(self) -> None:
        """Scan for as long as the manager runs. A scan that fails (the adapter off or gone, bluetoothd restarting)
        is started again after a delay that grows while it keeps failing: the daemon must outlive its radio."""
        failures = 0
        while True:
            raise_if_cancelling()
            try:
                await self._scan_planned()
            except BleakError as exc:
                failures = 1 if self.scanning.is_set() else failures + 1
                self.scanning.clear()
                self.stats.scan_failures += 1
                delay = _SCAN_RETRY.delay(failures, self._rng)
                _log.error("BLE scan failed (%s); scanning again in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _scan_planned(self) -> None:
        # Passive with or_patterns where every provisioned kind shows its service UUID in the advertising PDU (BlueZ
        # scans passively only through an advertisement monitor), else active and unfiltered: a meter without a
        # service UUID in its advert is then matched by its address (`gateway.discovery`).
        plan = plan_scan(self._config.devices)
        try:
            await self._scan_as(plan)
        except BleakError as exc:
            if plan.mode is not ScanMode.PASSIVE or self.scanning.is_set():
                raise
            if isinstance(exc, BleakBluetoothNotAvailableError):
                raise  # no adapter to scan with at all: an active scan would fail the same way
            # bluetoothd without the advertisement monitor API (older than 5.56, or without --experimental where
            # the API is still experimental) cannot scan passively; an active scan finds the same devices.
            _log.warning("BLE: the passive scan could not start (%s); scanning actively instead", exc)
            await self._scan_as(ScanPlan(ScanMode.ACTIVE, reason=f"passive scan refused: {exc}"))

    async def _scan_as(self, plan: ScanPlan) -> None:
        _log.info("BLE: %s", plan.describe())
        async with BleakScanner(
            scanning_mode=plan.mode.value, bluez=plan.bluez_args(), backend=self._scanner_backend
        ) as scanner:
            # Starting the scan awaits the stack (bumble's HCI commands go through asyncio.wait_for), which can lose
            # a cancellation that arrives as it completes; the wait for adverts below has no end of its own.
            raise_if_cancelling()
            self.scanning.set()
            async for device, adv in scanner.advertisement_data():
                self._on_advertisement(device, adv)

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        address = device.address.upper()
        cfg = self._config.device(address)
        if cfg is None:
            self.stats.unknown_adverts += 1
            self.stats.unknown_devices.add(address)
            return
        self.stats.last_seen[address] = self._now()
        state = self._states[address]
        if address in self._active or self._monotonic() < state.not_before or self._tasks is None:
            return
        self._active.add(address)
        self._start(self._session(cfg, device), f"ble.session.{address}")
        _log.debug("advertisement from %s (rssi %s): connecting", address, adv.rssi)

    # -- sessions ---------------------------------------------------------------------------------------------

    async def _session(self, cfg: DeviceConfig, device: BLEDevice) -> None:
        state = self._states[cfg.address]
        try:
            # The pendant never waits for a free slot: a call for help must get through while meters are busy.
            async with contextlib.nullcontext() if cfg.kind is DeviceKind.PENDANT else self._slots:
                self.stats.sessions += 1
                await self._run_session(cfg, device, state)
            state.attempts, state.last_failure = 0, None
        except (BleakError, TimeoutError, OSError) as exc:
            kind = classify_error(exc)
            self.stats.failures[kind] += 1
            # Consecutive failures of one class grow its delay; a failure of another class starts that one afresh.
            state.attempts = state.attempts + 1 if kind is state.last_failure else 1
            state.last_failure = kind
            delay = _RETRY[kind].delay(state.attempts, self._rng)
            state.not_before = self._monotonic() + delay
            _log.warning("session with %s failed (%s: %s); retry in %.1f s", cfg.address, kind, exc, delay)
            try:
                await self._sink.report(LinkFailed(cfg, kind, str(exc)))
            except OutboxError as storage:
                self._storage_failed(cfg, state, storage)
        except OutboxError as exc:
            # The hub could not store what the device sent (a full disk, a failing card): what was received is in
            # the indication journal or still on the meter, which re-sends what it was not told arrived. The manager
            # goes on (other devices, the pendant's local escalation); this device is tried again later.
            self._storage_failed(cfg, state, exc)
        finally:
            state.pendant_client = None
            self._active.discard(cfg.address)

    def _storage_failed(self, cfg: DeviceConfig, state: _DeviceState, exc: OutboxError) -> None:
        """Count a session that ended because its data could not be stored; retry the device at the transient pace."""
        self.stats.storage_failures += 1
        state.attempts = state.attempts + 1 if state.last_failure is ErrorClass.TRANSIENT else 1
        state.last_failure = ErrorClass.TRANSIENT
        delay = _RETRY[ErrorClass.TRANSIENT].delay(state.attempts, self._rng)
        state.not_before = self._monotonic() + delay
        _log.error("session with %s: the hub could not store its data (%s); retry in %.1f s", cfg.address, exc, delay)

    async def _run_session(self, cfg: DeviceConfig, device: BLEDevice, state: _DeviceState) -> None:
        disconnected = asyncio.Event()
        client = BleakClient(
            device,
            disconnected_callback=lambda _c: disconnected.set(),
            timeout=self._timeout,
            backend=self._client_backend,
        )
        # Subscriptions are undone (stop_notify) when the session ends while the link is still up; before the link.
        async with client, contextlib.AsyncExitStack() as subscriptions:
            if cfg.kind in _NEEDS_BOND:
                await client.pair()
            await self._sink.report(LinkUp(cfg))
            queue: asyncio.Queue[_Notification] = asyncio.Queue(maxsize=_QUEUE_LIMIT)
            deferred: list[int] = []  # journal entries of readings the full queue could not take

            def bridge(uuid: int) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
                def on_value(_char: BleakGATTCharacteristic, data: bytearray) -> None:
                    # On the event loop, in the stack's callback: enqueue only (the journal writes on its thread).
                    value, at = bytes(data), self._now()
                    journal = None if cfg.kind is DeviceKind.PENDANT else self._journal
                    number = None if journal is None else journal.append(JournalEntry(cfg.address, uuid, value, at))
                    if queue.full():
                        # A device sending faster than readings can be stored: the reading stays in the journal
                        # alone, and the session reads it back from there once its queue has drained.
                        self.stats.overflowed += 1
                        if number is not None and len(deferred) < _DEFERRED_LIMIT:
                            deferred.append(number)
                            kept = "kept in the journal until the queue has drained"
                        elif number is not None:
                            kept = "kept in the journal for the next start"
                        else:
                            kept = "dropped (a pendant repeats its frames)" if journal is None else "lost"
                        _log.error("notification queue of %s full; a notification %s", cfg.address, kept)
                        return
                    queue.put_nowait(_Notification(uuid, value, at, number))

                return on_value

            if cfg.kind is DeviceKind.PENDANT:
                state.pendant_client = client
                await self._subscribe(client, subscriptions, str(EVENT_CHAR_UUID), bridge(0))
                await self._consume(cfg, client, queue, disconnected, None, deferred=deferred)
                return
            chars = {c.uuid for s in client.services for c in s.characteristics}
            # Subscribe first: what arrives waits in the queue (stored once the clock is known), and no later step
            # can keep the meter's readings from the hub.
            for uuid in _MEASUREMENTS[cfg.kind]:
                if uuid16(uuid) in chars:
                    await self._subscribe(client, subscriptions, uuid16(uuid), bridge(uuid))
            clock = await self._sync_clock(client, cfg, chars)
            await self._read_battery(client, cfg, chars)
            await self._read_device_information(client, cfg, chars)
            complete = True
            if cfg.kind is DeviceKind.GLUCOSE and uuid16(_RACP) in chars:
                complete = await self._transfer_records(cfg, client, queue, clock)
            # A transfer the meter cut short ends the session at once: the next connection asks for the rest.
            await self._consume(cfg, client, queue, disconnected, clock, deferred=deferred, linger=complete)

    async def _subscribe(
        self,
        client: BleakClient,
        subscriptions: contextlib.AsyncExitStack,
        uuid: str,
        callback: Callable[[BleakGATTCharacteristic, bytearray], None],
    ) -> None:
        await client.start_notify(uuid, callback)
        subscriptions.push_async_callback(self._unsubscribe, client, uuid)

    async def _unsubscribe(self, client: BleakClient, uuid: str) -> None:
        """Undo a start_notify as a session ends: bleak drops the callback, BlueZ its notify session, and the device
        stops sending. Nothing to do once the link is down (its subscriptions went with it)."""
        if not client.is_connected:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await client.stop_notify(uuid)
        except (BleakError, TimeoutError) as exc:
            _log.info("stop_notify %s on %s failed (%s: %s)", uuid, client.address, classify_error(exc), exc)

    async def _consume(
        self,
        cfg: DeviceConfig,
        client: BleakClient,
        queue: asyncio.Queue[_Notification],
        disconnected: asyncio.Event,
        clock: ClockFinding | None,
        *,
        deferred: list[int],
        linger: bool = True,
    ) -> None:
        """Hand notifications to the sink, in order, until the device goes away (or, without `linger`, as soon as
        the queue is empty); then what the queue left to the journal."""
        gone = asyncio.ensure_future(disconnected.wait())
        # A meter that has said nothing for a while is released so its slot serves others; the pendant stays.
        idle = None if cfg.kind is DeviceKind.PENDANT else self._idle_disconnect if linger else 0.0
        try:
            while True:
                raise_if_cancelling()  # bumble's calls may have lost a cancellation; the pendant never idles out
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, gone}, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                await self._deliver(cfg, client, _take(queue, getter.result()), clock)
            if not disconnected.is_set():
                # Idle: close the link before the last drain. The stack confirms an indication as it arrives, so
                # one arriving after the drain but before the disconnect would be confirmed and then dropped.
                await client.disconnect()
            # Whatever arrived just before the link dropped is still ours to keep.
            while not queue.empty():
                await self._deliver(cfg, client, _take(queue), clock)
            await self._store_deferred(cfg, deferred, clock)
        finally:
            gone.cancel()
        await self._sink.report(LinkDown(cfg))

    async def _deliver(
        self, cfg: DeviceConfig, client: BleakClient, items: list[_Notification], clock: ClockFinding | None
    ) -> None:
        if cfg.kind is not DeviceKind.PENDANT:
            await self._store(cfg, items, clock)
            return
        for item in items:  # each frame is answered on its own
            confirm = await self._sink.pendant_frame(PendantFrame(cfg, item.data))
            if confirm is not None and client.is_connected:
                with contextlib.suppress(BleakError, TimeoutError):
                    await client.write_gatt_char(str(CONFIRM_CHAR_UUID), confirm, response=True)

    async def _store_deferred(self, cfg: DeviceConfig, deferred: list[int], clock: ClockFinding | None) -> None:
        """Store the readings a full queue left to the journal (read back by their entry numbers)."""
        journal = self._journal
        if journal is None or not deferred:
            return
        wanted = set(deferred)
        deferred.clear()
        await asyncio.to_thread(journal.flush)
        entries = [e for e in await asyncio.to_thread(journal.pending) if e.number in wanted]
        if len(entries) < len(wanted):
            _log.error("%d deferred reading(s) of %s are not in the journal", len(wanted) - len(entries), cfg.address)
        items = [_Notification(e.uuid, e.data, e.received_at, e.number) for e in entries]
        for first in range(0, len(items), _BATCH):
            await self._store(cfg, items[first : first + _BATCH], clock)

    async def _store(
        self,
        cfg: DeviceConfig,
        items: list[_Notification],
        clock: ClockFinding | None,
        racp: _RacpProgress | None = None,
    ) -> None:
        """Store `items` in one commit (with the RACP cursor past them), report those that do not decode, and release
        their journal entries. Each reading carries the session's clock offset only when it was stamped on the clock
        the hub read (`ClockFinding.offset_for`, looking ahead at the stamps of the readings after it)."""
        decoded: list[tuple[_Notification, gatt.Measurement]] = []
        for item in items:
            try:
                measurement = gatt.decode(item.uuid, item.data)
            except DecodeError as exc:
                self.stats.malformed += 1
                _log.warning("malformed %04X from %s: %s", item.uuid, cfg.address, exc)
                await self._sink.report(Misbehaviour(cfg, str(exc), item.data))
                continue
            if racp is not None:
                racp.saw(measurement.as_dict().get("sequence_number"))
            decoded.append((item, measurement))
        stamps = [_device_time(measurement) for _, measurement in decoded]
        readings = []
        for index, (item, measurement) in enumerate(decoded):
            offset = None
            if clock is not None:
                later = [stamp for stamp in stamps[index + 1 :] if stamp is not None]
                offset = clock.offset_for(stamps[index], item.received_at, later)
            if filing_of(cfg, measurement) is not Filing.RESIDENT:
                self.stats.unassigned += 1
            if is_control_solution(measurement):
                self.stats.control_solution += 1
            readings.append(Reading(cfg, item.uuid, item.data, item.received_at, offset))
        cursor = None if racp is None else racp.take_cursor()
        if readings or cursor is not None:
            self.stats.readings += len(readings)
            await self._sink.store_readings(readings, cursor=cursor)
        self._release(items)

    async def _best_effort(self, cfg: DeviceConfig, step: SessionStep, call: Awaitable[_T]) -> _T | None:
        """Run one best-effort step of a session: its failure is classified, counted and logged (and reported when
        the device refused it), and the session goes on; only a lost link ends the session."""
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except (BleakError, TimeoutError) as exc:
            kind = classify_error(exc)
            if kind is ErrorClass.GONE:
                raise
            self.stats.step_failures[(step, kind)] += 1
            _log.warning("%s of %s failed (%s: %s); the session goes on", step.value, cfg.address, kind, exc)
            if kind is ErrorClass.PROTOCOL:
                await self._sink.report(Misbehaviour(cfg, f"{step.value} refused ({kind}): {exc}"))
            return None

    async def _read_battery(self, client: BleakClient, cfg: DeviceConfig, chars: set[str]) -> None:
        if uuid16(_BATTERY_LEVEL) not in chars:
            return
        raw = await self._best_effort(cfg, SessionStep.BATTERY, client.read_gatt_char(uuid16(_BATTERY_LEVEL)))
        if raw is None:
            return
        try:
            level = gatt.decode(_BATTERY_LEVEL, bytes(raw)).as_dict()["battery_level"]
        except DecodeError as exc:
            self.stats.malformed += 1
            await self._sink.report(Misbehaviour(cfg, f"battery level: {exc}", bytes(raw)))
            return
        await self._sink.report(
            BatteryLevel(cfg, level) if isinstance(level, int) else Misbehaviour(cfg, f"battery level {level!r}")
        )

    async def _read_device_information(self, client: BleakClient, cfg: DeviceConfig, chars: set[str]) -> None:
        """Read what the meter says it is, once per run (each string is a best-effort step of its own)."""
        if cfg.address in self.stats.device_information or not any(uuid16(u) in chars for u in _DEVICE_INFORMATION):
            return
        values: list[str | None] = []
        for uuid in _DEVICE_INFORMATION:
            raw = None
            if uuid16(uuid) in chars:
                raw = await self._best_effort(cfg, SessionStep.DEVICE_INFORMATION, client.read_gatt_char(uuid16(uuid)))
            # UTF-8 strings (GATT "utf8s"); some meters pad them with NULs.
            text = None if raw is None else bytes(raw).decode("utf-8", errors="replace").rstrip("\x00").strip()
            values.append(text or None)
        info = DeviceInformation(*values)
        self.stats.device_information[cfg.address] = info
        _log.info("%s is %s", cfg.address, info)

    async def _sync_clock(self, client: BleakClient, cfg: DeviceConfig, chars: set[str]) -> ClockFinding | None:
        """Compare the device clock with the hub's; set it when off by more than the tolerance. Returns what the
        session's readings are corrected with, or None when the clock was right or could not be read."""
        if uuid16(_CURRENT_TIME) not in chars:
            return None
        raw = await self._best_effort(cfg, SessionStep.CLOCK_READ, client.read_gatt_char(uuid16(_CURRENT_TIME)))
        if raw is None:
            return None
        hub_now = self._now()
        try:
            current = gatt.decode(_CURRENT_TIME, bytes(raw))
        except DecodeError as exc:
            self.stats.malformed += 1
            await self._sink.report(Misbehaviour(cfg, f"current time: {exc}", bytes(raw)))
            return None
        device_now = getattr(current, "datetime", None)
        device_dt = device_now() if callable(device_now) else device_now
        # A GATT clock keeps local time with no zone (the resident reads it on the meter's display): it is compared
        # with, and set to, the hub's time in the home's zone, and its stamps are mapped to UTC by `to_utc`.
        hub_local = hub_now.astimezone(self._config.timezone).replace(tzinfo=None)
        drift = None if not isinstance(device_dt, datetime) else device_dt - hub_local
        if drift is not None and abs(drift.total_seconds()) <= self._config.clock_tolerance_s:
            return None
        payload = bytes(gatt.CurrentTime.from_datetime(hub_local, adjust_reason=0x01))

        async def write() -> bool:
            await client.write_gatt_char(uuid16(_CURRENT_TIME), payload, response=True)
            return True

        # A meter refusing the write keeps its clock: the offset still corrects its readings, nothing is reported
        # as corrected.
        if await self._best_effort(cfg, SessionStep.CLOCK_WRITE, write()):
            device_time = current.as_dict().get("timestamp")
            await self._sink.report(ClockCorrected(cfg, device_time if isinstance(device_time, str) else None, drift))
        if not isinstance(device_dt, datetime):
            return None
        to_utc = device_dt - hub_now.astimezone(UTC).replace(tzinfo=None)
        return ClockFinding(to_utc, device_dt, hub_now, _STAMP_SLACK)

    async def _transfer_records(
        self,
        cfg: DeviceConfig,
        client: BleakClient,
        queue: asyncio.Queue[_Notification],
        clock: ClockFinding | None,
    ) -> bool:
        """RACP: ask for the stored records with sequence number >= the cursor and store them as they arrive, each
        commit with the cursor past the last contiguous record so far; once the meter answers success, past every
        record it reported. A transfer cut short keeps what arrived. A failure response after records were stored is
        reported and the session ends (its next connection asks for the rest); a failure response with nothing
        stored, or silence, fails the session, so the device is retried at its class's pace, never in a loop.
        Returns whether the meter sent everything asked for."""
        key = f"racp:{cfg.address}"
        progress = _RacpProgress(key, await self._sink.get_cursor(key) or 0)
        responses: asyncio.Queue[bytes] = asyncio.Queue(maxsize=_RACP_RESPONSES)

        def on_response(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            if responses.full():  # one response per request: more is the device misbehaving
                self.stats.malformed += 1
                _log.warning("unrequested RACP response from %s ignored: %s", cfg.address, bytes(data).hex())
                return
            responses.put_nowait(bytes(data))

        await client.start_notify(uuid16(_RACP), on_response)
        try:
            request = gatt.RacpRequest.report_greater_or_equal(progress.start)
            await client.write_gatt_char(uuid16(_RACP), bytes(request), response=True)
            answer = await self._store_until(cfg, queue, clock, progress, responses)
        except TimeoutError:
            while not queue.empty():  # what came before the silence is kept
                await self._store(cfg, _take(queue), clock, progress)
            raise
        finally:
            await self._unsubscribe(client, uuid16(_RACP))
        while not queue.empty():  # the records indicated before the response
            await self._store(cfg, _take(queue), clock, progress)
        try:
            reply = gatt.decode(_RACP, answer)
        except DecodeError as exc:
            raise _ProtocolViolationError(f"RACP response {answer.hex()} does not decode: {exc}") from exc
        code = reply.as_dict().get("response_code")
        if code not in (gatt.RacpResponseCode.SUCCESS, gatt.RacpResponseCode.NO_RECORDS_FOUND):
            failure = f"RACP report failed with response code {code}"
            if progress.committed is None:
                raise _ProtocolViolationError(failure)  # nothing came: retried at the protocol pace, not in a loop
            # The meter stopped part-way (e.g. 0x08, "procedure not completed") after records that are now stored:
            # the session ends as usual and its next connection asks for the rest, so a meter that sends a few
            # records per connection is read out at its own pace, not at a failing session's.
            self.stats.step_failures[(SessionStep.RACP_REPORT, ErrorClass.PROTOCOL)] += 1
            _log.warning("%s from %s after %d record(s); the rest next time", failure, cfg.address, progress.received)
            await self._sink.report(Misbehaviour(cfg, f"{failure} after {progress.received} record(s)", answer))
            return False
        # The meter sent every record it has from the cursor on: gaps in the sequence are records it no longer has.
        progress.complete()
        cursor = progress.take_cursor()
        if cursor is not None:
            await self._sink.store_readings([], cursor=cursor)
        return True

    async def _store_until(
        self,
        cfg: DeviceConfig,
        queue: asyncio.Queue[_Notification],
        clock: ClockFinding | None,
        progress: _RacpProgress,
        responses: asyncio.Queue[bytes],
    ) -> bytes:
        """Store records as they arrive until the RACP response does; return it.

        Raises:
            TimeoutError: neither a record nor the response came for `_RACP_SILENCE` seconds.
        """
        answer = asyncio.ensure_future(responses.get())
        getter: asyncio.Future[_Notification] | None = None
        try:
            while True:
                raise_if_cancelling()  # the stores and bumble's calls may have lost a cancellation
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, answer}, timeout=_RACP_SILENCE, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    await self._store(cfg, _take(queue, getter.result()), clock, progress)
                elif answer in done:
                    return answer.result()
                else:
                    raise TimeoutError(f"RACP: neither a record nor the response within {_RACP_SILENCE:g} s")
        finally:
            answer.cancel()
            if getter is not None:
                getter.cancel()


@dataclass(slots=True)
class _RacpProgress:
    """How far a RACP transfer has come. Records normally arrive in ascending order; the cursor is the sequence number
    after the last record of the run that starts with the first one received and has no gap, so a record lost on
    the way (notifications are not confirmed) is asked for again. Once the meter answered success the cursor moves
    past the highest record (a gap is then a record the meter no longer has)."""

    key: str
    start: int
    seen: set[int] = field(default_factory=set)
    next: int | None = None  # the first sequence number not yet part of the contiguous run
    highest: int = -1
    committed: int | None = None  # the cursor value last handed to the sink
    received: int = 0  # records of this transfer, asked for and decoded (stored with the cursor)

    def saw(self, sequence_number: object) -> None:
        if not isinstance(sequence_number, int) or sequence_number < self.start:
            return  # not asked for: it does not move the cursor
        self.received += 1
        self.seen.add(sequence_number)
        self.highest = max(self.highest, sequence_number)
        if self.next is None:
            self.next = sequence_number
        while self.next in self.seen:
            self.seen.discard(self.next)
            self.next += 1

    def complete(self) -> None:
        if self.highest >= 0:
            self.next = max(self.next or 0, self.highest + 1)
            self.seen.clear()

    def take_cursor(self) -> tuple[str, int] | None:
        """The cursor to commit with the next store, None when it has not moved since the last."""
        if self.next is None or self.next <= self.start or self.next == self.committed:
            return None
        self.committed = self.next
        return (self.key, self.next)


def _device_time(measurement: gatt.Measurement) -> datetime | None:
    """The meter's own stamp on a measurement (local, no zone), None when it has none or an unknown date."""
    stamp = getattr(measurement, "device_time", None)
    return stamp if isinstance(stamp, datetime) else None


def _take(queue: asyncio.Queue[_Notification], first: _Notification | None = None) -> list[_Notification]:
    """`first` and whatever else waits in `queue` right now, up to `_BATCH` in all (in arrival order)."""
    items = [] if first is None else [first]
    while len(items) < _BATCH and not queue.empty():
        items.append(queue.get_nowait())
    return items
