"""One connection to one device: the steps of a session (`gateway.ble` lists them), from connecting to handing over
what the device sent. :class:`BleManager` starts one :class:`SessionRunner` per connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError, BleakGATTProtocolError

from gateway.aio import raise_if_cancelling
from gateway.ble_errors import ATT_AUTH, ProtocolViolationError, classify_error
from gateway.ble_racp import BATCH, RacpProgress, device_time, take
from gateway.ble_steps import BestEffortSteps
from gateway.ble_types import BleStats, DeviceState, Notification, ReadingSink, SessionStep, uuid16
from gateway.clock import Clock
from gateway.config import DeviceConfig, DeviceKind, GatewayConfig
from gateway.core.measurements import ClockFinding, Filing, filing_of, is_control_solution
from gateway.events import (
    ErrorClass,
    LinkDown,
    LinkUp,
    Misbehaviour,
    PendantFrame,
    Reading,
)
from gateway.journal import IndicationJournal, JournalEntry
from protocols import gatt
from protocols.errors import DecodeError
from protocols.pendant import CONFIRM_CHAR_UUID, EVENT_CHAR_UUID
from protocols.profiles import PROFILES, profile_of

__all__ = ["NEEDS_BOND", "SessionRunner"]

_log = logging.getLogger("gateway.ble")

# What each kind of device is subscribed to, whether it is bonded first and whether its stored records are read
# through the RACP are the kind's profile (protocols.profiles); what it advertises is in gateway.discovery.
NEEDS_BOND = frozenset(kind for kind, profile in PROFILES.items() if profile.needs_bond)
_RACP = 0x2A52
# Notifications of one device waiting to be stored: more than a meter's memory holds (glucose meters keep up to about
# a thousand records, cuffs a few hundred), so a whole RACP transfer fits even while a commit is slow; a queue that is
# full nonetheless leaves the reading to the journal (read back when it has drained). About 200 bytes each.
_QUEUE_LIMIT = 2048
_DEFERRED_LIMIT = 65_536  # readings a session reads back from the journal after an overflow (numbers, 28 bytes each)
_RACP_RESPONSES = 2  # RACP responses waiting to be read (one per request)
_RACP_SILENCE = 60.0  # seconds a RACP transfer may go without a record or the response


class SessionRunner:
    """Runs sessions with the manager's settings, as they are when the session starts."""

    def __init__(
        self,
        config: GatewayConfig,
        sink: ReadingSink,
        stats: BleStats,
        *,
        journal: IndicationJournal | None,
        clock: Clock,
        client_backend: type[BaseBleakClient] | None,
        timeout: float,
        idle_disconnect: float,
    ) -> None:
        self._config = config
        self._sink = sink
        self.stats = stats
        self._journal = journal
        self._now = clock.now
        self._client_backend = client_backend
        self._timeout = timeout
        self._idle_disconnect = idle_disconnect
        self._steps = BestEffortSteps(config, sink, stats, clock, timeout)

    def _release(self, items: Sequence[Notification]) -> None:
        """The readings of `items` are committed (or reported as misbehaviour): release their journal entries."""
        numbers = [item.journal_number for item in items if item.journal_number is not None]
        if self._journal is not None and numbers:
            self._journal.release(numbers)

    async def run(self, cfg: DeviceConfig, device: BLEDevice, state: DeviceState) -> None:
        """Connect, bond where the kind needs it, subscribe, run the best-effort steps and hand over what arrives
        until the device goes away or falls idle (the steps are listed in `gateway.ble`'s docstring)."""
        disconnected = asyncio.Event()
        client = BleakClient(
            device,
            disconnected_callback=lambda _c: disconnected.set(),
            timeout=self._timeout,
            backend=self._client_backend,
        )
        # Subscriptions are undone (stop_notify) when the session ends while the link is still up; before the link.
        async with client, contextlib.AsyncExitStack() as subscriptions:
            if cfg.kind in NEEDS_BOND:
                await client.pair()
            await self._sink.report(LinkUp(cfg))
            queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=_QUEUE_LIMIT)
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
                    queue.put_nowait(Notification(uuid, value, at, number))

                return on_value

            if cfg.kind is DeviceKind.PENDANT:
                state.pendant_client = client
                await self._subscribe(client, subscriptions, str(EVENT_CHAR_UUID), bridge(0), cfg)
                await self._consume(cfg, client, queue, disconnected, None, deferred=deferred)
                return
            chars = {c.uuid for s in client.services for c in s.characteristics}
            # A multi-user scale sends its user's weights only under consent given on this connection (UDS): asked
            # before subscribing, best-effort (`gateway.ble_steps`; a refusal slows the next try down).
            await self._steps.give_consent(client, cfg, chars, state)
            # Subscribe first: what arrives waits in the queue (stored once the clock is known), and no later step
            # can keep the meter's readings from the hub.
            for uuid in profile_of(cfg.kind).uuids:
                if uuid16(uuid) in chars:
                    await self._subscribe(client, subscriptions, uuid16(uuid), bridge(uuid), cfg)
            clock = await self._steps.sync_clock(client, cfg, chars)
            clock = await self._steps.read_session_clock(client, cfg, chars, clock)  # a CGM's session start
            await self._steps.read_battery(client, cfg, chars)
            await self._steps.read_device_information(client, cfg, chars)
            complete = True
            if profile_of(cfg.kind).racp and uuid16(_RACP) in chars:
                complete = await self._transfer_records(cfg, client, queue, clock)
            # A transfer the meter cut short ends the session at once: the next connection asks for the rest.
            await self._consume(cfg, client, queue, disconnected, clock, deferred=deferred, linger=complete)

    async def _subscribe(
        self,
        client: BleakClient,
        subscriptions: contextlib.AsyncExitStack,
        uuid: str,
        callback: Callable[[BleakGATTCharacteristic, bytearray], None],
        cfg: DeviceConfig,
    ) -> None:
        await self._start_notify(client, cfg, uuid, callback)
        subscriptions.push_async_callback(self._unsubscribe, client, uuid)

    async def _start_notify(
        self,
        client: BleakClient,
        cfg: DeviceConfig,
        uuid: str,
        callback: Callable[[BleakGATTCharacteristic, bytearray], None],
    ) -> None:
        """start_notify, pairing on demand: a meter that refuses the CCCD write with ATT insufficient authentication,
        authorization, encryption or key size (0x05, 0x08, 0x0F, 0x0C) is bonded (BlueZ asks the hub's agent what the
        meter's pairing method needs, `gateway.ble_agent`) and the write is tried once more. A second refusal, or a
        pairing the meter refuses, ends the session as an AUTH failure (slow retry, `carehub doctor`)."""
        try:
            await client.start_notify(uuid, callback)
        except BleakGATTProtocolError as exc:
            if exc.code not in ATT_AUTH:
                raise
            _log.info("%s wants a bond to subscribe to %s (ATT 0x%02X): pairing", cfg.address, uuid, int(exc.code))
        else:
            return
        await client.pair()
        await client.start_notify(uuid, callback)

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
        queue: asyncio.Queue[Notification],
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
                await self._deliver(cfg, client, take(queue, getter.result()), clock)
            if not disconnected.is_set():
                # Idle: close the link before the last drain. The stack confirms an indication as it arrives, so
                # one arriving after the drain but before the disconnect would be confirmed and then dropped.
                await client.disconnect()
            # Whatever arrived just before the link dropped is still ours to keep.
            while not queue.empty():
                await self._deliver(cfg, client, take(queue), clock)
            await self._store_deferred(cfg, deferred, clock)
        finally:
            gone.cancel()
        await self._sink.report(LinkDown(cfg))

    async def _deliver(
        self, cfg: DeviceConfig, client: BleakClient, items: list[Notification], clock: ClockFinding | None
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
        items = [Notification(e.uuid, e.data, e.received_at, e.number) for e in entries]
        for first in range(0, len(items), BATCH):
            await self._store(cfg, items[first : first + BATCH], clock)

    async def _store(
        self,
        cfg: DeviceConfig,
        items: list[Notification],
        clock: ClockFinding | None,
        racp: RacpProgress | None = None,
    ) -> None:
        """Store `items` in one commit (with the RACP cursor past them) and release their journal entries. Values are
        decoded as the hub records them (tolerantly, `protocols.gatt.tolerant`); one that does not decode even so is
        counted and handed over all the same, and the sink keeps it as a raw reading. Each reading carries the
        session's clock offset only when it was stamped on the clock the hub read (`ClockFinding.offset_for`,
        looking ahead at the stamps of the readings after it)."""
        decoded: list[tuple[Notification, gatt.Measurement | None]] = []
        for item in items:
            try:
                measurement: gatt.Measurement | None = gatt.decode_tolerant(item.uuid, item.data).measurement
            except DecodeError as exc:
                self.stats.malformed += 1
                _log.warning("undecodable %04X from %s, kept raw: %s", item.uuid, cfg.address, exc)
                measurement = None
            if racp is not None and measurement is not None:
                racp.saw(profile_of(cfg.kind).record_position(measurement))
            decoded.append((item, measurement))
        stamps = [None if measurement is None else device_time(measurement) for _, measurement in decoded]
        readings = []
        for index, (item, measurement) in enumerate(decoded):
            offset = None
            if clock is not None and measurement is not None:
                later = [stamp for stamp in stamps[index + 1 :] if stamp is not None]
                offset = clock.offset_for(stamps[index], item.received_at, later)
            if measurement is not None and filing_of(cfg, measurement) is not Filing.RESIDENT:
                self.stats.unassigned += 1
            if measurement is not None and is_control_solution(measurement):
                self.stats.control_solution += 1
            session_start = None if clock is None else clock.session_start
            readings.append(Reading(cfg, item.uuid, item.data, item.received_at, offset, session_start))
        cursor = None if racp is None else racp.take_cursor()
        if readings or cursor is not None:
            self.stats.readings += len(readings)
            await self._sink.store_readings(readings, cursor=cursor)
        self._release(items)

    async def _transfer_records(
        self,
        cfg: DeviceConfig,
        client: BleakClient,
        queue: asyncio.Queue[Notification],
        clock: ClockFinding | None,
    ) -> bool:
        """RACP: ask for the stored records with sequence number >= the cursor and store them as they arrive, each
        commit with the cursor past the last contiguous record so far; once the meter answers success, past every
        record it reported. A transfer cut short keeps what arrived. A failure response after records were stored is
        reported and the session ends (its next connection asks for the rest); a failure response with nothing
        stored, or silence, fails the session, so the device is retried at its class's pace, never in a loop.
        Returns whether the meter sent everything asked for."""
        key = f"racp:{cfg.address}"
        progress = RacpProgress(key, await self._sink.get_cursor(key) or 0)
        responses: asyncio.Queue[bytes] = asyncio.Queue(maxsize=_RACP_RESPONSES)

        def on_response(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            if responses.full():  # one response per request: more is the device misbehaving
                self.stats.malformed += 1
                _log.warning("unrequested RACP response from %s ignored: %s", cfg.address, bytes(data).hex())
                return
            responses.put_nowait(bytes(data))

        await self._start_notify(client, cfg, uuid16(_RACP), on_response)
        try:
            request = gatt.RacpRequest.report_greater_or_equal(progress.start)
            await client.write_gatt_char(uuid16(_RACP), bytes(request), response=True)
            answer = await self._store_until(cfg, queue, clock, progress, responses)
        except TimeoutError:
            while not queue.empty():  # what came before the silence is kept
                await self._store(cfg, take(queue), clock, progress)
            raise
        finally:
            await self._unsubscribe(client, uuid16(_RACP))
        while not queue.empty():  # the records indicated before the response
            await self._store(cfg, take(queue), clock, progress)
        try:
            reply = gatt.decode(_RACP, answer)
        except DecodeError as exc:
            raise ProtocolViolationError(f"RACP response {answer.hex()} does not decode: {exc}") from exc
        code = reply.as_dict().get("response_code")
        if code not in (gatt.RacpResponseCode.SUCCESS, gatt.RacpResponseCode.NO_RECORDS_FOUND):
            failure = f"RACP report failed with response code {code}"
            if progress.committed is None:
                raise ProtocolViolationError(failure)  # nothing came: retried at the protocol pace, not in a loop
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
        queue: asyncio.Queue[Notification],
        clock: ClockFinding | None,
        progress: RacpProgress,
        responses: asyncio.Queue[bytes],
    ) -> bytes:
        """Store records as they arrive until the RACP response does; return it.

        Raises:
            TimeoutError: neither a record nor the response came for `_RACP_SILENCE` seconds.
        """
        answer = asyncio.ensure_future(responses.get())
        getter: asyncio.Future[Notification] | None = None
        try:
            while True:
                raise_if_cancelling()  # the stores and bumble's calls may have lost a cancellation
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, answer}, timeout=_RACP_SILENCE, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    await self._store(cfg, take(queue, getter.result()), clock, progress)
                elif answer in done:
                    return answer.result()
                else:
                    raise TimeoutError(f"RACP: neither a record nor the response within {_RACP_SILENCE:g} s")
        finally:
            answer.cancel()
            if getter is not None:
                getter.cancel()
