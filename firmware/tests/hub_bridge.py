# A pendant on the fake radio whose hub is another process (tests/firmware/test_firmware.py runs it under
# MicroPython and plays the hub with CPython's protocols.pendant). Lockstep over stdin/stdout, one line each:
#
#   press | long | double          -> "EVENT <hex>"   the next frame the pendant indicates
#   again                          -> "EVENT <hex>"   wait for the next indication (a repeat while unconfirmed)
#   confirm <hex>                  -> "PENDING <n>"   events still unconfirmed after the hub's Confirm write
#   feedback <hex>                 -> "STATE <n>"     the feedback state shown after the hub's Feedback write
#   reboot                         -> "BOOTED"        a new wake on the same flash store
#   quit                           -> (exit)
#
# Usage: micropython hub_bridge.py ROOT KEY_HEX PENDANT_ID [FIRST_COUNTER] (MICROPYPATH as for run.py). The pendant is
# provisioned on ROOT with that key at start (store.provision: a counter already there continues, unless §9.6 says a
# new key restarts it).
import asyncio
import sys

import ble_link
import store
import support

GESTURES = {"press": 1, "long": 2, "double": 3}


async def serve(root: str) -> None:
    rig = support.Rig(root=root, timings=support.fast_timings(awake_ms=600_000, retry_ms=20))
    rig.fake.central_connect()
    task = asyncio.create_task(rig.pendant.run(rig.link))
    seen = 0
    while True:
        line = sys.stdin.readline().strip()
        if not line or line == "quit":
            task.cancel()
            return
        words = line.split()
        cmd = words[0]
        if cmd in GESTURES or cmd == "again":
            if cmd in GESTURES:
                rig.pendant.on_gesture(GESTURES[cmd])
            await support.until(lambda: len(rig.fake.indications) > seen)
            seen = len(rig.fake.indications)
            print("EVENT", rig.fake.indications[-1][2].hex())
        elif cmd == "confirm":
            rig.fake.central_write(ble_link.CONFIRM_UUID, bytes.fromhex(words[1]))
            await support.until(lambda: not rig.link._writes)  # the receiver took it and acted in the same step
            print("PENDING", len(rig.pendant.pending))
        elif cmd == "feedback":
            rig.fake.central_write(ble_link.FEEDBACK_UUID, bytes.fromhex(words[1]))
            await support.until(lambda: not rig.link._writes)
            print("STATE", rig.player.state)
        elif cmd == "reboot":
            task.cancel()
            await asyncio.sleep_ms(0)
            rig = support.Rig(root=root, timings=support.fast_timings(awake_ms=600_000, retry_ms=20))
            rig.fake.central_connect()
            task = asyncio.create_task(rig.pendant.run(rig.link))
            seen = 0
            print("BOOTED")
        else:
            print("ERROR unknown command", cmd)


def main() -> None:
    root, key_hex, pid = sys.argv[1], sys.argv[2], sys.argv[3]
    first = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    support.KEY = bytes.fromhex(key_hex)
    support.PID = pid.encode()
    store.provision(root, support.PID, support.KEY, first)
    asyncio.run(serve(root))


main()
