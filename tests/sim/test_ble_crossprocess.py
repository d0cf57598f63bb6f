"""A gateway process dies mid-conversation (SIGKILL); the meter keeps its memory and a new process carries on.

Three OS processes share one simulated radio through the carehub relay: the test peripheral, and two successive
"gateway" processes running plain bleak code with the bumble backend selected through ``CAREHUB_BLE_*``.
"""

from __future__ import annotations

from sim.ble.testbench import SECRET_VALUE

PERIPHERAL = "F0:00:00:00:00:07"

# A small bleak program: what a gateway process does, selected by argv[1].
#   hold:  bond, subscribe to indications, write the state, then read in a loop until killed;
#   check: connect with the stored bond (no pairing), read the state and the encrypted value, exit.
CLIENT = r"""
import asyncio, sys
from bleak import BleakClient
import sim.ble
from sim.ble.testbench import CONTROL, INDICATE, SECRET, STATE, Command

async def main(mode, address):
    _, Client = sim.ble.backend_for()
    try:
        if mode == "hold":
            client = BleakClient(address, backend=Client, pair=True, timeout=10)
            await client.connect()
            got = asyncio.Queue()
            await client.start_notify(INDICATE, lambda _c, data: got.put_nowait(bytes(data)))
            await client.write_gatt_char(STATE, b"written before the crash", response=True)
            await client.write_gatt_char(CONTROL, bytes([Command.INDICATE]) + b"hello", response=True)
            print("SUBSCRIBED", (await got.get()).hex(), flush=True)
            await client.write_gatt_char(CONTROL, bytes([Command.INDICATE_SERIES, 255]), response=True)
            reads = 0
            while True:
                await client.read_gatt_char(STATE)
                reads += 1
                print("READ", reads, flush=True)
        else:
            async with BleakClient(address, backend=Client, timeout=10) as client:
                state = await client.read_gatt_char(STATE)
                secret = await client.read_gatt_char(SECRET)
                print("RESULT", state.hex(), secret.hex(), flush=True)
    finally:
        await sim.ble.close_centrals()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_sigkilled_client_is_replaced_and_peripheral_state_survives(
    relay_link, spawn, tmp_path, monkeypatch
) -> None:
    # The gateway processes inherit these: the link and the bond store they share across the crash.
    monkeypatch.setenv("CAREHUB_BLE_LINK", relay_link)
    monkeypatch.setenv("CAREHUB_BLE_KEYSTORE", str(tmp_path / "hub-keys.json"))
    peripheral = await spawn("peripheral", "-m", "sim.ble.testbench", "--link", relay_link, "--address", PERIPHERAL)
    await peripheral.expect("READY")

    first = await spawn("gateway 1", "-c", CLIENT, "hold", PERIPHERAL)
    assert (await first.expect("SUBSCRIBED")).split()[1] == b"hello".hex()
    await first.expect("READ 3")  # reads in flight while indications stream in
    hub = (await peripheral.expect("CONNECTED")).split()[1]
    await first.kill()  # SIGKILL: no disconnect, no cleanup
    assert first.process.returncode == -9
    assert (await peripheral.expect("DISCONNECTED")).split()[1] == hub  # the relay dropped the dead link

    second = await spawn("gateway 2", "-c", CLIENT, "check", PERIPHERAL)
    _, state, secret = (await second.expect("RESULT")).split()
    assert bytes.fromhex(state) == b"written before the crash"
    assert bytes.fromhex(secret) == SECRET_VALUE  # the bond from the killed process was on disk
    assert await second.process.wait() == 0
    assert peripheral.process.returncode is None  # the meter never restarted
