"""The hub's core: every reading and button press becomes local action first, then a sealed, fsynced record.

:class:`Hub` is the :class:`gateway.ble.ReadingSink` of the BLE layer and the consumer of the uplink's verified
down-messages. For each input, in this order (invariant 5, then invariants 1-4):

1. judge it: the rule engine and the alarm book (`gateway.rules`, `gateway.alarms`) or the panic lifecycle
   (`gateway.panic`) decide what it means;
2. tell the resident at once: cues go to the feedback (a synchronous, non-blocking call);
3. make records (`protocols.record`), sign and seal them (`protocols.envelope`), and put them in the outbox in one
   transaction, alarms and panic events in the priority lane, each in its own envelope; routine records handed
   over in the same loop turn share envelopes (:meth:`Hub._commit`); the coroutine returns only after the commit
   is fsynced, and a meter's RACP cursor is committed in the same transaction;
4. confirm to the pendant only after its event is durable; write its feedback state.

Time comes from an injected ``now`` callable; periodic work (re-raising alarms, escalating an unanswered panic
call, missed measurements and check-ins) happens in :meth:`Hub.tick`, which the app calls on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import logging
import math
import os
import shutil
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway.alarms import Alarm, AlarmBook, AlarmEvent, CriticalSnoozeError, InvalidSnoozeError, UnknownAlarmError
from gateway.ble import Reading
from gateway.catalogue import render
from gateway.config import DeviceConfig, GatewayConfig
from gateway.feedback import Cue, Feedback, Light, Sound
from gateway.outbox import Lane, Outbox, OutboxItem
from gateway.panic import (
    Action,
    EmitRecord,
    NotifyFallback,
    PanicCall,
    PanicLifecycle,
    PendantEventKind,
    SetPendantState,
    ShowCue,
)
from gateway.rules import Observation, RuleEngine, Vital
from gateway.thresholds import Tier
from protocols import gatt
from protocols.envelope import MAX_ENVELOPE_BYTES, seal
from protocols.errors import AuthenticationError, DecodeError, ProtocolError, ReplayError
from protocols.keys import HubIdentity, PlatformPublicKeys
from protocols.messages import AlarmAcknowledgement, AlarmSnooze, DownMessage, ThresholdUpdate
from protocols.pendant import (
    ConfirmFrame,
    FeedbackFrame,
    FeedbackState,
    PendantEventType,
    PendantVerifier,
)
from protocols.record import (
    AlarmBody,
    AlarmState,
    AlarmTier,
    Body,
    ClockCorrection,
    DeviceStatusBody,
    EvictionBody,
    LinkState,
    MeasurementBody,
    PanicBody,
    PanicEventType,
    Record,
    RecordKind,
    alarm_record_id,
    measurement_record_id,
    panic_record_id,
    status_record_id,
)

__all__ = ["FallbackNotifier", "Hub", "HubCounters", "observation_of"]

_log = logging.getLogger(__name__)

# Latency bookkeeping for the input being handled, per task: several inputs (a meter's readings, a pendant frame,
# the timer tick, the uplink's down-messages) interleave at every await, so instance attributes would mix them up.
# Times are time.monotonic(), not the loop's time: uvloop's is in whole milliseconds, taken once per loop turn.
_INPUT_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar("carehub_input_at", default=None)
"""Monotonic time the input being handled arrived (``None``: no input, e.g. the timer tick)."""
_SHOWN_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar("carehub_shown_at", default=None)
"""Monotonic time the cue for the input being handled was shown."""


@contextlib.contextmanager
def _handling_input() -> Iterator[None]:
    """Mark the input arriving now for the rest of this call (and only this call) in the current task."""
    input_token = _INPUT_AT.set(time.monotonic())
    shown_token = _SHOWN_AT.set(None)
    try:
        yield
    finally:
        _SHOWN_AT.reset(shown_token)
        _INPUT_AT.reset(input_token)


_SEQ_BLOCK = 256  # record/envelope sequence numbers reserved per outbox transaction; a crash only leaves a gap
_TIERS = {Tier.NOTICE: AlarmTier.NOTICE, Tier.WARNING: AlarmTier.WARNING, Tier.CRITICAL: AlarmTier.CRITICAL}
_ALARM_STATES = {
    "raised": AlarmState.RAISED,
    "re-raised": AlarmState.RE_RAISED,
    "re_raised": AlarmState.RE_RAISED,
    "escalated": AlarmState.ESCALATED,
    "confirmed": AlarmState.CONFIRMED,
    "downgraded": AlarmState.DOWNGRADED,
    "cleared": AlarmState.CLEARED,
    "acknowledged": AlarmState.ACKNOWLEDGED,
    "snoozed": AlarmState.SNOOZED,
    "cancelled": AlarmState.CANCELLED,
}
_PANIC_EVENTS = {
    PendantEventType.PRESS: PendantEventKind.PRESS,
    PendantEventType.LONG_PRESS: PendantEventKind.LONG_PRESS,
    PendantEventType.CANCEL: PendantEventKind.CANCEL,
    PendantEventType.CHECKIN: PendantEventKind.CHECKIN,
}
_FEEDBACK_STATES = {
    "help_called": FeedbackState.HELP_CALLED,
    "answered": FeedbackState.ANSWERED,
    "cancelled": FeedbackState.CANCELLED,
    "checkin_ok": FeedbackState.CHECKIN_OK,
    "not_connected": FeedbackState.NOT_CONNECTED,
    "low_battery": FeedbackState.LOW_BATTERY,
}
_CUES = {
    Tier.INFO: (Light.NOTICE, Sound.NONE),
    Tier.NOTICE: (Light.NOTICE, Sound.CHIME),
    Tier.WARNING: (Light.WARNING, Sound.BEEP),
    Tier.CRITICAL: (Light.CRITICAL, Sound.ALARM),
}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def observation_of(
    device: DeviceConfig, measurement: gatt.Measurement, record_id: str, at: datetime
) -> Observation | None:
    """The rule engine's view of a decoded measurement, in canonical units; None for what has no vital sign."""
    values: dict[Vital, float] = {}
    unreliable = False

    def put(vital: Vital, value: float | None) -> None:
        v = _finite(value)
        if v is not None:
            values[vital] = v

    match measurement:
        case gatt.BloodPressureMeasurement():
            put(Vital.SYSTOLIC, measurement.systolic_mmhg)
            put(Vital.DIASTOLIC, measurement.diastolic_mmhg)
            put(Vital.MEAN_ARTERIAL, measurement.mean_arterial_mmhg)
            put(Vital.PULSE, measurement.pulse_rate_bpm)
            # Body movement, cuff too loose or improper position: the cuff says the reading is not trustworthy.
            status = measurement.measurement_status or 0
            unreliable = bool(status & (0x01 | 0x02 | 0x20))
        case gatt.GlucoseMeasurement():
            put(Vital.GLUCOSE, measurement.mg_dl)
            unreliable = bool(measurement.out_of_device_range) or bool(
                (measurement.sensor_status or 0) & ~0x0001  # anything but "battery low" makes the value doubtful
            )
        case gatt.PlxSpotCheckMeasurement() | gatt.PlxContinuousMeasurement():
            put(Vital.SPO2, measurement.spo2_percent)
            put(Vital.PULSE, measurement.pulse_bpm)
            unreliable = measurement.is_unreliable
        case gatt.TemperatureMeasurement():
            put(Vital.TEMPERATURE, measurement.celsius)
        case gatt.WeightMeasurement():
            put(Vital.WEIGHT, measurement.kg)
        case gatt.HeartRateMeasurement():
            put(Vital.PULSE, measurement.bpm)
            unreliable = bool(measurement.skin_contact_lost)
        case _:
            return None
    if not values and not unreliable:
        return None
    return Observation(
        resident=device.resident,
        device=device.address,
        kind=device.kind,
        record_id=record_id,
        at=at,
        values=values,
        unreliable=unreliable,
    )


