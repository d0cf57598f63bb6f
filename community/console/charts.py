"""Trend charts as server-side SVG (issue 18 item 3): no JavaScript, no CDN, deterministic output.

:func:`trend_chart` draws one vital sign of one resident over the last 7, 30 or 90 days: blood pressure (systolic and
diastolic lines), glucose (points coloured by meal context), SpO2, weight, heart rate and temperature, with the
resident's thresholds (:mod:`protocols.thresholds`; the programme's BP > 180/110 line, thresholds.md top) drawn as
dashed lines and the in-range band shaded. Axes carry value ticks and local dates. All text is XML-escaped.

The SVG says how to read it back: the plot area's ``<g class="plot">`` carries ``data-x0``, ``data-y0``,
``data-width``, ``data-height`` (the plot box in SVG units), ``data-start`` / ``data-end`` (the time span, ISO 8601
UTC) and ``data-min`` / ``data-max`` (the value span); each point has ``data-value`` and ``data-at``. So
``x = x0 + width * (t - start) / (end - start)`` and ``y = y0 + height * (max - v) / (max - min)``
(:class:`Frame`). Unreliable readings are drawn hollow and left out of the lines.
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from types import MappingProxyType
from typing import Final

from community.console.analytics import MealContext, Vital, VitalReading
from protocols.thresholds import Key, Thresholds, resolve_thresholds

__all__ = [
    "EN_LABELS",
    "PERIODS",
    "ZH_LABELS",
    "ChartKind",
    "ChartLabels",
    "Frame",
    "ThresholdLine",
    "chart_thresholds",
    "trend_chart",
    "trend_charts",
]

PERIODS: Final = (7, 30, 90)
"""The chart spans the console offers, in days."""


class ChartKind(enum.StrEnum):
    """One trend chart."""

    BLOOD_PRESSURE = "blood_pressure"
    GLUCOSE = "glucose"
    SPO2 = "spo2"
    WEIGHT = "weight"
    HEART_RATE = "heart_rate"
    TEMPERATURE = "temperature"


_VITALS: Final[Mapping[ChartKind, tuple[Vital, ...]]] = MappingProxyType(
    {
        ChartKind.BLOOD_PRESSURE: (Vital.SYSTOLIC, Vital.DIASTOLIC),
        ChartKind.GLUCOSE: (Vital.GLUCOSE,),
        ChartKind.SPO2: (Vital.SPO2,),
        ChartKind.WEIGHT: (Vital.WEIGHT,),
        ChartKind.HEART_RATE: (Vital.PULSE,),
        ChartKind.TEMPERATURE: (Vital.TEMPERATURE,),
    }
)


@dataclass(frozen=True, slots=True)
class ChartLabels:
    """The words a chart shows (the console passes its language's)."""

    titles: Mapping[ChartKind, str]
    vitals: Mapping[Vital, str]
    meals: Mapping[MealContext, str]
    no_meal: str
    no_readings: str
    threshold: str
    programme: str


EN_LABELS: Final = ChartLabels(
    titles=MappingProxyType(
        {
            ChartKind.BLOOD_PRESSURE: "Blood pressure (mmHg)",
            ChartKind.GLUCOSE: "Glucose (mg/dL)",
            ChartKind.SPO2: "SpO2 (%)",
            ChartKind.WEIGHT: "Weight (kg)",
            ChartKind.HEART_RATE: "Heart rate (bpm)",
            ChartKind.TEMPERATURE: "Temperature (°C)",
        }
    ),
    vitals=MappingProxyType(
        {
            Vital.SYSTOLIC: "systolic",
            Vital.DIASTOLIC: "diastolic",
            Vital.PULSE: "heart rate",
            Vital.GLUCOSE: "glucose",
            Vital.SPO2: "SpO2",
            Vital.TEMPERATURE: "temperature",
            Vital.WEIGHT: "weight",
        }
    ),
    meals=MappingProxyType(
        {
            MealContext.PREPRANDIAL: "before a meal",
            MealContext.POSTPRANDIAL: "after a meal",
            MealContext.FASTING: "fasting",
            MealContext.CASUAL: "casual",
            MealContext.BEDTIME: "bedtime",
        }
    ),
    no_meal="meal not given",
    no_readings="No readings in this period",
    threshold="threshold",
    programme="programme line 180/110",
)
ZH_LABELS: Final = ChartLabels(
    titles=MappingProxyType(
        {
            ChartKind.BLOOD_PRESSURE: "血压 (mmHg)",
            ChartKind.GLUCOSE: "血糖 (mg/dL)",
            ChartKind.SPO2: "血氧饱和度 (%)",
            ChartKind.WEIGHT: "体重 (kg)",
            ChartKind.HEART_RATE: "心率 (次/分)",
            ChartKind.TEMPERATURE: "体温 (°C)",
        }
    ),
    vitals=MappingProxyType(
        {
            Vital.SYSTOLIC: "收缩压",
            Vital.DIASTOLIC: "舒张压",
            Vital.PULSE: "心率",
            Vital.GLUCOSE: "血糖",
            Vital.SPO2: "血氧",
            Vital.TEMPERATURE: "体温",
            Vital.WEIGHT: "体重",
        }
    ),
    meals=MappingProxyType(
        {
            MealContext.PREPRANDIAL: "餐前",
            MealContext.POSTPRANDIAL: "餐后",
            MealContext.FASTING: "空腹",
            MealContext.CASUAL: "随机",
            MealContext.BEDTIME: "睡前",
        }
    ),
    no_meal="未注明",
    no_readings="此期间无读数",
    threshold="阈值",
    programme="项目线 180/110",
)

_SERIES_COLOURS: Final = MappingProxyType(
    {
        Vital.SYSTOLIC: "#c0392b",
        Vital.DIASTOLIC: "#2471a3",
        Vital.PULSE: "#7d3c98",
        Vital.GLUCOSE: "#555555",
        Vital.SPO2: "#117a65",
        Vital.TEMPERATURE: "#b9770e",
        Vital.WEIGHT: "#2e4053",
    }
)
_MEAL_COLOURS: Final = MappingProxyType(
    {
        MealContext.PREPRANDIAL: "#1f77b4",
        MealContext.POSTPRANDIAL: "#d62728",
        MealContext.FASTING: "#2ca02c",
        MealContext.CASUAL: "#9467bd",
        MealContext.BEDTIME: "#8c564b",
    }
)
_NO_MEAL_COLOUR: Final = "#7f7f7f"
_TIER_COLOURS: Final = MappingProxyType({"notice": "#d4ac0d", "warning": "#e67e22", "critical": "#c0392b"})


@dataclass(frozen=True, slots=True)
class ThresholdLine:
    """A horizontal line on a chart: a threshold of the resident's, or the programme's line."""

    vital: Vital
    value: float
    tier: str
    key: Key | None = None
    programme_rule: bool = False


# The lines each chart draws (the resident's own values), by tier; thresholds.md sources in protocols.thresholds.
_LINES: Final[Mapping[ChartKind, tuple[tuple[Vital, Key, str], ...]]] = MappingProxyType(
    {
        ChartKind.BLOOD_PRESSURE: (
            (Vital.SYSTOLIC, Key.BP_SYS_NOTICE_HIGH, "notice"),
            (Vital.SYSTOLIC, Key.BP_SYS_WARNING_HIGH, "warning"),
            (Vital.SYSTOLIC, Key.BP_SYS_CRITICAL_HIGH, "critical"),
            (Vital.SYSTOLIC, Key.BP_SYS_CRITICAL_LOW, "critical"),
            (Vital.DIASTOLIC, Key.BP_DIA_NOTICE_HIGH, "notice"),
            (Vital.DIASTOLIC, Key.BP_DIA_CRITICAL_HIGH, "critical"),
        ),
        ChartKind.GLUCOSE: (
            (Vital.GLUCOSE, Key.GLUCOSE_LOW_CRITICAL, "critical"),
            (Vital.GLUCOSE, Key.GLUCOSE_LOW_NOTICE, "notice"),
            (Vital.GLUCOSE, Key.GLUCOSE_HIGH_NOTICE, "notice"),
            (Vital.GLUCOSE, Key.GLUCOSE_HIGH_WARNING, "warning"),
        ),
        ChartKind.SPO2: (
            (Vital.SPO2, Key.SPO2_LOW_NOTICE, "notice"),
            (Vital.SPO2, Key.SPO2_LOW_WARNING, "warning"),
            (Vital.SPO2, Key.SPO2_LOW_CRITICAL, "critical"),
        ),
        ChartKind.WEIGHT: (),
        ChartKind.HEART_RATE: (
            (Vital.PULSE, Key.PULSE_LOW_CRITICAL, "critical"),
            (Vital.PULSE, Key.PULSE_LOW_NOTICE, "notice"),
            (Vital.PULSE, Key.PULSE_HIGH_NOTICE, "notice"),
            (Vital.PULSE, Key.PULSE_HIGH_WARNING, "warning"),
            (Vital.PULSE, Key.PULSE_HIGH_CRITICAL, "critical"),
        ),
        ChartKind.TEMPERATURE: (
            (Vital.TEMPERATURE, Key.TEMP_LOW_CRITICAL, "critical"),
            (Vital.TEMPERATURE, Key.TEMP_LOW_NOTICE, "notice"),
            (Vital.TEMPERATURE, Key.TEMP_HIGH_NOTICE, "notice"),
            (Vital.TEMPERATURE, Key.TEMP_HIGH_WARNING, "warning"),
        ),
    }
)
# The in-range band: (low key, high key) per chart, shaded.
_BANDS: Final[Mapping[ChartKind, tuple[Key | None, Key | None] | None]] = MappingProxyType(
    {
        ChartKind.BLOOD_PRESSURE: (Key.BP_SYS_WARNING_LOW, Key.BP_SYS_NOTICE_HIGH),
        ChartKind.GLUCOSE: (Key.GLUCOSE_LOW_NOTICE, Key.GLUCOSE_HIGH_NOTICE),
        ChartKind.SPO2: (Key.SPO2_LOW_NOTICE, None),
        ChartKind.WEIGHT: None,
        ChartKind.HEART_RATE: (Key.PULSE_LOW_NOTICE, Key.PULSE_HIGH_NOTICE),
        ChartKind.TEMPERATURE: (Key.TEMP_LOW_NOTICE, Key.TEMP_HIGH_NOTICE),
    }
)
# Values every chart shows even with no reading near them, so a chart's scale is stable (and always sensible).
_BASE_SPAN: Final[Mapping[ChartKind, tuple[float, float]]] = MappingProxyType(
    {
        ChartKind.BLOOD_PRESSURE: (60.0, 190.0),
        ChartKind.GLUCOSE: (40.0, 260.0),
        ChartKind.SPO2: (85.0, 100.0),
        ChartKind.HEART_RATE: (35.0, 140.0),
        ChartKind.TEMPERATURE: (34.5, 39.5),
    }
)
_PROGRAMME_LINES: Final = ((Vital.SYSTOLIC, 180.0), (Vital.DIASTOLIC, 110.0))


def chart_thresholds(kind: ChartKind, thresholds: Thresholds) -> tuple[ThresholdLine, ...]:
    """The lines ``kind``'s chart draws for a resident with ``thresholds`` (blood pressure: plus the community
    programme's 180/110 lines, thresholds.md top, where the resident's own critical lines differ)."""
    lines = [ThresholdLine(vital, thresholds[key], tier, key) for vital, key, tier in _LINES[kind]]
    if kind is ChartKind.BLOOD_PRESSURE:
        own = {(line.vital, line.value) for line in lines}
        lines += [
            ThresholdLine(vital, value, "critical", None, programme_rule=True)
            for vital, value in _PROGRAMME_LINES
            if (vital, value) not in own
        ]
    return tuple(lines)


@dataclass(frozen=True, slots=True)
class Frame:
    """The mapping between (time, value) and SVG coordinates of one chart's plot box."""

    x0: float
    y0: float
    width: float
    height: float
    start: _dt.datetime
    end: _dt.datetime
    lo: float
    hi: float

    def x(self, at: _dt.datetime) -> float:
        """The x of time ``at``."""
        return self.x0 + self.width * ((at - self.start) / (self.end - self.start))

    def y(self, value: float) -> float:
        """The y of ``value``."""
        return self.y0 + self.height * (self.hi - value) / (self.hi - self.lo)

    def value_at(self, y: float) -> float:
        """The value at height ``y`` (the inverse of :meth:`y`)."""
        return self.hi - (y - self.y0) * (self.hi - self.lo) / self.height

    def time_at(self, x: float) -> _dt.datetime:
        """The time at ``x`` (the inverse of :meth:`x`)."""
        return self.start + (self.end - self.start) * ((x - self.x0) / self.width)


def _n(value: float) -> str:
    """A coordinate, deterministic: two decimals, no ``-0.00``."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


# Characters XML 1.0 cannot carry even escaped (C0 controls but tab, newline and return; surrogates; U+FFFE/U+FFFF).
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: str) -> str:
    """``value`` as XML character data that reads back exactly: escaped, a carriage return as a character
    reference (a parser would read it as a newline), characters XML cannot carry replaced by U+FFFD."""
    return escape(_NOT_XML.sub("\ufffd", value), quote=False).replace("\r", "&#13;")


def _attr(value: str) -> str:
    """``value`` as an attribute value that reads back exactly (tab, newline and return as references)."""
    escaped = escape(_NOT_XML.sub("\ufffd", value), quote=True)
    return escaped.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")


def _nice_step(span: float, target: int = 6) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _domain(kind: ChartKind, values: Sequence[float]) -> tuple[float, float]:
    """The value span: the chart's base span (weight: the data's, 2 kg either side) widened to every value, then
    rounded out to whole ticks. Threshold lines outside it are not drawn."""
    if kind is ChartKind.WEIGHT:
        lo, hi = (min(values) - 2.0, max(values) + 2.0) if values else (50.0, 90.0)
    else:
        lo, hi = _BASE_SPAN[kind]
        if values:
            lo, hi = min(lo, *values), max(hi, *values)
    step = _nice_step(hi - lo)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


def _day_step(days: int) -> int:
    return 1 if days <= 10 else 5 if days <= 45 else 15


def trend_chart(
    kind: ChartKind,
    readings: Sequence[VitalReading],
    *,
    now: _dt.datetime,
    days: int = 7,
    thresholds: Thresholds | None = None,
    zone: _dt.tzinfo = _dt.UTC,
    labels: ChartLabels = EN_LABELS,
    title: str | None = None,
    width: int = 720,
    height: int = 260,
) -> str:
    """One trend chart as an SVG document (text).

    Args:
        kind: which chart.
        readings: the resident's readings (:func:`community.console.analytics.vital_readings`); those outside the
            ``days`` before ``now`` are left out.
        now: the right edge (timezone-aware).
        days: the span, normally one of :data:`PERIODS`.
        thresholds: the resident's thresholds (default: the catalogue's defaults).
        zone: the home's time zone, for the date labels.
        labels: the words shown (:data:`EN_LABELS`, :data:`ZH_LABELS`).
        title: the heading (default: the chart's name in ``labels``); escaped like all text.
        width: the SVG's width in px.
        height: its height in px.

    Raises:
        ValueError: ``days`` not positive, ``now`` naive, or a size too small to draw in.
    """
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if width < 200 or height < 120:
        raise ValueError("a chart needs at least 200 x 120 px")
    limits = thresholds if thresholds is not None else resolve_thresholds()
    end = now.astimezone(_dt.UTC)
    start = end - _dt.timedelta(days=days)
    vitals = _VITALS[kind]
    shown = [r for r in readings if start <= r.taken_at <= end and any(v in r.values for v in vitals)]
    shown.sort(key=lambda r: (r.taken_at, r.record_id))
    lines = chart_thresholds(kind, limits)
    values = [r.values[v] for r in shown for v in vitals if v in r.values]
    lo, hi = _domain(kind, values)
    frame = Frame(56.0, 34.0, width - 56.0 - 16.0, height - 34.0 - 46.0, start, end, lo, hi)
    heading = title if title is not None else labels.titles[kind]
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend {kind.value}" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{_attr(heading)}"'
        f' font-family="sans-serif" font-size="11">',
        f"<title>{_text(heading)}</title>",
        f'<text class="title" x="{_n(frame.x0)}" y="18" font-size="13" font-weight="bold">{_text(heading)}</text>',
        f'<g class="plot" data-x0="{_n(frame.x0)}" data-y0="{_n(frame.y0)}" data-width="{_n(frame.width)}"'
        f' data-height="{_n(frame.height)}" data-start="{start.isoformat()}" data-end="{end.isoformat()}"'
        f' data-min="{lo!r}" data-max="{hi!r}">',
        f'<rect class="frame" x="{_n(frame.x0)}" y="{_n(frame.y0)}" width="{_n(frame.width)}"'
        f' height="{_n(frame.height)}" fill="#ffffff" stroke="#999999"/>',
    ]
    band = _BANDS[kind]
    if band is not None:
        band_lo = limits[band[0]] if band[0] is not None else lo
        band_hi = limits[band[1]] if band[1] is not None else hi
        top, bottom = frame.y(min(max(band_hi, lo), hi)), frame.y(min(max(band_lo, lo), hi))
        out.append(
            f'<rect class="band in-range" x="{_n(frame.x0)}" y="{_n(top)}" width="{_n(frame.width)}"'
            f' height="{_n(bottom - top)}" fill="#e8f6ef" data-low="{band_lo!r}" data-high="{band_hi!r}"/>'
        )
    step = _nice_step(hi - lo)
    tick = lo
    while tick <= hi + step / 1000:
        y = frame.y(tick)
        out.append(
            f'<line class="grid" x1="{_n(frame.x0)}" x2="{_n(frame.x0 + frame.width)}" y1="{_n(y)}" y2="{_n(y)}"'
            f' stroke="#eeeeee"/>'
            f'<text class="y-label" x="{_n(frame.x0 - 6)}" y="{_n(y + 4)}" text-anchor="end">{tick:g}</text>'
        )
        tick = round(tick + step, 9)
    local_start = start.astimezone(zone).date()
    day_step = _day_step(days)
    day = local_start + _dt.timedelta(days=1)
    index = 0
    while True:
        at = _dt.datetime.combine(day, _dt.time(0), tzinfo=zone).astimezone(_dt.UTC)
        if at > end:
            break
        if index % day_step == 0:
            x = frame.x(at)
            out.append(
                f'<line class="x-tick" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(frame.y0)}"'
                f' y2="{_n(frame.y0 + frame.height)}" stroke="#f3f3f3"/>'
                f'<text class="x-label" x="{_n(x)}" y="{_n(frame.y0 + frame.height + 14)}" text-anchor="middle"'
                f' data-date="{day.isoformat()}">{day:%m-%d}</text>'
            )
        day += _dt.timedelta(days=1)
        index += 1
    for line in lines:
        if not lo <= line.value <= hi:
            continue
        y = frame.y(line.value)
        name = labels.programme if line.programme_rule else f"{labels.vitals[line.vital]} {labels.threshold}"
        key = line.key.value if line.key is not None else "programme"
        out.append(
            f'<line class="threshold {line.tier} {line.vital.value}" x1="{_n(frame.x0)}"'
            f' x2="{_n(frame.x0 + frame.width)}" y1="{_n(y)}" y2="{_n(y)}" stroke="{_TIER_COLOURS[line.tier]}"'
            f' stroke-dasharray="5 3" data-key="{_attr(key)}" data-value="{line.value!r}">'
            f"<title>{_text(name)} {line.value:g}</title></line>"
        )
    if not shown:
        out.append(
            f'<text class="empty" x="{_n(frame.x0 + frame.width / 2)}" y="{_n(frame.y0 + frame.height / 2)}"'
            f' text-anchor="middle" fill="#777777">{_text(labels.no_readings)}</text>'
        )
    for vital in vitals:
        series = [(r, r.values[vital]) for r in shown if vital in r.values]
        colour = _SERIES_COLOURS[vital]
        if kind is not ChartKind.GLUCOSE:
            steady = [(r, v) for r, v in series if not r.unreliable]
            if len(steady) > 1:
                points = " ".join(f"{_n(frame.x(r.taken_at))},{_n(frame.y(v))}" for r, v in steady)
                out.append(
                    f'<polyline class="line {vital.value}" fill="none" stroke="{colour}" stroke-width="1.5"'
                    f' points="{points}"/>'
                )
        for r, v in series:
            fill = colour
            meal_class = ""
            if kind is ChartKind.GLUCOSE:
                fill = _MEAL_COLOURS[r.meal] if r.meal is not None else _NO_MEAL_COLOUR
                meal_class = f" meal-{r.meal.value if r.meal is not None else 'none'}"
            flagged = " unreliable" if r.unreliable else ""
            paint = f'fill="#ffffff" stroke="{fill}"' if r.unreliable else f'fill="{fill}" stroke="{fill}"'
            local = r.taken_at.astimezone(zone)
            tip = f"{labels.vitals[vital]} {v:g} · {local:%Y-%m-%d %H:%M}"
            if kind is ChartKind.GLUCOSE:
                tip += f" · {labels.meals[r.meal] if r.meal is not None else labels.no_meal}"
            out.append(
                f'<circle class="point {vital.value}{meal_class}{flagged}" cx="{_n(frame.x(r.taken_at))}"'
                f' cy="{_n(frame.y(v))}" r="3" {paint} data-value="{v!r}" data-at="{r.taken_at.isoformat()}"'
                f' data-record="{_attr(r.record_id)}"><title>{_text(tip)}</title></circle>'
            )
    out.append("</g>")
    legend: list[tuple[str, str, str]] = []
    if kind is ChartKind.GLUCOSE:
        legend = [(f"meal-{m.value}", _MEAL_COLOURS[m], labels.meals[m]) for m in MealContext]
        legend.append(("meal-none", _NO_MEAL_COLOUR, labels.no_meal))
    else:
        legend = [(v.value, _SERIES_COLOURS[v], labels.vitals[v]) for v in vitals]
    x = frame.x0
    y = height - 10.0
    for css, colour, text in legend:
        out.append(
            f'<g class="legend {css}"><circle cx="{_n(x + 4)}" cy="{_n(y - 4)}" r="4" fill="{colour}"/>'
            f'<text x="{_n(x + 12)}" y="{_n(y)}">{_text(text)}</text></g>'
        )
        x += 16 + 7 * len(text) + 12
    out.append("</svg>")
    return "\n".join(out) + "\n"


def trend_charts(
    readings: Sequence[VitalReading],
    *,
    now: _dt.datetime,
    days: int = 7,
    thresholds: Thresholds | None = None,
    zone: _dt.tzinfo = _dt.UTC,
    labels: ChartLabels = EN_LABELS,
) -> dict[ChartKind, str]:
    """Every chart of one resident, in :class:`ChartKind` order."""
    return {
        kind: trend_chart(kind, readings, now=now, days=days, thresholds=thresholds, zone=zone, labels=labels)
        for kind in ChartKind
    }
