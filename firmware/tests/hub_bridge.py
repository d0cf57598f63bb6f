# A pendant on the fake radio whose hub is another process (tests/firmware/test_firmware.py runs it under
# MicroPython and plays the hub with CPython's protocols.pendant). Lockstep over stdin/stdout, one line each:
#
#   press | long | double          -> "EVENT <hex>"   the next frame the pendant indicates
#   again                          -> "EVENT <hex>"   wait for the next indication (a repeat while unconfirmed)
#   confirm <hex>                  -> "PENDING <n>"   events still unconfirmed after the hub's Confirm write
#   feedback <hex>                 -> "STATE <n>"     the feedback state shown after the hub's Feedback write
#   reboot                         -> "BOOTED"        a new wake on the same flash store
#   gesture press|long|double      -> "QUEUED <n>"    the gesture's event queued (counter n), not waiting for it
#   write confirm|feedback <hex|-> -> "WROTE <status> ACTED <0|1> PENDING <c,c..|-> STATE <n>"   the ATT status
#                                     the stack answered; once the firmware took the write: whether it acted on it
#                                     (app.Pendant.on_write's answer), what is pending and what is shown
#   read event|info|keycheck       -> "READ <status> <hex|->"   a Read Request as the stack answers it
#   keycheck <hex|->               -> "KEYCHECK <status> ACTED <0|1> INDICATED <hex|->"   a key challenge written
#                                     (docs/protocol.md §9.7): the ATT status, whether the firmware answered it, and
#                                     the answer it indicated on Key Check
#   quit                           -> (exit)
#
# Usage: micropython hub_bridge.py ROOT KEY_HEX PENDANT_ID [FIRST_COUNTER] (MICROPYPATH as for run.py). The pendant is
# provisioned on ROOT with that key at start (store.provision: a counter already there continues, unless §9.6 says a
# new key restarts it).
import asyncio
import sys

import ble_link
import machine
import store
import support

GESTURES = {"press": 1, "long": 2, "double": 3}


def _record_writes(rig) -> list:
    acted = []
    on_write = rig.pendant.on_write

    def recording(kind, data):
        result = on_write(kind, data)
        acted.append(result)
        return result

    rig.pendant.on_write = recording  # the receiver task looks it up on the instance
    return acted


async def _start(rig):
    """Start the wake and let it begin (as on the board, where the button is watched only once run() runs)."""
    started = len(machine.wdts)
    task = asyncio.create_task(rig.pendant.run(rig.link))
    await support.until(lambda: len(machine.wdts) > started)  # run() starts the watchdog first thing
    return task


async def serve(root: str) -> None:
    rig = support.Rig(root=root, timings=support.fast_timings(awake_ms=600_000, retry_ms=20))
    acted = _record_writes(rig)
    rig.fake.central_connect()
    task = await _start(rig)
    seen = 0
    while True:
        line = sys.stdin.readline().strip()
        if not line or line == "quit":
            task.cancel()
            return
        words = line.split()
        cmd = words[0]
        if cmd in GESTURES or cmd == "again":
            # Between commands the loop is blocked on stdin, so nothing is indicated meanwhile: the answer is the
            # first indication after this command.
            seen = len(rig.fake.indications)
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
        elif cmd == "gesture":
            before = len(rig.pendant.pending)
            rig.pendant.on_gesture(GESTURES[words[1]])
            added = rig.pendant.pending[before:]
            print("QUEUED", added[0][0] if added else "NONE")
        elif cmd == "write":
            uuid = ble_link.CONFIRM_UUID if words[1] == "confirm" else ble_link.FEEDBACK_UUID
            del acted[:]
            status = rig.fake.central_write(uuid, b"" if words[2] == "-" else bytes.fromhex(words[2]))
            if status == 0:
                await support.until(lambda: acted)
            pending = ",".join(str(p[0]) for p in rig.pendant.pending) or "-"
            print("WROTE", status, "ACTED", int(bool(acted and acted[0])), "PENDING", pending, "STATE", rig.player.state)
        elif cmd == "read":
            uuid = {"event": ble_link.EVENT_UUID, "info": ble_link.INFO_UUID, "keycheck": ble_link.KEY_CHECK_UUID}
            status, value = rig.fake.central_read_att(uuid[words[1]])
            print("READ", status, value.hex() or "-")
        elif cmd == "keycheck":
            handle = rig.fake.by_uuid[ble_link.KEY_CHECK_UUID]
            before = len(rig.fake.indications)
            del acted[:]
            status = rig.fake.central_write(ble_link.KEY_CHECK_UUID, b"" if words[1] == "-" else bytes.fromhex(words[1]))
            if status == 0:
                await support.until(lambda: acted)
            answers = [v for _, h, v in rig.fake.indications[before:] if h == handle]
            print("KEYCHECK", status, "ACTED", int(bool(acted and acted[0])), "INDICATED", answers[-1].hex() if answers else "-")
        elif cmd == "reboot":
            task.cancel()
            await asyncio.sleep_ms(0)
            rig = support.Rig(root=root, timings=support.fast_timings(awake_ms=600_000, retry_ms=20))
            acted = _record_writes(rig)
            rig.fake.central_connect()
            task = await _start(rig)
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