@dataclass(slots=True)
class HubCounters:
    """What the hub has done, for the demo summary, `carehub doctor` and benchmarks."""

    readings: int = 0
    duplicates_dropped: int = 0
    alarms: dict[str, int] = field(default_factory=lambda: {"notice": 0, "warning": 0, "critical": 0})
    panic_events: int = 0
    pendant_rejected: int = 0
    fallback_notifications: int = 0
    threshold_updates: int = 0
    snoozes_refused: int = 0
    evictions_reported: int = 0
    # Latencies in seconds of the event loop's clock: reading or pendant frame received -> local feedback started,
    # and -> the platform's ack of the alarm record held by the hub.
    alarm_detect_s: list[float] = field(default_factory=list)
    alarm_delivery_s: list[float] = field(default_factory=list)
    panic_local_s: list[float] = field(default_factory=list)
    panic_platform_s: list[float] = field(default_factory=list)


class FallbackNotifier:
    """The installer's last resort when the platform cannot be reached: a command and/or a webhook.

    The command gets the message as its last argument and CAREHUB_* variables in its environment; the webhook gets
    a JSON POST. Both run off the event loop and never raise into alarm handling.
    """

    def __init__(self, command: Sequence[str] | None, webhook: str | None, *, timeout: float = 10.0) -> None:
        self._command = tuple(command) if command else None
        self._webhook = webhook
        self._timeout = timeout
        self.sent: list[tuple[str, str]] = []
        self.failures = 0

    @property
    def configured(self) -> bool:
        """Whether anything will happen on :meth:`notify`."""
        return bool(self._command or self._webhook)

    async def notify(self, alarm_id: str, resident: str, message: str) -> None:
        """Run the command and post the webhook; failures are logged and counted."""
        self.sent.append((alarm_id, message))
        if self._command is not None:
            await self._run_command(alarm_id, resident, message)
        if self._webhook is not None:
            payload = json.dumps({"alarm_id": alarm_id, "resident": resident, "message": message}).encode()
            try:
                await asyncio.to_thread(self._post, payload)
            except OSError as exc:
                self.failures += 1
                _log.error("fallback webhook failed: %s", exc)

    async def _run_command(self, alarm_id: str, resident: str, message: str) -> None:
        assert self._command is not None  # noqa: S101  checked by the caller
        program = shutil.which(self._command[0]) or self._command[0]
        env = {**os.environ, "CAREHUB_ALARM_ID": alarm_id, "CAREHUB_RESIDENT": resident}
        try:
            proc = await asyncio.create_subprocess_exec(
                program, *self._command[1:], message, env=env, stdout=asyncio.subprocess.DEVNULL
            )
            async with asyncio.timeout(self._timeout):
                code = await proc.wait()
        except (OSError, TimeoutError) as exc:
            self.failures += 1
            _log.error("fallback command failed: %s", exc)
            return
        if code != 0:
            self.failures += 1
            _log.error("fallback command exited with %s", code)

    def _post(self, payload: bytes) -> None:
        assert self._webhook is not None  # noqa: S101  checked by the caller
        request = urllib.request.Request(  # noqa: S310  the installer configures an http(s) URL
            self._webhook, data=payload, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self._timeout):  # noqa: S310  as above
            pass


