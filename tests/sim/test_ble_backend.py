"""Contract tests for the bumble-backed bleak backend, over both link modes, through bleak's public API only."""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode

from sim.ble import backend_for, configure, parse_link
from sim.ble.config import reset_configuration
from sim.ble.errors import LinkConfigError
from sim.ble.testbench import (
    BATTERY_LEVEL,
    BATTERY_SERVICE,
    CONTROL,
    INDICATE,
    MANUFACTURER_ID,
    SECRET,
    SECRET_VALUE,
    STATE,
    TEST_SERVICE,
    Command,
)

BOUND = 10.0  # generous upper bound for any single awaited event; never a sleep


async def find(home, **kwargs: object):
    device = await BleakScanner.find_device_by_address(home.address, timeout=BOUND, backend=home.scanner, **kwargs)
    assert device is not None
    return device


class Inbox:
    """Collects notification payloads; ``await inbox.next()`` waits for the next one."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bytearray]] = asyncio.Queue()

    def __call__(self, characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
        self.queue.put_nowait((characteristic.uuid, data))

    async def next(self) -> tuple[str, bytearray]:
        async with asyncio.timeout(BOUND):
            return await self.queue.get()


# Scanning


async def test_scan_by_service_uuid_reports_advertisement_data(home) -> None:
    async with BleakScanner(service_uuids=[TEST_SERVICE], backend=home.scanner) as scanner:
        async with asyncio.timeout(BOUND):
            async for device, data in scanner.advertisement_data():
                if device.address == home.address:
                    adv = data
                    break
    assert adv.local_name == "carehub-test"
    assert TEST_SERVICE in adv.service_uuids
    assert BATTERY_SERVICE in adv.service_uuids
    assert adv.manufacturer_data == {MANUFACTURER_ID: b"\x01\x02"}
    assert adv.service_data == {BATTERY_SERVICE: bytes([87])}
    assert adv.tx_power == -8
    assert isinstance(adv.rssi, int)


async def test_service_filter_excludes_other_devices(home) -> None:
    seen: list[str] = []
    found = asyncio.Event()

    def detected(device, adv) -> None:
        seen.append(device.address)
        found.set()

    absent_service = "0000fff0-0000-1000-8000-00805f9b34fb"
    async with (
        BleakScanner(detected, service_uuids=[absent_service], backend=home.scanner),
        BleakScanner(service_uuids=[TEST_SERVICE], backend=home.scanner) as other,
        asyncio.timeout(BOUND),
    ):
        async for device, _ in other.advertisement_data():
            if device.address == home.address:
                break
    assert seen == []


async def test_discover_return_adv_and_detection_callback(home) -> None:
    detected = asyncio.Event()

    def callback(device, adv) -> None:
        if device.address == home.address:
            detected.set()

    async with BleakScanner(callback, backend=home.scanner) as scanner:
        async with asyncio.timeout(BOUND):
            await detected.wait()
        assert home.address in {d.address for d in scanner.discovered_devices}
    found = await BleakScanner.discover(timeout=0.5, return_adv=True, backend=home.scanner)
    assert found[home.address][1].local_name == "carehub-test"


async def test_passive_scan_finds_device(home) -> None:
    device = await find(home, scanning_mode="passive")
    assert device.name == "carehub-test"


# Connection, discovery, I/O


async def test_connect_discovers_services_with_bleak_uuids_and_properties(home) -> None:
    device = await find(home)
    async with BleakClient(device, backend=home.client) as client:
        assert client.is_connected
        assert client.mtu_size == 517
        services = client.services
        assert services.get_service(BATTERY_SERVICE) is not None
        battery = services.get_characteristic(BATTERY_LEVEL)
        assert battery is not None
        assert battery.properties == ["read", "notify"]
        assert battery.service_uuid == BATTERY_SERVICE
        assert battery.get_descriptor("00002902-0000-1000-8000-00805f9b34fb") is not None
        state = services.get_characteristic(STATE)
        assert state is not None
        assert sorted(state.properties) == ["read", "write", "write-without-response"]
        assert services.get_characteristic(INDICATE).properties == ["indicate"]
        assert state.max_write_without_response_size == 514
        handles = [c.handle for s in services for c in s.characteristics]
        assert len(handles) == len(set(handles))
    assert not client.is_connected


async def test_connect_by_address_string_reads_and_writes(home) -> None:
    async with BleakClient(home.address, backend=home.client, timeout=BOUND) as client:
        assert await client.read_gatt_char(BATTERY_LEVEL) == bytearray([87])
        await client.write_gatt_char(STATE, b"with response", response=True)
        assert await client.read_gatt_char(STATE) == bytearray(b"with response")
        await client.write_gatt_char(STATE, b"without response", response=False)
        assert await client.read_gatt_char(STATE) == bytearray(b"without response")  # ATT keeps order on one bearer
        description = client.services.get_characteristic(STATE).get_descriptor("2901")
        assert await client.read_gatt_descriptor(description.handle) == bytearray(b"state")
        await client.write_gatt_descriptor(description.handle, b"renamed")
        assert await client.read_gatt_descriptor(description.handle) == bytearray(b"renamed")
        assert await client.read_gatt_char(STATE, use_cached=True) == bytearray(b"without response")


async def test_long_value_round_trips(home) -> None:
    value = bytes(range(256)) * 2  # longer than one ATT PDU: Prepare/Execute Write and Read Blob
    async with BleakClient(home.address, backend=home.client, timeout=BOUND) as client:
        await client.write_gatt_char(STATE, value, response=True)
        assert await client.read_gatt_char(STATE) == bytearray(value)


async def test_indications_and_notifications_carry_exact_bytes(home) -> None:
    inbox = Inbox()
    async with BleakClient(home.address, backend=home.client, timeout=BOUND) as client:
        await client.start_notify(INDICATE, inbox)
        await client.start_notify(BATTERY_LEVEL, inbox)
        payloads = [b"\x00", bytes(range(200)), b"\xff" * 3]
        for payload in payloads:
            await client.write_gatt_char(CONTROL, bytes([Command.INDICATE]) + payload, response=True)
            assert await inbox.next() == (INDICATE, bytearray(payload))
        await client.write_gatt_char(CONTROL, bytes([Command.NOTIFY_BATTERY, 42]), response=True)
        assert await inbox.next() == (BATTERY_LEVEL, bytearray([42]))
        await client.stop_notify(INDICATE)
        await client.write_gatt_char(CONTROL, bytes([Command.NOTIFY_BATTERY, 41]), response=True)
        assert await inbox.next() == (BATTERY_LEVEL, bytearray([41]))
        await client.write_gatt_char(CONTROL, bytes([Command.INDICATE]) + b"unheard", response=True)
        await client.write_gatt_char(CONTROL, bytes([Command.NOTIFY_BATTERY, 40]), response=True)
        assert await inbox.next() == (BATTERY_LEVEL, bytearray([40]))  # the indication after stop_notify never came
        assert inbox.queue.empty()


async def test_reconnect_keeps_peripheral_state(home) -> None:
    async with BleakClient(home.address, backend=home.client, timeout=BOUND) as client:
        await client.write_gatt_char(STATE, b"remember me", response=True)
    async with BleakClient(home.address, backend=home.client, timeout=BOUND) as client:
        assert await client.read_gatt_char(STATE) == bytearray(b"remember me")


async def test_disconnected_callback_fires_when_peripheral_drops_link(home) -> None:
    dropped = asyncio.Event()
    clients: list[BleakClient] = []
    client = BleakClient(home.address, lambda c: (clients.append(c), dropped.set()), backend=home.client, timeout=BOUND)
    await client.connect()
    await client.write_gatt_char(CONTROL, bytes([Command.DISCONNECT]), response=False)
    async with asyncio.timeout(BOUND):
        await dropped.wait()
    assert clients == [client]
    assert not client.is_connected
    with pytest.raises(BleakError):
        await client.read_gatt_char(STATE)
    await client.connect()  # the peripheral advertises again after a drop
    assert await client.read_gatt_char(BATTERY_LEVEL) == bytearray([87])
    await client.disconnect()
    assert clients == [client]  # our own disconnect() is not reported as a drop


# Security


async def test_encrypted_characteristic_needs_pairing_and_bond_survives_reconnect(home) -> None:
    async with BleakClient(home.address, backend=home.client, timeout=BOUND) as client:
        with pytest.raises(BleakGATTProtocolError) as refused:
            await client.read_gatt_char(SECRET)
        assert refused.value.code is BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION
        await client.pair()
        assert await client.read_gatt_char(SECRET) == bytearray(SECRET_VALUE)
    assert home.keystore.exists()  # the bond is on disk
    async with BleakClient(home.address, backend=home.client, timeout=BOUND) as client:
        assert await client.read_gatt_char(SECRET) == bytearray(SECRET_VALUE)  # re-encrypted with the stored key


async def test_pair_on_connect_then_unpair_forgets_bond(home) -> None:
    async with BleakClient(home.address, backend=home.client, timeout=BOUND, pair=True) as client:
        assert await client.read_gatt_char(SECRET) == bytearray(SECRET_VALUE)
        await client.unpair()
        assert not client.is_connected
    async with BleakClient(home.address, backend=home.client, timeout=BOUND) as client:
        with pytest.raises(BleakGATTProtocolError):
            await client.read_gatt_char(SECRET)


# Errors


async def test_absent_device_raises_device_not_found(home) -> None:
    client = BleakClient("F0:0D:00:00:00:99", backend=home.client, timeout=0.5)
    with pytest.raises(BleakDeviceNotFoundError) as missing:
        async with asyncio.timeout(BOUND):
            await client.connect()
    assert missing.value.identifier == "F0:0D:00:00:00:99"
    # The central is usable again afterwards.
    async with BleakClient(home.address, backend=home.client, timeout=BOUND) as client:
        assert client.is_connected


async def test_att_errors_and_misuse_map_to_bleak_exceptions(home) -> None:
    async with BleakClient(home.address, backend=home.client, timeout=BOUND) as client:
        with pytest.raises(BleakGATTProtocolError) as rejected:
            await client.write_gatt_char(CONTROL, b"\x7f", response=True)
        assert rejected.value.code is BleakGATTProtocolErrorCode.VALUE_NOT_ALLOWED
        with pytest.raises(BleakError):
            await client.start_notify(STATE, lambda _c, _d: None)  # no CCCD
    with pytest.raises(BleakError):
        await client.read_gatt_char(BATTERY_LEVEL)


# Configuration


def test_link_urls_parse_and_reject_garbage() -> None:
    assert str(parse_link("local")) == "local"
    assert str(parse_link("local:home1")) == "local:home1"
    assert str(parse_link("tcp:127.0.0.1:7000")) == "tcp:127.0.0.1:7000"
    for bad in ("tcp:127.0.0.1", "tcp:host:notaport", "udp:1.2.3.4:5", "local:bad name", "tcp:h:0"):
        with pytest.raises(LinkConfigError):
            parse_link(bad)


def test_configure_and_environment_select_the_default_link(monkeypatch: pytest.MonkeyPatch) -> None:
    reset_configuration()
    try:
        monkeypatch.setenv("CAREHUB_BLE_LINK", "tcp:127.0.0.1:7001")
        assert backend_for()[0].link == parse_link("tcp:127.0.0.1:7001")
        configure(link="local:kitchen", address="c0:ca:4e:00:00:09")
        scanner, client = backend_for()
        assert scanner.link == client.link == parse_link("local:kitchen")
        assert backend_for("local:kitchen") == (scanner, client)
        with pytest.raises(LinkConfigError):
            configure(address="not-an-address")
    finally:
        reset_configuration()
