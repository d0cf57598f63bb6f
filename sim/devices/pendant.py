"""The panic pendant (carehub pendant service v1, ``docs/protocol.md`` §9, codec in :mod:`protocols.pendant`).

A button worn by the resident. What it does, as the firmware (``firmware/pendant/app.py``) does it:

* **Events.** ``await pendant.press(kind)`` (press, long press, cancel, check-in, battery_low, heartbeat) takes a
  fresh counter, persists it (in the object, and in ``state_file`` when given) *before* the frame exists, signs the
  frame with the pendant's 32-byte key and queues it. A battery_low event is raised by itself, once per discharge,
  when the battery falls below :data:`BATTERY_LOW_PERCENT`.
* **Repeat until confirmed.** While events are pending the pendant advertises (fast, 20 ms); once a hub is connected
  and has enabled indications on the Event characteristic, it indicates the *oldest* pending frame and re-indicates
  the same bytes every ``repeat_seconds`` of the injected clock until an authentic Confirm names that counter or a
  higher one (a Confirm for N confirms every event up to N). It never gives up on an event.
* **Writes from the hub** (Confirm, Feedback) are checked like the firmware checks them, but a rejected write gets an
  ATT error response (the firmware stays silent) and is recorded in :attr:`Pendant.rejected`:

  ========  =======================================================================================================
  code      meaning
  ========  =======================================================================================================
  ``0x80``  :data:`ATT_NOT_AUTHENTIC`: not a frame of this protocol, or its tag does not verify under this pendant's
            key and id (a stranger, a forged frame, altered bytes)
  ``0x81``  :data:`ATT_STALE`: authentic, but a Confirm names a counter never sent or one below the highest already
            confirmed (a replay); a Feedback names a counter never sent or a ``(counter, seq)`` pair not above the
            last accepted one (after a boot the floor is ``(own counter, 0xFFFF)``)
  ========  =======================================================================================================

  A Confirm naming exactly the highest counter already confirmed is accepted and changes nothing: the hub confirms
  again whenever a repeat crossed its first Confirm.
* **Feedback** becomes an LED/buzzer pattern, recorded in :attr:`Pendant.patterns` as ``(at, state, pattern)``; the
  pattern per state is :data:`PATTERNS` (the firmware's table, ``firmware/pendant/feedback.py``, with LED colours).
* **Reads.** Event: the oldest unconfirmed frame, else the last frame sent, else empty (no event yet); the oldest,
  not the newest, because a Confirm for the newest would confirm the older ones unseen. Device Info: version and id.
* **Security.** Event (read and CCCD), Confirm and Feedback require an encrypted (bonded) link whatever
  ``options.bonding_required`` says, as on the product; Device Info is readable before pairing.
* **Reboot.** ``await pendant.reboot()`` drops the link and loses what the firmware keeps in RAM (pending events,
  the uptime, the feedback floor); the counter survives, so no counter is ever sent twice.

The pendant id defaults to the BLE address, which is what the gateway's verifier uses (``gateway/intake.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Final, NamedTuple

from bumble import att, gatt
from bumble.core import UUID
from bumble.device import Connection, Device

from gateway.aio import raise_if_cancelling
from protocols.errors import AuthenticationError, DecodeError
from protocols.pendant import (
    CONFIRM_CHAR_UUID,
    DEVICE_INFO_CHAR_UUID,
    EVENT_CHAR_UUID,
    FEEDBACK_CHAR_UUID,
    KEY_LEN,
    SERVICE_UUID,
    ConfirmFrame,
    DeviceInfo,
    FeedbackFrame,
    FeedbackState,
    PendantEvent,
    PendantEventType,
)
from sim.clock import Clock
from sim.devices.base import READ_ENC, READABLE, WRITE_ENC, WRITEABLE, P, Produced, SimDevice
from sim.devices.options import DeviceOptions

__all__ = [
    "ATT_NOT_AUTHENTIC",
    "ATT_STALE",
    "BATTERY_LOW_PERCENT",
    "PATTERNS",
    "Indicated",
    "Pattern",
    "Pendant",
    "Rejection",
    "Shown",
]

_log = logging.getLogger(__name__)

#: ATT application error: the written frame is malformed or its tag does not verify.
ATT_NOT_AUTHENTIC: Final = 0x80
#: ATT application error: the written frame is authentic but stale (replayed, or names a counter never sent).
ATT_STALE: Final = 0x81
#: Below this level the pendant raises a battery_low event, once per discharge (as ``firmware/pendant/battery.py``).
BATTERY_LOW_PERCENT: Final = 20
_COUNTER_MAX: Final = 0xFFFF_FFFF
_FEEDBACK_SEQ_FLOOR: Final = 0xFFFF


@dataclasses.dataclass(frozen=True, slots=True)
class Pattern:
    """What the pendant shows for a feedback state.

    Attributes:
        led: the LED's colour and rhythm.
        sound: the buzzer's sound.
        repeat: how many times the pattern plays (0: nothing plays; the state only stops what was playing).
    """

    led: str
    sound: str
    repeat: int


#: Feedback state -> pattern (``firmware/pendant/feedback.py``; colours added for the simulated RGB LED).
PATTERNS: Final[Mapping[FeedbackState, Pattern]] = {
    FeedbackState.IDLE: Pattern("off", "silent", 0),
    FeedbackState.HELP_CALLED: Pattern("red slow blink 500/500 ms", "1.5 kHz beep every 2 s", 30),
    FeedbackState.ANSWERED: Pattern("green steady 3 s", "rising chime 1 kHz, 1.5 kHz", 1),
    FeedbackState.CANCELLED: Pattern("off", "three low 600 Hz beeps", 1),
    FeedbackState.LOW_BATTERY: Pattern("amber double blink", "one 400 Hz beep", 3),
    FeedbackState.NOT_CONNECTED: Pattern("red fast flicker 100/100 ms", "falling 1.2 kHz, 800 Hz", 3),
    FeedbackState.CHECKIN_OK: Pattern("green steady 1 s", "one 2.5 kHz chirp", 1),
}


class Shown(NamedTuple):
    """A pattern the pendant showed: when (home time), for which state, and what."""

    at: datetime
    state: FeedbackState
    pattern: Pattern


class Rejection(NamedTuple):
    """A hub write the pendant refused.

    Attributes:
        at: home time of the write.
        characteristic: ``"confirm"`` or ``"feedback"``.
        code: the ATT error code returned (:data:`ATT_NOT_AUTHENTIC` or :data:`ATT_STALE`).
        reason: why, in words.
        data: the bytes written.
    """

    at: datetime
    characteristic: str
    code: int
    reason: str
    data: bytes


class Indicated(NamedTuple):
    """An indication of an event frame that the hub acknowledged at the ATT layer."""

    at: datetime
    counter: int
    raw: bytes


@dataclasses.dataclass(slots=True)
class _Pending:
    event: PendantEvent
    raw: bytes


class Pendant(SimDevice):
    """A simulated panic pendant attached like the meters (``async with pendant.attach(bumble_device):``).

    Args:
        options: product options; ``options.key`` is the pendant's 32-byte key (required).
        clock: the home clock (re-indication pacing, uptime, timestamps).
        on_produced: called with the ground truth of every event (the home's log).
        pendant_id: the id the tags cover; defaults to ``options.address`` (what the gateway uses).
        state_file: where the counter is persisted (JSON), so that a new object for the same pendant continues
            from it; without it the counter lives in this object only (and survives :meth:`reboot`).
        repeat_seconds: re-indication interval of an unconfirmed event, on ``clock``.

    Raises:
        ValueError: no key, a key that is not 32 bytes, or a state file that cannot be read.
    """

    KIND = "pendant"

    def __init__(
        self,
        options: DeviceOptions,
        clock: Clock,
        *,
        on_produced: Callable[[Produced], None] | None = None,
        pendant_id: str | None = None,
        state_file: str | Path | None = None,
        repeat_seconds: float = 3.0,
    ) -> None:
        if options.key is None or len(options.key) != KEY_LEN:
            raise ValueError(f"{options.id}: a pendant needs a {KEY_LEN}-byte key (options.key)")
        if repeat_seconds <= 0:
            raise ValueError("repeat_seconds must be positive")
        super().__init__(options, clock, on_produced=on_produced)
        self.key: bytes = options.key
        self.pendant_id = pendant_id or options.address
        DeviceInfo(self.pendant_id)  # validates the id
        self.repeat_seconds = repeat_seconds
        self.state_file = None if state_file is None else Path(state_file)
        self._counter = self._load_counter()
        self._counter_lock = asyncio.Lock()
        self.patterns: list[Shown] = []
        """Every pattern shown on the hub's request, oldest first."""
        self.rejected: list[Rejection] = []
        """Every refused Confirm or Feedback write, oldest first."""
        self.indications: list[Indicated] = []
        """Every event indication the hub acknowledged (first sends and repeats), oldest first."""
        self.duplicate_confirms = 0
        """Authentic Confirms naming the highest counter already confirmed (accepted, no effect)."""
        self._confirmed_at: dict[int, datetime] = {}
        self._highest_confirmed = 0
        self._pending: list[_Pending] = []
        self._last_sent: bytes = b""
        self._battery_low_sent = False
        self._repeat_armed = False
        self._pause_task: asyncio.Task[object] | None = None
        self._pause_state: tuple[int | None, bool, bool] = (None, False, False)
        self._interrupted = False
        self._boot()

    # ------------------------------------------------------------------ public state

    @property
    def counter(self) -> int:
        """The last counter handed out (0 before the first event)."""
        return self._counter

    @property
    def pending(self) -> list[int]:
        """Counters of the events waiting for a Confirm, oldest first."""
        return [p.event.counter for p in self._pending]

    @property
    def confirmed_at(self) -> Mapping[int, datetime]:
        """Counter -> home time at which an authentic Confirm covering it arrived."""
        return dict(self._confirmed_at)

    @property
    def repeat_armed(self) -> bool:
        """Whether the pendant waits on the clock to re-indicate (advance the clock by ``repeat_seconds`` to repeat)."""
        return self._repeat_armed

    @property
    def uptime_seconds(self) -> int:
        """Whole seconds since the last boot, on the injected clock."""
        return int(self.clock.monotonic() - self._booted_at)

    @property
    def showing(self) -> FeedbackState:
        """The state whose pattern was shown last (IDLE after a boot)."""
        return self._showing

    def indications_of(self, counter: int) -> list[bytes]:
        """The bytes of every acknowledged indication of ``counter``."""
        return [i.raw for i in self.indications if i.counter == counter]

    async def wait_confirmed(self, counter: int) -> datetime:
        """Return the home time at which ``counter`` was confirmed, waiting for it if need be."""
        await self.wait_for(lambda: counter in self._confirmed_at)
        return self._confirmed_at[counter]

    # ------------------------------------------------------------------ the resident's side

    async def press(self, kind: PendantEventType | str = PendantEventType.PRESS) -> Produced:
        """A gesture (or a battery or heartbeat event): a new counter, persisted, then a signed frame queued.

        Args:
            kind: the event, as a :class:`PendantEventType` or its lower-case name (``"long_press"``).

        Returns:
            The ground truth: ``sequence`` is the counter, ``raw`` the exact frame the hub will receive.
        """
        event_type = kind if isinstance(kind, PendantEventType) else PendantEventType[kind.upper()]
        async with self._counter_lock:
            counter = self._counter + 1
            if counter > _COUNTER_MAX:
                raise RuntimeError(f"{self.id}: event counter exhausted; the pendant must be re-provisioned")
            await self._persist(counter)
            self._counter = counter
            battery = self.battery.level
            event = PendantEvent(event_type, counter, battery, self.uptime_seconds).sign(self.pendant_id, self.key)
            raw = bytes(event)
            self._pending.append(_Pending(event, raw))
            self._last_sent = raw
        values: dict[str, float | int | str | bool] = {
            "event": event_type.name.lower(),
            "counter": counter,
            "battery": battery,
        }
        produced = self.record_with_sequence(counter, str(EVENT_CHAR_UUID), values, raw)
        _log.info("%s: %s, counter %d", self.id, event_type.name.lower(), counter)
        self.wake()
        return produced

    async def reboot(self) -> None:
        """A reset: the link drops; pending events, uptime and the feedback floor are lost; the counter is not."""
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError, att.ATT_Error):
                await connection.disconnect()
        async with self._counter_lock:
            self._counter = max(self._counter, self._load_counter())
        self._pending.clear()
        self._boot()
        self._notify_changed()

    def set_battery(self, percent: float) -> None:
        """Force the battery level; a crossing below :data:`BATTERY_LOW_PERCENT` raises a battery_low event."""
        super().set_battery(percent)
        if self.battery.level >= BATTERY_LOW_PERCENT:
            self._battery_low_sent = False

    async def set_battery_level(self, percent: float) -> Produced | None:
        """Force the battery level and, on a crossing below :data:`BATTERY_LOW_PERCENT`, raise battery_low now.

        Returns:
            The battery_low event, or ``None`` when the level did not cross (or the event was already sent).
        """
        self.set_battery(percent)
        return await self._battery_check()

    def change_battery(self) -> None:
        """A new battery (re-arms the battery_low event)."""
        super().change_battery()
        self._battery_low_sent = False

    # ------------------------------------------------------------------ GATT

    def profile_services(self, device: Device) -> Iterable[gatt.Service]:
        enc_read = READABLE | READ_ENC
        enc_write = WRITEABLE | WRITE_ENC
        self.event_char: gatt.Characteristic[bytes] = gatt.Characteristic(
            UUID(str(EVENT_CHAR_UUID)),
            P.READ | P.INDICATE,
            enc_read,
            gatt.CharacteristicValue[bytes](read=self._read_event),
        )
        self.event_char.descriptors = [
            gatt.Descriptor(
                gatt.GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                READABLE | WRITEABLE | WRITE_ENC,
                device.gatt_server.make_descriptor_value(self.event_char),
            )
        ]
        confirm: gatt.Characteristic[bytes] = gatt.Characteristic(
            UUID(str(CONFIRM_CHAR_UUID)), P.WRITE, enc_write, gatt.CharacteristicValue[bytes](write=self._on_confirm)
        )
        feedback: gatt.Characteristic[bytes] = gatt.Characteristic(
            UUID(str(FEEDBACK_CHAR_UUID)), P.WRITE, enc_write, gatt.CharacteristicValue[bytes](write=self._on_feedback)
        )
        info: gatt.Characteristic[bytes] = gatt.Characteristic(
            UUID(str(DEVICE_INFO_CHAR_UUID)), P.READ, READABLE, bytes(DeviceInfo(self.pendant_id))
        )
        return [gatt.Service(UUID(str(SERVICE_UUID)), [self.event_char, confirm, feedback, info])]

    def advertised_uuids(self) -> list[str]:
        """The pendant service's 128-bit UUID."""
        return [str(SERVICE_UUID)]

    @contextlib.asynccontextmanager
    async def attach(self, device: Device) -> AsyncIterator[SimDevice]:
        """As :meth:`SimDevice.attach`, plus the pendant's habits: repeat until confirmed, watch the battery."""
        async with super().attach(device) as attached:
            habits = [
                self.spawn(self._repeater(), name=f"{self.id}-repeater"),
                self.spawn(self._battery_watch(), name=f"{self.id}-battery-watch"),
            ]
            try:
                yield attached
            finally:
                await self._quiesce(habits)

    async def _quiesce(self, habits: list[asyncio.Task[None]]) -> None:
        """Stop the pendant's habits and close the advertising window before the base cancels its own habits.

        The advertiser must be parked (not inside an HCI command) when it is cancelled: on Python 3.11 bumble's
        ``asyncio.wait_for`` around an HCI command loses a cancellation that coincides with the command's response,
        and the advertiser would then run on forever.
        """
        for task in habits:
            task.cancel()
        await asyncio.wait(habits)
        self._advertise_until = float("-inf")
        self._adv_kick.set()
        # The advertiser clears its kick only right before it parks or after its start command completed (then it
        # is advertising), so "not advertising and kick consumed" means parked. Its HCI commands take a few loop
        # turns on a local link (milliseconds over the relay); yield until then.
        while self._advertising or self._adv_kick.is_set():  # noqa: ASYNC110 - the base signals no "parked" event
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ internals

    def _boot(self) -> None:
        self._booted_at = self.clock.monotonic()
        self._feedback_floor = (self._counter, _FEEDBACK_SEQ_FLOOR)
        self._showing = FeedbackState.IDLE

    def _load_counter(self) -> int:
        if self.state_file is None or not self.state_file.exists():
            return 0
        try:
            value = json.loads(self.state_file.read_text(encoding="utf-8"))["counter"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{self.id}: unreadable pendant state file {self.state_file}: {error}") from error
        if not isinstance(value, int) or not 0 <= value <= _COUNTER_MAX:
            raise ValueError(f"{self.id}: pendant state file {self.state_file}: counter {value!r} out of range")
        return value

    async def _persist(self, counter: int) -> None:
        if self.state_file is not None:
            await asyncio.to_thread(_write_state, self.state_file, counter)

    def _read_event(self, _connection: Connection) -> bytes:
        return self._pending[0].raw if self._pending else self._last_sent

    def _reject(self, characteristic: str, code: int, reason: str, value: bytes) -> att.ATT_Error:
        self.rejected.append(Rejection(self.clock.now(), characteristic, code, reason, bytes(value)))
        _log.warning("%s: %s write refused: %s", self.id, characteristic, reason)
        self._notify_changed()
        return att.ATT_Error(code)

    def _on_confirm(self, _connection: Connection, value: bytes) -> None:
        try:
            frame = ConfirmFrame.from_bytes(bytes(value))
            frame.verify(self.pendant_id, self.key)
        except (DecodeError, AuthenticationError) as error:
            raise self._reject("confirm", ATT_NOT_AUTHENTIC, str(error), value) from None
        if frame.counter > self._counter:
            raise self._reject("confirm", ATT_STALE, f"counter {frame.counter} was never sent", value)
        if frame.counter < self._highest_confirmed:
            raise self._reject(
                "confirm", ATT_STALE, f"counter {frame.counter} < confirmed {self._highest_confirmed}", value
            )
        if frame.counter == self._highest_confirmed:
            self.duplicate_confirms += 1
        now = self.clock.now()
        for done in [p for p in self._pending if p.event.counter <= frame.counter]:
            self._confirmed_at[done.event.counter] = now
            _log.info("%s: counter %d confirmed", self.id, done.event.counter)
        self._pending = [p for p in self._pending if p.event.counter > frame.counter]
        self._highest_confirmed = frame.counter
        self._notify_changed()

    def _on_feedback(self, _connection: Connection, value: bytes) -> None:
        try:
            frame = FeedbackFrame.from_bytes(bytes(value))
            frame.verify(self.pendant_id, self.key)
        except (DecodeError, AuthenticationError) as error:
            raise self._reject("feedback", ATT_NOT_AUTHENTIC, str(error), value) from None
        pair = (frame.event_counter, frame.feedback_seq)
        if frame.event_counter > self._counter:
            raise self._reject("feedback", ATT_STALE, f"event counter {frame.event_counter} was never sent", value)
        if pair <= self._feedback_floor:
            raise self._reject("feedback", ATT_STALE, f"{pair} is not above {self._feedback_floor}", value)
        self._feedback_floor = pair
        self._showing = frame.state
        self.patterns.append(Shown(self.clock.now(), frame.state, PATTERNS[frame.state]))
        _log.info("%s: shows %s", self.id, frame.state.name.lower())
        self._notify_changed()

    def _repeat_state(self) -> tuple[int | None, bool, bool]:
        head = self._pending[0].event.counter if self._pending else None
        return head, self.connected, self.is_subscribed(self.event_char, indicate=True)

    async def _repeater(self) -> None:
        """Indicate the oldest pending frame, again every ``repeat_seconds``, until it is confirmed.

        Cases: nothing pending -> wait; pending but nobody connected -> keep the advertising window open; connected
        but not subscribed -> wait for the subscription; subscribed -> indicate. Every wait also ends when the head
        of the queue, the connection or the subscription changes (a Confirm, a new hub, a lost link).
        """
        while True:
            raise_if_cancelling()  # indications go through bumble, which can lose this task's cancellation
            await self.wait_for(lambda: bool(self._pending))
            _, connected, subscribed = self._repeat_state()
            pause = self.repeat_seconds
            if subscribed:
                pending = self._pending[0]
                if await self.indicate(self.event_char, pending.raw):
                    self.indications.append(Indicated(self.clock.now(), pending.event.counter, pending.raw))
                    self._notify_changed()
                    if not self._pending or self._pending[0] is not pending:
                        continue
            elif not connected:
                if self.in_range:
                    self.wake()
                pause = max(self.repeat_seconds, self.options.advertise_seconds / 2)
            await self._pause(pause)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` on the clock in this task, cut short when the head, the link or the subscription changes.

        The repeater sleeps on the clock itself (no helper task), so a manual clock advanced by ``repeat_seconds``
        resumes it before moving on; a change interrupts the sleep by cancelling it (see :meth:`_notify_changed`).
        """
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("the repeater runs in a task")
        self._pause_state = self._repeat_state()
        self._pause_task = task
        self._repeat_armed = True
        self._notify_changed()
        try:
            await self.clock.sleep(seconds)
        except asyncio.CancelledError:
            if not self._interrupted or task.uncancel() > 0:
                raise
        finally:
            self._pause_task = None
            self._interrupted = False
            self._repeat_armed = False

    def _notify_changed(self) -> None:
        super()._notify_changed()
        task = self._pause_task
        if task is not None and not self._interrupted and self._repeat_state() != self._pause_state:
            self._interrupted = True
            task.cancel()

    async def _battery_check(self) -> Produced | None:
        if self.battery.level >= BATTERY_LOW_PERCENT or self._battery_low_sent:
            return None
        self._battery_low_sent = True
        return await self.press(PendantEventType.BATTERY_LOW)

    async def _battery_watch(self) -> None:
        while True:
            await self.wait_for(lambda: self.battery.level < BATTERY_LOW_PERCENT and not self._battery_low_sent)
            await self._battery_check()


def _write_state(path: Path, counter: int) -> None:
    """Write the counter durably: a new file, fsynced, renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    with tmp.open("w", encoding="utf-8") as out:
        json.dump({"counter": counter}, out)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
