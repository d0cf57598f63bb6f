"""The hub's records across restarts (13.1), down-messages it cannot apply (13.6), presses it cannot store (19.1).

Each test runs the real gateway (``open_gateway`` without BLE, a broker nobody listens on, a real outbox file) and
reads what the platform would receive by opening the outbox's envelopes with the platform's key.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import aio
from gateway.app import Gateway, open_gateway
from gateway.clock import ManualClock
from gateway.config import DeviceConfig, parse_config
from gateway.errors import OutboxUnwritableError
from gateway.events import (
    BatteryLevel,
    ClockCorrected,
    DeviceReport,
    ErrorClass,
    LinkDown,
    LinkFailed,
    LinkUp,
    Misbehaviour,
    PendantFrame,
    Reading,
)
from gateway.feedback import RecordingFeedback
from gateway.outbox import PutResult
from gateway.thresholds import Key, Thresholds, resolve_thresholds
from protocols.datetime_ import DateTime
from protocols.envelope import open_envelope
from protocols.gatt import BloodPressureMeasurement
from protocols.ieee11073 import MderFloat
from protocols.keys import (
    HubIdentity,
    PlatformIdentity,
    save_hub_identity,
    save_pendant_key,
    save_platform_public_keys,
)
from protocols.messages import AlarmAcknowledgement, AlarmSnooze, DownMessage, ThresholdUpdate
from protocols.pendant import ConfirmFrame, PendantEvent, PendantEventType
from protocols.record import (
    AlarmBody,
    ClockCorrection,
    DeviceStatusBody,
    DownAppliedBody,
    DownRefusedBody,
    LinkFailure,
    LinkState,
    MeasurementBody,
    PanicBody,
    PanicEventType,
    Record,
)
from sim.broker import free_port

HUB = "records-hub"
CUFF = "C0:00:00:00:03:01"
PENDANT = "C0:11:00:00:03:0A"
PENDANT_KEY = bytes(range(32))
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
CONFIG = f"""
[hub]
id = "{HUB}"
key_file = "hub.key"
[platform]
public_key_file = "platform.pub"
[broker]
url = "mqtt://127.0.0.1:{{port}}"
[storage]
path = "outbox.sqlite"
[alarms]
fallback_command = ["true"]
[[residents]]
id = "r1"
language = "en"
profiles = ["hypertension"]
[[devices]]
address = "{CUFF}"
kind = "blood_pressure"
resident = "r1"
[[devices]]
address = "{PENDANT}"
kind = "pendant"
resident = "r1"
pendant_key_file = "pendant.key"
"""


@dataclass(slots=True)
class Home:
    """One provisioned hub directory, opened as often as a test likes (each opening is a restart)."""

    path: Path
    platform: PlatformIdentity
    identity: HubIdentity
    port: int

    @classmethod
    def create(cls, path: Path) -> Home:
        platform = PlatformIdentity.generate()
        identity = HubIdentity.generate(HUB)
        save_platform_public_keys(path / "platform.pub", platform.public)
        save_hub_identity(path / "hub.key", identity)
        save_pendant_key(path / "pendant.key", PENDANT, PENDANT_KEY)
        return cls(path, platform, identity, free_port())  # nobody listens there: everything stays in the outbox

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        config = parse_config(CONFIG.format(port=self.port), self.path / "hub.toml")
        # The timer never fires by itself here: the tests call tick() when they mean it.
        async with open_gateway(
            config, feedback=RecordingFeedback(), ble=False, clock=ManualClock(NOW), tick_interval=3600
        ) as gw:
            yield gw

    async def records(self, gw: Gateway) -> list[Record]:
        known = {HUB: self.identity.public.verify_key}
        items = await gw.outbox.peek_batch(100_000, 1 << 40)
        return [r for i in items for r in open_envelope(i.envelope, self.platform.box_key, known).decoded]


def device(gw: Gateway, address: str) -> DeviceConfig:
    found = gw.config.device(address)
    assert found is not None
    return found


def run_in_home(scenario: Callable[[Home], Any]) -> None:
    """Run an async scenario on uvloop in a fresh hub directory (hypothesis calls this once per example)."""
    with tempfile.TemporaryDirectory() as tmp:
        aio.run(scenario(Home.create(Path(tmp))))


# -- 13.1: every report is a record, and ids never collide -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Restart:
    """Close the gateway and open it again on the same outbox."""


REPORT_KINDS = ("battery", "up", "down", "failed", "clock", "misbehaviour", "reading")
steps = st.lists(
    st.one_of(
        st.just(Restart()),
        st.tuples(
            st.sampled_from(REPORT_KINDS),
            st.sampled_from([CUFF, PENDANT]),
            st.integers(-3, 103),
            st.sampled_from(ErrorClass),
            st.binary(max_size=8),
        ),
    ),
    max_size=25,
)


BP_UUID = BloodPressureMeasurement.UUID


def bp_reading(n: int) -> bytes:
    """The ``n``-th of distinct blood-pressure readings (by the cuff's time stamp)."""
    at = NOW + timedelta(minutes=n)
    stamp = DateTime(at.year, at.month, at.day, at.hour, at.minute, at.second)
    return bytes(BloodPressureMeasurement(MderFloat(118), MderFloat(76), MderFloat(90), timestamp=stamp))


def make_report(gw: Gateway, step: tuple[str, str, int, ErrorClass, bytes]) -> DeviceReport:
    kind, address, number, error_class, raw = step
    cfg = device(gw, address)
    match kind:
        case "battery":
            return BatteryLevel(cfg, number)
        case "up":
            return LinkUp(cfg)
        case "down":
            return LinkDown(cfg)
        case "failed":
            return LinkFailed(cfg, error_class, f"session failed ({number})")
        case "clock":
            return ClockCorrected(cfg, f"2000-01-01T00:00:{number % 60:02d}", timedelta(seconds=number))
        case _:
            return Misbehaviour(cfg, f"undecodable value {number}", raw)


def expected_body(event: DeviceReport) -> DeviceStatusBody:
    match event:
        case BatteryLevel(level=level) if 0 <= level <= 100:
            return DeviceStatusBody(battery=level)
        case BatteryLevel(level=level):
            return DeviceStatusBody(detail=f"battery level {level!r} is outside 0..100", raw=b"")
        case LinkUp():
            return DeviceStatusBody(link=LinkState.CONNECTED)
        case LinkDown():
            return DeviceStatusBody(link=LinkState.DISCONNECTED)
        case LinkFailed(error_class=error_class, detail=detail):
            return DeviceStatusBody(link=LinkState.FAILED, failure=LinkFailure(error_class.value), detail=detail)
        case ClockCorrected(device_time=device_time, offset=offset):
            assert device_time is not None
            assert offset is not None
            return DeviceStatusBody(clock_correction=ClockCorrection(device_time, NOW, offset.total_seconds()))
        case Misbehaviour(reason=reason, raw=raw):
            return DeviceStatusBody(detail=reason, raw=raw)
    raise AssertionError(event)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_every_device_event_across_restarts_is_one_record_with_an_id_of_its_own(
    script: Sequence[Restart | tuple[str, str, int, ErrorClass, bytes]],
) -> None:
    async def scenario(home: Home) -> None:
        reported: list[tuple[str, DeviceStatusBody]] = []
        measured: list[bytes] = []
        records: list[Record] = []
        todo = list(script)
        while True:
            async with home.running() as gw:
                while todo:
                    step = todo.pop(0)
                    if isinstance(step, Restart):
                        break
                    if step[0] == "reading":
                        raw = bp_reading(len(measured))
                        assert await gw.hub.handle(Reading(device(gw, CUFF), BP_UUID, raw, NOW)) is None
                        measured.append(raw)
                        continue
                    event = make_report(gw, step)
                    assert await gw.hub.handle(event) is None
                    reported.append((event.device.address, expected_body(event)))
                records = await home.records(gw)
            if not todo:
                break
        assert len({r.record_id for r in records}) == len(records)
        assert len({r.seq for r in records}) == len(records)
        statuses = sorted((r.seq, r.device_id, r.body) for r in records if isinstance(r.body, DeviceStatusBody))
        assert [(d, b) for _, d, b in statuses] == reported
        readings = sorted((r.seq, r.body.raw) for r in records if isinstance(r.body, MeasurementBody))
        assert [raw for _, raw in readings] == measured

    run_in_home(scenario)


# -- 13.6: no down-message stops the hub; an accepted change survives a restart --------------------------------

KEYS = [k.value for k in Key]
down_bodies = st.one_of(
    st.builds(
        ThresholdUpdate,
        st.sampled_from(["r1", "nobody"]),
        st.dictionaries(
            st.sampled_from([*KEYS, "bp.sys", "unknown.key"]),
            st.none() | st.integers(-5, 400) | st.floats(-1e9, 1e9, allow_nan=False),
            max_size=4,
        ),
    ),
    st.builds(AlarmAcknowledgement, st.sampled_from(["a-unknown", "panic-x"]), st.just("Mei Lin"), st.just(NOW)),
    st.builds(AlarmSnooze, st.sampled_from(["a-unknown"]), st.just("Mei Lin"), st.integers(1, 86400), st.just(NOW)),
)
down_script = st.lists(
    st.one_of(st.just(Restart()), st.tuples(st.integers(0, 2**63 - 1) | st.integers(0, 40), down_bodies)),
    max_size=15,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(down_script)
def test_no_down_message_stops_the_hub_and_accepted_changes_survive_restarts(
    script: Sequence[Restart | tuple[int, ThresholdUpdate | AlarmAcknowledgement | AlarmSnooze]],
) -> None:
    async def scenario(home: Home) -> None:
        todo = list(script)
        last_seq = 0
        refused = applied = 0
        expected: dict[str, float] = {}
        while True:
            async with home.running() as gw:
                base = configured("r1", gw)
                assert dict(gw.hub.threshold_overrides("r1")) == expected
                assert gw.hub.thresholds("r1") == base.updated(expected)
                while todo:
                    step = todo.pop(0)
                    if isinstance(step, Restart):
                        break
                    seq, body = step
                    before = gw.hub.counters.down_refused
                    await gw.hub.on_down(DownMessage(HUB, seq, NOW, body))  # never raises
                    if seq <= last_seq:
                        assert gw.hub.counters.down_refused == before  # a replay changes nothing
                        continue
                    last_seq = seq
                    if gw.hub.counters.down_refused > before:
                        refused += 1
                        continue
                    applied += 1
                    if isinstance(body, ThresholdUpdate):
                        for key, value in body.values.items():
                            if value is None:
                                expected.pop(key, None)
                            else:
                                expected[key] = float(value)
                    assert dict(gw.hub.threshold_overrides("r1")) == expected
                assert not gw.supervisor.failures
                records = await home.records(gw)
                assert sum(isinstance(r.body, DownRefusedBody) for r in records) == refused
                # Each applied message is confirmed to the platform once (protocol §3.9), refused ones never.
                assert sum(isinstance(r.body, DownAppliedBody) for r in records) == applied
            if not todo:
                break

    run_in_home(scenario)


def configured(resident: str, gw: Gateway) -> Thresholds:
    """The resident's thresholds from the installer's configuration alone."""
    cfg = gw.config.resident(resident)
    return resolve_thresholds(cfg.profiles, dict(cfg.thresholds))


# -- 19.1: a press the outbox cannot store is not confirmed, escalates locally, and is stored once later ----------


class FullDisk:
    """Makes the gateway's outbox refuse every commit while ``full`` (what SQLite says on a full file system)."""

    def __init__(self, gw: Gateway) -> None:
        self.full = True
        self._put_many = gw.outbox.put_many
        self._path = gw.config.storage_path
        gw.outbox.put_many = self.put_many  # type: ignore[method-assign]

    async def put_many(self, items: Any, *, cursors: Any = None, settle: Any = None) -> PutResult:
        if self.full:
            raise OutboxUnwritableError(self._path, "database or disk is full")
        return await self._put_many(items, cursors=cursors, settle=settle)


def press_frame(counter: int = 1) -> bytes:
    return bytes(PendantEvent(PendantEventType.PRESS, counter, 80, 100).sign(PENDANT, PENDANT_KEY))


def panic_records(records: list[Record]) -> tuple[list[PanicBody], list[AlarmBody]]:
    presses = [r.body for r in records if isinstance(r.body, PanicBody)]
    alarms = [r.body for r in records if isinstance(r.body, AlarmBody) and r.body.condition == "panic"]
    return presses, alarms


def assert_stored_once(records: list[Record]) -> None:
    presses, alarms = panic_records(records)
    assert len({r.record_id for r in records}) == len(records)
    assert [(p.event, p.counter) for p in presses] == [(PanicEventType.PRESS, 1)]
    assert presses[0].alarm_id is not None
    assert [(a.alarm_id, a.state.value, a.revision) for a in alarms] == [(presses[0].alarm_id, "raised", 0)]


def test_a_press_on_a_full_disk_is_not_confirmed_escalates_and_is_stored_once_when_space_returns() -> None:
    async def scenario(home: Home) -> None:
        async with home.running() as gw:
            pendant = device(gw, PENDANT)
            disk = FullDisk(gw)
            feedback = gw.feedback
            assert isinstance(feedback, RecordingFeedback)
            assert await gw.hub.pendant_frame(PendantFrame(pendant, press_frame())) is None
            assert "siren" in feedback.messages()
            assert "panic_help_called" in feedback.messages()
            assert gw.hub.counters.fallback_notifications == 1
            # The pendant re-sends the same bytes: still not stored, so still no confirm (not a "repeat").
            assert await gw.hub.pendant_frame(PendantFrame(pendant, press_frame())) is None
            assert gw.hub.counters.fallback_notifications == 1  # the fallback runs once per call
            assert gw.hub.counters.pendant_unconfirmed == 2
            assert panic_records(await home.records(gw)) == ([], [])
            disk.full = False
            confirm = await gw.hub.pendant_frame(PendantFrame(pendant, press_frame()))
            assert confirm is not None
            assert ConfirmFrame.from_bytes(confirm).counter == 1
            assert_stored_once(await home.records(gw))
        async with home.running() as gw:
            # After a restart the press is a repeat: confirmed again, nothing new stored.
            assert await gw.hub.pendant_frame(PendantFrame(device(gw, PENDANT), press_frame())) is not None
            assert_stored_once(await home.records(gw))

    run_in_home(scenario)


def test_a_press_stored_by_a_later_commit_is_confirmed_as_a_repeat() -> None:
    async def scenario(home: Home) -> None:
        async with home.running() as gw:
            pendant = device(gw, PENDANT)
            disk = FullDisk(gw)
            assert await gw.hub.pendant_frame(PendantFrame(pendant, press_frame())) is None
            disk.full = False
            await gw.hub.tick()  # the timer's commit stores what the failed one could not
            assert_stored_once(await home.records(gw))
            events = gw.hub.counters.panic_events
            confirm = await gw.hub.pendant_frame(PendantFrame(pendant, press_frame()))
            assert confirm is not None
            assert gw.hub.counters.panic_events == events  # a repeat: confirmed, not acted on twice
            assert_stored_once(await home.records(gw))

    run_in_home(scenario)


def test_the_timer_tick_goes_on_while_the_disk_is_full() -> None:
    """A full disk made every tick raise; the supervisor restarted the ticker, gave up after a few failures and the
    hub exited - on a full disk, where escalating unanswered calls and retrying storage is the tick's whole job."""

    async def scenario(home: Home) -> None:
        async with home.running() as gw:
            pendant = device(gw, PENDANT)
            disk = FullDisk(gw)
            assert await gw.hub.pendant_frame(PendantFrame(pendant, press_frame())) is None
            failures = gw.hub.counters.commit_failures
            for _ in range(10):
                await gw.hub.tick()  # each retries the call's records and fails again, without raising
            assert gw.hub.counters.commit_failures == failures + 10
            disk.full = False
            await gw.hub.tick()
            assert_stored_once(await home.records(gw))

    run_in_home(scenario)


def test_a_down_message_whose_commit_fails_is_applied_again_and_recorded_once() -> None:
    async def scenario(home: Home) -> None:
        async with home.running() as gw:
            disk = FullDisk(gw)
            refused = DownMessage(HUB, 5, NOW, ThresholdUpdate("nobody", {"bp.systolic.critical_high": 180}))
            accepted = DownMessage(HUB, 6, NOW, ThresholdUpdate("r1", {"spo2.low.warning": 91}))
            for message in (refused, accepted):
                with pytest.raises(OutboxUnwritableError):
                    await gw.hub.on_down(message)
            assert gw.hub.counters.down_refused == 0
            assert dict(gw.hub.threshold_overrides("r1")) == {}
            disk.full = False
            for message in (refused, accepted):
                await gw.hub.on_down(message)
            assert gw.hub.counters.down_refused == 1
            assert dict(gw.hub.threshold_overrides("r1")) == {"spo2.low.warning": 91.0}
            records = await home.records(gw)
            assert [(r.body.down_seq, r.body.reason.value) for r in records if isinstance(r.body, DownRefusedBody)] == [
                (5, "unknown_resident")
            ]
            confirmed = [(r.body.down_seq, r.body.message_type) for r in records if isinstance(r.body, DownAppliedBody)]
            assert confirmed == [(6, "thresholds")]
        async with home.running() as gw:
            assert dict(gw.hub.threshold_overrides("r1")) == {"spo2.low.warning": 91.0}

    run_in_home(scenario)
