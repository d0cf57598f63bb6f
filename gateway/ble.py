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

Pairing: on BlueZ (no backend given) the manager registers the hub's pairing agent (`gateway.ble_agent`) for as
long as it runs, so bluetoothd can pair the kit's meters; the daemon has nobody to type a meter's PIN, so a passkey
request is refused. An AUTH failure (the meter refused to pair or lost its bond, `gateway.ble_errors`) is retried at
the AUTH class's slow pace and counted in a durable outbox cursor (``auth:<address>``, the failures in a row, back
to 0 after a good session), which ``carehub doctor`` reports with the command that pairs the meter again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

from bleak import BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakBluetoothNotAvailableError, BleakError
from dbus_fast.errors import AuthError, InvalidAddressError

from gateway.aio import raise_if_cancelling
from gateway.backoff import RetryPolicy
from gateway.ble_agent import AgentRegistrationError, bluez_agent
from gateway.ble_errors import RETRY, auth_cursor_key, classify_error
from gateway.ble_passkey import PasskeyDesk
from gateway.ble_session import SessionRunner
from gateway.ble_types import BleStats, DeviceInformation, DeviceState, ReadingSink, SessionStep, uuid16
from gateway.clock import Clock, SystemClock
from gateway.config import DeviceConfig, DeviceKind, GatewayConfig
from gateway.discovery import ScanMode, ScanPlan, plan_scan
from gateway.errors import OutboxError
from gateway.events import ErrorClass, LinkFailed, Reading
from gateway.journal import IndicationJournal
from protocols.pendant import FEEDBACK_CHAR_UUID

__all__ = [
    "BleManager",
    "BleStats",
    "DeviceInformation",
    "ErrorClass",
    "Reading",
    "ReadingSink",
    "SessionStep",
    "classify_error",
    "uuid16",
]

_log = logging.getLogger(__name__)

# A scan that failed is started again after this (the adapter was off or bluetoothd restarting).
_SCAN_RETRY = RetryPolicy(base=2.0, cap=60.0)


class BleManager:
    """Connect-on-advertise sessions for every provisioned device. An async context manager owning its tasks."""

    def __init__(
        self,
        config: GatewayConfig,
        sink: ReadingSink,
        *,
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        connect_timeout: float = 10.0,
        idle_disconnect: float = 5.0,
        journal: IndicationJournal | None = None,
        pairing_agent: bool | None = None,
    ) -> None:
        """`pairing_agent`: register the hub's BlueZ pairing agent while running (default: on Linux when no client
        backend is given, i.e. when bleak uses BlueZ)."""
        self._config = config
        self._sink = sink
        self._scanner_backend = scanner_backend
        self._client_backend = client_backend
        self._clock = clock or SystemClock()
        self._now = self._clock.now
        self._monotonic = self._clock.monotonic
        self._rng = rng or random.Random()  # noqa: S311  backoff jitter, not cryptography
        self._timeout = connect_timeout
        self._idle_disconnect = idle_disconnect
        self._journal = journal
        self._slots = asyncio.Semaphore(config.ble_max_connections)
        self._states: dict[str, DeviceState] = {d.address: DeviceState() for d in config.devices}
        self._active: set[str] = set()
        self._tasks: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[None]] = set()  # the scan and the sessions, cancelled on exit
        self._stack = contextlib.AsyncExitStack()
        self.stats = BleStats()
        self.scanning = asyncio.Event()
        if pairing_agent is None:
            pairing_agent = client_backend is None and sys.platform == "linux"
        self._pairing_agent = pairing_agent
        # Nobody types a PIN for the daemon: a passkey request is refused; Just Works only for provisioned devices.
        self.passkeys = PasskeyDesk(known=lambda address: config.device(address) is not None)
        self._auth_failures: dict[str, int] = {}  # the auth:<address> cursors as last read or written

    @property
    def journal(self) -> IndicationJournal | None:
        """The indication journal the sessions append to, if any."""
        return self._journal

    async def __aenter__(self) -> Self:
        await self._replay_journal()
        async with contextlib.AsyncExitStack() as stack:
            if self._pairing_agent:
                await self._register_agent(stack)
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

    async def _register_agent(self, stack: contextlib.AsyncExitStack) -> None:
        """The hub's BlueZ pairing agent, for as long as the manager runs. Without it the hub still reads meters
        that pair with Just Works (bluetoothd pairs as NoInputNoOutput), so a failure is logged, not fatal; a hub
        without a system bus or bluetoothd fails its scan next, with its own retry."""
        try:
            await stack.enter_async_context(bluez_agent(self.passkeys))
        except (AgentRegistrationError, OSError, AuthError, InvalidAddressError) as exc:
            _log.warning("BLE: no pairing agent (%s); meters that show a PIN cannot pair with this hub", exc)

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
                runner = SessionRunner(
                    self._config,
                    self._sink,
                    self.stats,
                    journal=self._journal,
                    clock=self._clock,
                    client_backend=self._client_backend,
                    timeout=self._timeout,
                    idle_disconnect=self._idle_disconnect,
                )
                await runner.run(cfg, device, state)
            state.attempts, state.last_failure = 0, None
            await self._note_auth(cfg, failed=False)
        except (BleakError, TimeoutError, OSError) as exc:
            kind = classify_error(exc)
            self.stats.failures[kind] += 1
            # Consecutive failures of one class grow its delay; a failure of another class starts that one afresh.
            state.attempts = state.attempts + 1 if kind is state.last_failure else 1
            state.last_failure = kind
            delay = RETRY[kind].delay(state.attempts, self._rng)
            state.not_before = self._monotonic() + delay
            _log.warning("session with %s failed (%s: %s); retry in %.1f s", cfg.address, kind, exc, delay)
            try:
                await self._sink.report(LinkFailed(cfg, kind, str(exc)))
                if kind is ErrorClass.AUTH:
                    await self._note_auth(cfg, failed=True)
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

    async def _note_auth(self, cfg: DeviceConfig, *, failed: bool) -> None:
        """Count an AUTH failure in the device's durable ``auth:`` cursor, or set it back to 0 after a good session
        (written only when it changes; read once per run)."""
        key = auth_cursor_key(cfg.address)
        before = self._auth_failures.get(cfg.address)
        if before is None:
            before = self._auth_failures[cfg.address] = await self._sink.get_cursor(key) or 0
        after = before + 1 if failed else 0
        if after == before:
            return
        await self._sink.store_readings([], cursor=(key, after))
        self._auth_failures[cfg.address] = after
        if failed and after == 1:
            _log.error("%s refused to pair or lost its bond: pair it again with `carehub provision pair`", cfg.address)

    def _storage_failed(self, cfg: DeviceConfig, state: DeviceState, exc: OutboxError) -> None:
        """Count a session that ended because its data could not be stored; retry the device at the transient pace."""
        self.stats.storage_failures += 1
        state.attempts = state.attempts + 1 if state.last_failure is ErrorClass.TRANSIENT else 1
        state.last_failure = ErrorClass.TRANSIENT
        delay = RETRY[ErrorClass.TRANSIENT].delay(state.attempts, self._rng)
        state.not_before = self._monotonic() + delay
        _log.error("session with %s: the hub could not store its data (%s); retry in %.1f s", cfg.address, exc, delay)
