# The pendant's behaviour: gestures become authenticated events, repeated until the hub confirms them; the hub's
# feedback becomes LED and buzzer patterns; then deep sleep until the button (or the heartbeat timer) wakes us.
#
# One wake, in order: battery measured (battery_low queued once per discharge; after the waking press is delivered
# when a press woke us), a heartbeat queued on a timer wake, the waking press recognised by the button driver, then
# four tasks under a supervisor that feeds the watchdog:
#
# - button: button.watch() -> on_gesture(): PRESS -> press event (with an immediate local chirp), LONG -> cancel
#   event, DOUBLE -> check-in event. Each event takes a fresh counter from the store (persisted before use);
# - sender: while events are pending, advertise fast, wait for the hub, indicate the oldest pending frame, and
#   re-indicate the same bytes every retry_ms until a valid Confirm covers it. It never gives up on a press, a cancel,
#   a check-in or battery_low; only a heartbeat is dropped after heartbeat_give_up_ms. After every not_connected_after
#   failed connection windows the resident sees NOT_CONNECTED (and the sender keeps trying);
# - keeper: bond keys the BLE IRQ handed over (kept in RAM there) are written to flash from this task;
# - receiver: the hub's writes: Confirm (valid tag, counter not above the last issued one) drops every pending
#   event up to it; Feedback (valid tag, event counter not above the last issued one, (counter, seq) above the last
#   accepted pair) plays its pattern; a Key Check challenge (at pairing, docs/protocol.md §9.7) is answered with its
#   tag under our key, so the hub can refuse a key that is not the one we hold.
#
# Concurrency cases:
# - a gesture while an event is being indicated: queued behind it, sent after it is confirmed (oldest first);
# - a Confirm arriving before INDICATE_DONE, or for a newer counter than the one being indicated: drops everything up
#   to it, wakes the sender at once;
# - a disconnect while waiting for a Confirm: Link calls on_change, the sender wakes, advertises fast and indicates
#   the same frame again after reconnecting (the hub's verifier sees a repeat and confirms again);
# - a forged or replayed Confirm/Feedback: ignored, nothing pending is dropped, nothing is shown;
# - a task dying on an unexpected error: the supervisor stops feeding the watchdog and re-raises, so the chip resets
#   and the events that were pending are lost only after their counters were persisted (never reused);
# - sleeping: only with nothing pending, no pattern playing, the button released, and idle for awake_ms (or, while
#   help is called and not yet answered, call_awake_ms).

import asyncio
import time

import battery
import button
import feedback
import frames
from ble_link import WRITE_CONFIRM, WRITE_KEY_CHECK, Link
from hal import Board
from micropython import const
from store import FLAG_BATTERY_LOW_SENT, CounterExhausted, Store

CONNECT_WAIT_MS = const(10_000)  # one fast-advertising window
RETRY_MS = const(3_000)  # re-indicate an unconfirmed event
NOT_CONNECTED_AFTER = const(3)  # failed connection windows before NOT_CONNECTED is shown (then every 3)
AWAKE_MS = const(60_000)  # stay reachable after the last activity so the hub can write feedback
CALL_AWAKE_MS = const(600_000)  # while help is called and not answered, wait up to 10 min for "answered"
HEARTBEAT_MS = const(21_600_000)  # timer wake every 6 h: a heartbeat event with the battery level
HEARTBEAT_GIVE_UP_MS = const(60_000)
FEED_MS = const(1_000)  # watchdog feed period (hal._WDT_MS is 8 s)

_GESTURE_EVENT = {button.PRESS: frames.EV_PRESS, button.LONG: frames.EV_CANCEL, button.DOUBLE: frames.EV_CHECKIN}


class Timings:
    """The waits above, overridable so tests run a whole press cycle in milliseconds."""

    def __init__(
        self, connect_wait_ms: int = CONNECT_WAIT_MS, retry_ms: int = RETRY_MS, awake_ms: int = AWAKE_MS,
        call_awake_ms: int = CALL_AWAKE_MS, heartbeat_give_up_ms: int = HEARTBEAT_GIVE_UP_MS, feed_ms: int = FEED_MS,
        debounce_ms: int = button.DEBOUNCE_MS, long_ms: int = button.LONG_MS, double_ms: int = button.DOUBLE_MS,
    ) -> None:
        self.connect_wait_ms = connect_wait_ms
        self.retry_ms = retry_ms
        self.awake_ms = awake_ms
        self.call_awake_ms = call_awake_ms
        self.heartbeat_give_up_ms = heartbeat_give_up_ms
        self.feed_ms = feed_ms
        self.debounce_ms = debounce_ms
        self.long_ms = long_ms
        self.double_ms = double_ms


