# Peak heap of one press cycle on the unix port: imports the firmware (put the .mpy files first on MICROPYPATH to
# measure what a board loads), builds the pendant on the fake board, and runs press -> indicate -> repeat -> Confirm ->
# Feedback (help called, answered) -> sleep, sampling the live heap (after gc.collect) at every scheduler turn.
#
# Prints "import <bytes>", "peak <bytes>" (live heap above the interpreter's baseline, firmware included) and
# "cycle <bytes>" (the part of the peak the press cycle adds over the idle pendant). tests/firmware runs it.
import gc
import sys

import asyncio
import bluetooth  # the fakes and the support code stand in for built-in modules: part of the baseline
import machine
import esp32
import support

machine.record = False
gc.collect()
BASE = gc.mem_alloc()

import app  # noqa: E402  the firmware itself is measured
import ble_link
import frames

gc.collect()
IMPORTED = gc.mem_alloc() - BASE


async def cycle() -> int:
    rig = support.Rig(timings=support.fast_timings(retry_ms=5))
    gc.collect()
    idle = gc.mem_alloc()
    peak = [idle]
    done = [False]

    async def sampler():
        while not done[0]:
            gc.collect()
            used = gc.mem_alloc()
            if used > peak[0]:
                peak[0] = used
            await asyncio.sleep_ms(0)

    probe = asyncio.create_task(sampler())
    task = asyncio.create_task(rig.pendant.run(rig.link))
    rig.pendant.on_gesture(1)
    rig.fake.central_connect()
    await support.until(lambda: len(rig.fake.indications) >= 2)
    counter = frames.event_counter(rig.fake.indications[0][2])
    rig.fake.central_write(ble_link.CONFIRM_UUID, support.confirm(counter))
    rig.fake.central_write(ble_link.FEEDBACK_UUID, support.feedback(frames.FB_HELP_CALLED, counter, 0))
    await support.until(lambda: rig.player.state == frames.FB_HELP_CALLED)
    rig.fake.central_write(ble_link.FEEDBACK_UUID, support.feedback(frames.FB_ANSWERED, counter, 1))
    await support.until(lambda: rig.player.state == frames.FB_ANSWERED)
    await task
    done[0] = True
    await probe
    print("import", IMPORTED)
    print("objects", idle - BASE - IMPORTED)
    print("cycle", peak[0] - idle)
    print("peak", peak[0] - BASE)
    support.cleanup()
    return 0


asyncio.run(cycle())
