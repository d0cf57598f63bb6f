"""The hub: a thin async shell that feeds the pure cores (`gateway.core`) and carries out what they return.

:class:`Hub` is the :class:`gateway.ble.ReadingSink` of the BLE layer and the consumer of the uplink's verified
down-messages. For each input, in this order (invariant 5, then invariants 1-4):

1. judge it: the rule engine and the alarm book (`gateway.rules`, `gateway.alarms`) or the panic lifecycle
   (`gateway.panic`) decide what it means;
2. tell the resident at once: cues go to the feedback (a synchronous, non-blocking call);
3. make record drafts (`gateway.core.measurements`, `.device_reports`, `.alarm_records`, `.pendant_link`), number,
   sign and seal them (`gateway.core.sealer`) and put them in the outbox in one transaction; records handed over
   in the same loop turn share one commit (:meth:`Hub._commit`); the coroutine returns only after the commit is
   fsynced, and cursors (a meter's RACP position, a pendant's counter, the down-message ``seq`` and a resident's
   threshold overrides) are committed in the same transaction;
4. confirm to the pendant only after its event is durable (``docs/protocol.md`` §9.4; on a full disk the outbox
   stores priority commits from its reserve, `gateway.disk_reserve`): when the commit fails all the same the
   pendant gets no confirm, its re-send is treated as new, the resident still gets the siren, the voice and the
   fallback notifier, and the priority records of the failed commit are offered again with the next commit.

Time comes from the injected :class:`gateway.clock.Clock`; periodic work happens in :meth:`Hub.tick`, which the app
calls on a timer. Latency counters (`gateway.core.counters`) follow the input being handled (`gateway.latency`). The
group commit is `gateway.committer`'s; what the panic lifecycle decides is carried out by `gateway.panic_effects`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import assert_never

from gateway import latency
from gateway.alarm_effects import AlarmEffects
from gateway.alarms import Alarm, AlarmBook, CriticalSnoozeError, InvalidSnoozeError, UnknownAlarmError
from gateway.clock import Clock, SystemClock
from gateway.committer import Committer
from gateway.config import DeviceConfig, GatewayConfig
from gateway.core import device_reports
from gateway.core.alarm_records import AlarmRecords
from gateway.core.counters import HubCounters
from gateway.core.downlink import (
    REFUSED_CURSOR,
    SEQ_CURSOR,
    Acknowledge,
    ApplyThresholds,
    Downlink,
    Refuse,
    Snooze,
    Stale,
    applied_draft,
    parse_seq,
    thresholds_cursor,
)
from gateway.core.measurements import installation_test_event, measure, raw_reading
from gateway.core.pendant_link import PendantLink, Rejected, cursor_key, event_kind
from gateway.core.sealer import Draft, Sealer
from gateway.decode_counts import DecodeTally, decode_cursor_key
from gateway.errors import OutboxError
from gateway.events import (
    BatteryLevel,
    ClockCorrected,
    DeviceEvent,
    DeviceReport,
    LinkDown,
    LinkFailed,
    LinkUp,
    Misbehaviour,
    PendantFrame,
    Reading,
)
from gateway.feedback import Cue, Feedback, Light, Sound
from gateway.notifier import FallbackNotifier
from gateway.outbox import CursorValue, Outbox
from gateway.panic import PanicLifecycle
from gateway.panic_actions import (
    PanicCall,
)
from gateway.panic_effects import PanicEffects, PendantWriter
from gateway.rules import RuleEngine
from gateway.thresholds import ThresholdError, Thresholds
from protocols.errors import DecodeError
from protocols.keys import HubIdentity, PlatformPublicKeys
from protocols.messages import AlarmSnooze, DownMessage
from protocols.record import (
    AlarmState,
    DownRefusal,
    PanicEventType,
)

__all__ = ["FallbackNotifier", "Hub", "HubCounters"]

_log = logging.getLogger(__name__)


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
        clock: Clock | None = None,
        pendant_writer: PendantWriter | None = None,
    ) -> None:
        self._config = config
        self._outbox = outbox
        self._feedback = feedback
        self._rules = rules
        self._alarms = alarms
        self._panic = panic
        self._clock = clock or SystemClock()
        self._now = self._clock.now
        self._hub_id = identity.hub_id
        self.counters = HubCounters()
        #: Per meter, readings decoded only tolerantly or kept raw, durable in the outbox (for `carehub doctor`).
        self.decode_tally = DecodeTally()
        self._committer = Committer(outbox, Sealer(identity, platform.box_key), self._clock, self.counters)
        self._alarm_records = AlarmRecords(identity.hub_id, self._language, self.counters.alarms)
        self._alarm_fx = AlarmEffects(self._alarm_records, feedback, self.counters, self._language)
        self._pendants = PendantLink(pendant_keys)
        self._effects = PanicEffects(
            feedback=feedback,
            fallback=fallback,
            pendants=self._pendants,
            alarm_records=self._alarm_records,
            track=self._alarm_fx.track,
            counters=self.counters,
            language=self._language,
        )
        self._effects.writer = pendant_writer
        self._base: dict[str, Thresholds] = {r.id: rules.thresholds(r.id) for r in config.residents}
        self._downlink = Downlink(self._base)
        #: Ids (hex) of raised alarm records, for the task that waits for the platform's ack of each.
        self.alarm_records = self._alarm_fx.awaiting_ack
        #: Set by `carehub provision test` (gateway.provision.testrun) before any device is heard: every reading and
        #: pendant event is then recorded as installation-test data (docs/protocol.md §3.10): never judged by the
        #: rules, never a call for help or a check-in, still sealed, sent and acknowledged like any record.
        self.installation_test = False

    def set_pendant_writer(self, writer: PendantWriter) -> None:
        """Where pendant feedback frames go (the BLE manager, once it runs)."""
        self._effects.writer = writer

    async def restore(self) -> None:
        """After a (re)start: pendant counters, the last down-message ``seq``, accepted threshold changes and the
        meters' decode tallies."""
        for meter in self._config.devices:
            if not self.decode_tally.restore(
                meter.address, await self._outbox.get_cursor(decode_cursor_key(meter.address))
            ):
                _log.error("meter %s: the stored decode tally is unreadable; counting afresh", meter.address)
        for address in self._pendants.addresses:
            if not self._pendants.restore(address, await self._outbox.get_cursor(cursor_key(address))):
                _log.error("pendant %s: the stored counter state is unreadable; starting afresh", address)
        self._downlink = Downlink(
            self._base,
            parse_seq(await self._outbox.get_cursor(SEQ_CURSOR)),
            await self._outbox.get_cursor(REFUSED_CURSOR),
        )
        for resident in self._downlink.residents:
            restored = self._downlink.restore(resident, await self._outbox.get_cursor(thresholds_cursor(resident)))
            if isinstance(restored, ThresholdError):
                _log.error(
                    "resident %s: the platform's stored threshold changes no longer apply: %s", resident, restored
                )
            elif restored is not None:
                self._rules.set_thresholds(resident, restored)

    async def _commit(self, drafts: Sequence[Draft], cursors: Mapping[str, CursorValue] | None = None) -> None:
        await self._committer.commit(drafts, cursors)

    async def settle(self) -> None:
        """Wait until what was handed over is committed (or failed); for shutdown, before the outbox closes."""
        await self._committer.settle()

    async def report_evictions(self) -> None:
        """Turn evictions not yet reported into an eviction record (at start; later ones after each commit)."""
        await self._committer.report_evictions()

    # -- alarms -----------------------------------------------------------------------------------------------

    def _language(self, resident: str) -> str:
        try:
            return self._config.resident(resident).language
        except KeyError:
            return "en"

    # -- ReadingSink ------------------------------------------------------------------------------------------

    async def handle(self, event: DeviceEvent) -> bytes | None:
        """Any device event; returns a pendant's confirm frame, else ``None``."""
        match event:
            case Reading():
                await self.store_readings([event])
                return None
            case PendantFrame():
                return await self.pendant_frame(event)
            case BatteryLevel() | LinkUp() | LinkDown() | LinkFailed() | ClockCorrected() | Misbehaviour():
                await self.report(event)
                return None
            case _:
                assert_never(event)

    async def store_readings(self, readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
        """Judge, tell and durably record meter readings (the BLE layer's sink)."""
        with latency.handling_input():
            now = self._now()
            drafts: list[Draft] = []
            tallied: list[str] = []
            for reading in readings:
                address = reading.device.address
                try:
                    measured = measure(reading, installation_test=self.installation_test)
                except DecodeError as exc:  # kept as it came, sealed and sent (issue 14 item 5)
                    _log.warning("undecodable %04X from %s kept raw: %s", reading.uuid, address, exc)
                    drafts.append(raw_reading(reading, exc, installation_test=self.installation_test))
                    self.counters.raw_readings += 1
                    self.decode_tally.count(address, raw=True)
                    tallied.append(address)
                    continue
                if measured.tolerated:
                    self.counters.tolerated_readings += 1
                    self.decode_tally.count(address, tolerated=True)
                    tallied.append(address)
                if measured.observation is not None:
                    events = self._alarms.apply(self._rules.evaluate(measured.observation))
                    drafts.extend(self._alarm_fx.judge(events, now, (measured.record_id,)))
                drafts.append(measured.draft)
                self.counters.readings += 1
            cursors: dict[str, CursorValue] = {**self.decode_tally.cursors(tallied)}  # with the readings counted
            if cursor is not None:
                cursors[cursor[0]] = cursor[1]
            await self._commit(drafts, cursors or None)

    async def get_cursor(self, key: str) -> int | None:
        """A durable cursor from the outbox."""
        value = await self._outbox.get_cursor(key)
        return value if isinstance(value, int) else None

    async def report(self, event: DeviceReport) -> None:
        """Battery, link changes and failures, clock corrections, misbehaviour: device-status records."""
        await self._commit(self._report_drafts(event, self._now()))

    def _report_drafts(self, event: DeviceReport, now: datetime) -> list[Draft]:
        reported = device_reports.report(event, now)
        self.counters.status_records += 1
        if reported.misbehaviour:
            self.counters.misbehaviour += 1
            _log.warning("device %s misbehaved: %s", event.device.address, reported.draft.body)
        if isinstance(event, LinkFailed):
            self.counters.link_failures += 1
        drafts: list[Draft] = []
        if reported.battery is not None:
            drafts.extend(self._alarm_fx.judge(self._alarms.apply(self._rules.evaluate(reported.battery)), now))
        drafts.append(reported.draft)
        return drafts

    async def pendant_frame(self, frame: PendantFrame) -> bytes | None:
        """Authenticate a pendant event, act on it, make it durable, then return the Confirm to write back."""
        with latency.handling_input():
            return await self._pendant_frame(frame.device, frame.data)

    async def _pendant_frame(self, device: DeviceConfig, data: bytes) -> bytes | None:
        address = device.address
        checked = self._pendants.check(address, data)
        if isinstance(checked, Rejected):
            self.counters.pendant_rejected += 1
            _log.warning("pendant %s: rejected frame: %s", address, checked.reason)
            return None
        event = checked.event
        if checked.repeat:
            return self._pendants.confirm(address, event.counter)
        self.counters.panic_events += 1
        now = self._now()
        drafts: list[Draft] = []
        kind = event_kind(event.event)
        if kind is not None and self.installation_test:  # the installer's press: recorded and sent, no call (§3.10)
            _log.info("pendant %s: installation-test %s recorded (no call for help)", address, kind.value)
            drafts.append(installation_test_event(address, kind, event.counter, event.battery, now))
        elif kind is not None:
            actions = self._panic.on_event(
                pendant=address,
                resident=device.resident,
                kind=kind,
                counter=event.counter,
                battery=event.battery,
                now=now,
            )
            drafts.extend(await self._effects.carry_out(actions, now, event.counter))
            started, shown = latency.input_at(), latency.shown_at()
            if kind is PanicEventType.PRESS and started is not None and shown is not None:
                self.counters.panic_local_s.append(shown - started)
        battery = self._pendants.battery_news(address, checked)  # issue 19.5: only a changed level is a record
        if battery is not None:
            drafts.extend(self._report_drafts(BatteryLevel(device, battery), now))
        notice = self._pendants.rekey_notice(address, checked, now)
        if notice is not None:  # §9.6: committed with the event, so it reaches the platform exactly when accepted
            _log.warning("pendant %s needs a new key (docs/protocol.md §9.6): maintenance notice recorded", address)
            drafts.append(notice)
        try:
            await self._commit(drafts, {cursor_key(address): self._pendants.cursor_value(address, checked)})
        except OutboxError:
            # §9.4: not stored, so not confirmed; the verifier has not moved, so the re-send counts as new.
            self.counters.pendant_unconfirmed += 1
            # Committed with the next commit, which also stores the press's records: then its re-send is a repeat.
            self._committer.defer(
                cursor_key(address),
                lambda: self._pendants.cursor_value(address, checked),
                lambda: self._pendants.accept(address, checked),
            )
            if kind is PanicEventType.PRESS and not self.installation_test:  # a call for help (not a test press)
                await self._effects.escalate_unstored(device, self._panic.open_call(device.address))
            return None
        self._pendants.accept(address, checked)
        return self._pendants.confirm(address, event.counter)

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

    def thresholds(self, resident: str) -> Thresholds:
        """The resident's thresholds in force (configuration plus the platform's accepted changes).

        Raises:
            UnknownResidentError: not a resident of this hub.
        """
        return self._rules.thresholds(resident)

    def threshold_overrides(self, resident: str) -> Mapping[str, float]:
        """The platform's accepted threshold changes for a resident (committed, re-applied on start)."""
        return self._downlink.overrides(resident)

    async def on_delivered(self, record_ids: Iterable[str]) -> None:
        """The uplink saw the platform ack these records: a panic call's alarm has reached the platform."""
        now = self._now()
        for rid in record_ids:
            timed = self._alarm_fx.timer.delivered(rid)
            if timed is not None:
                self.counters.alarm_delivery_s.append(timed[0])
                if timed[1]:
                    self.counters.panic_platform_s.append(timed[0])
            for call in list(self._panic.calls.values()):
                raised = self._alarm_records.record_id(call.alarm_id, AlarmState.RAISED, 0).hex()
                if call.delivered_at is None and rid == raised:
                    self._panic.on_delivered(call.alarm_id, now)

    def _known_alarm(self, alarm_id: str) -> bool:
        return alarm_id in self._panic.calls or self._alarms.by_id(alarm_id) is not None

    async def on_down(self, message: object) -> None:
        """A verified platform message: applied, or refused with its reason (counted and reported); never raises
        for what the message says (an outbox failure does raise: its task is supervised)."""
        if not isinstance(message, DownMessage):
            _log.error("ignoring a down-message of type %s", type(message).__name__)
            return
        decision = self._downlink.decide(message, self._known_alarm)
        now = self._now()
        drafts: list[Draft] = []
        match decision:
            case Stale(seq):
                _log.warning("ignoring replayed down-message %s", seq)
                return
            case Refuse():
                pass
            case ApplyThresholds():
                pass
            case Acknowledge(_, request):
                if request.alarm_id in self._panic.calls:
                    drafts.extend(
                        await self._effects.carry_out(
                            self._panic.on_caregiver_ack(request.alarm_id, request.by, now), now
                        )
                    )
                else:
                    event = self._alarms.acknowledge(request.alarm_id, now, by=request.by)
                    if event is not None:
                        drafts.append(self._alarm_records.step(event, now))
            case Snooze(seq, request):
                try:
                    event = self._alarms.snooze(
                        request.alarm_id, timedelta(seconds=request.duration_seconds), now, by=request.by
                    )
                    drafts.append(self._alarm_records.step(event, now))
                except CriticalSnoozeError as exc:
                    decision = Refuse.snooze_refused(seq, request, exc, DownRefusal.CRITICAL_SNOOZE)
                except UnknownAlarmError as exc:
                    decision = Refuse.snooze_refused(seq, request, exc, DownRefusal.UNKNOWN_ALARM)
                except InvalidSnoozeError as exc:
                    decision = Refuse.snooze_refused(seq, request, exc, DownRefusal.INVALID_SNOOZE)
            case _:
                assert_never(decision)
        if isinstance(decision, Refuse):
            _log.warning("refused down-message %s (%s): %s", decision.seq, decision.reason.value, decision.detail)
            drafts.append(decision.draft(self._hub_id, now))
        else:  # the platform keeps the message until it hears it was applied (protocol §3.9)
            drafts.append(applied_draft(self._hub_id, decision, now))
        await self._commit(drafts, self._downlink.cursors(decision))
        self._downlink.committed(decision)
        if not isinstance(decision, Refuse):
            _log.info("applied down-message %s (%s)", decision.seq, type(decision).__name__)
        if isinstance(decision, Refuse):
            self.counters.down_refused += 1
            if decision.message_type == AlarmSnooze.TYPE:
                self.counters.snoozes_refused += 1
        if isinstance(decision, ApplyThresholds):
            self._rules.set_thresholds(decision.resident, decision.thresholds)
            self.counters.threshold_updates += 1

    async def tick(self) -> None:
        """Periodic work on the injected clock: re-raise, escalate, missed schedules and check-ins; retry storage."""
        now = self._now()
        evaluation = self._rules.tick(now)
        for reminder in evaluation.reminders:  # a measurement falls due now: a cue, no record
            self._feedback.show(Cue("measure_due", self._language(reminder.resident), Light.NOTICE, Sound.CHIME))
        events = self._alarms.apply(evaluation) + self._alarms.tick(now)
        drafts = self._alarm_fx.judge(events, now)
        drafts.extend(await self._effects.carry_out(self._panic.tick(now), now))
        try:
            await self._commit(drafts)
        except OutboxError:
            # Storage failed (a full disk, a dead card): the committer logged and counted it and keeps the alarm
            # records for the next commit, which this tick retries; the resident was already told. The tick must
            # go on: it is what escalates unanswered calls and retries storage.
            return
