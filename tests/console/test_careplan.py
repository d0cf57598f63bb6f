"""Care plans: the typed plan, its store in the console database, and ``carehub platform careplan`` through the real
entry point (one-line errors, non-zero exits)."""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
import stat
from pathlib import Path

import pytest
from analytics_data import RESIDENT, Home, store
from clirun import carehub, one_error_line

from community.config import load_platform_config
from community.console.careplan import (
    CarePlan,
    CarePlanError,
    CarePlans,
    CarePlanStore,
    KindPlan,
    MeasurementKind,
    console_database,
    parse_kind_plan,
    plan_from_options,
    plan_from_schedule,
)
from gateway.config import SCHEDULABLE, ScheduleConfig

NOW = _dt.datetime(2026, 3, 8, 6, 0, tzinfo=_dt.UTC)


@pytest.mark.parametrize(
    ("text", "times", "per_day"),
    [
        ("08:00,20:00", (_dt.time(8), _dt.time(20)), 2),
        (" 20:00 , 07:30 ", (_dt.time(7, 30), _dt.time(20)), 2),
        ("1/day", (), 1),
        ("3x", (), 3),
        ("24 / day", (), 24),
    ],
)
def test_kind_specs(text: str, times: tuple[_dt.time, ...], per_day: int):
    plan = parse_kind_plan(MeasurementKind.GLUCOSE, text)
    assert (plan.times, plan.per_day) == (times, per_day)
    assert parse_kind_plan(MeasurementKind.GLUCOSE, plan.spec) == plan


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("25:00", "expected times"),
        ("8:00", "expected times"),
        ("08:00,", "expected times"),
        ("08:00,08:00", "given twice"),
        ("0/day", r"1\.\.24"),
        ("25/day", r"1\.\.24"),
        ("often", "expected times"),
    ],
)
def test_bad_kind_specs(text: str, match: str):
    with pytest.raises(CarePlanError, match=match):
        parse_kind_plan(MeasurementKind.BLOOD_PRESSURE, text)


def test_plan_validation():
    bp = KindPlan(MeasurementKind.BLOOD_PRESSURE, (_dt.time(20), _dt.time(8)))
    weight = KindPlan(MeasurementKind.WEIGHT, (), 1)
    plan = CarePlan("mrs-wang", "Asia/Shanghai", (weight, bp), NOW)
    assert [m.kind for m in plan.measurements] == [MeasurementKind.BLOOD_PRESSURE, MeasurementKind.WEIGHT]
    assert bp.times == (_dt.time(8), _dt.time(20))
    assert (plan.per_day, plan.of(MeasurementKind.WEIGHT), plan.of(MeasurementKind.SPO2)) == (3, weight, None)
    with pytest.raises(CarePlanError, match=r"IANA|zone database"):
        CarePlan("mrs-wang", "Mars/Olympus", (bp,), NOW)
    with pytest.raises(CarePlanError, match="no measurement"):
        CarePlan("mrs-wang", "UTC", (), NOW)
    with pytest.raises(CarePlanError, match="twice"):
        CarePlan("mrs-wang", "UTC", (bp, bp), NOW)
    with pytest.raises(CarePlanError, match="aware"):
        CarePlan("mrs-wang", "UTC", (bp,), NOW.replace(tzinfo=None))
    with pytest.raises(CarePlanError, match="resident id"):
        CarePlan("", "UTC", (bp,), NOW)
    with pytest.raises(CarePlanError, match="seconds"):
        KindPlan(MeasurementKind.PULSE, (_dt.time(8, 0, 30),))
    with pytest.raises(CarePlanError, match="does not match"):
        KindPlan(MeasurementKind.PULSE, (_dt.time(8),), 2)


