# The whole pendant on the fake board and radio, the test playing the hub: presses become authenticated events,
# repeated until a valid Confirm; feedback patterns; simulated reboots; battery; not provisioned; the watchdog.
import asyncio

import app
import ble_link
import feedback
import frames
import irqguard
import machine
import store
from support import KEY, PID, Failed, Rig, parse_event, check, confirm, equal, fast_timings, feedback as fb_frame, tmpdir, until


async def _run(rig, **kw):
    return asyncio.create_task(rig.pendant.run(rig.link, **kw))


async def _finish(task, ms=3000):
    try:
        await asyncio.wait_for_ms(task, ms)
    except asyncio.TimeoutError:
        raise Failed("pendant did not go to sleep")


async def _next_indication(rig, n):
    await until(lambda: len(rig.fake.indications) >= n)
    return rig.fake.indications[n - 1][2]


async def test_press_indicated_until_confirmed_then_sleeps():
    r = Rig()
    r.fake.auto_ack = True
    task = await _run(r)
    r.pendant.on_gesture(1)  # button.PRESS
    await until(lambda: r.fake.advertising == 30_000)  # fast advertising while the event waits
    r.fake.central_connect()
    first = await _next_indication(r, 1)
    again = await _next_indication(r, 2)  # no Confirm yet: the same bytes again
    equal(again, first, "repeat is byte-identical")
    version, event, counter, battery_pct, _ = parse_event(first)
    equal((version, event, battery_pct), (1, frames.EV_PRESS, 64), "press event, battery from the ADC (3.9 V)")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(counter))
    await until(lambda: not r.pendant.pending)
    n = len(r.fake.indications)
    await _finish(task)
    equal(len(r.fake.indications), n, "nothing indicated after the confirm")
    check(machine.wdts and machine.wdts[0].feeds > 0, "watchdog fed")


async def test_forged_and_replayed_confirms_ignored():
    r = Rig()
    task = await _run(r)
    r.fake.central_connect()
    r.pendant.on_gesture(1)
    first = await _next_indication(r, 1)
    counter = frames.event_counter(first)
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(counter, key=bytes(32)))  # a stranger's key
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(counter + 5))  # a counter never sent
    n = len(r.fake.indications)
    await _next_indication(r, n + 1)
    equal(len(r.pendant.pending), 1, "still pending after forged confirms")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(counter))
    await until(lambda: not r.pendant.pending)
    # The next press has a new counter; replaying the old Confirm does not silence it.
    r.pendant.on_gesture(1)
    second = await _next_indication(r, len(r.fake.indications) + 1)
    check(frames.event_counter(second) > counter, "new counter")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(counter))
    await _next_indication(r, len(r.fake.indications) + 1)
    equal(len(r.pendant.pending), 1, "old confirm replayed silenced the new press")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(second)))
    await _finish(task)


async def test_gestures_queue_in_order_and_one_confirm_covers_all():
    r = Rig()
    r.fake.auto_ack = False
    task = await _run(r)
    r.pendant.on_gesture(1)  # press
    r.pendant.on_gesture(2)  # long press: cancel
    r.pendant.on_gesture(3)  # double press: check-in
    r.fake.central_connect()
    first = await _next_indication(r, 1)
    equal(first[1], frames.EV_PRESS, "oldest first")
    counters = [p[0] for p in r.pendant.pending]
    equal([p[1] for p in r.pendant.pending], [frames.EV_PRESS, frames.EV_CANCEL, frames.EV_CHECKIN], "events")
    equal(counters, sorted(counters), "increasing counters")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(counters[0]))
    await until(lambda: r.fake.indications[-1][2][1] == frames.EV_CANCEL)
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(counters[2]))
    await _finish(task)
    equal(r.pendant.pending, [], "all confirmed")


async def test_disconnect_mid_wait_reindicates_after_reconnect():
    r = Rig(timings=fast_timings(retry_ms=5000))  # only the disconnect can wake the sender early
    task = await _run(r)
    r.pendant.on_gesture(1)
    r.fake.central_connect()
    first = await _next_indication(r, 1)
    r.fake.central_disconnect()
    await until(lambda: r.fake.advertising == 30_000)
    r.fake.central_connect(conn=77)
    again = await _next_indication(r, 2)
    equal(again, first, "same frame after reconnect")
    equal(r.fake.indications[1][0], 77, "on the new connection")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(first)))
    await _finish(task)


