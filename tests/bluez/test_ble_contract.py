"""The hub's BLE manager against two stacks with the same expectations: sim.ble's bumble backend, and bleak's *real*
BlueZ backend (the hub's default on Linux, no ``backend=``) talking D-Bus to the stand-in bluetoothd of
``mock_bluetoothd``, whose radio is a bumble link with the same simulated meters.

What passes on both: scanning finds a provisioned meter and ignores strangers, the session connects, pairs, subscribes
and stores what the meter indicates, a glucose meter's records come through RACP. What only the BlueZ run can show:
the scan is one bleak and bluetoothd accept (the daemon used to die on its first scan: passive without or_patterns),
passive through an advertisement monitor whose patterns bluetoothd validates, active where a meter cannot be
recognised by its advertising PDU.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from hypothesis import given
from hypothesis import strategies as st
from mock_bluetoothd import MAX_PATTERNS, Bluetoothd, MonitorRejectedError, device_path, parse_patterns

import gateway.ble
import sim.ble
from gateway.ble import BleManager, Reading
from gateway.config import DeviceConfig, DeviceKind, GatewayConfig, parse_config
from gateway.discovery import ScanMode, plan_scan
from gateway.events import DeviceReport, LinkDown, LinkFailed, PendantFrame
from sim.clock import ManualClock
from sim.devices.base import SimDevice
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.glucose import GlucoseMeter
from sim.devices.options import DeviceOptions
from sim.devices.pendant import Pendant

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

START = datetime(2024, 3, 4, 7, 0, tzinfo=UTC)
BOUND = 15.0  # seconds: upper bound on awaiting any event, never a sleep
BP = "C0:00:00:00:20:01"
GLUCOSE = "C0:00:00:00:20:02"
PENDANT = "C0:00:00:00:20:03"
STRANGER = "C0:00:00:00:20:99"
RPA = "5A:00:00:00:20:01"  # resolvable private addresses: the top two bits are 01
RPA_NEXT = "6B:00:00:00:20:01"
_links = itertools.count()


class Sink:
    """The manager's sink, recording what it is handed; `until` awaits a condition on it."""

    def __init__(self) -> None:
        self.stored: list[tuple[list[Reading], tuple[str, int] | None]] = []
        self.reports: list[DeviceReport] = []
        self.cursors: dict[str, int] = {}
        self.frames: list[bytes] = []
        self.changed = asyncio.Event()

    async def store_readings(self, readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
        self.stored.append((list(readings), cursor))
        if cursor is not None:
            self.cursors[cursor[0]] = cursor[1]
        self.changed.set()

    async def get_cursor(self, key: str) -> int | None:
        return self.cursors.get(key)

    async def report(self, event: DeviceReport) -> None:
        self.reports.append(event)
        self.changed.set()

    async def pendant_frame(self, frame: PendantFrame) -> bytes | None:
        self.frames.append(frame.data)
        self.changed.set()
        return None  # unconfirmed: the pendant repeats the frame, which is all these tests need

    def readings_of(self, address: str) -> list[Reading]:
        return [r for batch, _ in self.stored for r in batch if r.device.address == address]

    async def until(self, predicate: Callable[[], object]) -> None:
        async with asyncio.timeout(BOUND):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Stack:
    """The backends a manager is given (None: bleak's default, BlueZ on Linux) and, for BlueZ, the daemon."""

    link: str
    scanner: type[BaseBleakScanner] | None
    client: type[BaseBleakClient] | None
    bluetoothd: Bluetoothd | None = None
    sinks: list[Sink] = field(default_factory=list)


@pytest.fixture(params=["bumble", "bluez"])
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    link = f"local:contract-{next(_links)}"
    scanner, client = sim.ble.backend_for(link)
    try:
        if request.param == "bumble":
            yield Stack(link, scanner, client)
        else:
            bus = request.getfixturevalue("system_bus")
            async with Bluetoothd(bus, link) as daemon:
                yield Stack(link, None, None, daemon)
    finally:
        await sim.ble.close_centrals()


def _config(tmp_path: Path, devices: Sequence[tuple[str, str]]) -> GatewayConfig:
    lines = [
        "[hub]",
        'id = "bluez-test-hub"',
        'key_file = "hub.key"',
        "[platform]",
        'public_key_file = "platform.pub"',
        "[broker]",
        'url = "mqtt://127.0.0.1:1"',
        "[storage]",
        'path = "outbox.sqlite"',
        "[ble]",
        "clock_tolerance_s = 120",
        "[[residents]]",
        'id = "r1"',
        'name = "Resident"',
    ]
    for address, kind in devices:
        lines += ["[[devices]]", f'address = "{address}"', f'kind = "{kind}"', 'resident = "r1"', 'name = "M"']
        if kind == "pendant":
            lines.append('pendant_key_file = "pendant.key"')
    return parse_config("\n".join(lines) + "\n", tmp_path / "hub.toml")


def options(address: str, **overrides: Any) -> DeviceOptions:
    base: dict[str, Any] = {"id": address.replace(":", ""), "address": address, "name": "Meter"}
    base.update(overrides)
    return DeviceOptions(**base)


@contextlib.asynccontextmanager
async def running(
    stack: Stack, tmp_path: Path, meters: Sequence[SimDevice], provisioned: Sequence[tuple[str, str]]
) -> AsyncIterator[tuple[BleManager, Sink]]:
    """The meters on the stack's link, and a BLE manager for `provisioned` on the same link."""
    sink = Sink()
    clock = meters[0].clock
    assert isinstance(clock, ManualClock)
    async with contextlib.AsyncExitStack() as exits:
        for meter in meters:
            opts = meter.options
            bumble = await exits.enter_async_context(
                sim.ble.open_peripheral_device(stack.link, opts.address, opts.name)
            )
            await exits.enter_async_context(meter.attach(bumble))
        manager = BleManager(
            _config(tmp_path, provisioned),
            sink,
            scanner_backend=stack.scanner,
            client_backend=stack.client,
            clock=clock,
        )
        await exits.enter_async_context(manager)
        yield manager, sink


class _NoUuidCuff(BloodPressureCuff):
    """A cuff whose advert carries its name only (many shop cuffs list 0x1810 in the scan response at best)."""

    def advertised_uuids(self) -> list[str]:
        return []


# -- the contract: the same on both stacks ------------------------------------------------------------------------


async def test_a_cuff_is_found_paired_subscribed_and_its_reading_stored(stack: Stack, tmp_path: Path) -> None:
    cuff = BloodPressureCuff(options(BP, bonding_required=True), ManualClock(START))
    async with running(stack, tmp_path, [cuff], [(BP, "blood_pressure")]) as (manager, sink):
        produced = await cuff.measure(142, 91, pulse=72)
        await sink.until(lambda: sink.readings_of(BP))
        (reading,) = sink.readings_of(BP)
        assert (reading.uuid, reading.data) == (0x2A35, produced.raw)
        async with asyncio.timeout(BOUND):  # confirmed: the cuff does not send it again
            await cuff.wait_for(lambda: cuff.stored_count() == 0)
        assert not [e for e in sink.reports if isinstance(e, LinkFailed)]
        assert manager.stats.sessions == 1
    if stack.bluetoothd is not None:
        calls = stack.bluetoothd.calls
        assert f"Connect {BP}" in calls
        assert f"Pair {BP}" in calls
        assert stack.bluetoothd.devices[BP].paired


async def test_glucose_records_come_through_racp(stack: Stack, tmp_path: Path) -> None:
    meter = GlucoseMeter(options(GLUCOSE, bonding_required=True), ManualClock(START))
    async with running(stack, tmp_path, [meter], [(GLUCOSE, "glucose")]) as (_manager, sink):
        await meter.measure(101)
        await meter.measure(99)
        await sink.until(lambda: sink.cursors.get(f"racp:{GLUCOSE}") == 2)
        assert {r.uuid for r in sink.readings_of(GLUCOSE)} == {0x2A18}
        assert len(sink.readings_of(GLUCOSE)) == 2


async def test_a_stranger_is_counted_and_never_connected(stack: Stack, tmp_path: Path) -> None:
    clock = ManualClock(START)
    stranger = GlucoseMeter(options(STRANGER), clock)
    meter = GlucoseMeter(options(GLUCOSE), clock)
    async with running(stack, tmp_path, [stranger, meter], [(GLUCOSE, "glucose")]) as (manager, sink):
        await stranger.measure(180)
        await meter.measure(101)
        await sink.until(lambda: sink.readings_of(GLUCOSE) and STRANGER in manager.stats.unknown_devices)
        assert not stranger.connected
    if stack.bluetoothd is not None:
        assert f"Connect {STRANGER}" not in stack.bluetoothd.calls


async def test_a_passive_scan_hears_only_adverts_matching_its_patterns(stack: Stack, tmp_path: Path) -> None:
    """Only glucose meters provisioned: the scan is passive, and a stranger whose advert carries no glucose service
    UUID is never even reported (under BlueZ the monitor filters it; the bumble backend applies the same patterns)."""
    clock = ManualClock(START)
    stranger = _NoUuidCuff(options(STRANGER), clock)
    meter = GlucoseMeter(options(GLUCOSE), clock)
    scanner, _client = sim.ble.backend_for(stack.link)
    heard = asyncio.Event()

    def observe(device: BLEDevice, _adv: AdvertisementData) -> None:
        if device.address.upper() == STRANGER:
            heard.set()

    async with running(stack, tmp_path, [stranger, meter], [(GLUCOSE, "glucose")]) as (manager, sink):
        # An unfiltered listener on the same radio: once it has heard the stranger, so has every scan on that radio.
        async with BleakScanner(observe, scanning_mode="passive", backend=scanner):
            await stranger.measure(120, 80)
            async with asyncio.timeout(BOUND):
                await heard.wait()
        await meter.measure(101)
        await sink.until(lambda: sink.readings_of(GLUCOSE))
        assert STRANGER not in manager.stats.unknown_devices
    if stack.bluetoothd is not None:
        assert STRANGER not in stack.bluetoothd.devices


async def test_a_meter_advertising_no_service_uuid_is_found_by_its_address(stack: Stack, tmp_path: Path) -> None:
    cuff = _NoUuidCuff(options(BP), ManualClock(START))
    async with running(stack, tmp_path, [cuff], [(BP, "blood_pressure")]) as (_manager, sink):
        produced = await cuff.measure(120, 80)
        await sink.until(lambda: sink.readings_of(BP))
        assert [r.data for r in sink.readings_of(BP)] == [produced.raw]


async def test_a_pendant_press_reaches_the_hub(stack: Stack, tmp_path: Path) -> None:
    """The pendant (a 128-bit service UUID, so a passive scan under BlueZ) is found, paired and subscribed, and its
    event frame handed to the hub."""
    pendant = Pendant(options(PENDANT, key=bytes(range(32))), ManualClock(START))
    async with running(stack, tmp_path, [pendant], [(PENDANT, "pendant")]) as (_manager, sink):
        produced = await pendant.press()
        await sink.until(lambda: sink.frames)
        assert sink.frames[0] == produced.raw
        if stack.bluetoothd is not None:
            (monitor,) = stack.bluetoothd.monitors.values()
            assert PENDANT in monitor.found  # its 128-bit UUID pattern matched the advert's bytes
            assert stack.bluetoothd.devices[PENDANT].paired
            assert "StartDiscovery" not in stack.bluetoothd.calls


async def test_a_meter_that_left_is_not_connected_again_until_it_advertises(stack: Stack, tmp_path: Path) -> None:
    """After a session the cuff goes out of range. Under BlueZ the end of the link changes the device object's
    properties (Connected, ServicesResolved), which bleak hands to the scanner as if it were an advertisement: that
    must not start a session with a device that is not there."""
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP), clock)
    meter = GlucoseMeter(options(GLUCOSE), clock)
    provisioned = [(BP, "blood_pressure"), (GLUCOSE, "glucose")]
    async with running(stack, tmp_path, [cuff, meter], provisioned) as (manager, sink):
        await cuff.measure(120, 80)
        await sink.until(lambda: sink.readings_of(BP))
        await cuff.set_in_range(False)
        await sink.until(lambda: [e for e in sink.reports if isinstance(e, LinkDown) and e.device.address == BP])
        # Anything the link's end set off has happened by the time a later advert from another meter is handled.
        await meter.measure(101)
        await sink.until(lambda: sink.readings_of(GLUCOSE))
        assert not [e for e in sink.reports if isinstance(e, LinkFailed)]
        assert manager.stats.sessions == 2  # the cuff's one and the glucose meter's one
    if stack.bluetoothd is not None:
        assert stack.bluetoothd.calls.count(f"Connect {BP}") == 1


