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
* **Writes from the hub** (Confirm, Feedback) are answered as the firmware's stack answers them: every write
  succeeds at the ATT layer (MicroPython's stack never refuses one), and the pendant then acts on it or silently
  ignores it with the firmware's rules (``firmware/pendant/app.py`` ``on_write``, ``docs/protocol.md`` §9.4):

  * Confirm: acted on when it parses, its tag verifies under this pendant's key and id, and its counter is one the
    pendant has sent (1 .. its counter). It drops every pending event up to that counter; one that covers nothing
    pending (a repeat crossed the first Confirm, an old Confirm replayed) changes nothing.
  * Feedback: acted on when it parses, its tag verifies, its event counter is not above the pendant's counter and
    ``(event counter, seq)`` is above the last accepted pair (after a boot the floor is ``(own counter, 0xFFFF)``).

  What it ignored is recorded in :attr:`Pendant.rejected` (the simulation's own bookkeeping; the hub sees nothing).
* **Key check** (``docs/protocol.md`` §9.7): a challenge written to Key Check is answered as the firmware answers
  it: the value becomes ``version | nonce | tag`` under the pendant's key and id, indicated to a subscribed hub and
  readable; a malformed write stays the value and is recorded in :attr:`Pendant.rejected`.
* **Feedback** becomes an LED/buzzer pattern, recorded in :attr:`Pendant.patterns` as ``(at, state, pattern)``; the
  pattern per state is :data:`PATTERNS` (the firmware's table, ``firmware/pendant/feedback.py``, with LED colours).
* **Reads.** Event: the oldest unconfirmed frame; with none pending, the last frame that was the oldest; empty
  before the first event of a boot. The oldest, not the newest, because a Confirm for the newest would confirm the
  older ones unseen. Device Info: version and id.
* **Security.** As the firmware: no attribute requires an encrypted link (the frames carry their own tags, and a
  failed pairing must never stop a call for help), whatever ``options.bonding_required`` says.
* **Timing.** The oldest pending frame is indicated at once when it becomes the oldest or the hub (re)subscribes,
  then every ``repeat_seconds`` until confirmed; nothing else (an event queued behind it, a Confirm that drops
  nothing, a Feedback) re-indicates it early. One difference remains on purpose: the firmware cannot see the hub's
  subscription and indicates as soon as a hub connects, so its first indication can come before the subscription
  and be lost (``docs/protocol.md`` §9.4 has the hub read Event after subscribing); the simulation waits for the
  subscription instead.
* **Counter ceiling** (``docs/protocol.md`` §9.6): the last ordinary counter is ``COUNTER_CEILING - 1``; the REKEY
  frame is queued right behind it and again at every boot, and :meth:`Pendant.press` then raises
  :class:`CounterExhaustedError`. :meth:`Pendant.reprovision` gives the pendant a new key (restarting a counter past
  ``REKEY_DUE_AT``), as ``store.provision`` does on the board.
* **Reboot.** ``await pendant.reboot()`` drops the link and loses what the firmware keeps in RAM (pending events,
  the uptime, the feedback floor, the Event value); the counter survives, so no counter is ever sent twice.

The pendant id defaults to the BLE address, which is what the gateway's verifier uses
(``gateway/core/pendant_link.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from protocols.pendant import (
    CONFIRM_CHAR_UUID,
    COUNTER_CEILING,
    DEVICE_INFO_CHAR_UUID,
    EVENT_CHAR_UUID,
    FEEDBACK_CHAR_UUID,
    KEY_CHECK_CHAR_UUID,
    KEY_LEN,
    SERVICE_UUID,
    DeviceInfo,
    FeedbackState,
    PendantEventType,
)
from sim.clock import Clock
from sim.devices.base import READABLE, WRITEABLE, P, Produced, SimDevice
from sim.devices.options import DeviceOptions
from sim.devices.pendant_state import (
    PATTERNS,
    CounterExhaustedError,
    Pattern,
    PendantState,
    Queued,
    Refusal,
    Rejection,
    Shown,
    Written,
)

__all__ = [
    "BATTERY_LOW_PERCENT",
    "PATTERNS",
    "CounterExhaustedError",
    "Indicated",
    "Pattern",
    "Pendant",
    "Refusal",
    "Rejection",
    "Shown",
    "Written",
]

_log = logging.getLogger(__name__)

#: Below this level the pendant raises a battery_low event, once per discharge (as ``firmware/pendant/battery.py``).
BATTERY_LOW_PERCENT: Final = 20


class Indicated(NamedTuple):
    """An indication of an event frame that the hub acknowledged at the ATT layer."""

    at: datetime
    counter: int
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
        self.pendant_id = pendant_id or options.address
        DeviceInfo(self.pendant_id)  # validates the id
        self.repeat_seconds = repeat_seconds
        self.state_file = None if state_file is None else Path(state_file)
        self._state = PendantState(self.pendant_id, options.key, self._load_counter())
        self._counter_lock = asyncio.Lock()
        self.indications: list[Indicated] = []
        """Every event indication the hub acknowledged (first sends and repeats), oldest first."""
        self._battery_low_sent = False
        self._repeat_armed = False
        self._pause_task: asyncio.Task[object] | None = None
        self._pause_state: tuple[int | None, bool, bool] = (None, False, False)
        self._interrupted = False
        self._boot(self._state.counter)

    # ------------------------------------------------------------------ public state

    @property
    def key(self) -> bytes:
        """The pendant's 32-byte key (changed by :meth:`reprovision`)."""
        return self._state.key

    @property
    def counter(self) -> int:
        """The last counter handed out (0 before the first event)."""
        return self._state.counter

    @property
    def pending(self) -> list[int]:
        """Counters of the events waiting for a Confirm, oldest first."""
        return [p.event.counter for p in self._state.pending]

    @property
    def confirmed_at(self) -> Mapping[int, datetime]:
        """Counter -> home time at which an authentic Confirm covering it arrived."""
        return dict(self._state.confirmed_at)

    @property
    def patterns(self) -> list[Shown]:
        """Every pattern shown on the hub's request, oldest first."""
        return list(self._state.patterns)

    @property
    def rejected(self) -> list[Rejection]:
        """Every Confirm or Feedback write the pendant ignored, oldest first."""
        return list(self._state.rejected)

    @property
    def duplicate_confirms(self) -> int:
        """Authentic Confirms for sent counters that covered nothing pending (acted on, no effect)."""
        return self._state.duplicate_confirms

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
        return self._state.showing

    def indications_of(self, counter: int) -> list[bytes]:
        """The bytes of every acknowledged indication of ``counter``."""
        return [i.raw for i in self.indications if i.counter == counter]

    async def wait_confirmed(self, counter: int) -> datetime:
        """Return the home time at which ``counter`` was confirmed, waiting for it if need be."""
        await self.wait_for(lambda: counter in self._state.confirmed_at)
        return self._state.confirmed_at[counter]

    # ------------------------------------------------------------------ the resident's side

    async def press(self, kind: PendantEventType | str = PendantEventType.PRESS) -> Produced:
        """A gesture (or a battery or heartbeat event): a new counter, persisted, then a signed frame queued.

        Args:
            kind: the event, as a :class:`PendantEventType` or its lower-case name (``"long_press"``).

        Returns:
            The ground truth: ``sequence`` is the counter, ``raw`` the exact frame the hub will receive.

        Raises:
            CounterExhaustedError: no ordinary counter is left (REKEY went out instead, docs/protocol.md §9.6).
            ValueError: ``kind`` is REKEY, which only the pendant itself sends.
        """
        event_type = kind if isinstance(kind, PendantEventType) else PendantEventType[kind.upper()]
        if event_type is PendantEventType.REKEY:
            raise ValueError("REKEY is sent by the pendant itself once its counters are used up")
        async with self._counter_lock:
            try:
                counter = self._state.next_counter()
            except CounterExhaustedError:
                self._produced(self._state.rekey_if_exhausted())
                raise
            await self._persist(counter)
            # REKEY follows the event that took the last ordinary counter, as on the firmware
            queued = self._state.queue(event_type, counter, self.battery.level, self.uptime_seconds)
            return self._produced(queued)[0]

    def _produced(self, queued: list[Queued]) -> list[Produced]:
        """Log what was queued in the ground truth and open the advertising window."""
        produced = []
        for item in queued:
            event = item.event
            values: dict[str, float | int | str | bool] = {"event": event.event.name.lower(), "counter": event.counter}
            if event.battery is not None:
                values["battery"] = event.battery
            produced.append(self.record_with_sequence(event.counter, str(EVENT_CHAR_UUID), values, item.raw))
            _log.info("%s: %s, counter %d", self.id, event.event.name.lower(), event.counter)
        if produced:
            self.wake()
        return produced

    async def reprovision(self, key: bytes) -> None:
        """Pair again with ``key`` (as ``store.provision`` on the board), then reboot.

        A new key restarts a counter that has passed :data:`~protocols.pendant.REKEY_DUE_AT` at 1; otherwise (or
        with the same key) the counter continues.

        Raises:
            ValueError: the key is not 32 bytes.
        """
        async with self._counter_lock:
            self._state.reprovision(key)
            if self._state.counter == 0:
                await self._persist(0)
        await self.reboot()

    async def reboot(self) -> None:
        """A reset: the link drops; pending events, uptime and the feedback floor are lost; the counter is not."""
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError, att.ATT_Error):
                await connection.disconnect()
        async with self._counter_lock:
            self._boot(self._load_counter())
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
        # The firmware's permissions (firmware/pendant/ble_link.py): none requires encryption, CCCD included.
        self.event_char: gatt.Characteristic[bytes] = gatt.Characteristic(
            UUID(str(EVENT_CHAR_UUID)),
            P.READ | P.INDICATE,
            READABLE,
            gatt.CharacteristicValue[bytes](read=self._read_event),
        )
        self.event_char.descriptors = [
            gatt.Descriptor(
                gatt.GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                READABLE | WRITEABLE,
                device.gatt_server.make_descriptor_value(self.event_char),
            )
        ]
        confirm: gatt.Characteristic[bytes] = gatt.Characteristic(
            UUID(str(CONFIRM_CHAR_UUID)), P.WRITE, WRITEABLE, gatt.CharacteristicValue[bytes](write=self._on_confirm)
        )
        feedback: gatt.Characteristic[bytes] = gatt.Characteristic(
            UUID(str(FEEDBACK_CHAR_UUID)), P.WRITE, WRITEABLE, gatt.CharacteristicValue[bytes](write=self._on_feedback)
        )
        info: gatt.Characteristic[bytes] = gatt.Characteristic(
            UUID(str(DEVICE_INFO_CHAR_UUID)), P.READ, READABLE, bytes(DeviceInfo(self.pendant_id))
        )
        self.key_check_char: gatt.Characteristic[bytes] = gatt.Characteristic(
            UUID(str(KEY_CHECK_CHAR_UUID)),
            P.READ | P.WRITE | P.INDICATE,
            READABLE | WRITEABLE,
            gatt.CharacteristicValue[bytes](read=self._read_key_check, write=self._on_key_check),
        )
        self.key_check_char.descriptors = [
            gatt.Descriptor(
                gatt.GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                READABLE | WRITEABLE,
                device.gatt_server.make_descriptor_value(self.key_check_char),
            )
        ]
        chars = [self.event_char, confirm, feedback, info, self.key_check_char]
        return [gatt.Service(UUID(str(SERVICE_UUID)), chars)]

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

    def _boot(self, counter: int) -> None:
        self._booted_at = self.clock.monotonic()
        self._produced(self._state.boot(counter))  # exhausted: REKEY again at every boot until re-provisioned

    def _load_counter(self) -> int:
        if self.state_file is None or not self.state_file.exists():
            return 0
        try:
            value = json.loads(self.state_file.read_text(encoding="utf-8"))["counter"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{self.id}: unreadable pendant state file {self.state_file}: {error}") from error
        if not isinstance(value, int) or not 0 <= value <= COUNTER_CEILING:
            raise ValueError(f"{self.id}: pendant state file {self.state_file}: counter {value!r} out of range")
        return value

    async def _persist(self, counter: int) -> None:
        if self.state_file is not None:
            await asyncio.to_thread(_write_state, self.state_file, counter)

    def _read_event(self, _connection: Connection) -> bytes:
        return self._state.event_value

    def _on_confirm(self, _connection: Connection, value: bytes) -> None:
        # The write succeeds at the ATT layer whatever it holds (no ATT error), as on the board.
        state = self._state
        before = len(state.confirmed_at)
        if state.on_confirm(bytes(value), self.clock.now()):
            _log.info("%s: %d more counter(s) confirmed", self.id, len(state.confirmed_at) - before)
        else:
            _log.warning("%s: confirm write ignored: %s", self.id, state.rejected[-1].reason)
        self._notify_changed()

    def _read_key_check(self, _connection: Connection) -> bytes:
        return self._state.key_check_value

    def _on_key_check(self, _connection: Connection, value: bytes) -> None:
        answer = self._state.on_key_check(bytes(value), self.clock.now())
        if answer is None:
            _log.warning("%s: key check write ignored: %s", self.id, self._state.rejected[-1].reason)
        else:
            _log.info("%s: answered a key check", self.id)
            self.spawn(self._indicate_answer(answer), name=f"{self.id}-key-check")
        self._notify_changed()

    async def _indicate_answer(self, answer: bytes) -> None:
        """Indicate the answer after the write's response (a hub that did not subscribe reads it instead)."""
        with contextlib.suppress(OSError, RuntimeError, att.ATT_Error):
            await self.indicate(self.key_check_char, answer)

    def _on_feedback(self, _connection: Connection, value: bytes) -> None:
        state = self._state
        if state.on_feedback(bytes(value), self.clock.now()):
            _log.info("%s: shows %s", self.id, state.showing.name.lower())
        else:
            _log.warning("%s: feedback write ignored: %s", self.id, state.rejected[-1].reason)
        self._notify_changed()

    def _repeat_state(self) -> tuple[int | None, bool, bool]:
        pending = self._state.pending
        head = pending[0].event.counter if pending else None
        return head, self.connected, self.is_subscribed(self.event_char, indicate=True)

    async def _repeater(self) -> None:
        """Indicate the oldest pending frame, again every ``repeat_seconds``, until it is confirmed.

        Cases: nothing pending -> wait; pending but nobody connected -> keep the advertising window open; connected
        but not subscribed -> wait for the subscription; subscribed -> indicate. Every wait also ends when the head
        of the queue, the connection or the subscription changes (a Confirm, a new hub, a lost link).
        """
        while True:
            raise_if_cancelling()  # indications go through bumble, which can lose this task's cancellation
            await self.wait_for(lambda: bool(self._state.pending))
            _, connected, subscribed = self._repeat_state()
            pause = self.repeat_seconds
            if subscribed:
                pending = self._state.pending[0]
                if await self.indicate(self.event_char, pending.raw):
                    self.indications.append(Indicated(self.clock.now(), pending.event.counter, pending.raw))
                    self._notify_changed()
                    if not self._state.pending or self._state.pending[0] is not pending:
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
        try:
            return await self.press(PendantEventType.BATTERY_LOW)
        except CounterExhaustedError:
            return None  # REKEY is what the hub hears now

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
