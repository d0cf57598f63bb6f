"""``carehub bench fhir`` as a real process: it measures the FHIR export figures (never asserts a speed) and needs no
broker; an unknown bench is one line."""

from __future__ import annotations

import json
import math

from clirun import carehub, one_error_line


def test_bench_fhir_reports_observations_per_second_and_the_goal_ratio():
    result = carehub("bench", "fhir", "--quick", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["quick"] is True
    per_s, ratio = figures["fhir_observations_per_s"], figures["fhir_goal_ratio"]
    assert math.isfinite(per_s)
    assert per_s > 0
    assert abs(ratio - per_s / 5000) <= 0.01  # both rounded for show
    table = carehub("bench", "fhir", "--quick")
    assert table.returncode == 0, table.stderr
    assert "fhir_observations_per_s" in table.stdout


def test_an_unknown_bench_is_one_line():
    result = carehub("bench", "fhri")
    assert result.returncode == 2
    assert "carehub bench [fhir|platform]" in one_error_line(result)
