"""Trend charts: the SVG is parsed back (xml.etree) and every point, line and label is checked against the values it
was drawn from; no golden files."""

from __future__ import annotations

import datetime as _dt
import itertools
import xml.etree.ElementTree as ET
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from analytics_data import RESIDENT, Home, store
from hypothesis import example, given, settings
from hypothesis import strategies as st

from community.console.analytics import MealContext, Vital, VitalReading, vital_readings
from community.console.careplan import MeasurementKind
from community.console.charts import PERIODS, ZH_LABELS, ChartKind, Frame, trend_chart, trend_charts
from protocols import gatt
from protocols.thresholds import resolve_thresholds

NS = {"svg": "http://www.w3.org/2000/svg"}
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = _dt.datetime(2026, 3, 8, 14, 0, tzinfo=_dt.UTC)


def bp(i: int, at: _dt.datetime, sys: float, dia: float, *, unreliable: bool = False) -> VitalReading:
    values = {Vital.SYSTOLIC: sys, Vital.DIASTOLIC: dia, Vital.PULSE: 70.0}
    return VitalReading(
        f"{i:032x}", "hub", "bp-1", RESIDENT, at, MeasurementKind.BLOOD_PRESSURE, values, None, unreliable
    )


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - the chart module's own output, parsed to check it


def frame_of(root: ET.Element) -> Frame:
    plot = root.find("svg:g[@class='plot']", NS)
    assert plot is not None
    a = plot.attrib
    return Frame(
        float(a["data-x0"]),
        float(a["data-y0"]),
        float(a["data-width"]),
        float(a["data-height"]),
        _dt.datetime.fromisoformat(a["data-start"]),
        _dt.datetime.fromisoformat(a["data-end"]),
        float(a["data-min"]),
        float(a["data-max"]),
    )


def points(root: ET.Element, css: str) -> list[ET.Element]:
    return [c for c in root.iter("{http://www.w3.org/2000/svg}circle") if css in c.attrib.get("class", "").split()]


def test_points_map_back_to_the_readings_and_time():
    readings = [bp(i, NOW - _dt.timedelta(hours=11 * i + 1), 120 + 3 * i, 75 + i) for i in range(14)]
    readings.append(bp(99, NOW - _dt.timedelta(days=8), 250, 140))  # outside the 7 days: not drawn
    root = parse(trend_chart(ChartKind.BLOOD_PRESSURE, readings, now=NOW, days=7))
    frame = frame_of(root)
    assert (frame.start, frame.end) == (NOW - _dt.timedelta(days=7), NOW)
    drawn = {c.attrib["data-record"]: c for c in points(root, "systolic")}
    inside = [r for r in readings if r.taken_at >= NOW - _dt.timedelta(days=7)]
    assert set(drawn) == {r.record_id for r in inside}
    for r in inside:
        sys_point = drawn[r.record_id]
        assert frame.value_at(float(sys_point.attrib["cy"])) == pytest.approx(r.values[Vital.SYSTOLIC], abs=0.05)
        at = frame.time_at(float(sys_point.attrib["cx"]))
        assert abs((at - r.taken_at).total_seconds()) < 60 * 15  # 0.01 px of a 7-day axis is ~15 s
        assert float(sys_point.attrib["data-value"]) == r.values[Vital.SYSTOLIC]
        assert _dt.datetime.fromisoformat(sys_point.attrib["data-at"]) == r.taken_at
    dia = {c.attrib["data-record"]: float(c.attrib["cy"]) for c in points(root, "diastolic")}
    for r in inside:
        assert frame.value_at(dia[r.record_id]) == pytest.approx(r.values[Vital.DIASTOLIC], abs=0.05)
    # The lines join the points in time order.
    line = root.find(".//svg:polyline[@class='line systolic']", NS)
    assert line is not None
    coords = [tuple(map(float, p.split(","))) for p in line.attrib["points"].split()]
    ordered = sorted(inside, key=lambda r: r.taken_at)
    assert [frame.value_at(y) for _, y in coords] == pytest.approx(
        [r.values[Vital.SYSTOLIC] for r in ordered], abs=0.05
    )
    assert [x for x, _ in coords] == sorted(x for x, _ in coords)