# -- what only BlueZ shows ----------------------------------------------------------------------------------------


async def test_under_bluez_the_scan_is_passive_through_a_monitor_bluetoothd_accepts(
    bluetoothd: Bluetoothd, link: str, tmp_path: Path
) -> None:
    """The daemon's first scan used to end it: passive scanning without or_patterns is refused by bleak's BlueZ
    backend. Now a glucose meter (service UUID in its advertising PDU) is scanned for passively."""
    meter = GlucoseMeter(options(GLUCOSE, bonding_required=True), ManualClock(START))
    stack = Stack(link, None, None, bluetoothd)
    async with running(stack, tmp_path, [meter], [(GLUCOSE, "glucose")]) as (manager, sink):
        await meter.measure(101)
        await sink.until(lambda: sink.readings_of(GLUCOSE))
        (monitor,) = bluetoothd.monitors.values()
        assert monitor.active
        assert monitor.rejected is None
        assert GLUCOSE in monitor.found
        assert manager.scanning.is_set()
    assert "StartDiscovery" not in bluetoothd.calls
    assert not bluetoothd.monitors  # unregistered when the manager closed


async def test_under_a_bluez_without_monitors_the_hub_scans_actively(
    system_bus: str, link: str, tmp_path: Path
) -> None:
    """bluetoothd without the advertisement monitor API (not started with --experimental where it still is
    experimental): bleak cannot start a passive scan, and the hub scans actively instead of ending."""
    meter = GlucoseMeter(options(GLUCOSE), ManualClock(START))
    async with Bluetoothd(system_bus, link, monitors=False) as daemon:
        stack = Stack(link, None, None, daemon)
        async with running(stack, tmp_path, [meter], [(GLUCOSE, "glucose")]) as (manager, sink):
            await meter.measure(101)
            await sink.until(lambda: sink.readings_of(GLUCOSE))
            assert manager.scanning.is_set()
        assert "StartDiscovery" in daemon.calls
        assert not daemon.monitors