@dataclass(slots=True)
class _Pending:
    record: Record
    lane: Lane


@dataclass(slots=True)
class _SealRequest:
    """One caller's records and cursor, committed with everything else handed over in the same loop turn."""

    pending: Sequence[_Pending]
    cursor: tuple[str, int] | None


# Routine records sealed together: at most this many per envelope, and this many CBOR bytes, which leaves room for
# the envelope's own fields, signature and seal within protocols.envelope.MAX_ENVELOPE_BYTES.
_RECORDS_PER_ENVELOPE = 64
_RECORD_BYTES_PER_ENVELOPE = MAX_ENVELOPE_BYTES - 4096


def _envelope_chunks(records: Sequence[Record], encoded: Sequence[bytes]) -> Iterator[tuple[list[Record], list[bytes]]]:
    """``records`` (and their CBOR) in order, in runs of one kind within the per-envelope bounds."""
    chunk: list[Record] = []
    chunk_cbor: list[bytes] = []
    size = 0
    for record, cbor in zip(records, encoded, strict=True):
        full = len(chunk) >= _RECORDS_PER_ENVELOPE or size + len(cbor) > _RECORD_BYTES_PER_ENVELOPE
        if chunk and (full or record.kind is not chunk[0].kind):
            yield chunk, chunk_cbor
            chunk, chunk_cbor, size = [], [], 0
        chunk.append(record)
        chunk_cbor.append(cbor)
        size += len(cbor)
    if chunk:
        yield chunk, chunk_cbor