def test_threshold_lines_sit_at_the_residents_values():
    readings = [bp(1, NOW - _dt.timedelta(hours=2), 150, 95)]
    root = parse(trend_chart(ChartKind.BLOOD_PRESSURE, readings, now=NOW, days=7))
    frame = frame_of(root)
    lines = {
        ln.attrib["data-key"]: ln
        for ln in root.iter("{http://www.w3.org/2000/svg}line")
        if "threshold" in ln.attrib["class"]
    }
    expected = {
        "bp.systolic.notice_high": 140.0,
        "bp.systolic.warning_high": 160.0,
        "bp.systolic.critical_high": 180.0,
        "bp.systolic.critical_low": 90.0,
        "bp.diastolic.notice_high": 90.0,
        "bp.diastolic.critical_high": 120.0,
        "programme": 110.0,  # the programme's diastolic line (its 180 coincides with the resident's systolic line)
    }
    assert {k: float(v.attrib["data-value"]) for k, v in lines.items()} == expected
    for key, value in expected.items():
        assert float(lines[key].attrib["y1"]) == pytest.approx(frame.y(value), abs=0.006)
        assert lines[key].attrib["y1"] == lines[key].attrib["y2"]
    # Under the hypertension profile the resident's own diastolic crisis line is 110: no separate programme line.
    root = parse(
        trend_chart(ChartKind.BLOOD_PRESSURE, readings, now=NOW, thresholds=resolve_thresholds(["hypertension"]))
    )
    keys = {
        ln.attrib["data-key"]: float(ln.attrib["data-value"])
        for ln in root.iter("{http://www.w3.org/2000/svg}line")
        if "threshold" in ln.attrib["class"]
    }
    assert keys["bp.diastolic.critical_high"] == 110.0
    assert "programme" not in keys
    # The in-range band spans the systolic notice band (warning_low .. notice_high).
    band = root.find(".//svg:rect[@class='band in-range']", NS)
    assert band is not None
    frame = frame_of(root)
    top, height = float(band.attrib["y"]), float(band.attrib["height"])
    assert (frame.value_at(top), frame.value_at(top + height)) == pytest.approx((140.0, 100.0), abs=0.05)


async def test_glucose_points_coloured_by_meal_from_stored_records(tmp_path: Path):
    home = Home()
    at = NOW - _dt.timedelta(days=1)
    home.glucose(at, 96, 1, gatt.Meal.FASTING)
    home.glucose(at + _dt.timedelta(hours=3), 165, 2, gatt.Meal.POSTPRANDIAL)
    home.glucose(at + _dt.timedelta(hours=9), 120, 3)
    stored = await store(tmp_path / "platform.db", [home])
    vitals = vital_readings(stored, SHANGHAI, resident_id=RESIDENT)
    root = parse(trend_chart(ChartKind.GLUCOSE, vitals, now=NOW, zone=SHANGHAI))
    frame = frame_of(root)
    drawn = [
        (c.attrib["class"], c.attrib["fill"], round(frame.value_at(float(c.attrib["cy"])), 1))
        for c in points(root, "glucose")
    ]
    assert drawn == [
        ("point glucose meal-fasting", "#2ca02c", 96.0),
        ("point glucose meal-postprandial", "#d62728", 165.0),
        ("point glucose meal-none", "#7f7f7f", 120.0),
    ]
    legend = [g.attrib["class"] for g in root.iter("{http://www.w3.org/2000/svg}g") if "legend" in g.attrib["class"]]
    assert legend == [f"legend meal-{m.value}" for m in MealContext] + ["legend meal-none"]
    assert root.find(".//svg:polyline", NS) is None  # glucose is drawn as points


def test_date_labels_are_local_midnights():
    root = parse(trend_chart(ChartKind.SPO2, [], now=NOW, days=7, zone=SHANGHAI))
    frame = frame_of(root)
    labels = [t for t in root.iter("{http://www.w3.org/2000/svg}text") if t.attrib.get("class") == "x-label"]
    # 7 days before 22:00 on 8 March (Shanghai): midnights 2..8 March.
    assert [t.attrib["data-date"] for t in labels] == [f"2026-03-{d:02d}" for d in range(2, 9)]
    assert [t.text for t in labels] == [f"03-{d:02d}" for d in range(2, 9)]
    for t in labels:
        midnight = _dt.datetime.combine(_dt.date.fromisoformat(t.attrib["data-date"]), _dt.time(0), tzinfo=SHANGHAI)
        assert float(t.attrib["x"]) == pytest.approx(frame.x(midnight.astimezone(_dt.UTC)), abs=0.006)
    empty = [t for t in root.iter("{http://www.w3.org/2000/svg}text") if t.attrib.get("class") == "empty"]
    assert [t.text for t in empty] == ["No readings in this period"]
    # 30 and 90 days: a label every 5 and 15 days.
    for days, step in ((30, 5), (90, 15)):
        root = parse(trend_chart(ChartKind.SPO2, [], now=NOW, days=days, zone=SHANGHAI))
        dates = [
            _dt.date.fromisoformat(t.attrib["data-date"])
            for t in root.iter("{http://www.w3.org/2000/svg}text")
            if t.attrib.get("class") == "x-label"
        ]
        assert {(b - a).days for a, b in itertools.pairwise(dates)} == {step}