class _Logged(logging.Handler):
    """Sets `event` when a record containing `text` is logged (a failure the hub has no other hook for)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_under_bluez_the_scan_waits_for_the_adapter_to_come_on(
    system_bus: str, link: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter is off when the hub starts (rfkill, bluetoothd still powering it): bleak cannot scan, and the hub
    tries again at the scan's retry pace instead of ending; once the adapter is on it reads the meter."""
    monkeypatch.setattr(gateway.ble, "_SCAN_RETRY", dataclasses.replace(gateway.ble._SCAN_RETRY, base=0.01, cap=0.05))
    failed = _Logged("BLE scan failed")
    logging.getLogger("gateway.ble").addHandler(failed)
    meter = GlucoseMeter(options(GLUCOSE), ManualClock(START))
    try:
        async with Bluetoothd(system_bus, link, powered=False) as daemon:
            stack = Stack(link, None, None, daemon)
            async with running(stack, tmp_path, [meter], [(GLUCOSE, "glucose")]) as (manager, sink):
                async with asyncio.timeout(BOUND):
                    await failed.event.wait()
                assert not manager.scanning.is_set()
                daemon.set_powered(True)
                await meter.measure(101)
                await sink.until(lambda: sink.readings_of(GLUCOSE))
                assert manager.stats.scan_failures >= 1
    finally:
        logging.getLogger("gateway.ble").removeHandler(failed)


