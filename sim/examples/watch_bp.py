# ruff: noqa: T201 - an example script: printing is its output
"""Watch a simulated home's blood pressure cuff: scan, bond, subscribe, print each reading as it arrives.

    python -m sim.ble.relay --port 7000 &
    carehub sim home --scenario sim/scenarios/hypertension-diabetes.toml --link tcp:127.0.0.1:7000 &
    python sim/examples/watch_bp.py --link tcp:127.0.0.1:7000

Plain bleak: only the ``backend=`` classes come from carehub's simulator.
"""

from __future__ import annotations

import argparse
import asyncio

from bleak import BleakClient, BleakScanner

import sim.ble
from protocols.gatt.bp import BloodPressureMeasurement

BP_SERVICE = "00001810-0000-1000-8000-00805f9b34fb"
BP_MEASUREMENT = "00002a35-0000-1000-8000-00805f9b34fb"


async def watch(link: str, count: int) -> None:
    """Print ``count`` blood pressure readings from the first cuff that advertises on ``link``."""
    scanner, client_backend = sim.ble.backend_for(link)
    print("scanning for a blood pressure cuff ...", flush=True)
    device = await BleakScanner.find_device_by_filter(
        lambda _d, adv: BP_SERVICE in adv.service_uuids, timeout=600, backend=scanner
    )
    if device is None:
        raise SystemExit("no blood pressure cuff advertised")
    readings: asyncio.Queue[bytes] = asyncio.Queue()
    async with BleakClient(device, backend=client_backend, pair=True) as client:
        print(f"connected to {device.name} {device.address}", flush=True)
        await client.start_notify(BP_MEASUREMENT, lambda _c, data: readings.put_nowait(bytes(data)))
        for _ in range(count):
            reading = BloodPressureMeasurement.from_bytes(await readings.get())
            pulse = "" if reading.pulse_rate is None else f", pulse {float(reading.pulse_rate):g}/min"
            when = "" if reading.timestamp is None else f" at {reading.timestamp.to_datetime():%Y-%m-%d %H:%M}"
            print(f"BP {float(reading.systolic):g}/{float(reading.diastolic):g} mmHg{pulse}{when}", flush=True)
    await sim.ble.close_centrals()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--link", default="tcp:127.0.0.1:7000", help="the home's BLE link")
    parser.add_argument("--count", type=int, default=1, help="readings to print before exiting")
    args = parser.parse_args()
    asyncio.run(watch(args.link, args.count))


if __name__ == "__main__":
    main()
