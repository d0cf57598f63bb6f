"""The hub's BLE manager against simulated meters on an in-process link, through bleak's public API only.

Each test attaches simulated products (`sim.devices`) to a private ``local:`` link, runs the real gateway
(`gateway.app.open_gateway`) with the sim bleak backend, and checks what became durable in the hub's outbox by
opening the sealed envelopes with the platform's key. Progress is awaited through a probe wrapped around the hub's
sink methods (it fires after the wrapped call returned, i.e. after the commit was fsynced): no sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import (
    BleakCharacteristicNotFoundError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
)
from hypothesis import given
from hypothesis import strategies as st
from null_sink import NullSink

import gateway.ble
import gateway.ble_errors
import gateway.ble_session
import sim.ble
from gateway.app import Gateway, open_gateway
from gateway.ble import Reading
from gateway.config import parse_config
from gateway.errors import OutboxUnwritableError
from gateway.events import (
    ClockCorrected,
    DeviceReport,
    ErrorClass,
    LinkDown,
    LinkFailed,
    Misbehaviour,
)
from gateway.journal import IndicationJournal
from protocols import gatt
from protocols.envelope import open_envelope
from protocols.errors import DecodeError
from protocols.gatt.racp import RacpOpCode, RacpResponseCode
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
from protocols.record import DeviceStatusBody, MeasurementBody, RawReadingBody, Record, measurement_record_id
from sim.broker import MosquittoBroker
from sim.clock import ManualClock
from sim.devices.base import Produced, SimDevice
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.glucose import GlucoseMeter
from sim.devices.options import DEFAULT_CLOCK, DeviceOptions

_R = TypeVar("_R", bound=DeviceReport)
HUB_ID = "ble-test-hub"
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

START = datetime(2024, 3, 4, 7, 0, tzinfo=UTC)
BOUND = 20.0  # seconds: upper bound on awaiting any event, never a sleep
BP = "C0:00:00:00:10:01"
GLUCOSE = "C0:00:00:00:10:02"
STRANGER = "C0:00:00:00:10:99"
_links = itertools.count()


@dataclass
class Probe:
    """Calls into the hub's sink, recorded after they returned (the data is durable by then)."""

    stored: list[tuple[list[Reading], tuple[str, int] | None]] = field(default_factory=list)
    statuses: list[DeviceReport] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self, gw: Gateway) -> None:
        hub = gw.hub
        store, status = hub.store_readings, hub.report

        async def store_readings(readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
            await store(readings, cursor)
            self.stored.append((list(readings), cursor))
            self.changed.set()

        async def report(event: DeviceReport) -> None:
            await status(event)
            self.statuses.append(event)
            self.changed.set()

        # The BLE manager calls its sink through these attributes; the instance attributes shadow the methods.
        hub.store_readings = store_readings  # type: ignore[method-assign]
        hub.report = report  # type: ignore[method-assign]

    async def until(self, predicate: Callable[[], object]) -> None:
        async with asyncio.timeout(BOUND):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def readings_of(self, address: str) -> list[Reading]:
        return [r for batch, _ in self.stored for r in batch if r.device.address == address]

    def status_with(self, address: str, kind: type[_R]) -> list[_R]:
        return [e for e in self.statuses if e.device.address == address and isinstance(e, kind)]


@dataclass
class Rig:
    gw: Gateway
    probe: Probe
    clock: ManualClock
    platform: PlatformIdentity
    hub: HubIdentity

    async def records(self) -> list[Record]:
        """Every record durable in the outbox, opened and verified as the platform would."""
        items = await self.gw.outbox.peek_batch(10_000, 1 << 30)
        known = {self.hub.hub_id: self.hub.verify_key}
        return [r for item in items for r in open_envelope(item.envelope, self.platform.box_key, known).decoded]

    async def measurements(self, address: str) -> list[Record]:
        return [r for r in await self.records() if r.device_id == address and isinstance(r.body, MeasurementBody)]


def _config(
    workdir: Path,
    broker_url: str,
    devices: Sequence[tuple[str, str]],
    extra: Mapping[str, Sequence[str]],
    hub_lines: Sequence[str] = (),
) -> str:
    lines = [
        "[hub]",
        f'id = "{HUB_ID}"',
        'key_file = "hub.key"',
        *hub_lines,
        "[platform]",
        'public_key_file = "platform.pub"',
        "[broker]",
        f'url = "{broker_url}"',
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
        lines += extra.get(address, ())
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path,
    broker: MosquittoBroker,
    meters: Sequence[SimDevice],
    *,
    device_lines: Mapping[str, Sequence[str]] | None = None,
    hub_lines: Sequence[str] = (),
) -> AsyncIterator[Rig]:
    """The meters on a private link (already attached, so stored readings wait) and the gateway on the same link;
    `device_lines` adds TOML lines to a device's table of the hub's configuration, by address, `hub_lines` to its
    [hub] table."""
    platform = PlatformIdentity.generate()
    hub = HubIdentity.generate(HUB_ID)
    save_hub_identity(tmp_path / "hub.key", hub)
    save_platform_public_keys(tmp_path / "platform.pub", platform.public)
    kinds = {BloodPressureCuff: "blood_pressure", GlucoseMeter: "glucose"}
    kind_of = {m: next(v for k, v in kinds.items() if isinstance(m, k)) for m in meters}
    provisioned = [(m.options.address, kind_of[m]) for m in meters if m.options.address != STRANGER]
    text = _config(tmp_path, broker.url, provisioned, device_lines or {}, hub_lines)
    config = parse_config(text, tmp_path / "hub.toml")
    link = f"local:ble-manager-{next(_links)}"
    scanner, client = sim.ble.backend_for(link)
    clock = meters[0].clock
    assert isinstance(clock, ManualClock)
    probe = Probe()
    try:
        async with contextlib.AsyncExitStack() as stack:
            for meter in meters:
                opts = meter.options
                bumble = await stack.enter_async_context(sim.ble.open_peripheral_device(link, opts.address, opts.name))
                await stack.enter_async_context(meter.attach(bumble))
            gw = await stack.enter_async_context(
                open_gateway(config, scanner_backend=scanner, client_backend=client, clock=clock, ble=True)
            )
            probe.install(gw)
            yield Rig(gw, probe, clock, platform, hub)
    finally:
        await sim.ble.close_centrals()


class _SignallingSet(set[str]):
    """The manager's set of strangers, setting an event when one is added (adverts have no other hook)."""

    def __init__(self, event: asyncio.Event) -> None:
        super().__init__()
        self._event = event

    def add(self, element: str) -> None:
        super().add(element)
        self._event.set()


def hold_commits(r: Rig) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the hub's commits slow: each store waits for the second event (set by the test); the first is set when
    a store has begun."""
    hub = r.gw.hub
    store = hub.store_readings
    entered, disk = asyncio.Event(), asyncio.Event()

    async def slow_store(readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
        entered.set()
        await disk.wait()
        await store(readings, cursor)

    hub.store_readings = slow_store  # type: ignore[method-assign]
    return entered, disk


def options(address: str, **overrides: Any) -> DeviceOptions:
    base: dict[str, Any] = {"id": address.replace(":", ""), "address": address, "name": "Meter"}
    base.update(overrides)
    return DeviceOptions(**base)


async def test_bp_reading_becomes_exactly_one_record_with_a_stable_id(tmp_path, mosquitto):
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP, bonding_required=True), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        produced = await cuff.measure(142, 91, pulse=72)
        await r.probe.until(lambda: r.probe.readings_of(BP))
        await cuff.wait_for(lambda: cuff.stored_count() == 0)  # the indication was confirmed: nothing re-sent
        records = await r.measurements(BP)
        assert len(records) == 1
        body = records[0].body
        assert isinstance(body, MeasurementBody)
        assert body.uuid == 0x2A35
        assert body.raw == produced.raw
        assert body.clock_corrected is False
        # The id depends on the device, the bytes and the meter's own timestamp, not on when the hub got it:
        # a re-delivered indication after a crash maps to the same id and the platform drops it.
        stamp = gatt.decode(0x2A35, produced.raw).as_dict()["timestamp"]
        for received in (START, START + timedelta(hours=5)):
            assert measurement_record_id(BP, 0x2A35, produced.raw, None, stamp, received) == records[0].record_id
        assert r.gw.hub.counters.readings == 1
        assert r.gw.ble is not None
        assert r.gw.ble.stats.unknown_devices == set()


async def test_unknown_device_advertising_a_health_service_is_ignored_and_counted(tmp_path, mosquitto):
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP), clock)
    stranger = BloodPressureCuff(options(STRANGER), clock)
    async with rig(tmp_path, mosquitto, [cuff, stranger]) as r:
        assert r.gw.ble is not None
        stats = r.gw.ble.stats
        heard = asyncio.Event()
        stats.unknown_devices = _SignallingSet(heard)
        await stranger.measure(120, 80)  # it advertises the blood pressure service, like our cuff
        await cuff.measure(130, 85)
        await r.probe.until(lambda: r.probe.readings_of(BP))
        async with asyncio.timeout(BOUND):
            await heard.wait()
        assert stats.unknown_devices == {STRANGER}
        assert stats.unknown_adverts >= 1
        assert not stranger.connected
        assert stranger.stored_count() == 1
        assert not stranger.bonded
        assert all(rec.device_id != STRANGER for rec in await r.records())
        assert len(await r.measurements(BP)) == 1


async def test_glucose_records_come_by_racp_and_the_cursor_advances_with_them(tmp_path, mosquitto):
    clock = ManualClock(START)
    meter = GlucoseMeter(options(GLUCOSE, bonding_required=True), clock)
    # The meter holds three records before the hub ever hears it.
    async with rig(tmp_path, mosquitto, [meter]) as r:
        first = [await meter.measure(v) for v in (101, 102, 103)]
        key = f"racp:{GLUCOSE}"
        await r.probe.until(lambda: (key, 3) in [c for _, c in r.probe.stored])
        transfer = [(b, c) for b, c in r.probe.stored if c is not None]  # stored as they came, with the cursor
        assert [x.data for b, _ in transfer for x in b] == [p.raw for p in first]
        assert [c for _, c in transfer][-1] == (key, 3)
        assert await r.gw.outbox.get_cursor(key) == 3
        assert [p.sequence for p in first] == [0, 1, 2]
        # The meter leaves, takes two more readings, comes back: only the new ones are asked for.
        await meter.set_in_range(False)
        await r.probe.until(lambda: r.probe.status_with(GLUCOSE, LinkDown))
        later = [await meter.measure(v) for v in (104, 105)]
        before = len(r.probe.stored)
        await meter.set_in_range(True)
        await r.probe.until(lambda: (key, 5) in [c for _, c in r.probe.stored])
        transfer = [(b, c) for b, c in r.probe.stored[before:] if c is not None]
        assert [x.data for b, _ in transfer for x in b] == [p.raw for p in later]
        assert [c for _, c in transfer][-1] == (key, 5)
        assert await r.gw.outbox.get_cursor(key) == 5
        raws = sorted(rec.body.raw for rec in await r.measurements(GLUCOSE) if isinstance(rec.body, MeasurementBody))
        assert raws == sorted(p.raw for p in first + later)  # each record exactly once
        assert meter.sequences == [0, 1, 2, 3, 4]  # the hub reads; it never deletes


async def test_reset_meter_clock_is_set_and_its_reading_flagged(tmp_path, mosquitto):
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP, clock_start=DEFAULT_CLOCK), clock)  # fresh battery: clock at 2000-01-01
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        produced = await cuff.measure(135, 88)
        assert produced.device_time.year == 2000
        await r.probe.until(lambda: r.probe.readings_of(BP))
        corrections = r.probe.status_with(BP, ClockCorrected)
        assert len(corrections) == 1
        assert corrections[0].offset is not None
        offset = corrections[0].offset.total_seconds()
        assert offset < -20 * 365 * 86400
        assert abs((cuff.device_clock.now() - clock.now().replace(tzinfo=None)).total_seconds()) < 5
        records = await r.records()
        status = [rec.body for rec in records if isinstance(rec.body, DeviceStatusBody) and rec.body.clock_correction]
        assert len(status) == 1
        assert status[0].clock_correction is not None
        assert status[0].clock_correction.offset_seconds == offset
        (measurement,) = await r.measurements(BP)
        body = measurement.body
        assert isinstance(body, MeasurementBody)
        assert body.clock_corrected is True
        assert body.corrected_time is not None
        assert abs((body.corrected_time - produced.taken_at).total_seconds()) < 5


async def test_undecodable_bytes_are_kept_as_a_raw_reading_and_the_hub_carries_on(tmp_path, mosquitto):
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        assert r.gw.ble is not None
        garbage = bytes([0x1E, 0x01])  # flags promise a timestamp, pulse, user and status; two bytes follow
        with pytest.raises(DecodeError):
            gatt.decode(0x2A35, garbage)
        bogus = Produced(BP, "blood_pressure", "2A35", 99, clock.now(), DEFAULT_CLOCK, {}, garbage)
        cuff.store_for_indication(cuff.measurement_char, bogus)
        good = await cuff.measure(128, 82)  # queued behind the garbage on the same characteristic
        await r.probe.until(lambda: len(r.probe.readings_of(BP)) == 2)
        assert r.probe.status_with(BP, Misbehaviour) == []  # a record of its own, not a status report
        assert r.gw.ble.stats.malformed == 1
        assert r.gw.hub.counters.raw_readings == 1
        (measurement,) = await r.measurements(BP)
        assert isinstance(measurement.body, MeasurementBody)
        assert measurement.body.raw == good.raw
        (kept,) = [rec for rec in await r.records() if isinstance(rec.body, RawReadingBody)]
        assert (kept.device_id, kept.body.uuid, kept.body.raw) == (BP, 0x2A35, garbage)
        assert kept.body.resident_id == "r1"
        assert "2A35 at offset" in kept.body.reason
        assert r.gw.ble.stats.failures.total() == 0


async def test_a_reading_received_but_not_committed_is_durable_in_the_journal(tmp_path, mosquitto):
    """Invariant 1 as far as the hub can keep it: once the stack has confirmed an indication (the cuff forgets the
    reading) and the callback has run, the reading is in the journal (written by the journal's thread, not in the
    callback) until its outbox commit. Here the commit is held back, as if the hub were killed before it: the
    reading is on disk."""
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        entered, disk = hold_commits(r)
        produced = await cuff.measure(150, 95)
        async with asyncio.timeout(BOUND):
            await entered.wait()
            await cuff.wait_for(lambda: cuff.stored_count() == 0)  # confirmed: the cuff has forgotten it
        assert await r.measurements(BP) == []
        assert r.gw.ble is not None
        assert r.gw.ble.journal is not None
        await asyncio.to_thread(r.gw.ble.journal.flush)
        journal = IndicationJournal(r.gw.config.storage_path.with_suffix(".journal"))
        assert [(e.address, e.uuid, e.data) for e in journal.pending()] == [(BP, 0x2A35, produced.raw)]
        disk.set()
        async with asyncio.timeout(BOUND):
            await r.probe.until(lambda: r.probe.readings_of(BP))
        # Once the reading is in the outbox and nothing else is in flight, the journal is emptied.
        await asyncio.to_thread(r.gw.ble.journal.flush)
        assert journal.pending() == []


async def test_readings_beyond_the_queue_wait_in_the_journal_for_the_next_start(tmp_path, mosquitto, monkeypatch):
    """A meter indicating faster than the hub stores (here: a queue of one, the store held back) has every reading
    confirmed; the one the queue cannot take stays in the journal and is stored at the next start."""
    monkeypatch.setattr(gateway.ble_session, "_QUEUE_LIMIT", 1)
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        entered, disk = hold_commits(r)
        first = await cuff.measure(150, 95)
        async with asyncio.timeout(BOUND):
            await entered.wait()  # the first reading is being stored; the queue is empty again
        produced = [first, await cuff.measure(151, 95), await cuff.measure(152, 95)]
        async with asyncio.timeout(BOUND):
            await cuff.wait_for(lambda: cuff.stored_count() == 0)  # all three confirmed: the cuff forgot them
        assert r.gw.ble is not None
        assert r.gw.ble.stats.overflowed == 1
        disk.set()
        await r.probe.until(lambda: len(r.probe.readings_of(BP)) == 2)
        assert r.gw.ble.journal is not None
        await asyncio.to_thread(r.gw.ble.journal.flush)
        journal = IndicationJournal(r.gw.config.storage_path.with_suffix(".journal"))
        assert produced[2].raw in [e.data for e in journal.pending()]  # kept, not emptied with the third in flight
    stamp = gatt.decode(0x2A35, produced[2].raw).as_dict()["timestamp"]
    third = measurement_record_id(BP, 0x2A35, produced[2].raw, None, stamp, START).hex()
    async with rig(tmp_path, mosquitto, [BloodPressureCuff(options(BP), clock)]) as restarted:
        items = await restarted.gw.outbox.peek_batch(10_000, 1 << 30)
        assert third in {rid for item in items for rid in item.record_ids}
        assert restarted.gw.ble is not None
        assert restarted.gw.ble.journal is not None
        await asyncio.to_thread(restarted.gw.ble.journal.flush)
        assert journal.pending() == []


async def test_reading_indicated_while_an_idle_session_closes_is_not_lost(tmp_path, mosquitto):
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        assert r.gw.ble is not None
        r.gw.ble._idle_disconnect = 0.2  # a quiet meter is released after 0.2 s instead of 5 s (test speed only)
        first = await cuff.measure(121, 81)
        await r.probe.until(lambda: r.probe.readings_of(BP))
        hub = r.gw.hub
        status = hub.report
        late: list[Produced] = []

        async def report(event: DeviceReport) -> None:
            # The session has given up on the quiet cuff and reports the link as going down: the resident takes
            # another reading at that very moment.
            if isinstance(event, LinkDown) and not late:
                late.append(await cuff.measure(131, 86))
                await cuff.wait_for(lambda: cuff.stored_count() == 0 or not cuff.connected)
            await status(event)

        hub.report = report  # type: ignore[method-assign]
        await r.probe.until(lambda: len(r.probe.readings_of(BP)) == 2)
        raws = [rec.body.raw for rec in await r.measurements(BP) if isinstance(rec.body, MeasurementBody)]
        assert sorted(raws) == sorted([first.raw, late[0].raw])


class _StartLosesTheCancellation(BaseBleakScanner):
    """A scanner whose start swallows the cancellation that arrives while it runs, as bumble's HCI commands do on
    Python 3.11 when it arrives in the loop turn their answer does (they await through asyncio.wait_for)."""

    starting: asyncio.Event

    def __init__(self, detection_callback: Any, service_uuids: Any, scanning_mode: Any = "active", **kwargs: Any):
        del scanning_mode, kwargs
        super().__init__(detection_callback, service_uuids)

    async def start(self) -> None:
        type(self).starting.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()

    async def stop(self) -> None:
        return None


@pytest.mark.timeout(20)
async def test_the_manager_closes_when_starting_the_scan_lost_its_cancellation(tmp_path):
    """The scan task was cancelled while the stack started scanning and the cancellation was lost: it must not go on
    to wait for adverts forever (that hung the BLE tests, once in about fifteen runs, when a gateway closed right
    after it opened)."""
    config = parse_config(_config(tmp_path, "mqtt://127.0.0.1:1", [(BP, "blood_pressure")], {}), tmp_path / "hub.toml")
    _StartLosesTheCancellation.starting = asyncio.Event()
    manager = gateway.ble.BleManager(config, NullSink(), scanner_backend=_StartLosesTheCancellation)
    async with manager:
        await _StartLosesTheCancellation.starting.wait()
    assert not manager.scanning.is_set()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        # ATT error codes (bumble's ATT_Error and BlueZ's "ATT error: 0x.." both arrive as BleakGATTProtocolError).
        (BleakGATTProtocolError(0x05), ErrorClass.AUTH),  # insufficient authentication
        (BleakGATTProtocolError(0x0F), ErrorClass.AUTH),  # insufficient encryption
        (BleakGATTProtocolError(0x0C), ErrorClass.AUTH),  # encryption key size
        (BleakGATTProtocolError(0x80), ErrorClass.PROTOCOL),  # an application error (Omron refusing a clock write)
        (BleakGATTProtocolError(0x0A), ErrorClass.PROTOCOL),  # attribute not found
        (BleakGATTProtocolError(0x11), ErrorClass.TRANSIENT),  # insufficient resources: busy
        # BlueZ's D-Bus errors, by name, whatever their text says.
        (BleakDBusError("org.bluez.Error.AuthenticationFailed", []), ErrorClass.AUTH),
        (BleakDBusError("org.bluez.Error.AuthenticationRejected", ["Authentication Rejected"]), ErrorClass.AUTH),
        (BleakDBusError("org.bluez.Error.NotPermitted", ["Not paired"]), ErrorClass.AUTH),
        (BleakDBusError("org.bluez.Error.NotConnected", ["Not Connected"]), ErrorClass.GONE),
        (BleakDBusError("org.freedesktop.DBus.Error.UnknownObject", ["Method GetAll ..."]), ErrorClass.GONE),
        (BleakDBusError("org.bluez.Error.InProgress", ["Pairing in progress"]), ErrorClass.TRANSIENT),
        (BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"]), ErrorClass.TRANSIENT),
        (BleakDBusError("org.bluez.Error.NotSupported", []), ErrorClass.PROTOCOL),
        # bleak's and Python's types.
        (BleakDeviceNotFoundError(BP, "not found"), ErrorClass.GONE),
        (BleakCharacteristicNotFoundError("00002a35-0000-1000-8000-00805f9b34fb"), ErrorClass.PROTOCOL),
        (TimeoutError(), ErrorClass.TRANSIENT),
        (ConnectionResetError(), ErrorClass.TRANSIENT),
        # A plain BleakError carries nothing but its text.
        (BleakError("Not connected"), ErrorClass.GONE),
        (BleakError(f"read 0x0003 {BP}: aborted, the link to the peer was lost"), ErrorClass.GONE),
        (BleakError(f"pair {BP}: HCI 0x05 Authentication Failure"), ErrorClass.AUTH),
        (BleakError(f"connect {BP}: timed out"), ErrorClass.TRANSIENT),
    ],
)
def test_errors_are_classified_by_their_type(error: BaseException, expected: ErrorClass) -> None:
    assert gateway.ble.classify_error(error) is expected


def test_each_class_backs_off_at_its_own_pace() -> None:
    retry = gateway.ble_errors.RETRY
    assert set(retry) == set(ErrorClass)
    assert retry[ErrorClass.AUTH].base > retry[ErrorClass.PROTOCOL].base > retry[ErrorClass.TRANSIENT].base
    assert retry[ErrorClass.GONE].cap < retry[ErrorClass.TRANSIENT].cap  # back at its next advertisement


class _Recorder(NullSink):
    def __init__(self) -> None:
        self.reports: list[DeviceReport] = []

    async def report(self, event: DeviceReport) -> None:
        self.reports.append(event)


async def test_a_failed_session_waits_as_long_as_its_class_says(tmp_path):
    """A cuff that refuses to pair is retried slowly; then a link loss starts the (quick) GONE pace afresh."""
    failures: list[BaseException] = [
        BleakDBusError("org.bluez.Error.AuthenticationFailed", []),
        BleakDBusError("org.bluez.Error.AuthenticationFailed", []),
        BleakDeviceNotFoundError(BP, "gone"),
    ]
    _, client = sim.ble.backend_for(f"local:ble-manager-{next(_links)}")

    class Failing(client):  # type: ignore[misc, valid-type]
        async def connect(self, pair: bool, **kwargs: Any) -> None:
            raise failures.pop(0)

    config = parse_config(_config(tmp_path, "mqtt://127.0.0.1:1", [(BP, "blood_pressure")], {}), tmp_path / "hub.toml")
    sink = _Recorder()
    clock = gateway.clock.ManualClock(monotonic=1000.0)
    manager = gateway.ble.BleManager(config, sink, client_backend=Failing, clock=clock)
    (cfg,) = config.devices
    state = manager._states[BP]
    waits = []
    for _ in range(3):
        await manager._session(cfg, BLEDevice(BP, "M", None))
        waits.append(state.not_before - clock.monotonic())
    auth = gateway.ble_errors.RETRY[ErrorClass.AUTH]
    gone = gateway.ble_errors.RETRY[ErrorClass.GONE]
    assert auth.base * (1 - auth.jitter_fraction) <= waits[0] <= auth.base
    assert 2 * auth.base * (1 - auth.jitter_fraction) <= waits[1] <= 2 * auth.base
    assert gone.base * (1 - gone.jitter_fraction) <= waits[2] <= gone.base  # not the third AUTH step
    assert [r.error_class for r in sink.reports if isinstance(r, LinkFailed)] == [
        ErrorClass.AUTH,
        ErrorClass.AUTH,
        ErrorClass.GONE,
    ]
    assert manager.stats.failures == {ErrorClass.AUTH: 2, ErrorClass.GONE: 1}


def _record_subscriptions(meter: SimDevice) -> list[tuple[int, bool]]:
    """(handle, indications on) for every CCCD write the meter sees while connected."""
    seen: list[tuple[int, bool]] = []
    react = meter.on_subscribed

    def on_subscribed(characteristic: Any, *, notify: bool, indicate: bool) -> None:
        seen.append((characteristic.handle, indicate or notify))
        react(characteristic, notify=notify, indicate=indicate)

    meter.on_subscribed = on_subscribed  # type: ignore[method-assign]
    return seen


async def test_a_session_ended_while_connected_unsubscribes(tmp_path, mosquitto):
    """The hub shuts down while the cuff is connected: its session undoes start_notify before the link closes."""
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP), clock)
    seen = _record_subscriptions(cuff)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        await cuff.measure(125, 80)
        await r.probe.until(lambda: r.probe.readings_of(BP))
        assert cuff.connected
        handle = cuff.measurement_char.handle
        assert seen == [(handle, True)]
    assert seen == [(handle, True), (handle, False)]


async def test_the_racp_subscription_ends_with_the_transfer(tmp_path, mosquitto):
    clock = ManualClock(START)
    meter = GlucoseMeter(options(GLUCOSE, bonding_required=True), clock)
    seen = _record_subscriptions(meter)
    async with rig(tmp_path, mosquitto, [meter]) as r:
        await meter.measure(101)
        await r.probe.until(lambda: any(c is not None for _, c in r.probe.stored))
        racp = meter.racp_char.handle
        async with asyncio.timeout(BOUND):  # the transfer ends with the meter's response, after the records
            await meter.wait_for(lambda: [on for h, on in seen if h == racp] == [True, False])


async def test_a_full_glucose_memory_is_stored_in_one_session_and_the_journal_emptied(tmp_path, mosquitto):
    """600 stored records come in one RACP burst, faster than commits: they are stored as they arrive (with the
    cursor), none is left to the journal, and the journal is empty afterwards (issue 14: 500 records took three
    connections and left the journal growing)."""
    clock = ManualClock(START)
    meter = GlucoseMeter(options(GLUCOSE, memory_size=1000), clock)
    key = f"racp:{GLUCOSE}"
    async with rig(tmp_path, mosquitto, [meter]) as r:
        await meter.set_in_range(False)
        produced = [await meter.measure(80 + n % 100) for n in range(600)]
        await meter.set_in_range(True)
        await r.probe.until(lambda: (key, 600) in [c for _, c in r.probe.stored])
        assert r.gw.ble is not None
        assert r.gw.ble.stats.overflowed == 0
        assert r.gw.ble.stats.sessions == 1
        stored = [x.data for x in r.probe.readings_of(GLUCOSE)]
        assert sorted(stored) == sorted(p.raw for p in produced)
        assert r.gw.ble.journal is not None
        await asyncio.to_thread(r.gw.ble.journal.flush)
        assert IndicationJournal(r.gw.config.storage_path.with_suffix(".journal")).pending() == []


class _CutShort(GlucoseMeter):
    """A meter that sends two of its records and then answers the report with "procedure not completed"."""

    async def _report(self, sequences: tuple[int, ...]) -> None:
        wanted = set(sequences[:2])
        for record in [r for r in self.records if r.sequence in wanted]:
            await self._send_record(record)
        await self._respond(RacpOpCode.REPORT_STORED_RECORDS, RacpResponseCode.PROCEDURE_NOT_COMPLETED)


class _Garbled(GlucoseMeter):
    """A meter whose RACP response is one byte long."""

    async def _respond(self, op_code: int, code: RacpResponseCode) -> None:
        del op_code, code
        self._procedure = None
        await self.indicate(self.racp_char, b"\x06")


async def test_a_racp_transfer_cut_short_keeps_what_arrived(tmp_path, mosquitto):
    clock = ManualClock(START)
    meter = _CutShort(options(GLUCOSE, bonding_required=True), clock)
    key = f"racp:{GLUCOSE}"
    async with rig(tmp_path, mosquitto, [meter]) as r:
        await meter.set_in_range(False)
        produced = [await meter.measure(v) for v in (101, 102, 103)]
        await meter.set_in_range(True)
        # The first session keeps the two records it got (cursor 2); the next asks from the third on and gets it.
        await r.probe.until(lambda: (key, 3) in [c for _, c in r.probe.stored])
        assert [c for _, c in r.probe.stored if c is not None] == [(key, 2), (key, 3)]
        cut = r.probe.status_with(GLUCOSE, Misbehaviour)[0]
        assert "response code 8" in cut.reason
        assert [x.data for x in r.probe.readings_of(GLUCOSE)] == [p.raw for p in produced]
        assert r.probe.status_with(GLUCOSE, LinkFailed) == []


async def test_a_racp_response_that_does_not_decode_fails_the_session_not_the_hub(tmp_path, mosquitto):
    clock = ManualClock(START)
    meter = _Garbled(options(GLUCOSE, bonding_required=True), clock)
    async with rig(tmp_path, mosquitto, [meter]) as r:
        await meter.measure(101)
        await r.probe.until(lambda: any(isinstance(e, LinkFailed) for e in r.probe.statuses))
        (failure,) = [e for e in r.probe.statuses if isinstance(e, LinkFailed)]
        assert failure.error_class is ErrorClass.PROTOCOL
        assert "does not decode" in failure.detail
        assert r.probe.readings_of(GLUCOSE)  # the record that came before the response is kept


async def test_readings_beyond_the_queue_are_read_back_from_the_journal_once_it_drained(
    tmp_path, mosquitto, monkeypatch
):
    """The reading a full queue could not take is stored in the same run (read back from the journal by its entry
    number when the session ends), and the journal is emptied: it does not wait for a restart."""
    monkeypatch.setattr(gateway.ble_session, "_QUEUE_LIMIT", 1)
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        assert r.gw.ble is not None
        r.gw.ble._idle_disconnect = 0.2  # the session ends soon after the last reading (test speed only)
        entered, disk = hold_commits(r)
        first = await cuff.measure(150, 95)
        async with asyncio.timeout(BOUND):
            await entered.wait()
        produced = [first, await cuff.measure(151, 95), await cuff.measure(152, 95)]
        async with asyncio.timeout(BOUND):
            await cuff.wait_for(lambda: cuff.stored_count() == 0)
        assert r.gw.ble.stats.overflowed == 1
        disk.set()
        await r.probe.until(lambda: len(r.probe.readings_of(BP)) == 3)
        assert sorted(x.data for x in r.probe.readings_of(BP)) == sorted(p.raw for p in produced)
        assert r.gw.ble.journal is not None
        await asyncio.to_thread(r.gw.ble.journal.flush)
        assert IndicationJournal(r.gw.config.storage_path.with_suffix(".journal")).pending() == []


@given(
    name=st.sampled_from(
        [*gateway.ble_errors.DBUS_CLASSES, "org.bluez.Error.Failed", "org.bluez.Error.InProgress", "org.example.Other"]
    ),
    text=st.text(max_size=60),
)
def test_a_dbus_error_is_classified_by_its_name_whatever_its_text_says(name: str, text: str) -> None:
    assert gateway.ble.classify_error(BleakDBusError(name, [text])) is gateway.ble.classify_error(
        BleakDBusError(name, [])
    )


@given(code=st.integers(0x01, 0xFF))
def test_every_att_code_has_one_class(code: int) -> None:
    expected = (
        ErrorClass.AUTH
        if code in (0x05, 0x08, 0x0C, 0x0F)
        else ErrorClass.TRANSIENT
        if code in (0x09, 0x11, 0xFE)
        else ErrorClass.PROTOCOL
    )
    assert gateway.ble.classify_error(BleakGATTProtocolError(code)) is expected


async def test_a_session_whose_readings_cannot_be_stored_ends_but_the_manager_goes_on(tmp_path, mosquitto):
    """A full disk made the session's commit raise OutboxError, which no BLE handler caught: the session task's
    failure ended the manager's task group, and every device (the pendant too) went unheard."""
    clock = ManualClock(START)
    cuff = BloodPressureCuff(options(BP, bonding_required=True), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        hub = r.gw.hub
        store = hub.store_readings
        refused: list[int] = []
        failed = asyncio.Event()

        async def full_disk(readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
            if not refused:
                refused.append(len(readings))
                failed.set()
                raise OutboxUnwritableError(tmp_path / "outbox.sqlite", "database or disk is full")
            await store(readings, cursor)
            r.probe.stored.append((list(readings), cursor))
            r.probe.changed.set()

        hub.store_readings = full_disk  # type: ignore[method-assign]
        manager = r.gw.ble
        assert manager is not None
        counted = manager._storage_failed

        def count_and_wake(*args: Any) -> None:
            counted(*args)
            r.probe.changed.set()

        manager._storage_failed = count_and_wake  # type: ignore[method-assign]
        produced = await cuff.measure(142, 91, pulse=72)
        async with asyncio.timeout(BOUND):
            await failed.wait()
        assert r.gw.ble is not None
        await r.probe.until(lambda: r.gw.ble is not None and r.gw.ble.stats.storage_failures == 1)
        # The reading itself waits in the indication journal (the stack confirmed the indication), stored at the
        # next start; the manager goes on: the next reading of the same cuff is stored in this run.
        journal = r.gw.ble._journal
        assert journal is not None
        journal.flush()
        assert [e.data for e in journal.pending() if e.address == BP] == [produced.raw]
        r.gw.ble._states[BP].not_before = 0.0
        second = await cuff.measure(131, 84, pulse=70)
        await r.probe.until(lambda: r.probe.readings_of(BP))
        raws = [rec.body.raw for rec in await r.measurements(BP) if isinstance(rec.body, MeasurementBody)]
        assert second.raw in raws