async def test_under_bluez_a_cuff_is_scanned_for_actively(bluetoothd: Bluetoothd, link: str, tmp_path: Path) -> None:
    cuff = _NoUuidCuff(options(BP), ManualClock(START))
    stack = Stack(link, None, None, bluetoothd)
    async with running(stack, tmp_path, [cuff], [(BP, "blood_pressure"), (GLUCOSE, "glucose")]) as (_m, sink):
        await cuff.measure(120, 80)
        await sink.until(lambda: sink.readings_of(BP))
        assert not bluetoothd.monitors
    assert bluetoothd.calls[0] == "StartDiscovery"
    assert "StopDiscovery" in bluetoothd.calls


async def test_under_bluez_a_private_address_becomes_the_identity_when_paired(
    bluetoothd: Bluetoothd, link: str, tmp_path: Path
) -> None:
    """A cuff advertising under a resolvable private address: the installer pairs it (bleak's BlueZ pair), BlueZ
    reports the identity address from then on, on the same object, and resolves the cuff's next private address to
    it; the hub, provisioned with the identity, reads the cuff."""
    cuff = BloodPressureCuff(options(BP, bonding_required=True), ManualClock(START))
    bluetoothd.use_private_address(BP, RPA)
    async with sim.ble.open_peripheral_device(link, BP, "Meter") as radio, cuff.attach(radio):
        produced = await cuff.measure(131, 84)
        seen = await BleakScanner.find_device_by_address(RPA, timeout=BOUND)  # the installer's scan
        assert seen is not None
        async with BleakClient(seen, timeout=BOUND) as installer:
            await installer.pair()
            assert installer.address == BP  # bleak took BlueZ's new Address
        device = bluetoothd.devices[BP]
        assert device.path == device_path(RPA)
        assert RPA not in bluetoothd.devices
        bluetoothd.use_private_address(BP, RPA_NEXT)  # the cuff rotates its private address

        sink = Sink()
        manager = BleManager(_config(tmp_path, [(BP, "blood_pressure")]), sink, clock=ManualClock(START))
        async with manager:
            await sink.until(lambda: sink.readings_of(BP))
        assert [r.data for r in sink.readings_of(BP)] == [produced.raw]
        assert RPA_NEXT not in bluetoothd.devices  # resolved to the bonded identity, not a new device
        assert manager.stats.unknown_devices == set()


