"""``carehub sim fleet`` (issue 15 item 9): protocol-level hubs on the hub's own outbox and uplink storm a real
``carehub platform run`` worker through a real Mosquitto; the report compares what they produced with what the
platform stored. Figures are checked for completeness and consistency, never for speed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carehub.bench_platform import platform_worker, write_platform_config
from community.config import load_platform_config
from gateway.transport import TransportError
from sim.broker import MosquittoBroker, free_port
from sim.fleet import FleetOptions, _brokers, _plans, peak_rate, percentile, rate_after, steady_rate
from sim.fleet_hub import HubPlan, PanicTrace, ProcessPlan, ProcessResult, error_kind, transport_error

REPO = Path(__file__).resolve().parents[2]


def carehub(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from carehub.cli import main; main()", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.integration
async def test_a_storm_of_20_hubs_is_stored_exactly_once_and_its_panics_are_acked(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """20 hubs x 10 backlogged envelopes + 2 panics, all connecting at once, against a real worker process that
    stays up while the fleet enrols its hubs and reads the readings from another process. (Before the fix in
    community/storage.py this lost every record: the enrolment's closing connection deleted the worker's WAL.)"""
    config = write_platform_config(tmp_path / "platform", mosquitto.url)
    async with platform_worker(config):
        result = carehub(
            "sim", "fleet", "--config", config, "--hubs", "20", "--backlog", "10", "--panics", "2", "--processes", "2",
            "--panic-from", "0.2", "--panic-to", "0.5", "--timeout", "120", "--json",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["hubs"], report["processes"], report["backlog"], report["panics"]) == (20, 3, 10, 2)
    assert report["envelopes"] == report["records"] == 202
    assert report["stored"] == 202
    assert (report["lost"], report["duplicated"], report["unexpected"], report["refused"]) == (0, 0, 0, 0)
    assert report["lost_examples"] == []
    assert report["connects"] >= 20
    assert report["envelopes_sent"] >= 202
    assert report["amplification"] == pytest.approx(report["envelopes_published"] / 202, abs=1e-3)
    assert report["envelopes_published"] >= report["envelopes_sent"]
    assert report["amplification_pubacked"] == pytest.approx(report["envelopes_sent"] / 202, abs=1e-3)
    assert report["frames_sent"] >= 20 + 2  # every hub's backlog fits one frame; each panic travels alone
    for key in ("panic_p50_ms", "panic_p99_ms", "panic_max_ms", "drain_s", "envelopes_per_s"):
        assert isinstance(report[key], float), key
        assert math.isfinite(report[key]), key
        assert report[key] > 0, key
    assert report["panic_p50_ms"] <= report["panic_p99_ms"] <= report["panic_max_ms"]
    assert 0 < report["connected_s"] <= report["drain_s"]
    # Where the panics' latency went: each part is measured, none longer than the longest whole latency.
    for part in ("panic_hub_max_ms", "panic_puback_max_ms", "panic_platform_max_ms"):
        assert isinstance(report[part], float), part
        assert 0 <= report[part] <= report["panic_max_ms"] + 1e-3, part
    # The two pressing hubs ran in a probe process of their own; each panic's steps are in order.
    assert report["probe_processes"] == 1
    assert len(report["fleet_cpu_busy"]) == 3
    traces = report["panic_traces"]
    assert len(traces) == 2
    for trace in traces:
        assert trace["connected"] in (True, False)
        assert 0 <= trace["put_ms"] <= trace["offered_ms"] <= trace["publish_ms"] <= trace["acked_ms"], trace
        assert trace["publishes"] >= 1
        assert 0 <= trace["loop_lag_max_ms"] <= report["probe_loop_lag_max_ms"] + 1e-3
    assert max(t["acked_ms"] for t in traces) == report["panic_max_ms"]
    for key in ("loop_lag_max_ms", "loop_lag_p99_ms", "probe_loop_lag_max_ms", "probe_loop_lag_p99_ms"):
        assert isinstance(report[key], float), key
        assert report[key] >= 0, key
    assert report["loop_lag_p99_ms"] <= report["loop_lag_max_ms"]
    listed = carehub("platform", "readings", "-c", config, "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 202


@pytest.mark.integration
def test_a_fleet_that_cannot_drain_fails_in_one_line(tmp_path: Path) -> None:
    """No broker at the address: the hubs keep reconnecting (as hubs do) and the run fails loudly at its timeout."""
    config = write_platform_config(tmp_path / "platform", "mqtt://127.0.0.1:1883")
    result = carehub(
        "sim", "fleet", "--config", config, "--hubs", "3", "--backlog", "2", "--panics", "0",
        "--broker", f"mqtt://127.0.0.1:{free_port()}", "--timeout", "2",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "3 of 3 hubs not drained after 2 s" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--hubs", "0"), "--hubs"),
        (("--broker", "http://x:1"), "must look like mqtt://host:port"),
        (("--processes", "5", "--hubs", "2"), "--processes must be between 1 and the number of hubs"),
        (("--panic-from", "3", "--panic-to", "1"), "--panic-from"),
    ],
)
def test_bad_options_fail_in_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    config = write_platform_config(tmp_path / "platform", "mqtt://127.0.0.1:1883")
    result = carehub("sim", "fleet", "--config", config, *args, timeout=60)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_a_missing_platform_config_fails_in_one_line(tmp_path: Path) -> None:
    result = carehub("sim", "fleet", "--config", tmp_path / "nope.toml", timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "nope.toml" in lines[0]


def test_options_default_to_one_process_per_5000_hubs(tmp_path: Path) -> None:
    assert FleetOptions(config=tmp_path, hubs=1000).process_count == 1
    assert FleetOptions(config=tmp_path, hubs=10_000).process_count == 2
    assert FleetOptions(config=tmp_path, hubs=10_000, processes=4).process_count == 4


def test_the_peak_rate_is_the_best_window_of_the_summed_series() -> None:
    # The second process stopped sampling at its drain: its last count holds for the rest of the storm.
    assert peak_rate([[0, 10, 30, 60], [5, 5, 5]], 2) == 25.0
    assert peak_rate([[1, 2], [3]], 5) is None
    assert peak_rate([], 1) is None


def test_the_connected_rate_counts_what_was_acked_after_the_last_hub_connected() -> None:
    # Two processes; at 2.5 s they had 20 + 5 acked (halfway between their 2 s and 3 s samples).
    series, times = [[0, 10, 30, 60], [5, 5, 5]], [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0]]
    assert rate_after(series, times, 2.5, 10.0, 100) == round((100 - 25) / 7.5, 1)
    assert rate_after(series, times, 0.0, 10.0, 100) == 10.0  # from the start: the overall rate
    assert rate_after(series, times, 6.0, 10.0, 100) is None  # 4 s: too short to say


def test_the_steady_rate_stops_where_the_drains_tail_begins() -> None:
    # 10 a second until 90 of 100 at 9 s, then a tail: the last 10 take until 30 s.
    series = [[10 * k for k in range(1, 10)] + [90 + (k - 9) // 3 for k in range(10, 31)]]
    times = [[float(k) for k in range(1, 31)]]
    assert steady_rate(series, times, 2.0, 100, 0.9) == 10.0  # from 20 at 2 s to 90 at 9 s
    assert steady_rate(series, times, 2.0, 100, 0.95) == round((95 - 20) / (24 - 2), 1)  # 95 first at 24 s
    assert steady_rate(series, times, 2.0, 100, 1.0) is None  # never reached
    assert steady_rate(series, times, 7.0, 100, 0.9) is None  # 2 s: too short to say


def test_the_peak_rate_reads_late_samples_at_the_time_they_were_taken() -> None:
    """A loop that ran late took the samples due at 2, 3 and 4 s all at 4.5 s: counted as one a second, 10 -> 60 in
    two samples read as 25/s; on the clock 80 came in the 3.5 s from 1 to 4.5 s, about 23/s."""
    late = [10, 40, 60, 90, 100, 110]
    taken = [1.0, 4.5, 4.5, 4.5, 5.0, 6.0]
    assert peak_rate([late], 2) == 25.0
    assert peak_rate([late], 2, [taken]) == 23.0  # grid 1..6 s: 10, 33, 56, 79, 100, 110
    assert peak_rate([[0, 10, 30, 60]], 2, [[1.0, 2.0, 3.0, 4.0]]) == peak_rate([[0, 10, 30, 60]], 2)


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200), st.floats(0.1, 100))
def test_percentile_is_a_member_and_monotonic(values: list[float], q: float) -> None:
    p = percentile(values, q)
    assert p in values
    assert min(values) <= p <= percentile(values, 100) == max(values)
    assert percentile(values, min(100.0, q + 1)) >= p


@given(
    st.lists(
        st.builds(
            HubPlan,
            st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}", fullmatch=True),
            st.text("0123456789abcdef", min_size=64, max_size=64),
            st.integers(0, 1000),
            st.lists(st.floats(0, 100), max_size=3).map(tuple),
        ),
        max_size=5,
    ).map(tuple)
)
def test_a_process_plan_survives_its_json(hubs: tuple[HubPlan, ...]) -> None:
    plan = ProcessPlan(0, "127.0.0.1", 1883, "/tmp/x", "00" * 32, "11" * 32, 60.0, hubs)  # noqa: S108 - not opened
    assert ProcessPlan.from_json(plan.to_json()) == plan


def test_a_plan_keeps_its_panic_timing_through_json() -> None:
    hubs = (HubPlan("h1", "00" * 32, 3, (1.5,)),)
    plan = ProcessPlan(1, "127.0.0.1", 1883, "/tmp/y", "00" * 32, "11" * 32, 9.0, hubs, panics_after_connect=True)  # noqa: S108
    assert ProcessPlan.from_json(plan.to_json()).panics_after_connect is True


TRACE = PanicTrace(2.5, True, 0.5, 0.625, 0.75, 1.5, 2.25, 1, 0, 0, 0.125)


def test_a_truncated_result_is_refused() -> None:
    result = ProcessResult(
        0, 1, 2, 2, "f", 1, 2, 0, 1, 0, 0, (1.5,), 0.25, 0.1, (0, 2), 0, (TRACE,), 12.5, 3.25, 0.5, 1.0, (0.0, 12.5),
        probe=True, connection_errors=(("lost: x", 2),), acked_times=(1.0, 2.5),
    )  # fmt: skip
    assert ProcessResult.from_json(json.loads(result.to_json())) == result
    broken = json.loads(result.to_json())
    del broken["drain_s"]
    with pytest.raises(ValueError, match="drain_s"):
        ProcessResult.from_json(broken)
    garbled = json.loads(result.to_json())
    del garbled["panic_traces"][0]["puback_ms"]
    with pytest.raises(ValueError, match="puback_ms"):
        ProcessResult.from_json(garbled)


@pytest.mark.parametrize("nodes", [1, 2, 3])
def test_the_pressing_hubs_run_in_probe_processes_and_the_storm_keeps_its_size(tmp_path: Path, nodes: int) -> None:
    """A real hub has its own CPU: the hubs that press panics run on a loop of their own (one probe process per node
    they are on), every other hub in the bulk processes; every hub is planned once, with its backlog, on node
    n mod N as before."""
    config = load_platform_config(write_platform_config(tmp_path / "platform", "mqtt://127.0.0.1:1883"))
    brokers = tuple(f"mqtt://127.0.0.1:{1000 + k}" for k in range(nodes))
    options = FleetOptions(config=tmp_path, hubs=40, backlog=7, panics=5, processes=2, broker=brokers)
    plans = _plans(options, _brokers(options, config), config, tmp_path)
    planned = [(h, p) for p in plans for h in p.hubs]
    assert len(planned) == len({h.hub_id for h, _ in planned}) == 40
    assert all(h.backlog == 7 for h, _ in planned)
    assert sum(len(h.panics) for h, _ in planned) == 5
    assert all(p.probe == bool(h.panics) for h, p in planned)
    order = sorted(h.hub_id for h, _ in planned)  # hub n is fleet-<token>-<n>
    for hub, plan in planned:
        assert plan.port == 1000 + order.index(hub.hub_id) % nodes
    assert sorted(p.index for p in plans) == list(range(len(plans)))
    unprobed = _plans(dataclasses.replace(options, panic_probe=False), _brokers(options, config), config, tmp_path)
    assert not any(p.probe for p in unprobed)
    assert sum(len(p.hubs) for p in unprobed) == 40


def test_connection_errors_are_counted_by_kind_without_the_hubs_id() -> None:
    lost = TransportError("publish to carehub/v1/fleet-ab12-000042/up failed: Operation timed out")
    assert error_kind(lost, connected=True) == "lost: publish to carehub/v1/<hub>/up failed: Operation timed out"
    refused = TransportError("MqttError: Operation timed out")
    assert error_kind(refused, connected=False) == "connect: MqttError: Operation timed out"


def test_a_session_ended_by_the_uplinks_task_group_is_counted_by_its_transport_error() -> None:
    """The uplink's tasks end a lost session through their task group, so the fleet's connector sees an exception
    group, not the TransportError inside it (before, every such session went uncounted in connection_errors)."""
    lost = TransportError("no PUBACK within 60 s")
    assert transport_error(lost) is lost
    assert transport_error(ExceptionGroup("tasks", [ValueError("x"), ExceptionGroup("inner", [lost])])) is lost
    assert transport_error(ExceptionGroup("tasks", [ValueError("x")])) is None
    assert transport_error(asyncio.CancelledError()) is None
    assert error_kind(lost, connected=True) == "lost: no PUBACK within 60 s"
