"""``carehub bench platform --quick --json`` (issue 15 item 9): one run prints every figure, measured (types and
consistency only: no timing is asserted; the figures go into the README)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from carehub.bench_platform import crypto_open_verify_us, process_cpu_s
from sim.broker import mosquitto_available
from sim.nats_broker import nats_server_available

REPO = Path(__file__).resolve().parents[2]

FIGURES = (
    "crypto_open_verify_us",
    "worker_cpu_per_envelope_us",
    "cpu_ratio_to_crypto",
    "envelopes_per_s",
    "storm_drain_s",
    "storm_connected_s",
    "storm_panic_p50_ms",
    "storm_panic_p99_ms",
    "storm_amplification",
    "worker_peak_rss_mb",
)
LAG_AND_SPLIT = (
    "storm_panic_seal_max_ms",
    "storm_panic_offer_max_ms",
    "storm_panic_dispatch_max_ms",
    "storm_panic_hub_max_ms",
    "storm_panic_loop_lag_max_ms",
    "storm_loop_lag_max_ms",
    "storm_loop_lag_p99_ms",
    "storm_probe_loop_lag_max_ms",
    "storm_fleet_cpu_busy_max",
)


def carehub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from carehub.cli import main; main()", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.integration
@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed (scripts/test installs it)")
def test_quick_platform_bench_prints_every_figure() -> None:
    result = carehub("bench", "platform", "--quick", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["quick"] is True
    assert figures["engine"] == "sqlite"
    assert (figures["hubs"], figures["backlog"], figures["panics"]) == (50, 20, 5)
    assert figures["envelopes"] == figures["stored"] == 50 * 20 + 5
    assert (figures["lost"], figures["duplicated"]) == (0, 0)
    for key in FIGURES:
        value = figures[key]
        assert isinstance(value, float), key
        assert math.isfinite(value), key
        assert value > 0, key
    assert figures["storm_panic_p50_ms"] <= figures["storm_panic_p99_ms"]
    assert figures["storm_amplification"] >= 1.0
    # Where the panics' time went, and how late the load generator's loops ran (measured, never judged here).
    for key in LAG_AND_SPLIT:
        assert isinstance(figures[key], float), key
        assert figures[key] >= 0, key
    assert figures["storm_loop_lag_p99_ms"] <= figures["storm_loop_lag_max_ms"]
    assert figures["storm_panic_hub_max_ms"] <= figures["storm_panic_p99_ms"] + 1e-3
    assert figures["fleet_processes"] == 2  # the bulk process and the pressing hubs' probe process
    assert isinstance(figures["storm_reconnects"], int)
    assert isinstance(figures["storm_panic_losses"], int)
    ratio = figures["worker_cpu_per_envelope_us"] / figures["crypto_open_verify_us"]
    assert figures["cpu_ratio_to_crypto"] == pytest.approx(ratio, rel=0.05)


@pytest.mark.integration
@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed (scripts/test installs it)")
def test_quick_platform_bench_on_postgresql(pg_server: Any) -> None:
    result = carehub("bench", "platform", "--quick", "--postgres", pg_server.create_database(), "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["engine"] == "postgresql"
    assert figures["envelopes"] == figures["stored"] == 1005
    assert (figures["lost"], figures["duplicated"]) == (0, 0)
    assert all(isinstance(figures[key], float) and figures[key] > 0 for key in FIGURES)


@pytest.mark.integration
@pytest.mark.skipif(not nats_server_available(), reason="nats-server is not installed (scripts/test installs it)")
def test_quick_platform_bench_through_nats_jetstream_on_postgresql(pg_server: Any) -> None:
    """The district's path: hubs on nats-server's MQTT listener, two JetStream workers, PostgreSQL."""
    result = carehub(
        "bench", "platform", "--quick", "--nats", "--workers", "2", "--panics-after-connect",
        "--postgres", pg_server.create_database(), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert (figures["engine"], figures["workers"]) == ("postgresql", 2)
    assert figures["broker"].startswith("nats-server 2.")
    assert figures["envelopes"] == figures["stored"] == 1005
    assert (figures["lost"], figures["duplicated"]) == (0, 0)
    assert all(isinstance(figures[key], float) and figures[key] > 0 for key in FIGURES)
    # Each panic was pressed after its hub had connected: the alarm lane's latency, not the broker's session set-up.
    assert figures["storm_panics_after_connect"] is True
    assert figures["storm_panics_unconnected"] == 0


def test_platform_options_are_refused_for_other_benches() -> None:
    result = carehub("bench", "fhir", "--hubs", "10")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "carehub bench platform" in result.stderr


def test_crypto_cost_and_process_cpu_are_measured() -> None:
    assert crypto_open_verify_us(20) > 0
    before, own = process_cpu_s(os.getpid()), time.process_time()
    while time.process_time() - own < 0.2:  # burn 0.2 s of this process's CPU
        sum(i * i for i in range(10_000))
    assert process_cpu_s(os.getpid()) - before >= 0.1  # /proc counts it too (in clock ticks)