# -- the scan plan and bluetoothd's rules for monitors ------------------------------------------------------------


def _device(kind: DeviceKind, index: int) -> DeviceConfig:
    return DeviceConfig(f"C0:00:00:00:30:{index:02X}", kind, "r1", None, None, None)


@given(st.lists(st.sampled_from(list(DeviceKind)), max_size=12))
def test_every_passive_plan_is_a_monitor_bluetoothd_accepts(kinds: list[DeviceKind]) -> None:
    plan = plan_scan([_device(k, i) for i, k in enumerate(kinds)])
    if plan.mode is ScanMode.PASSIVE:
        accepted = parse_patterns(
            "or_patterns", [(p.start_position, p.ad_data_type, p.content_of_pattern) for p in plan.or_patterns]
        )
        assert len(accepted) == len(plan.or_patterns) <= MAX_PATTERNS
        assert plan.bluez_args()["or_patterns"]
    else:
        assert plan.bluez_args() == {}
        assert plan.reason
    cannot_be_seen_passively = {DeviceKind.BLOOD_PRESSURE, DeviceKind.OXIMETER}
    assert (plan.mode is ScanMode.ACTIVE) == (not kinds or bool(cannot_be_seen_passively & set(kinds)))


@pytest.mark.parametrize(
    ("monitor_type", "patterns"),
    [
        ("or_patterns", []),
        ("and_patterns", [(0, 0x03, b"\x08\x18")]),
        ("or_patterns", [(0, 0x03, b"")]),
        ("or_patterns", [(30, 0x03, b"\x08\x18")]),
        ("or_patterns", [(0, 0x50, b"\x08\x18")]),
        ("or_patterns", [(0, 0x03, b"\x08\x18")] * (MAX_PATTERNS + 1)),
    ],
)
def test_the_stand_in_refuses_monitors_bluetoothd_refuses(monitor_type: str, patterns: list[Any]) -> None:
    with pytest.raises(MonitorRejectedError):
        parse_patterns(monitor_type, patterns)