async def test_no_hub_shows_not_connected_and_keeps_trying():
    shown = []
    r = Rig(timings=fast_timings(connect_wait_ms=5))
    real_show = r.player.show

    def spy(state):
        shown.append(state)
        real_show(state)

    r.player.show = spy
    task = await _run(r)
    r.pendant.on_gesture(1)
    await until(lambda: r.pendant.failures >= 2 * app.NOT_CONNECTED_AFTER)
    check(frames.FB_NOT_CONNECTED in shown, "resident not told")
    check(r.pendant.pending, "gave up on a press")
    check(not task.done(), "went to sleep with a press pending")
    r.fake.central_connect()
    frame = await _next_indication(r, 1)
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(frame)))
    await _finish(task)
    equal(r.pendant.failures, 0, "failures reset by the confirm")


async def test_feedback_patterns_fresh_and_authentic_only():
    r = Rig(timings=fast_timings(call_awake_ms=5000))
    task = await _run(r)
    r.pendant.on_gesture(1)
    r.fake.central_connect()
    frame = await _next_indication(r, 1)
    c = frames.event_counter(frame)
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(c))
    r.fake.central_write(ble_link.FEEDBACK_UUID, fb_frame(frames.FB_HELP_CALLED, c, 0))
    await until(lambda: r.player.state == frames.FB_HELP_CALLED)
    await asyncio.sleep_ms(30)  # past awake_ms: help is called, so the pendant must stay awake for "answered"
    check(not task.done(), "slept while help was called")
    r.fake.central_write(ble_link.FEEDBACK_UUID, fb_frame(frames.FB_CANCELLED, c, 1, key=bytes(32)))  # forged
    r.fake.central_write(ble_link.FEEDBACK_UUID, fb_frame(frames.FB_CANCELLED, c + 1, 0))  # counter never sent
    r.fake.central_write(ble_link.FEEDBACK_UUID, fb_frame(frames.FB_ANSWERED, c, 1))
    await until(lambda: r.player.state == frames.FB_ANSWERED)
    r.fake.central_write(ble_link.FEEDBACK_UUID, fb_frame(frames.FB_HELP_CALLED, c, 0))  # replay of an old one
    r.fake.central_write(ble_link.FEEDBACK_UUID, fb_frame(frames.FB_ANSWERED, c, 1))  # and an exact replay
    await asyncio.sleep_ms(0)
    equal(r.player.state, frames.FB_ANSWERED, "replayed feedback changed the state")
    r.player.stop()  # skip the rest of the 3 s chime
    await _finish(task)


async def test_feedback_from_before_reboot_ignored():
    root = tmpdir()
    store.provision(root, PID, KEY)
    r = Rig(root=root)
    c = r.store.next_counter()
    r2 = Rig(root=root)  # reboot
    r2.fake.central_connect()
    equal(r2.pendant.on_write(ble_link.WRITE_FEEDBACK, fb_frame(frames.FB_ANSWERED, c, 7)), False, "stale feedback")


async def test_counters_unique_across_reboots_and_corruption():
    root = tmpdir()
    store.provision(root, PID, KEY)
    counters = []
    for boot in range(4):
        if boot == 2:
            with open(root + "/ctr0", "wb") as f:  # flash corruption between boots
                f.write(b"garbage!")
        r = Rig(root=root)
        task = await _run(r)
        r.fake.central_connect()
        for _ in range(3):
            r.pendant.on_gesture(1)
        while r.pendant.pending:
            frame = await _next_indication(r, len(r.fake.indications) + 1)
            r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(frame)))
            await until(lambda: not r.pendant.pending or r.pendant.pending[0][2] != frame)
        await _finish(task)
        counters.extend(frames.event_counter(v) for _, _, v in r.fake.indications)
    unique = []
    for c in counters:
        if not unique or unique[-1] != c:
            unique.append(c)
    equal(len(unique), 12, "twelve events")
    equal(unique, sorted(set(unique)), "strictly increasing across reboots")


async def test_not_provisioned_refuses_events():
    r = Rig(provision=False)
    shown = []
    r.player.show = shown.append
    equal(r.pendant.queue(frames.EV_PRESS), False, "event refused")
    r.pendant.on_gesture(1)
    equal(r.pendant.pending, [], "nothing pending")
    equal(shown, [feedback.NOT_PROVISIONED, feedback.NOT_PROVISIONED], "not provisioned shown")