def test_text_is_escaped_and_output_is_deterministic():
    hostile = 'Mrs <script>alert("x")</script> & "Wang"'
    readings = [bp(i, NOW - _dt.timedelta(hours=5 * i + 1), 130 + i, 80) for i in range(6)]
    svg = trend_chart(ChartKind.BLOOD_PRESSURE, readings, now=NOW, title=hostile)
    assert "<script>" not in svg
    root = parse(svg)
    assert root.find("svg:title", NS) is not None
    assert root.find("svg:title", NS).text == hostile  # type: ignore[union-attr]
    assert root.attrib["aria-label"] == hostile
    assert svg == trend_chart(ChartKind.BLOOD_PRESSURE, list(reversed(readings)), now=NOW, title=hostile)
    zh = trend_chart(ChartKind.BLOOD_PRESSURE, readings, now=NOW, labels=ZH_LABELS)
    assert parse(zh).find("svg:title", NS).text == "血压 (mmHg)"  # type: ignore[union-attr]


@settings(max_examples=80, deadline=None)
@given(title=st.text(max_size=60))
@example(title='a\r\nb\tc\x00<&>" \ud800')
def test_any_title_makes_valid_xml(title: str):
    root = parse(trend_chart(ChartKind.WEIGHT, [], now=NOW, title=title))
    valid = "".join(
        ch if ch in "\t\n\r" or "\x20" <= ch <= "\ud7ff" or "\ue000" <= ch <= "\ufffd" or ch > "\uffff" else "\ufffd"
        for ch in title
    )
    shown = root.find("svg:title", NS)
    assert shown is not None
    assert (shown.text or "") == valid
    assert root.attrib["aria-label"] == valid


def test_unreliable_readings_are_hollow_and_not_joined():
    readings = [
        bp(1, NOW - _dt.timedelta(hours=30), 130, 80),
        bp(2, NOW - _dt.timedelta(hours=20), 210, 130, unreliable=True),
        bp(3, NOW - _dt.timedelta(hours=10), 135, 82),
    ]
    root = parse(trend_chart(ChartKind.BLOOD_PRESSURE, readings, now=NOW))
    flagged = points(root, "unreliable")
    assert [(c.attrib["data-record"], c.attrib["fill"]) for c in flagged if "systolic" in c.attrib["class"]] == [
        (f"{2:032x}", "#ffffff")
    ]
    frame = frame_of(root)
    line = root.find(".//svg:polyline[@class='line systolic']", NS)
    assert line is not None
    values = [frame.value_at(float(p.split(",")[1])) for p in line.attrib["points"].split()]
    assert values == pytest.approx([130.0, 135.0], abs=0.05)
    assert frame.hi >= 210  # the scale still shows the flagged reading


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(list(ChartKind)),
    days=st.sampled_from(PERIODS),
    values=st.lists(st.floats(20, 300, allow_nan=False), min_size=0, max_size=40),
)
def test_every_chart_parses_and_every_point_is_inside_the_plot(kind: ChartKind, days: int, values: list[float]):
    vital = {
        ChartKind.BLOOD_PRESSURE: Vital.SYSTOLIC,
        ChartKind.GLUCOSE: Vital.GLUCOSE,
        ChartKind.SPO2: Vital.SPO2,
        ChartKind.WEIGHT: Vital.WEIGHT,
        ChartKind.HEART_RATE: Vital.PULSE,
        ChartKind.TEMPERATURE: Vital.TEMPERATURE,
    }[kind]
    readings = [
        VitalReading(
            f"{i:032x}",
            "h",
            "d",
            RESIDENT,
            NOW - _dt.timedelta(days=days) * (i + 0.5) / len(values),
            MeasurementKind.SPO2,
            {vital: v},
        )
        for i, v in enumerate(values)
    ]
    root = parse(trend_chart(kind, readings, now=NOW, days=days))
    frame = frame_of(root)
    drawn = points(root, vital.value)
    assert len(drawn) == len(values)
    for c in drawn:
        x, y = float(c.attrib["cx"]), float(c.attrib["cy"])
        assert frame.x0 - 0.01 <= x <= frame.x0 + frame.width + 0.01
        assert frame.y0 - 0.01 <= y <= frame.y0 + frame.height + 0.01
        assert frame.value_at(y) == pytest.approx(float(c.attrib["data-value"]), abs=(frame.hi - frame.lo) / 10000)


def test_all_charts_and_bad_arguments():
    charts = trend_charts([], now=NOW, days=30)
    assert list(charts) == list(ChartKind)
    for kind, svg in charts.items():
        assert parse(svg).attrib["class"] == f"trend {kind.value}"
    with pytest.raises(ValueError, match="positive"):
        trend_chart(ChartKind.SPO2, [], now=NOW, days=0)
    with pytest.raises(ValueError, match="aware"):
        trend_chart(ChartKind.SPO2, [], now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="200 x 120"):
        trend_chart(ChartKind.SPO2, [], now=NOW, width=100)
