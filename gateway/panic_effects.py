"""Carrying out what the panic lifecycle decides: the hub's hands for a call for help.

`gateway.panic` is pure: for a pendant event, a caregiver's ack or a tick it returns :mod:`gateway.panic_actions`.
:class:`PanicEffects` carries them out in the order the resident needs them (``docs/protocol.md`` §9.4):

1. cues at once (the siren, "help is on the way"), before anything is stored;
2. record drafts (the pendant event, the panic alarm's steps), returned for the caller's one commit;
3. then the slow parts: the pendant's feedback state over BLE and the fallback notifier (SMS, webhook).

It also escalates a call for help the hub could not store (a full disk, a dead card): the siren and voice at once,
and the fallback notifier once per call, so a press is never only a log line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import assert_never

from gateway import latency
from gateway.config import DeviceConfig
from gateway.core.alarm_records import AlarmRecords
from gateway.core.counters import HubCounters
from gateway.core.pendant_link import PendantLink, panic_event_draft
from gateway.core.sealer import Draft
from gateway.cues import Cue, Light, Sound
from gateway.feedback import Feedback
from gateway.notifier import FallbackNotifier
from gateway.panic_actions import (
    Action,
    EmitAlarmStep,
    EmitPanicEvent,
    NotifyFallback,
    PanicCall,
    SetPendantState,
    ShowCue,
)
from protocols.errors import ProtocolError
from protocols.pendant import FeedbackState

__all__ = ["PanicEffects", "PendantWriter"]

_log = logging.getLogger(__name__)

PendantWriter = Callable[[str, bytes], Awaitable[bool]]
"""Writes a feedback frame to a pendant (the BLE manager's); False when the pendant is not connected."""


class PanicEffects:
    """Carries out panic actions for the hub.

    Args:
        feedback: the home's lights and voice.
        fallback: the notifier of last resort.
        pendants: the pendants' counters and keys (feedback frames are signed there).
        alarm_records: makes the panic alarm's records.
        track: applied to every alarm draft made here (the hub times raised alarms and awaits their ack).
        counters: the hub's counters (fallback notifications).
        language: a resident's language, for the cues.
    """

    def __init__(
        self,
        *,
        feedback: Feedback,
        fallback: FallbackNotifier,
        pendants: PendantLink,
        alarm_records: AlarmRecords,
        track: Callable[[Draft], Draft],
        counters: HubCounters,
        language: Callable[[str], str],
    ) -> None:
        self._feedback = feedback
        self._fallback = fallback
        self._pendants = pendants
        self._alarm_records = alarm_records
        self._track = track
        self._counters = counters
        self._language = language
        self.writer: PendantWriter | None = None
        self._escalated_unstored: set[str] = set()  # calls whose press could not be stored, escalated once

    async def carry_out(self, actions: Sequence[Action], now: datetime, counter: int | None = None) -> list[Draft]:
        """Local cues now; record drafts returned for the caller's commit; pendant states and fallbacks after.

        ``counter`` is the pendant event being handled, if any: its panic record's counter, and the event its
        feedback frames refer to (it is accepted only with the commit that follows).
        """
        drafts: list[Draft] = []
        later: list[SetPendantState | NotifyFallback] = []
        for action in actions:
            match action:
                case ShowCue(cue):
                    self._feedback.show(cue)
                    latency.cue_shown()
                case EmitPanicEvent():
                    if counter is None:
                        raise ValueError("the panic lifecycle made a pendant event record outside an event")
                    drafts.append(panic_event_draft(action, counter, now))
                case EmitAlarmStep():
                    drafts.append(self._track(self._alarm_records.panic_step(action, now)))
                case SetPendantState() | NotifyFallback():
                    later.append(action)
                case _:
                    assert_never(action)
        for action in later:
            match action:
                case SetPendantState(address, state):
                    await self._write_pendant_state(address, state, counter)
                case NotifyFallback(alarm_id, resident, message):
                    self._counters.fallback_notifications += 1
                    await self._fallback.notify(alarm_id, resident, message)
        return drafts

    async def escalate_unstored(self, device: DeviceConfig, call: PanicCall | None) -> None:
        """A call for help that could not be stored: siren and voice now, the fallback notifier once per call."""
        language = self._language(device.resident)
        self._feedback.show(Cue("siren", language, Light.SIREN, Sound.SIREN, urgent=True))
        self._feedback.show(Cue("panic_still_calling", language, Light.SIREN, Sound.SIREN, urgent=True))
        alarm_id = call.alarm_id if call is not None else f"unstored-{device.address}"
        if alarm_id in self._escalated_unstored:
            return
        self._escalated_unstored.add(alarm_id)
        self._counters.fallback_notifications += 1
        await self._fallback.notify(alarm_id, device.resident, "panic button pressed; the hub cannot store it")

    async def _write_pendant_state(self, address: str, state: FeedbackState, counter: int | None) -> None:
        if self.writer is None:
            return
        frame = self._pendants.feedback_frame(address, state, counter)
        if frame is None:
            return
        with contextlib.suppress(ProtocolError):
            await self.writer(address, frame)
