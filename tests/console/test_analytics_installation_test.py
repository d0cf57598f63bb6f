"""Issue 16 item 2: installation-test readings are in none of the console's figures (risk tier, upload rate, latest
values, trends and charts all read :func:`community.console.analytics.vital_readings`), while the same reading
without the mark, and records stored before the mark existed, count as ever. Records are sealed, opened and stored in
a real SQLite platform database first (``analytics_data.store``)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from analytics_data import RESIDENT, Home, store

from community.console.analytics import (
    ReasonKind,
    RiskTier,
    Vital,
    is_installation_test,
    resident_overview,
    upload_rate,
    vital_readings,
)
from community.console.careplan import CarePlan, KindPlan, MeasurementKind
from community.console.charts import ChartKind, trend_chart
from community.storage import StoredReading
from protocols.record import MeasurementBody, Record

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = _dt.datetime(2026, 3, 8, 22, 0, tzinfo=SHANGHAI)


def local(day: int, hour: int, minute: int = 0) -> _dt.datetime:
    return _dt.datetime(2026, 3, day, hour, minute, tzinfo=SHANGHAI).astimezone(_dt.UTC)


def marked(record: Record) -> Record:
    assert isinstance(record.body, MeasurementBody)
    return dataclasses.replace(record, body=dataclasses.replace(record.body, installation_test=True))


async def _home(tmp_path: Path, *, test: bool) -> tuple[list[StoredReading], str]:
    home = Home()
    for day in range(2, 9):
        for hour in (8, 20):
            if (day, hour) != (5, 20):
                home.bp(local(day, hour, 10), 128, 82)
    crisis = home.bp(local(5, 20, 10), 185, 125)  # in the missed slot: a crisis, if it were the resident's
    if test:
        home.records[home.records.index(crisis)] = marked(crisis)
    return await store(tmp_path / "platform.db", [home]), crisis.record_id.hex()


PLAN = CarePlan(
    RESIDENT,
    "Asia/Shanghai",
    (KindPlan(MeasurementKind.BLOOD_PRESSURE, (_dt.time(8), _dt.time(20))),),
    _dt.datetime(2026, 2, 1, tzinfo=SHANGHAI),
)


@pytest.mark.parametrize("test", [True, False])
async def test_a_test_reading_is_in_no_figure(tmp_path: Path, test: bool) -> None:
    stored, crisis = await _home(tmp_path, test=test)
    assert sum(is_installation_test(r) for r in stored) == (1 if test else 0)
    vitals = vital_readings(stored, SHANGHAI, resident_id=RESIDENT)
    rate = upload_rate(PLAN, vitals, now=NOW)
    overview = resident_overview(RESIDENT, stored, plan=PLAN, now=NOW)
    systolic = [v.value(Vital.SYSTOLIC) for v in vitals]
    chart = trend_chart(ChartKind.BLOOD_PRESSURE, vitals, now=NOW, zone=SHANGHAI)
    if test:  # the slot stays missed, nothing is a crisis, and the chart has no 185
        assert (rate.scheduled, rate.received) == (14, 13)
        assert 185 not in systolic
        assert overview.risk.tier is RiskTier.GREEN
    else:  # the same reading unmarked is the resident's
        assert (rate.scheduled, rate.received) == (14, 14)
        assert 185 in systolic
        assert overview.risk.tier is RiskTier.YELLOW  # a critical reading in the last week
    assert (ReasonKind.PAST_CRITICAL_READING in {r.kind for r in overview.risk.reasons}) is not test
    assert (f'data-record="{crisis}"' in chart) is not test