class Pendant:
    """One wake of a provisioned pendant."""

    def __init__(self, board: Board, store: Store, player: feedback.Player, timings: Timings | None = None) -> None:
        self._board = board
        self._store = store
        self._player = player
        self._t = timings if timings is not None else Timings()
        self.pending: list[tuple[int, int, bytes, int]] = []  # (counter, event, frame, queued at), oldest first
        self.failures = 0  # connection windows without a hub, since the last Confirm
        self.battery_pct = frames.BATTERY_UNKNOWN
        self._progress = asyncio.ThreadSafeFlag()  # an event queued, confirmed, or the link went up or down
        self._fb_pair = (store.last_issued, 0xFFFF)  # a reboot forgets nothing the hub said before it
        self._active_at = time.ticks_ms()
        self._button: button.Button | None = None
        self._link: Link | None = None

    def wake(self) -> None:
        """The link went up or down (called from the BLE IRQ: only sets a flag)."""
        self._progress.set()

    # -- inputs -------------------------------------------------------------------------------------------------

    def measure_battery(self) -> None:
        self.battery_pct = battery.percent(self._board.battery_mv())
        sent = bool(self._store.flags & FLAG_BATTERY_LOW_SENT)
        report, sent_now = battery.assess(self.battery_pct, sent)
        if sent and not sent_now:  # recharged: the next discharge is reported again
            self._store.set_flags(self._store.flags & ~FLAG_BATTERY_LOW_SENT)
        if report:  # the flag is set once the hub confirms the event (on_write), so a reset before that resends it
            self._player.show(frames.FB_LOW_BATTERY)
            self.queue(frames.EV_BATTERY_LOW)

    def on_gesture(self, gesture: int) -> None:
        self._active_at = time.ticks_ms()
        event = _GESTURE_EVENT.get(gesture)
        if event is None:
            return
        if event == frames.EV_PRESS and self._store.provisioned:
            self._player.show(feedback.PRESSED)  # the resident hears at once that the press registered
        self.queue(event)

    def queue(self, event: int) -> bool:
        """Build and queue an authenticated event; False (and "not provisioned" shown) when there is no key."""
        key, pid = self._store.key, self._store.pendant_id
        if key is None or pid is None:
            self._player.show(feedback.NOT_PROVISIONED)
            return False
        try:
            counter = self._store.next_counter()
        except CounterExhausted:  # docs/protocol.md §9.6: only the REKEY frame is left; nothing else can be sent
            self._player.show(feedback.NOT_PROVISIONED)
            self.queue_rekey()
            return False
        self.battery_pct = battery.percent(self._board.battery_mv())  # fresh in every event
        frame = frames.event_frame(key, pid, event, counter, self.battery_pct, self._board.uptime_s())
        self.pending.append((counter, event, frame, time.ticks_ms()))
        if self._store.exhausted:  # that was the last ordinary counter: tell the hub right behind it
            self.queue_rekey()
        self._publish_head()
        self._progress.set()
        return True

    def queue_rekey(self) -> None:
        """Queue the REKEY frame (counters used up) unless it is already pending; the hub must re-provision us."""
        key, pid = self._store.key, self._store.pendant_id
        if key is None or pid is None or any(p[1] == frames.EV_REKEY for p in self.pending):
            return
        counter = self._store.rekey_counter()
        self.pending.append((counter, frames.EV_REKEY, frames.rekey_frame(key, pid), time.ticks_ms()))
        self._publish_head()
        self._progress.set()

    def _publish_head(self) -> None:
        """Keep the Event value on the oldest unconfirmed frame, for a hub that reads it (docs/protocol.md §9.4);
        with nothing pending it keeps the last one."""
        if self.pending and self._link is not None:
            self._link.set_event(self.pending[0][2])

    def on_write(self, kind: int, data: bytes) -> bool:
        """A write from the hub; True when it was authentic and fresh (and acted on)."""
        key, pid = self._store.key, self._store.pendant_id
        if key is None or pid is None:
            return False
        if kind == WRITE_KEY_CHECK:
            answer = frames.key_answer(key, pid, data)
            if answer is None or self._link is None:
                return False
            self._link.answer_key_check(answer)
            self._active_at = time.ticks_ms()  # the installer is pairing: stay awake for the rest of it
            return True
        if kind == WRITE_CONFIRM:
            counter = frames.confirm_counter(key, pid, data)
            if counter == 0 or counter > self._store.last_issued:
                return False
            if any(p[1] == frames.EV_BATTERY_LOW for p in self.pending if p[0] <= counter):
                self._store.set_flags(self._store.flags | FLAG_BATTERY_LOW_SENT)
            self.pending = [p for p in self.pending if p[0] > counter]
            self._publish_head()
            self.failures = 0
            self._active_at = time.ticks_ms()
            self._progress.set()
            return True
        fb = frames.feedback(key, pid, data)
        if fb is None:
            return False
        state, counter, seq = fb
        if counter > self._store.last_issued or (counter, seq) <= self._fb_pair:
            return False
        self._fb_pair = (counter, seq)
        self._active_at = time.ticks_ms()
        if state == frames.FB_IDLE:
            self._player.stop()
            self._player.state = frames.FB_IDLE
        else:
            self._player.show(state)
        return True

    # -- tasks --------------------------------------------------------------------------------------------------

    async def _sender(self, link: Link) -> None:
        # Indicate the oldest pending frame at once when it becomes the oldest or a hub (re)connects, then again
        # every retry_ms until it is confirmed. Other progress (a gesture queued behind it, a Confirm that drops
        # nothing, a Feedback) does not re-indicate early.
        sent = (0, 0)  # (connection number, counter) of the last indication
        sent_at = time.ticks_ms()
        while True:
            self._drop_stale_heartbeats()
            if not self.pending:
                link.advertise(False)
                await self._progress.wait()
                continue
            if not link.connected:
                link.advertise(True)
                if not await link.wait_connected(self._t.connect_wait_ms):
                    self.failures += 1
                    if self.failures % NOT_CONNECTED_AFTER == 0:
                        self._player.show(frames.FB_NOT_CONNECTED)
                    continue
            head = (link.connections, self.pending[0][0])
            wait = time.ticks_diff(time.ticks_add(sent_at, self._t.retry_ms), time.ticks_ms())
            if head != sent or wait <= 0:
                link.indicate(self.pending[0][2])
                sent, sent_at, wait = head, time.ticks_ms(), self._t.retry_ms
            try:
                await asyncio.wait_for_ms(self._progress.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def _drop_stale_heartbeats(self) -> None:
        now = time.ticks_ms()
        self.pending = [
            p for p in self.pending
            if p[1] != frames.EV_HEARTBEAT or time.ticks_diff(now, p[3]) < self._t.heartbeat_give_up_ms
        ]
        self._publish_head()

    async def _receiver(self, link: Link) -> None:
        while True:
            await link.write_flag.wait()
            write = link.pop_write()
            while write is not None:
                self.on_write(write[0], write[1])
                write = link.pop_write()

    def may_sleep(self) -> bool:
        if self.pending or self._player.playing:
            return False
        if self._button is not None and not self._button.idle:
            return False
        idle = time.ticks_diff(time.ticks_ms(), self._active_at)
        if self._player.state == frames.FB_HELP_CALLED:
            return idle >= self._t.call_awake_ms
        return idle >= self._t.awake_ms

    async def run(self, link: Link, wake_pressed: bool = False, heartbeat: bool = False) -> None:
        """Serve one wake; returns when the pendant may deep-sleep. Raises if a task died (the watchdog resets us)."""
        board = self._board
        t = self._t
        self._button = btn = button.Button(board.ticks_ms(), wake_pressed, t.debounce_ms, t.long_ms, t.double_ms)
        self._link = link
        self._publish_head()
        wdt = board.watchdog()
        # Counters are confirmed in order, so whatever is queued first is delivered first. When a press woke us,
        # battery_low waits until that press is delivered: help first, maintenance after.
        battery_due = wake_pressed
        if self._store.exhausted:  # at every wake until re-provisioned: the hub must hear that we need a new key
            battery_due = False
            self.queue_rekey()
        if not battery_due:
            self.measure_battery()
        if heartbeat:
            self.queue(frames.EV_HEARTBEAT)
        tasks = (
            asyncio.create_task(
                button.watch(btn, board.button_flag, board.pressed, board.ticks_ms, self.on_gesture)
            ),
            asyncio.create_task(self._sender(link)),
            asyncio.create_task(self._receiver(link)),
            asyncio.create_task(link.keep_secrets()),  # bond keys the IRQ kept in RAM go to flash here
        )
        try:
            while True:
                for task in tasks:
                    if task.done():
                        await task  # re-raises what killed it; the watchdog is no longer fed
                        raise RuntimeError("pendant task ended")
                wdt.feed()
                if battery_due and not self.pending and btn.idle:
                    battery_due = False
                    self.measure_battery()
                if self.may_sleep():
                    return
                await asyncio.sleep_ms(t.feed_ms)
        finally:
            for task in tasks:
                task.cancel()
            link.disconnect()
            link.save_secrets()  # deep sleep loses RAM: bond keys not yet written go to flash now
            self._player.stop()


async def _not_provisioned(player: feedback.Player) -> None:
    player.show(feedback.NOT_PROVISIONED)
    while player.playing:
        await asyncio.sleep_ms(100)


def main() -> None:
    """Entry point (main.py): one wake, then deep sleep."""
    import hal
    from ble_link import Secrets

    board = hal.Board()
    store = Store(hal.ROOT)
    player = feedback.Player(board.led, board.tone)
    key, pid = store.key, store.pendant_id
    if key is None or pid is None:
        asyncio.run(_not_provisioned(player))
        board.deepsleep(0)  # until the button is pressed; then this shows again
        return
    pendant = Pendant(board, store, player)
    link = Link(board.ble_on(), board.uuid, Secrets(hal.ROOT + "/bonds"), frames.device_info(pid), pendant.wake)
    asyncio.run(pendant.run(link, board.woke_by_button(), board.woke_by_timer()))
    board.deepsleep(HEARTBEAT_MS)