async def test_low_battery_resent_after_reset_until_confirmed():
    machine.ADC.uv = 1_820_000
    root = tmpdir()
    store.provision(root, PID, KEY)
    r = Rig(root=root)
    task = await _run(r)
    await until(lambda: r.pendant.pending)
    task.cancel()  # reset before the hub confirmed
    r2 = Rig(root=root)
    task = await _run(r2)
    await until(lambda: r2.pendant.pending)
    equal([p[1] for p in r2.pendant.pending], [frames.EV_BATTERY_LOW], "queued again on the next wake")
    r2.fake.central_connect()
    frame = await _next_indication(r2, 1)
    r2.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(frame)))
    r2.player.stop()
    await _finish(task)


async def test_low_battery_event_once_per_discharge():
    machine.ADC.uv = 1_820_000  # 3.64 V: 12 %
    root = tmpdir()
    store.provision(root, PID, KEY)
    for boot in range(2):
        r = Rig(root=root)
        task = await _run(r)
        await asyncio.sleep_ms(0)
        if boot == 0:
            equal([p[1] for p in r.pendant.pending], [frames.EV_BATTERY_LOW], "battery_low queued")
            equal(r.player.state, frames.FB_LOW_BATTERY, "low battery shown")
            r.fake.central_connect()
            frame = await _next_indication(r, 1)
            check(frame[6] == 12, "battery percent in the frame", frame[6])
            r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(frame)))
            r.player.stop()
        else:
            equal(r.pendant.pending, [], "reported again after a reboot")
        await _finish(task)


async def test_waking_press_goes_before_battery_low():
    machine.ADC.uv = 1_820_000  # low battery, and a press woke the pendant
    r = Rig()
    task = await _run(r, wake_pressed=True)
    r.fake.central_connect()
    first = await _next_indication(r, 1)
    equal(first[1], frames.EV_PRESS, "help first")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(first)))
    await until(lambda: r.fake.indications[-1][2][1] == frames.EV_BATTERY_LOW)
    second = r.fake.indications[-1][2]
    check(frames.event_counter(second) > frames.event_counter(first), "battery_low after the press")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(second)))
    r.player.stop()
    await _finish(task)


async def test_heartbeat_on_timer_wake_given_up_without_hub():
    r = Rig(timings=fast_timings(connect_wait_ms=5, heartbeat_give_up_ms=30))
    task = await _run(r, heartbeat=True)
    await until(lambda: r.pendant.pending and r.pendant.pending[0][1] == frames.EV_HEARTBEAT)
    await _finish(task)
    equal(r.pendant.pending, [], "heartbeat dropped")


async def test_waking_press_becomes_an_event():
    r = Rig()
    task = await _run(r, wake_pressed=True)
    r.fake.central_connect()
    frame = await _next_indication(r, 1)
    equal(frame[1], frames.EV_PRESS, "the press that woke the pendant")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(frame)))
    await _finish(task)


async def test_dead_task_stops_feeding_the_watchdog():
    r = Rig()

    def broken(kind, data):
        raise ValueError("defect")

    r.pendant.on_write = broken
    task = await _run(r)
    await until(lambda: machine.wdts and machine.wdts[0].feeds > 0)
    r.fake.central_connect()
    r.fake.central_write(ble_link.CONFIRM_UUID, b"x")
    try:
        await asyncio.wait_for_ms(task, 1000)
    except ValueError:
        feeds = machine.wdts[0].feeds
        await asyncio.sleep_ms(20)
        equal(machine.wdts[0].feeds, feeds, "fed after a task died")
        return
    raise Failed("the supervisor did not re-raise")


def test_main_deep_sleeps_with_button_wake():
    import hal

    machine.reset_state(machine.TIMER_WAKE)
    board = hal.Board()
    try:
        board.deepsleep(app.HEARTBEAT_MS)
    except machine.DeepSleep:
        pass
    import esp32

    equal(esp32.ext0[-1][1], esp32.WAKEUP_ALL_LOW, "wake on button low")
    equal(machine.sleeps, [app.HEARTBEAT_MS], "heartbeat timer")
    check(board.woke_by_timer() and not board.woke_by_button(), "wake reason")


