"""`carehub bench`: one quick run measures every figure (no timing is asserted; targets live in the bench)."""

from __future__ import annotations

import math

import pytest

from carehub.bench import format_rows, run_all
from sim.broker import mosquitto_available

FIGURES = (
    "protocols_readings_per_s",
    "outbox_rows_per_s",
    "outbox_naive_rows_per_s",
    "group_commit_speedup",
    "backlog_drain_readings",
    "backlog_drain_s",
    "e2e_readings_per_s",
    "panic_local_p50_ms",
    "panic_local_p99_ms",
    "panic_platform_p50_ms",
    "panic_platform_p99_ms",
    "panic_hub_local_p99_ms",
    "panic_hub_platform_p99_ms",
    "gateway_rss_mb",
)


@pytest.mark.integration
@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed (scripts/test installs it)")
async def test_quick_run_measures_every_figure() -> None:
    results = await run_all(quick=True)
    assert results["quick"] is True
    figures: dict[str, float] = {}
    for key in FIGURES:
        value = results[key]
        assert isinstance(value, int | float), key
        assert math.isfinite(value), key
        assert value > 0, key
        figures[key] = value
    assert figures["panic_local_p50_ms"] <= figures["panic_local_p99_ms"]
    assert figures["panic_platform_p50_ms"] <= figures["panic_platform_p99_ms"]
    rows = dict(format_rows(results))
    assert set(FIGURES) <= rows.keys()