class Hub:
    """Judges, tells, records. Implements :class:`gateway.ble.ReadingSink`."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        identity: HubIdentity,
        platform: PlatformPublicKeys,
        outbox: Outbox,
        feedback: Feedback,
        rules: RuleEngine,
        alarms: AlarmBook,
        panic: PanicLifecycle,
        pendant_keys: dict[str, bytes],
        fallback: FallbackNotifier,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        pendant_writer: Callable[[str, bytes], Awaitable[bool]] | None = None,
    ) -> None:
        self._config = config
        self._identity = identity
        self._platform = platform
        self._outbox = outbox
        self._feedback = feedback
        self._rules = rules
        self._alarms = alarms
        self._panic = panic
        self._pendant_keys = pendant_keys
        self._verifiers: dict[str, PendantVerifier] = {}
        self._feedback_seq: dict[str, tuple[int, int]] = {}
        self._fallback = fallback
        self._now = now
        self._pendant_writer = pendant_writer
        self._seqs: range = range(0)
        self._seq_lock = asyncio.Lock()
        self._alarm_revision: dict[str, int] = {}
        self._down_seq = 0
        self._alarm_peak: dict[str, AlarmTier] = {}
        self._raised_at: dict[str, tuple[float, bool]] = {}  # alarm record id -> (input time, is a panic call)
        self.counters = HubCounters()
        self.alarm_records: asyncio.Queue[Record] = asyncio.Queue()
        self._to_seal: list[_SealRequest] = []  # this loop turn's requests, until their sealer takes them
        self._sealer: asyncio.Task[None] | None = None  # the task that will commit them, once one is handed over
        self._sealers: set[asyncio.Task[None]] = set()  # every commit not finished yet

    def set_pendant_writer(self, writer: Callable[[str, bytes], Awaitable[bool]]) -> None:
        """Where pendant feedback frames go (the BLE manager, once it runs)."""
        self._pendant_writer = writer

    # -- records and the outbox -------------------------------------------------------------------------------

    async def _next_seqs(self, count: int) -> range:
        """``count`` consecutive sequence numbers (a shorter rest of the reserved block is skipped: a gap, no reuse)."""
        async with self._seq_lock:
            if len(self._seqs) < count:
                self._seqs = await self._outbox.allocate_seqs(max(_SEQ_BLOCK, count))
            out, self._seqs = self._seqs[:count], self._seqs[count:]
            return out

    async def _commit(self, pending: Sequence[_Pending], cursor: tuple[str, int] | None = None) -> None:
        """Seal ``pending`` and commit it, with the cursor, in one transaction; return once it is durable.

        Everything handed over in the same turn of the event loop (meters reporting together, a RACP batch, an
        alarm and the reading that raised it) is committed together: each priority-lane record (an alarm step, a
        panic event) in an envelope of its own, the routine records sharing envelopes, so one signature and one
        sealed box serve many readings - most of the hub's work per reading under load. Nothing waits for a timer.
        """
        if not pending and cursor is None:
            return
        sealer = self._sealer
        if sealer is None:
            # The first caller of this loop turn: the sealer's first step runs after the other callers of the turn.
            sealer = self._sealer = asyncio.create_task(self._seal_together(), name="gateway.intake.seal")
            self._sealers.add(sealer)
            sealer.add_done_callback(self._sealers.discard)
        self._to_seal.append(_SealRequest(pending, cursor))
        # Shielded: a caller cancelled meanwhile (its session ending) does not cancel the others' commit.
        await asyncio.shield(sealer)

    async def settle(self) -> None:
        """Wait until what callers have handed over is committed (or failed); for shutdown, before the outbox closes.

        Commits already under way finish even when their callers were cancelled: the readings in them were confirmed
        to the meters, so they are stored rather than left to the indication journal's replay.
        """
        while self._sealers:
            await asyncio.gather(*self._sealers, return_exceptions=True)

    async def _seal_together(self) -> None:
        """Commit the records and cursors handed over in this loop turn in one transaction."""
        requests, self._to_seal, self._sealer = self._to_seal, [], None
        priority = [p.record for r in requests for p in r.pending if p.lane is Lane.PRIORITY]
        routine = [p.record for r in requests for p in r.pending if p.lane is not Lane.PRIORITY]
        seqs = await self._next_seqs(len(priority) + len(routine)) if priority or routine else range(0)
        numbered = [dataclasses.replace(r, seq=seq) for r, seq in zip([*priority, *routine], seqs, strict=True)]
        encoded = [r.to_cbor() for r in numbered]
        now = self._now()
        cut = len(priority)
        items = [
            self._envelope([r], [e], now, Lane.PRIORITY) for r, e in zip(numbered[:cut], encoded[:cut], strict=True)
        ]
        items.extend(
            self._envelope(chunk, chunk_cbor, now, Lane.ROUTINE)
            for chunk, chunk_cbor in _envelope_chunks(numbered[cut:], encoded[cut:])
        )
        cursors = {r.cursor[0]: r.cursor[1] for r in requests if r.cursor is not None}
        await self._put(items, cursors or None)

    def _envelope(self, records: Sequence[Record], encoded: Sequence[bytes], now: datetime, lane: Lane) -> OutboxItem:
        """Numbered ``records`` (``encoded`` as CBOR) sealed into one envelope, numbered as its first record."""
        seq = records[0].seq
        envelope = seal(self._identity, self._platform.box_key, seq, now, encoded)
        ids = tuple(r.record_id.hex() for r in records)
        return OutboxItem(seq, envelope, lane, records[0].kind.value, ids, now.timestamp())

    async def _put(self, items: list[OutboxItem], cursors: dict[str, int] | None) -> None:
        result = await self._outbox.put_many(items, cursors=cursors)
        if result.evicted is not None:
            await self.report_evictions()

    async def report_evictions(self) -> None:
        """Turn evictions not yet reported into an eviction record, settled in the same transaction."""
        eviction = await self._outbox.pending_evictions()
        if eviction is None:
            return
        seq = (await self._next_seqs(1))[0]
        now = self._now()
        ids = [bytes.fromhex(r) for r in eviction.record_ids if len(r) == 32]
        record = Record(
            record_id=status_record_id(self._identity.hub_id, RecordKind.EVICTION, seq),
            hub_id=self._identity.hub_id,
            seq=seq,
            hub_time=now,
            body=EvictionBody(
                count=eviction.count,
                first_seq=eviction.first_seq,
                last_seq=eviction.last_seq,
                bytes_freed=eviction.size,
                oldest_record_id=ids[0] if ids else None,
                newest_record_id=ids[-1] if ids else None,
            ),
        )
        item = self._envelope([record], [record.to_cbor()], now, Lane.PRIORITY)
        await self._outbox.put_many([item], settle=eviction)
        self.counters.evictions_reported += 1

    def _record(
        self, record_id: bytes, body: Body, *, device: str | None = None, device_time: str | None = None
    ) -> Record:
        return Record(
            record_id=record_id,
            hub_id=self._identity.hub_id,
            seq=0,  # replaced by the outbox's sequence number in _commit
            hub_time=self._now(),
            body=body,
            device_id=device,
            device_time=device_time,
        )

    # -- alarms -----------------------------------------------------------------------------------------------

    def _language(self, resident: str) -> str:
        try:
            return self._config.resident(resident).language
        except KeyError:
            return "en"

    def _alarm_pending(self, event: AlarmEvent, triggers: Iterable[bytes] = ()) -> _Pending:
        body = AlarmBody(
            alarm_id=event.alarm_id,
            condition=event.condition if not event.subject else f"{event.condition}:{event.subject}",
            tier=_TIERS.get(event.tier, AlarmTier.NOTICE),
            state=_ALARM_STATES[event.state.value],
            revision=self._next_revision(event.alarm_id),
            message=render(event.message, self._language(event.resident)),
            trigger_record_ids=tuple(triggers),
            value=event.value,
            threshold=event.threshold,
            resident_id=event.resident,
        )
        return self._alarm_step(body)

    def _next_revision(self, alarm_id: str) -> int:
        revision = self._alarm_revision.get(alarm_id, -1) + 1
        self._alarm_revision[alarm_id] = revision
        return revision

    def _alarm_step(self, body: AlarmBody) -> _Pending:
        """One alarm step as a priority-lane record: counted, timed from its input, offered to the ack watcher."""
        record = self._record(alarm_record_id(self._identity.hub_id, body.alarm_id, body.state, body.revision), body)
        self._count_alarm(body.alarm_id, body.tier)
        input_at = _INPUT_AT.get()
        if body.state is AlarmState.RAISED and input_at is not None:
            self._raised_at[record.record_id.hex()] = (input_at, body.condition == "panic")
        self.alarm_records.put_nowait(record)
        return _Pending(record, Lane.PRIORITY)

    def _count_alarm(self, alarm_id: str, tier: AlarmTier) -> None:
        """Alarms by the highest tier each reached (a confirmed BP crisis counts once, as critical)."""
        order = (AlarmTier.NOTICE, AlarmTier.WARNING, AlarmTier.CRITICAL)
        before = self._alarm_peak.get(alarm_id)
        if before is not None and order.index(before) >= order.index(tier):
            return
        if before is not None:
            self.counters.alarms[before.value] -= 1
        self._alarm_peak[alarm_id] = tier
        self.counters.alarms[tier.value] += 1

    def _show_alarm(self, event: AlarmEvent) -> None:
        if event.state.value in ("acknowledged", "snoozed"):
            return
        if event.state.value == "cleared":
            self._feedback.show(Cue("all_clear", self._language(event.resident), Light.OK, Sound.CHIME))
            return
        light, sound = _CUES.get(event.tier, (Light.NOTICE, Sound.NONE))
        cue = Cue(event.message, self._language(event.resident), light, sound, urgent=event.tier >= Tier.CRITICAL)
        self._feedback.show(cue)
        input_at = _INPUT_AT.get()
        if event.state.value == "raised" and input_at is not None:
            self.counters.alarm_detect_s.append(time.monotonic() - input_at)

    # -- ReadingSink ------------------------------------------------------------------------------------------

    async def store_readings(self, readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
        """Judge, tell and durably record meter readings (the BLE layer's sink)."""
        with _handling_input():
            await self._store_readings(readings, cursor)

    async def _store_readings(self, readings: Sequence[Reading], cursor: tuple[str, int] | None) -> None:
        pending: list[_Pending] = []
        for reading in readings:
            try:
                measurement = gatt.decode(reading.uuid, reading.data)
            except DecodeError as exc:
                _log.warning("dropping malformed %04X from %s: %s", reading.uuid, reading.device.address, exc)
                continue
            values = measurement.as_dict()
            device_dt = getattr(measurement, "device_time", None)
            device_time_text = values.get("timestamp") or values.get("base_time")
            corrected: datetime | None = None
            if reading.clock_offset is not None and isinstance(device_dt, datetime):
                corrected = (device_dt - reading.clock_offset).replace(tzinfo=UTC)
            sequence = values.get("sequence_number")
            record_id = measurement_record_id(
                reading.device.address,
                reading.uuid,
                reading.data,
                sequence if isinstance(sequence, int) else None,
                device_time_text if isinstance(device_time_text, str) else None,
                reading.received_at,
            )
            at = corrected or reading.received_at
            observation = observation_of(reading.device, measurement, record_id.hex(), at)
            triggers = (record_id,)
            if observation is not None:
                events = self._alarms.apply(self._rules.evaluate(observation))
                for event in events:
                    self._show_alarm(event)
                pending.extend(self._alarm_pending(e, triggers) for e in events)
            body = MeasurementBody(
                uuid=reading.uuid,
                raw=reading.data,
                values=values,
                resident_id=reading.device.resident,
                clock_corrected=corrected is not None,
                corrected_time=corrected,
                unreliable=bool(observation and observation.unreliable),
            )
            record = self._record(
                record_id,
                body,
                device=reading.device.address,
                device_time=device_time_text if isinstance(device_time_text, str) else None,
            )
            pending.append(_Pending(record, Lane.ROUTINE))
            self.counters.readings += 1
        await self._commit(pending, cursor)

    async def get_cursor(self, key: str) -> int | None:
        """A durable cursor from the outbox."""
        value = await self._outbox.get_cursor(key)
        return value if isinstance(value, int) else None

    async def device_status(self, device: DeviceConfig, fields: dict[str, object]) -> None:
        """Battery level, link changes and clock corrections become device-status records; batteries are judged."""
        battery = fields.get("battery_level")
        link_text = fields.get("link")
        link = {"connected": LinkState.CONNECTED, "disconnected": LinkState.DISCONNECTED}.get(str(link_text))
        correction = None
        clock = fields.get("clock_correction")
        if isinstance(clock, dict) and isinstance(clock.get("offset_s"), int | float):
            correction = ClockCorrection(
                old_device_time=str(clock.get("device_time") or "unknown"),
                new_time=self._now(),
                offset_seconds=clock["offset_s"],
            )
        pending: list[_Pending] = []
        if isinstance(battery, int):
            observation = Observation(
                resident=device.resident,
                device=device.address,
                kind=device.kind,
                record_id=f"battery:{device.address}",
                at=self._now(),
                values={Vital.BATTERY: float(battery)},
            )
            events = self._alarms.apply(self._rules.evaluate(observation))
            for event in events:
                self._show_alarm(event)
            pending.extend(self._alarm_pending(e) for e in events)
        if battery is None and link is None and correction is None:
            _log.info("device %s: %s", device.address, fields)
            if "misbehaviour" not in fields:
                return
        if isinstance(battery, int) or link is not None or correction is not None:
            seq_hint = len(self._alarm_revision) + self.counters.readings
            body = DeviceStatusBody(
                battery=battery if isinstance(battery, int) else None, link=link, clock_correction=correction
            )
            record = self._record(
                status_record_id(self._identity.hub_id, RecordKind.DEVICE_STATUS, seq_hint),
                body,
                device=device.address,
            )
            pending.append(_Pending(record, Lane.ROUTINE))
        await self._commit(pending)

    def _verifier(self, device: DeviceConfig) -> PendantVerifier | None:
        verifier = self._verifiers.get(device.address)
        if verifier is None:
            key = self._pendant_keys.get(device.address)
            if key is None:
                return None
            verifier = PendantVerifier(device.address, key)
            self._verifiers[device.address] = verifier
        return verifier

    async def restore_pendants(self) -> None:
        """Load each pendant's counter high-water mark from the outbox's cursors (after a restart)."""
        for address, key in self._pendant_keys.items():
            last = await self._outbox.get_cursor(f"pendant:{address}")
            self._verifiers[address] = PendantVerifier(address, key, last if isinstance(last, int) else 0)

    async def pendant_frame(self, device: DeviceConfig, data: bytes) -> bytes | None:
        """Authenticate a pendant event, act on it, make it durable, then return the Confirm to write back."""
        with _handling_input():
            return await self._pendant_frame(device, data)

    async def _pendant_frame(self, device: DeviceConfig, data: bytes) -> bytes | None:
        verifier = self._verifier(device)
        if verifier is None:
            self.counters.pendant_rejected += 1
            return None
        try:
            verified = verifier.verify(data)
        except (AuthenticationError, ReplayError, DecodeError) as exc:
            self.counters.pendant_rejected += 1
            _log.warning("pendant %s: rejected frame: %s", device.address, exc)
            return None
        key = self._pendant_keys[device.address]
        event = verified.event
        confirm = bytes(ConfirmFrame(event.counter).sign(device.address, key))
        if verified.repeat:
            return confirm
        self.counters.panic_events += 1
        pending: list[_Pending] = []
        now = self._now()
        kind = _PANIC_EVENTS.get(event.event)
        if kind is not None:
            actions = self._panic.on_event(
                pendant=device.address,
                resident=device.resident,
                kind=kind,
                counter=event.counter,
                battery=event.battery,
                now=now,
            )
            pending.extend(await self._carry_out(actions, device.address, event.counter))
            input_at, shown_at = _INPUT_AT.get(), _SHOWN_AT.get()
            if kind is PendantEventKind.PRESS and input_at is not None and shown_at is not None:
                self.counters.panic_local_s.append(shown_at - input_at)
        if event.battery is not None:
            await self.device_status(device, {"battery_level": event.battery})
        await self._commit(pending, (f"pendant:{device.address}", event.counter))
        return confirm

    async def _carry_out(
        self, actions: Sequence[Action], pendant: str | None = None, counter: int = 0
    ) -> list[_Pending]:
        """Local cues now; records returned for the caller's commit; pendant states and fallbacks after."""
        pending: list[_Pending] = []
        later: list[Action] = []
        for action in actions:
            match action:
                case ShowCue(cue):
                    self._feedback.show(cue)
                    _SHOWN_AT.set(time.monotonic())
                case EmitRecord(kind, fields):
                    pending.append(self._panic_record(kind, fields, pendant, counter))
                case SetPendantState() | NotifyFallback():
                    later.append(action)
        for action in later:
            match action:
                case SetPendantState(address, state):
                    await self._write_pendant_state(address, state)
                case NotifyFallback(alarm_id, resident, message):
                    self.counters.fallback_notifications += 1
                    await self._fallback.notify(alarm_id, resident, message)
        return pending

    def _panic_record(self, kind: str, fields: dict[str, object], pendant: str | None, counter: int) -> _Pending:
        if kind == "panic_event":
            pendant_id = str(fields["pendant"])
            event = PanicEventType(str(fields["event"]))
            battery = fields.get("battery")
            alarm = fields.get("alarm_id")
            panic = PanicBody(
                pendant_id=pendant_id,
                event=event,
                counter=counter,
                battery=battery if isinstance(battery, int) else None,
                alarm_id=alarm if isinstance(alarm, str) else None,
            )
            record = self._record(panic_record_id(pendant_id, counter, event), panic, device=pendant_id)
            return _Pending(record, Lane.PRIORITY)
        alarm_id = str(fields["alarm_id"])
        state = _ALARM_STATES[str(fields["state"])]
        resident = str(fields.get("resident") or "")
        message_key = {
            AlarmState.RAISED: "panic_help_called",
            AlarmState.CANCELLED: "panic_cancelled",
            AlarmState.ACKNOWLEDGED: "panic_answered",
            AlarmState.ESCALATED: "panic_still_calling",
        }.get(state, "checkin_missed" if fields.get("condition") == "checkin.missed" else "panic_still_calling")
        body = AlarmBody(
            alarm_id=alarm_id,
            condition=str(fields["condition"]),
            tier=AlarmTier(str(fields["tier"])),
            state=state,
            revision=self._next_revision(alarm_id),
            message=render(message_key, self._language(resident)),
            resident_id=resident or None,
        )
        return self._alarm_step(body)

    async def _write_pendant_state(self, address: str, state: str) -> None:
        if self._pendant_writer is None:
            return
        key = self._pendant_keys.get(address)
        verifier = self._verifiers.get(address)
        feedback_state = _FEEDBACK_STATES.get(state)
        if key is None or verifier is None or feedback_state is None:
            return
        counter = verifier.last_counter
        last_counter, last_seq = self._feedback_seq.get(address, (counter, -1))
        seq = last_seq + 1 if last_counter == counter else 0
        self._feedback_seq[address] = (counter, seq)
        frame = bytes(FeedbackFrame(feedback_state, counter, seq).sign(address, key))
        with contextlib.suppress(ProtocolError):
            await self._pendant_writer(address, frame)

    # -- platform and time ------------------------------------------------------------------------------------

    def open_alarms(self) -> tuple[Alarm, ...]:
        """The alarm book's open alarms (for `carehub doctor`, tests and the demo)."""
        return self._alarms.open_alarms()

    def alarm_by_id(self, alarm_id: str) -> Alarm | None:
        """An open or recently closed alarm."""
        return self._alarms.by_id(alarm_id)

    def panic_calls(self) -> list[PanicCall]:
        """Every panic call so far, open or closed."""
        return list(self._panic.calls.values())

    async def on_delivered(self, record_ids: Iterable[str]) -> None:
        """The uplink saw the platform ack these records: a panic call's alarm has reached the platform."""
        now = self._now()
        now_mono = time.monotonic()
        for rid in record_ids:
            started = self._raised_at.pop(rid, None)
            if started is not None:
                self.counters.alarm_delivery_s.append(now_mono - started[0])
                if started[1]:
                    self.counters.panic_platform_s.append(now_mono - started[0])
            for call in list(self._panic.calls.values()):
                if (
                    call.delivered_at is None
                    and rid == alarm_record_id(self._identity.hub_id, call.alarm_id, AlarmState.RAISED, 0).hex()
                ):
                    self._panic.on_delivered(call.alarm_id, now)

    async def on_down(self, message: object) -> None:
        """A verified platform message: a caregiver's acknowledgement or a threshold update."""
        if not isinstance(message, DownMessage):
            return
        if message.seq <= self._down_seq:
            _log.warning("ignoring replayed down-message %s", message.seq)
            return
        self._down_seq = message.seq
        await self._outbox.set_cursor("down_seq", message.seq)
        now = self._now()
        body = message.body
        if isinstance(body, AlarmAcknowledgement):
            pending: list[_Pending] = []
            if body.alarm_id in self._panic.calls:
                pending.extend(await self._carry_out(self._panic.on_caregiver_ack(body.alarm_id, body.by, now)))
            else:
                event = self._alarms.acknowledge(body.alarm_id, now, by=body.by)
                if event is not None:
                    pending.append(self._alarm_pending(event))
            await self._commit(pending)
        elif isinstance(body, AlarmSnooze):
            await self._snooze(body, now)
        elif isinstance(body, ThresholdUpdate):
            current = self._rules.thresholds(body.resident_id)
            changes = {k: float(v) for k, v in body.values.items() if v is not None}
            self._rules.set_thresholds(body.resident_id, current.updated(changes))
            self.counters.threshold_updates += 1

    async def _snooze(self, request: AlarmSnooze, now: datetime) -> None:
        """A caregiver's snooze: applied below critical; a critical alarm is never silenced (the request is logged)."""
        try:
            event = self._alarms.snooze(
                request.alarm_id, timedelta(seconds=request.duration_seconds), now, by=request.by
            )
        except CriticalSnoozeError:
            self.counters.snoozes_refused += 1
            _log.warning("refused %s's snooze of critical alarm %s", request.by, request.alarm_id)
            return
        except (UnknownAlarmError, InvalidSnoozeError) as exc:
            self.counters.snoozes_refused += 1
            _log.warning("cannot snooze alarm %s: %s", request.alarm_id, exc)
            return
        await self._commit([self._alarm_pending(event)])

    async def tick(self) -> None:
        """Periodic work on the injected clock: re-raise, escalate, missed schedules and check-ins."""
        now = self._now()
        pending: list[_Pending] = []
        events = self._alarms.apply(self._rules.tick(now)) + self._alarms.tick(now)
        for event in events:
            self._show_alarm(event)
            pending.append(self._alarm_pending(event))
        pending.extend(await self._carry_out(self._panic.tick(now)))
        await self._commit(pending)