async def test_button_pin_to_events():
    # The whole path: the fake pin's edges -> HAL IRQ flag -> button driver -> gesture -> authenticated event.
    del irqguard.file_access[:]
    # A generous double-press window: on a loaded machine two presses 200 ms apart were once seen as two singles.
    r = Rig(timings=fast_timings(long_ms=5000, double_ms=1500))
    task = await _run(r)
    pin = r.button_pin()
    await until(lambda: r.pendant._button is not None)
    b = r.pendant._button

    async def press():
        pin.drive(0)
        await until(lambda: b._stable)  # debounced as pressed

    async def release():
        pin.drive(1)
        await until(lambda: not b._stable)  # debounced as released

    await press()
    await release()
    await press()  # within the double-press window: a check-in
    await release()
    r.fake.central_connect()
    frame = await _next_indication(r, 1)
    equal(frame[1], frames.EV_CHECKIN, "double press is a check-in")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(frame)))
    await until(lambda: not r.pendant.pending)
    await press()
    await release()
    frame = await _next_indication(r, len(r.fake.indications) + 1)
    equal(frame[1], frames.EV_PRESS, "single press")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(frame)))
    await _finish(task)
    equal(irqguard.file_access, [], "an IRQ handler touched flash (the counter store is written per event)")


async def test_at_the_ceiling_rekey_is_sent_until_confirmed_and_at_every_wake():
    root = tmpdir()
    store.provision(root, PID, KEY, first_counter=frames.COUNTER_CEILING - 1)
    r = Rig(root=root)
    shown = []
    real_show = r.player.show

    def spy(state):
        shown.append(state)
        real_show(state)

    r.player.show = spy
    task = await _run(r)
    r.fake.central_connect()
    r.pendant.on_gesture(1)
    last = await _next_indication(r, 1)
    equal(frames.event_counter(last), frames.COUNTER_CEILING - 1, "the last ordinary counter")
    equal([p[1] for p in r.pendant.pending], [frames.EV_PRESS, frames.EV_REKEY], "REKEY right behind the last one")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.COUNTER_CEILING - 1))
    rekey = await _next_indication(r, len(r.fake.indications) + 1)
    equal(rekey, frames.rekey_frame(KEY, PID), "the fixed REKEY frame")
    equal(parse_event(rekey)[1:], (frames.EV_REKEY, frames.COUNTER_CEILING, frames.BATTERY_UNKNOWN, 0), "fields")
    r.pendant.on_gesture(1)  # no counter left: not provisioned shown, nothing new queued
    check(feedback.NOT_PROVISIONED in shown, "the resident is told the pendant cannot call")
    equal([p[1] for p in r.pendant.pending], [frames.EV_REKEY], "queued once")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.COUNTER_CEILING))
    await until(lambda: not r.pendant.pending)
    r.player.stop()
    await _finish(task)
    # The next wake (any wake) sends the same bytes again: the hub sees a repeat.
    r2 = Rig(root=root)
    task = await _run(r2)
    await until(lambda: r2.pendant.pending)
    r2.fake.central_connect()
    equal(await _next_indication(r2, 1), rekey, "same REKEY bytes after the reboot")
    r2.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.COUNTER_CEILING))
    r2.player.stop()
    await _finish(task)


async def test_progress_that_keeps_the_head_does_not_reindicate_it_early():
    r = Rig(timings=fast_timings(retry_ms=60_000))  # no repeat due during the test: only a new head is indicated
    task = await _run(r)
    r.fake.central_connect()
    r.pendant.on_gesture(1)
    first = await _next_indication(r, 1)
    r.pendant.on_gesture(3)  # a check-in queued behind the press
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(first)))  # press confirmed: new head
    second = await _next_indication(r, 2)
    equal(parse_event(second)[1], frames.EV_CHECKIN, "the next indication is the new head, not the press again")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(first)))  # an old confirm: no change
    r.fake.central_write(ble_link.FEEDBACK_UUID, fb_frame(frames.FB_CHECKIN_OK, frames.event_counter(second), 0))
    await until(lambda: r.player.state == frames.FB_CHECKIN_OK)  # both writes taken
    equal(len(r.fake.indications), 2, "re-indicated on progress that kept the head")
    equal(r.fake.central_read(ble_link.EVENT_UUID), second, "Event value is the oldest pending frame")
    r.fake.central_write(ble_link.CONFIRM_UUID, confirm(frames.event_counter(second)))
    r.player.stop()
    await _finish(task)