def test_plan_from_options_starts_at_local_midnight():
    specs = {MeasurementKind.BLOOD_PRESSURE: "08:00", MeasurementKind.GLUCOSE: None}
    plan = plan_from_options("mrs-wang", "Asia/Shanghai", specs, "2026-03-09", NOW)
    assert plan.starts == _dt.datetime(2026, 3, 8, 16, 0, tzinfo=_dt.UTC)  # 00:00 in Shanghai
    assert plan_from_options("mrs-wang", "UTC", specs, None, NOW).starts == NOW
    with pytest.raises(CarePlanError, match=r"^--bp '8'"):
        plan_from_options("mrs-wang", "UTC", {MeasurementKind.BLOOD_PRESSURE: "8"}, None, NOW)
    with pytest.raises(CarePlanError, match="--starts"):
        plan_from_options("mrs-wang", "UTC", specs, "next week", NOW)


def test_kinds_are_the_hubs_and_a_hub_schedule_becomes_a_plan():
    assert {k.value for k in MeasurementKind} == set(SCHEDULABLE)
    schedule = (
        ScheduleConfig("blood_pressure", _dt.time(20), 3600.0),
        ScheduleConfig("glucose", _dt.time(7), 1800.0),
        ScheduleConfig("blood_pressure", _dt.time(8), 3600.0),
    )
    plan = plan_from_schedule("mrs-wang", "Asia/Shanghai", ((e.vital, e.due) for e in schedule), NOW)
    assert {m.kind: m.spec for m in plan.measurements} == {
        MeasurementKind.BLOOD_PRESSURE: "08:00,20:00",
        MeasurementKind.GLUCOSE: "07:00",
    }
    with pytest.raises(CarePlanError, match="'steps'"):
        plan_from_schedule("mrs-wang", "UTC", [("steps", _dt.time(9))], NOW)
    with pytest.raises(CarePlanError, match="no measurement"):
        plan_from_schedule("mrs-wang", "UTC", [], NOW)


async def test_store_round_trip_replace_and_remove(tmp_path: Path):
    db = console_database(tmp_path / "platform.db")
    assert db == tmp_path / "console.db"
    first = CarePlan(
        "mrs-wang",
        "Asia/Shanghai",
        (
            KindPlan(MeasurementKind.BLOOD_PRESSURE, (_dt.time(8), _dt.time(20))),
            KindPlan(MeasurementKind.WEIGHT, (), 1),
        ),
        NOW,
    )
    second = CarePlan("mrs-wang", "Asia/Shanghai", (KindPlan(MeasurementKind.GLUCOSE, (_dt.time(7),)),), NOW)
    other = CarePlan("mr-li", "Europe/Berlin", (KindPlan(MeasurementKind.SPO2, (), 2),), NOW)
    async with CarePlanStore(db) as opened:
        store: CarePlans = opened  # the SQLite store is a CarePlans
        assert await store.get("mrs-wang") is None
        await store.put(first, NOW)
        await store.put(other, NOW)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    async with CarePlanStore(db) as store:  # survives reopening
        assert await store.get("mrs-wang") == first
        await store.put(second, NOW)  # replaces the whole plan
        assert await store.all() == [other, second]
        assert await store.delete("mr-li") is True
        assert await store.delete("mr-li") is False
        assert await store.all() == [second]
    tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"plan_residents", "plan_kinds"}


async def test_a_damaged_row_is_a_typed_error(tmp_path: Path):
    db = tmp_path / "console.db"
    plan = CarePlan("mrs-wang", "UTC", (KindPlan(MeasurementKind.GLUCOSE, (_dt.time(7),)),), NOW)
    async with CarePlanStore(db) as store:
        await store.put(plan, NOW)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE plan_kinds SET times = '31:00'")
    conn.commit()
    conn.close()
    async with CarePlanStore(db) as store:
        with pytest.raises(CarePlanError, match="damaged"):
            await store.get("mrs-wang")


