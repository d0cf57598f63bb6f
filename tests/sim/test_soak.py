"""The soak (issue 17 item 7): its trend check, the outbox's write-saving pragmas, and a real quick soak.

The quick soak runs ``carehub sim soak --quick --json`` as its own process (2 simulated days, a broker outage and a
hub restart every day) and checks the report's figures against each other: nothing grew, the outbox was empty at
every quiet hour, and the bytes-per-record figure is the written bytes (differences of the process's
``/proc/self/io`` counter) over the records the home produced.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.outbox import open_outbox
from gateway.outbox_schema import PAGE_SIZE, WAL_AUTOCHECKPOINT_PAGES
from sim.soak import Sample, Tolerances, check_trends

_CAREHUB = (sys.executable, "-c", "from carehub.cli import main; main()")


def _day(day: int, **changes: Any) -> Sample:
    base = Sample(
        day=day,
        rss_kib=60_000,
        fds=19,
        tasks=47,
        threads=7,
        outbox_rows=0,
        outbox_bytes=0,
        files_bytes=300_000,
        write_bytes_total=day * 2_000_000,
        written_day=2_000_000,
        records_day=18,
    )
    return replace(base, **changes)


def test_a_flat_month_passes() -> None:
    assert check_trends([_day(d) for d in range(2, 31)]) == []


@pytest.mark.parametrize(
    ("figure", "first", "grown"),
    [
        ("fds", 19, 22),  # a descriptor leaked per restart
        ("tasks", 47, 51),
        ("threads", 7, 9),
        ("rss_kib", 60_000, 72_000),
        ("written_day", 2_000_000, 2_600_000),
        ("files_bytes", 300_000, 2_000_000),
    ],
)
def test_growth_in_the_last_week_fails(figure: str, first: int, grown: int) -> None:
    samples = [_day(d, **{figure: first}) for d in range(2, 24)]
    samples += [_day(d, **{figure: grown}) for d in range(24, 31)]
    findings = check_trends(samples)
    assert [f.figure for f in findings] == [figure]
    assert findings[0].last == grown


def test_an_outbox_not_empty_at_the_quiet_hour_fails() -> None:
    samples = [_day(d) for d in range(2, 10)]
    samples[3] = _day(5, outbox_rows=4)
    findings = check_trends(samples)
    assert [f.figure for f in findings] == ["outbox_rows (day 5)"]


def test_no_samples_is_a_finding() -> None:
    assert check_trends([]) != []


@given(
    days=st.integers(min_value=2, max_value=40),
    extra_fds=st.integers(min_value=0, max_value=10),
)
def test_fds_findings_follow_the_tolerance(days: int, extra_fds: int) -> None:
    """A short run compares thirds; whatever the length, the last window's excess decides."""
    samples = [_day(d) for d in range(days)]
    window = max(1, min(7, days // 3))
    samples[-window:] = [_day(s.day, fds=19 + extra_fds) for s in samples[-window:]]
    grew = extra_fds > Tolerances().fds and days > window  # one window covering all samples compares with itself
    assert any(f.figure == "fds" for f in check_trends(samples)) == grew


def test_a_new_outbox_uses_small_pages_and_a_bounded_wal(tmp_path: Path) -> None:
    path = tmp_path / "hub-outbox.sqlite"

    async def make() -> None:
        async with open_outbox(path, max_bytes=1 << 20):
            pass

    asyncio.run(make())
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 1024
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert WAL_AUTOCHECKPOINT_PAGES == 256


def test_an_existing_outbox_keeps_its_page_size(tmp_path: Path) -> None:
    path = tmp_path / "old-outbox.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("CREATE TABLE t (x)")
    conn.close()

    async def reopen() -> int:
        async with open_outbox(path, max_bytes=1 << 20) as outbox:
            return (await outbox.stats()).rows

    assert asyncio.run(reopen()) == 0
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    finally:
        conn.close()


@pytest.mark.integration
def test_a_quick_soak_in_its_own_process_grows_nothing() -> None:
    done = subprocess.run(
        [*_CAREHUB, "sim", "soak", "--quick", "--json"], capture_output=True, text=True, timeout=280, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    samples = report["samples"]
    assert len(samples) >= 2
    assert report["restarts"] >= 2
    assert report["outages"] >= 2
    assert report["lost"] == 0
    assert report["findings"] == []
    # Two restarts and two outages later, no more descriptors, tasks or threads than after the first day.
    assert samples[-1]["fds"] <= samples[0]["fds"]
    assert samples[-1]["tasks"] <= samples[0]["tasks"]
    assert samples[-1]["threads"] <= samples[0]["threads"]
    assert all(s["outbox_rows"] == 0 for s in samples)
    # The figures are differences of the process's write counter, over the records the home produced that day.
    for before, after in itertools.pairwise(samples):
        assert after["written_day"] == after["write_bytes_total"] - before["write_bytes_total"]
    assert samples[0]["warmup"]
    assert not any(s["warmup"] for s in samples[1:])
    counted = samples[1:]  # day 1's sample closes the warm-up (provisioning, first imports): no write figure
    written = sum(s["written_day"] for s in counted)
    records = sum(s["records_day"] for s in counted)
    assert records >= 14 * len(counted)  # the daily plan: 12 readings, a pendant test and a check-in
    assert report["bytes_per_record"] == round(written / records)
    # Every record is committed and fsynced at least once: at least one 4 KiB page of the file system per record.
    assert report["bytes_per_record"] >= 4096
