"""Showing and recording what the alarm book decides, and watching raised alarms until the platform has them.

The alarm book (`gateway.alarms`) is pure: it returns :class:`gateway.alarms.AlarmEvent` steps. :class:`AlarmEffects`
shows each step to the resident at once (its cue, from `gateway.core.alarm_records.cue_for`), makes its record
draft for the caller's commit, and hands every raised alarm's record id to the task that awaits the platform's ack
(`gateway.app`), timing it from the input that caused it (`gateway.latency`) for `carehub bench` and the demo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from gateway import latency
from gateway.alarms import AlarmEvent
from gateway.core.alarm_records import AlarmRecords, cue_for
from gateway.core.counters import HubCounters
from gateway.core.sealer import Draft
from gateway.feedback import Feedback
from gateway.latency import DeliveryTimer
from protocols.record import AlarmBody, AlarmState

__all__ = ["AlarmEffects"]

_log = logging.getLogger("gateway.hub")

_LOUDER = frozenset({AlarmState.RAISED, AlarmState.ESCALATED, AlarmState.CONFIRMED, AlarmState.RE_RAISED})
_ALARM_QUEUE = 1024  # raised alarms whose platform ack is awaited (the uplink settles them quickly)


class AlarmEffects:
    """Cues and records for alarm steps; raised alarms timed and queued for their platform ack.

    Args:
        records: makes the alarm records.
        feedback: the home's lights and voice.
        counters: the hub's counters (detection latency).
        language: a resident's language, for the cues.
    """

    def __init__(
        self, records: AlarmRecords, feedback: Feedback, counters: HubCounters, language: Callable[[str], str]
    ) -> None:
        self._records = records
        self._feedback = feedback
        self._counters = counters
        self._language = language
        self.timer = DeliveryTimer()
        #: Ids (hex) of raised alarm records, for the task that waits for the platform's ack of each.
        self.awaiting_ack: asyncio.Queue[str] = asyncio.Queue(maxsize=_ALARM_QUEUE)

    def judge(self, events: Iterable[AlarmEvent], now: datetime, triggers: Sequence[bytes] = ()) -> list[Draft]:
        """Show each alarm-book step and make its record."""
        steps = list(events)
        # "Your readings are back to normal" is not said in the same breath as a new or worse alarm for the same
        # resident (one oximeter reading can clear a pulse alarm and raise a low-oxygen one): the record is kept.
        louder = {e.resident for e in steps if e.state in _LOUDER}
        drafts = []
        for event in steps:
            if not (event.state is AlarmState.CLEARED and event.resident in louder):
                self._show(event)
            drafts.append(self.track(self._records.step(event, now, triggers)))
        return drafts

    def track(self, draft: Draft) -> Draft:
        """A raised alarm is timed from its input and offered to the task that awaits its platform ack."""
        body = draft.body
        if isinstance(body, AlarmBody) and body.state is AlarmState.RAISED and draft.record_id is not None:
            rid = draft.record_id.hex()
            self.timer.raised(rid, panic=body.condition == "panic")
            try:
                self.awaiting_ack.put_nowait(rid)
            except asyncio.QueueFull:
                _log.error("too many alarms awaiting the platform's ack; not watching %s", rid)
        return draft

    def _show(self, event: AlarmEvent) -> None:
        cue = cue_for(event, self._language(event.resident))
        if cue is None:
            return
        self._feedback.show(cue)
        started = latency.input_at()
        if event.state is AlarmState.RAISED and started is not None:
            self._counters.alarm_detect_s.append(time.monotonic() - started)