def test_careplan_commands_through_the_entry_point(tmp_path: Path):
    init = carehub("platform", "init", "--dir", tmp_path)
    assert init.returncode == 0, init.stderr
    config = tmp_path / "platform.toml"
    ok = carehub(
        "platform", "careplan", "set", "mrs-wang", "-c", config,
        "--bp", "08:00,20:00", "--glucose", "07:00", "--weight", "1/day",
        "--timezone", "Asia/Shanghai", "--starts", "2026-03-09",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    line = "mrs-wang (Asia/Shanghai, from 2026-03-09 00:00): blood_pressure=08:00,20:00 glucose=07:00 weight=1/day"
    assert ok.stdout.strip() == f"care plan set: {line}"
    shown = carehub("platform", "careplan", "show", "-c", config)
    assert (shown.returncode, shown.stdout.strip()) == (0, line)
    as_json = json.loads(carehub("platform", "careplan", "show", "mrs-wang", "-c", config, "--json").stdout)
    assert as_json == [
        {
            "resident": "mrs-wang",
            "timezone": "Asia/Shanghai",
            "starts": "2026-03-08T16:00:00+00:00",
            "measurements": {"blood_pressure": "08:00,20:00", "glucose": "07:00", "weight": "1/day"},
        }
    ]
    assert (tmp_path / "console.db").exists()

    bad_time = carehub("platform", "careplan", "set", "x", "-c", config, "--bp", "25:00", "--timezone", "UTC")
    assert bad_time.returncode == 2
    assert "--bp '25:00'" in one_error_line(bad_time)
    bad_zone = carehub("platform", "careplan", "set", "x", "-c", config, "--bp", "08:00", "--timezone", "Mars/Base")
    assert bad_zone.returncode == 2
    assert "Mars/Base" in one_error_line(bad_zone)
    nothing = carehub("platform", "careplan", "set", "x", "-c", config, "--timezone", "UTC")
    assert nothing.returncode == 2
    assert "at least one measurement" in one_error_line(nothing)
    missing = carehub("platform", "careplan", "show", "nobody", "-c", config)
    assert missing.returncode == 1
    assert "no care plan" in one_error_line(missing)
    no_config = carehub("platform", "careplan", "show", "-c", tmp_path / "nope.toml")
    assert no_config.returncode == 2
    one_error_line(no_config)
    removed = carehub("platform", "careplan", "remove", "mrs-wang", "-c", config)
    assert (removed.returncode, removed.stdout.strip()) == (0, "care plan of mrs-wang removed")
    assert carehub("platform", "careplan", "show", "-c", config).stdout == ""


async def test_rate_command_reads_the_stored_readings(tmp_path: Path):
    """``careplan rate`` against a real platform database: two daily slots placed 3 h and 15 h before the real
    present, so the last 7 days hold exactly 14 of them whatever the time of day; 13 readings stored."""
    assert carehub("platform", "init", "--dir", tmp_path).returncode == 0
    config = tmp_path / "platform.toml"
    now = _dt.datetime.now(_dt.UTC).replace(second=0, microsecond=0)
    dues = [now - _dt.timedelta(hours=3), now - _dt.timedelta(hours=15)]
    times = ",".join(sorted(f"{d:%H:%M}" for d in dues))
    starts = (now - _dt.timedelta(days=8)).isoformat()
    assert carehub(
        "platform", "careplan", "set", RESIDENT, "-c", config, "--bp", times, "--timezone", "UTC", "--starts", starts
    ).returncode == 0  # fmt: skip
    home = Home(zone="UTC")
    skipped = dues[1] - _dt.timedelta(days=4)
    for due in dues:
        for k in range(7):
            slot = due - _dt.timedelta(days=k)
            if slot != skipped:
                home.bp(slot + _dt.timedelta(minutes=5), 126, 81)
    await store(load_platform_config(config).database, [home])
    result = carehub("platform", "careplan", "rate", RESIDENT, "-c", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{RESIDENT}: 13 of 14 scheduled measurements received in the last 7 days (92.9%)",
        f"missed blood_pressure {skipped:%Y-%m-%d %H:%M}",
    ]
    as_json = json.loads(carehub("platform", "careplan", "rate", RESIDENT, "-c", config, "--json").stdout)
    assert (as_json["scheduled"], as_json["received"], as_json["percent"], as_json["failing"]) == (14, 13, 92.9, False)
    nobody = carehub("platform", "careplan", "rate", "nobody", "-c", config)
    assert nobody.returncode == 1
    assert "no care plan" in one_error_line(nobody)
