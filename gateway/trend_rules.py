"""Trend rules: what one reading means beside the resident's earlier ones (pure; `gateway.rules` calls them).

- ``glucose.swing``: a glucose reading that differs from the previous one (within ``glucose.swing.window_s``) by more
  than ``glucose.swing.percent`` is a warning (community programme: a swing asks for a medication review).
- ``weight.gain_1d`` / ``weight.gain_3d``: weight gained over one day (notice) or three days (warning) beyond the
  thresholds, when ``weight.trend.enabled`` (the heart-failure profile turns it on; ESC HFA: > 2 kg in 3 days).

Each rule appends findings for what fires and a condition reference for what is back in range, and remembers the
reading in the resident's bounded history.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from gateway.findings import ConditionRef, Finding
from gateway.observations import Observation, Vital
from gateway.thresholds import SPECS, Key, Thresholds, Tier

__all__ = ["glucose_swing", "remember", "weight_gain"]

_ROUND = 6  # differences and percentages are rounded to 1e-6 so binary noise cannot decide a boundary


def remember(history: deque[tuple[datetime, float]], at: datetime, value: float, limit: int) -> None:
    """Insert keeping time order (a meter's stored backlog may arrive late), dropping the oldest beyond `limit`."""
    items = [*history, (at, value)]
    items.sort(key=lambda item: item[0])
    history.clear()
    history.extend(items[-limit:])


def glucose_swing(
    obs: Observation,
    history: deque[tuple[datetime, float]],
    t: Thresholds,
    limit: int,
    *,
    findings: list[Finding],
    normal: list[ConditionRef],
) -> None:
    """A glucose reading far (``glucose.swing.percent``) from the one before it within the window: a warning."""
    value = obs.value(Vital.GLUCOSE)
    if value is None:
        return
    window = timedelta(seconds=t[Key.GLUCOSE_SWING_WINDOW_S])
    previous = [(at, v) for at, v in history if at < obs.at]
    remember(history, obs.at, value, limit)
    if not t.enabled(Key.GLUCOSE_SWING_ENABLED) or not previous:
        normal.append(ConditionRef(obs.resident, "glucose.swing"))
        return
    prev_at, prev = previous[-1]
    if obs.at - prev_at > window or prev <= 0:
        normal.append(ConditionRef(obs.resident, "glucose.swing"))
        return
    percent = round(abs(value - prev) / prev * 100.0, _ROUND)
    threshold = t[Key.GLUCOSE_SWING_PERCENT]
    if not SPECS[Key.GLUCOSE_SWING_PERCENT].cmp.fires(percent, threshold):
        normal.append(ConditionRef(obs.resident, "glucose.swing"))
        return
    findings.append(
        Finding(
            obs.resident,
            "glucose.swing",
            Tier.WARNING,
            "glucose_swing",
            obs.at,
            value=percent,
            threshold=threshold,
            device=obs.device,
            record_id=obs.record_id,
        )
    )


def weight_gain(
    obs: Observation,
    history: deque[tuple[datetime, float]],
    t: Thresholds,
    limit: int,
    *,
    findings: list[Finding],
    normal: list[ConditionRef],
) -> None:
    """Weight gained over one day (notice) and three days (warning) beyond the thresholds, where enabled."""
    value = obs.value(Vital.WEIGHT)
    if value is None:
        return
    earlier = [(at, v) for at, v in history if at < obs.at]
    remember(history, obs.at, value, limit)
    for condition, days, key, tier in (
        ("weight.gain_3d", 3, Key.WEIGHT_GAIN_3D_WARNING_KG, Tier.WARNING),
        ("weight.gain_1d", 1, Key.WEIGHT_GAIN_1D_NOTICE_KG, Tier.NOTICE),
    ):
        since = obs.at - timedelta(days=days)
        window = [v for at, v in earlier if at >= since]
        threshold = t[key]
        gain = round(value - min(window), _ROUND) if window else 0.0
        if not t.enabled(Key.WEIGHT_TREND_ENABLED) or not SPECS[key].cmp.fires(gain, threshold):
            normal.append(ConditionRef(obs.resident, condition))
            continue
        findings.append(
            Finding(
                obs.resident,
                condition,
                tier,
                "weight_gain",
                obs.at,
                value=gain,
                threshold=threshold,
                device=obs.device,
                record_id=obs.record_id,
            )
        )
