"""A reference peripheral for the backend's own tests and latency measurements (not a health meter).

GATT layout (all in one place so the in-process and cross-process tests exercise the same thing):

- Battery service 0x180F / Battery Level 0x2A19: read + notify.
- Test service ``TEST_SERVICE``:
  - ``STATE``: read, write, write-without-response; the peripheral's memory (survives client restarts). Carries a
    Characteristic User Description (0x2901) that is readable and writable.
  - ``INDICATE``: indicate only.
  - ``CONTROL``: write; commands the peripheral (see :class:`Command`).
  - ``SECRET``: read, requires an encrypted link (so bonding is exercised).

Run it as a process: ``python -m sim.ble.testbench --link tcp:127.0.0.1:P --address F0:…``; it prints ``READY``
once advertising.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from bumble import gatt
from bumble.att import ATT_Error, Attribute, AttributeValue, ErrorCode
from bumble.device import Connection, Device

from gateway import aio
from gateway.aio import raise_if_cancelling
from sim.ble.world import advertising_data, open_peripheral_device

__all__ = [
    "BATTERY_LEVEL",
    "BATTERY_SERVICE",
    "CONTROL",
    "INDICATE",
    "SECRET",
    "SECRET_VALUE",
    "STATE",
    "TEST_SERVICE",
    "Command",
    "TestPeripheral",
    "indication_record",
    "open_test_peripheral",
]

BATTERY_SERVICE = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL = "00002a19-0000-1000-8000-00805f9b34fb"
TEST_SERVICE = "c0ca4e00-5e57-4000-8000-000000000001"
STATE = "c0ca4e00-5e57-4000-8000-000000000002"
INDICATE = "c0ca4e00-5e57-4000-8000-000000000003"
CONTROL = "c0ca4e00-5e57-4000-8000-000000000004"
SECRET = "c0ca4e00-5e57-4000-8000-000000000005"  # noqa: S105 - a characteristic UUID, not a password
SECRET_VALUE = b"bonded-only"
MANUFACTURER_ID = 0xFFFF  # reserved for testing (Bluetooth SIG assigned numbers, company identifiers)

# Indication record: sequence number, sender's time.monotonic_ns() (CLOCK_MONOTONIC is system-wide on Linux, so
# the receiving process can compute the latency).  Layout: <H Q  (u16 seq, u64 ns), little-endian.
_RECORD = struct.Struct("<HQ")


def indication_record(payload: bytes) -> tuple[int, int]:
    """Decode a ``Command.INDICATE_SERIES`` record into (sequence, monotonic_ns at send)."""
    sequence, sent_ns = _RECORD.unpack(payload)
    return sequence, sent_ns


class Command(enum.IntEnum):
    """First byte written to ``CONTROL``; the rest is the argument."""

    NOTIFY_BATTERY = 0x01  # <level u8>: set the battery level and notify it
    INDICATE = 0x02  # <bytes>: indicate exactly these bytes on INDICATE
    DISCONNECT = 0x03  # drop the writer's link (peer-initiated disconnection)
    INDICATE_SERIES = 0x04  # <count u8>: indicate `count` timestamped records back to back


@dataclass
class TestPeripheral:
    """The peripheral's memory and GATT objects."""

    device: Device
    name: str
    battery_level: int = 87
    state: bytes = b"initial"
    state_description: bytes = b"state"
    writes_without_response: int = 0
    indications_sent: int = 0
    _commands: asyncio.Queue[tuple[Connection, bytes]] = field(default_factory=asyncio.Queue)
    _order: asyncio.Lock = field(default_factory=asyncio.Lock)
    _running: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.battery: gatt.Characteristic[bytes] = gatt.Characteristic(
            BATTERY_LEVEL,
            gatt.Characteristic.Properties.READ | gatt.Characteristic.Properties.NOTIFY,
            Attribute.Permissions.READABLE,
            AttributeValue(read=lambda _c: bytes([self.battery_level])),
        )
        self.state_char: gatt.Characteristic[bytes] = gatt.Characteristic(
            STATE,
            gatt.Characteristic.Properties.READ
            | gatt.Characteristic.Properties.WRITE
            | gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
            Attribute.Permissions.READABLE | Attribute.Permissions.WRITEABLE,
            AttributeValue(read=lambda _c: self.state, write=self._write_state),
            descriptors=[
                gatt.Descriptor(
                    gatt.GATT_CHARACTERISTIC_USER_DESCRIPTION_DESCRIPTOR,
                    Attribute.Permissions.READABLE | Attribute.Permissions.WRITEABLE,
                    AttributeValue(read=lambda _c: self.state_description, write=self._write_description),
                )
            ],
        )
        self.indicate_char: gatt.Characteristic[bytes] = gatt.Characteristic(
            INDICATE, gatt.Characteristic.Properties.INDICATE, Attribute.Permissions.READABLE, b""
        )
        self.control: gatt.Characteristic[bytes] = gatt.Characteristic(
            CONTROL,
            gatt.Characteristic.Properties.WRITE,
            Attribute.Permissions.WRITEABLE,
            AttributeValue(write=self._write_control),
        )
        self.secret: gatt.Characteristic[bytes] = gatt.Characteristic(
            SECRET,
            gatt.Characteristic.Properties.READ,
            Attribute.Permissions.READABLE | Attribute.Permissions.READ_REQUIRES_ENCRYPTION,
            SECRET_VALUE,
        )
        self.device.add_service(gatt.Service(BATTERY_SERVICE, [self.battery]))
        self.device.add_service(
            gatt.Service(TEST_SERVICE, [self.state_char, self.indicate_char, self.control, self.secret])
        )

    def _write_state(self, _connection: Connection, value: bytes) -> None:
        self.state = bytes(value)

    def _write_description(self, _connection: Connection, value: bytes) -> None:
        self.state_description = bytes(value)

    def _write_control(self, connection: Connection, value: bytes) -> None:
        if not value or value[0] not in Command._value2member_map_:
            raise ATT_Error(ErrorCode.VALUE_NOT_ALLOWED)
        self._commands.put_nowait((connection, bytes(value)))

    async def advertise(self) -> None:
        """Advertise connectably, and again after every disconnection."""
        await self.device.start_advertising(
            advertising_data=advertising_data(
                name=self.name,
                service_uuids=["180F", TEST_SERVICE],
                manufacturer_data={MANUFACTURER_ID: b"\x01\x02"},
                service_data={"180F": bytes([self.battery_level])},
                tx_power=-8,
            ),
            auto_restart=True,
        )

    async def run_commands(self, group: asyncio.TaskGroup) -> None:
        """Carry out CONTROL commands outside the ATT write handler (indications wait for confirmations).

        Each command runs in its own task, in arrival order (a FIFO lock), and is cancelled if its connection
        drops: bumble would otherwise wait 30 s for the confirmation of an indication sent into a dead link.
        """
        while True:
            raise_if_cancelling()  # bumble's indications can lose this task's cancellation
            connection, command = await self._commands.get()
            task = group.create_task(
                self._execute(connection, Command(command[0]), command[1:]),
                name=f"testbench-{Command(command[0]).name.lower()}",
            )

            def cancel(_reason: int, task: asyncio.Task[None] = task) -> None:
                task.cancel()

            def forget(task: asyncio.Task[None], connection: Connection = connection, cancel: Any = cancel) -> None:
                self._running.discard(task)
                connection.remove_listener(Connection.EVENT_DISCONNECTION, cancel)

            self._running.add(task)
            connection.on(Connection.EVENT_DISCONNECTION, cancel)
            task.add_done_callback(forget)

    def cancel_pending(self) -> None:
        """Abandon commands still running (the peripheral is going off the air)."""
        for task in self._running:
            task.cancel()

    async def _execute(self, connection: Connection, command: Command, argument: bytes) -> None:
        async with self._order:
            await self._run(connection, command, argument)

    async def _run(self, connection: Connection, command: Command, argument: bytes) -> None:
        match command:
            case Command.NOTIFY_BATTERY:
                self.battery_level = argument[0] if argument else self.battery_level
                await self.device.notify_subscriber(connection, self.battery, bytes([self.battery_level]))
            case Command.INDICATE:
                await self.device.indicate_subscriber(connection, self.indicate_char, argument)
                self.indications_sent += 1
            case Command.DISCONNECT:
                await connection.disconnect()
            case Command.INDICATE_SERIES:
                for sequence in range(argument[0] if argument else 1):
                    record = _RECORD.pack(sequence, time.monotonic_ns())
                    await self.device.indicate_subscriber(connection, self.indicate_char, record)
                    self.indications_sent += 1


