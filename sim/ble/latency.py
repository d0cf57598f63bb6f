"""Measure the simulated radio: scan-to-first-advertisement, connect, and indication latency, per link mode.

``python -m sim.ble.latency [--mode local|tcp|both] [--rounds N] [--indications N]``

- *scan*: from ``BleakScanner.start()`` to the first advertisement of the peripheral (bounded below by nothing,
  above by the advertising interval, 50 ms by default);
- *connect*: ``BleakClient.connect()`` with no pairing, including MTU exchange and full service discovery;
- *indication*: from the peripheral's send (its ``time.monotonic_ns()`` in the payload) to the bleak callback,
  confirmations included; in ``tcp`` mode this crosses three processes (peripheral → relay → hub).

The ``tcp`` mode starts the relay and the peripheral as child processes, like the cross-process tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from gateway import aio
from sim.ble import backend_for, open_central
from sim.ble.testbench import CONTROL, INDICATE, Command, indication_record, open_test_peripheral

__all__ = ["LatencyReport", "main", "measure"]

_PERIPHERAL = "F0:00:00:00:00:42"
_BOUND = 20.0


@dataclass(frozen=True, slots=True)
class LatencyReport:
    """Milliseconds: medians and 95th percentiles per measurement."""

    mode: str
    scan_ms: list[float]
    connect_ms: list[float]
    indication_ms: list[float]

    def lines(self) -> list[str]:
        """Human-readable summary, one line per measurement."""
        out = []
        for label, values in (
            ("scan to first advertisement", self.scan_ms),
            ("connect + MTU + discovery", self.connect_ms),
            ("indication, send to callback", self.indication_ms),
        ):
            p95 = statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]
            median = statistics.median(values)
            out.append(f"{self.mode:5} {label:30} median {median:7.2f} ms  p95 {p95:7.2f} ms  n={len(values)}")
        return out


async def _line(stream: asyncio.StreamReader, prefix: str) -> str:
    async with asyncio.timeout(_BOUND):
        while raw := await stream.readline():
            if raw.decode().startswith(prefix):
                return raw.decode().strip()
    raise RuntimeError(f"child process ended before printing {prefix!r}")


@contextlib.asynccontextmanager
async def _child(*args: str) -> AsyncIterator[asyncio.StreamReader]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        if process.stdout is None:
            raise RuntimeError("child process has no stdout pipe")
        yield process.stdout
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def _home(mode: str) -> AsyncIterator[str]:
    if mode == "local":
        link = "local:latency"
        async with open_test_peripheral(link, _PERIPHERAL):
            yield link
        return
    async with _child("-m", "sim.ble.relay", "--port", "0") as relay:
        link = f"tcp:127.0.0.1:{(await _line(relay, 'READY')).split()[1]}"
        async with _child("-m", "sim.ble.testbench", "--link", link, "--address", _PERIPHERAL) as peripheral:
            await _line(peripheral, "READY")
            yield link


def _detector(seen: asyncio.Event) -> Callable[[BLEDevice, AdvertisementData], None]:
    def detected(device: BLEDevice, _adv: AdvertisementData) -> None:
        if device.address == _PERIPHERAL:
            seen.set()

    return detected


async def measure(mode: str, rounds: int = 10, indications: int = 200) -> LatencyReport:
    """Run the three measurements on one link mode (``local`` or ``tcp``)."""
    scan: list[float] = []
    connect: list[float] = []
    indication: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        async with _home(mode) as link, open_central(link, keystore=Path(directory) / "keys.json"):
            scanner_backend, client_backend = backend_for(link)
            for _ in range(rounds):
                seen = asyncio.Event()
                started = time.perf_counter()
                async with BleakScanner(_detector(seen), backend=scanner_backend):
                    async with asyncio.timeout(_BOUND):
                        await seen.wait()
                    scan.append((time.perf_counter() - started) * 1000)

                client = BleakClient(_PERIPHERAL, backend=client_backend, timeout=_BOUND)
                started = time.perf_counter()
                await client.connect()
                connect.append((time.perf_counter() - started) * 1000)
                await client.disconnect()

            async with BleakClient(_PERIPHERAL, backend=client_backend, timeout=_BOUND) as client:
                done = asyncio.Event()

                def received(_c: object, data: bytearray) -> None:
                    sequence, sent_ns = indication_record(bytes(data))
                    indication.append((time.monotonic_ns() - sent_ns) / 1e6)
                    if sequence == indications - 1:
                        done.set()

                await client.start_notify(INDICATE, received)
                await client.write_gatt_char(CONTROL, bytes([Command.INDICATE_SERIES, indications]), response=True)
                async with asyncio.timeout(_BOUND):
                    await done.wait()
    return LatencyReport(mode, scan, connect, indication)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m sim.ble.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["local", "tcp", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=10, help="scan and connect repetitions (default 10)")
    parser.add_argument("--indications", type=int, default=200, choices=range(1, 256), metavar="1..255")
    args = parser.parse_args(argv)
    for mode in ("local", "tcp") if args.mode == "both" else (args.mode,):
        report = aio.run(measure(mode, args.rounds, args.indications))
        sys.stdout.write("\n".join(report.lines()) + "\n")


if __name__ == "__main__":
    main()
