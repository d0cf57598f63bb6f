"""Every device report becomes a device-status record draft, without an event loop (issue 13.1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import DeviceConfig, DeviceKind
from gateway.core.device_reports import link_failure, report
from gateway.events import (
    BatteryLevel,
    ClockCorrected,
    DeviceReport,
    ErrorClass,
    LinkDown,
    LinkFailed,
    LinkUp,
    Misbehaviour,
)
from gateway.observations import Vital
from gateway.outbox import Lane
from protocols.record import DeviceStatusBody, LinkFailure, LinkState, Record

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
CUFF = DeviceConfig("C0:00:00:00:00:01", DeviceKind.BLOOD_PRESSURE, "r1", None, None, None)
PENDANT = DeviceConfig("C0:00:00:00:00:02", DeviceKind.PENDANT, "r1", None, None, Path("p.key"))

devices = st.sampled_from([CUFF, PENDANT])
texts = st.text(max_size=400)
reports: st.SearchStrategy[DeviceReport] = st.one_of(
    st.builds(BatteryLevel, devices, st.integers(-(2**40), 2**40)),
    st.builds(LinkUp, devices),
    st.builds(LinkDown, devices),
    st.builds(LinkFailed, devices, st.sampled_from(ErrorClass), texts),
    st.builds(
        ClockCorrected,
        devices,
        st.none() | st.text(min_size=1, max_size=40),
        st.none() | st.timedeltas(min_value=timedelta(days=-20000), max_value=timedelta(days=20000)),
    ),
    st.builds(Misbehaviour, devices, texts, st.binary(max_size=2000)),
)


@given(reports)
def test_every_report_is_a_routine_status_draft_that_encodes(event: DeviceReport) -> None:
    reported = report(event, NOW)
    draft = reported.draft
    assert isinstance(draft.body, DeviceStatusBody)
    assert (draft.lane, draft.record_id, draft.device, draft.hub_time) == (
        Lane.ROUTINE,
        None,
        event.device.address,
        NOW,
    )
    # The draft is a valid record once numbered (the sealer derives its id from the sequence number).
    Record(bytes(16), "hub-1", 1, NOW, draft.body, device_id=draft.device).to_cbor()


@pytest.mark.parametrize("level", [0, 57, 100])
def test_a_battery_level_is_recorded_and_judged(level: int) -> None:
    reported = report(BatteryLevel(PENDANT, level), NOW)
    assert reported.draft.body == DeviceStatusBody(battery=level)
    assert reported.battery is not None
    assert reported.battery.values == {Vital.BATTERY: float(level)}
    assert not reported.misbehaviour


@pytest.mark.parametrize("level", [-1, 101, 255])
def test_an_impossible_battery_level_is_misbehaviour_not_a_battery(level: int) -> None:
    reported = report(BatteryLevel(CUFF, level), NOW)
    assert isinstance(reported.draft.body, DeviceStatusBody)
    assert reported.draft.body.battery is None
    assert reported.draft.body.detail is not None
    assert str(level) in reported.draft.body.detail
    assert reported.battery is None
    assert reported.misbehaviour


def test_link_changes_failures_clock_and_misbehaviour_keep_their_content() -> None:
    assert report(LinkUp(CUFF), NOW).draft.body == DeviceStatusBody(link=LinkState.CONNECTED)
    assert report(LinkDown(CUFF), NOW).draft.body == DeviceStatusBody(link=LinkState.DISCONNECTED)
    failed = report(LinkFailed(CUFF, ErrorClass.AUTH, "bonding refused"), NOW).draft.body
    assert failed == DeviceStatusBody(link=LinkState.FAILED, failure=LinkFailure.AUTH, detail="bonding refused")
    clock = report(ClockCorrected(CUFF, "2000-01-01T00:00:07", timedelta(seconds=-90)), NOW).draft.body
    assert isinstance(clock, DeviceStatusBody)
    assert clock.clock_correction is not None
    assert (clock.clock_correction.old_device_time, clock.clock_correction.offset_seconds) == (
        "2000-01-01T00:00:07",
        -90,
    )
    unknown = report(ClockCorrected(CUFF, None, None), NOW).draft.body
    assert isinstance(unknown, DeviceStatusBody)
    assert unknown.clock_correction is not None
    assert (unknown.clock_correction.old_device_time, unknown.clock_correction.offset_seconds) == ("unknown", None)
    odd = report(Misbehaviour(CUFF, "flags promise a timestamp", b"\x1e\x01"), NOW)
    assert odd.draft.body == DeviceStatusBody(detail="flags promise a timestamp", raw=b"\x1e\x01")
    assert odd.misbehaviour


@pytest.mark.parametrize("error_class", list(ErrorClass))
def test_every_error_class_has_a_wire_name(error_class: ErrorClass) -> None:
    assert link_failure(error_class).value == error_class.value
    assert {f.value for f in LinkFailure} == {e.value for e in ErrorClass}