@asynccontextmanager
async def open_test_peripheral(
    link: str, address: str, name: str = "carehub-test", *, keystore: str | None = None
) -> AsyncIterator[TestPeripheral]:
    """Open, populate and start advertising a :class:`TestPeripheral` until the block exits."""
    async with open_peripheral_device(link, address, name, keystore=keystore) as device:
        peripheral = TestPeripheral(device, name)
        await peripheral.advertise()
        async with asyncio.TaskGroup() as group:
            worker = group.create_task(peripheral.run_commands(group), name=f"testbench-commands-{address}")
            try:
                yield peripheral
            finally:
                worker.cancel()
                peripheral.cancel_pending()


async def _serve(link: str, address: str, name: str, keystore: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def on_connection(connection: Connection) -> None:
        peer = connection.peer_address.to_string(False)
        say(f"CONNECTED {peer}")
        connection.on(Connection.EVENT_DISCONNECTION, lambda reason: say(f"DISCONNECTED {peer} 0x{reason:02X}"))

    async with open_test_peripheral(link, address, name, keystore=keystore) as peripheral:
        # Connection events on stdout let a supervising test await them instead of guessing with sleeps.
        peripheral.device.on(Device.EVENT_CONNECTION, on_connection)
        say("READY")
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """``python -m sim.ble.testbench --link L --address A [--name N] [--keystore FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m sim.ble.testbench", description="carehub BLE test peripheral")
    parser.add_argument("--link", required=True, help="local[:name] or tcp:host:port")
    parser.add_argument("--address", required=True, help="static random address, e.g. F0:00:00:00:00:01")
    parser.add_argument("--name", default="carehub-test")
    parser.add_argument("--keystore", default=None, help="JSON file for the peripheral's bond keys")
    args = parser.parse_args(argv)
    aio.run(_serve(args.link, args.address, args.name, args.keystore))


if __name__ == "__main__":
    main()
