"""The home's time zone: where the hub finds it, and schedules judged in it -- far from UTC and across DST changes,
with records in UTC throughout (issue 13 item 2)."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.clock import ManualClock, ZoneNameError, ZoneSource, system_zone, zone_named
from gateway.config import DeviceKind
from gateway.observations import Observation, Vital
from gateway.rules import ResidentRules, RuleEngine, ScheduleEntry
from gateway.thresholds import Tier, resolve_thresholds

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")  # 2026: CET -> CEST on 29 March at 01:00 UTC, back on 25 October at 01:00 UTC
NEW_YORK = ZoneInfo("America/New_York")  # 2026: EST -> EDT on 8 March at 07:00 UTC, back on 1 November at 06:00 UTC


# -- where the zone comes from -----------------------------------------------------------------------------------


def test_zone_names_are_checked_against_the_zone_database() -> None:
    assert zone_named("Asia/Shanghai") == SHANGHAI
    assert zone_named("Etc/GMT-8").utcoffset(None) == timedelta(hours=8)
    for bad in ("Asia", "Nowhere/Town", "localtime", "posixrules", "/etc/localtime", "../zoneinfo/UTC", "UTC+8"):
        with pytest.raises(ZoneNameError):
            zone_named(bad)


def test_system_zone_from_the_tz_variable() -> None:
    assert system_zone(environ={"TZ": "Asia/Shanghai"}).zone == SHANGHAI
    assert system_zone(environ={"TZ": ":Europe/Berlin"}).zone == BERLIN
    found = system_zone(environ={"TZ": "/usr/share/zoneinfo/America/New_York"})
    assert (found.zone, found.source) == (NEW_YORK, ZoneSource.TZ_VARIABLE)


def test_a_posix_tz_rule_falls_back_to_utc_with_a_note() -> None:
    found = system_zone(environ={"TZ": "CST-8"})
    assert (found.name, found.source) == ("UTC", ZoneSource.FALLBACK)
    assert "CST-8" in found.note
    assert "[hub] timezone" in found.note


def test_system_zone_from_the_localtime_link(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.symlink("../usr/share/zoneinfo/Europe/Berlin", tmp_path / "etc" / "localtime")
    (tmp_path / "etc" / "timezone").write_text("Asia/Shanghai\n")  # the link wins: it is what the C library reads
    found = system_zone(environ={}, root=tmp_path)
    assert (found.zone, found.source, found.note) == (BERLIN, ZoneSource.ETC_LOCALTIME, "")


def test_system_zone_from_etc_timezone_when_localtime_is_a_copy(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "localtime").write_bytes(b"TZif2 copied, not linked")
    (tmp_path / "etc" / "timezone").write_text("America/New_York\n")
    found = system_zone(environ={}, root=tmp_path)
    assert (found.zone, found.source) == (NEW_YORK, ZoneSource.ETC_TIMEZONE)


def test_a_system_that_names_no_zone_gives_utc_with_a_note(tmp_path: Path) -> None:
    found = system_zone(environ={}, root=tmp_path)
    assert (found.name, found.source) == ("UTC", ZoneSource.FALLBACK)
    assert "[hub] timezone" in found.note
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "timezone").write_text("Not/AZone\n")
    assert system_zone(environ={}, root=tmp_path).source is ZoneSource.FALLBACK


# -- schedules in the home's zone --------------------------------------------------------------------------------


def engine_in(zone: ZoneInfo, entry: ScheduleEntry, started_at: datetime) -> RuleEngine:
    rules = ResidentRules(resolve_thresholds(), (entry,))
    return RuleEngine({"r1": rules}, started_at=started_at, local_zone=zone, clock=ManualClock(started_at))


def missed(engine: RuleEngine, at: datetime) -> Tier | None:
    findings = [f for f in engine.tick(at).findings if f.condition == "schedule.missed"]
    for f in findings:
        assert f.at.utcoffset() == timedelta(0)  # what records carry is UTC
    return findings[0].tier if findings else None


def bp_at(at: datetime) -> Observation:
    values = {Vital.SYSTOLIC: 128.0, Vital.DIASTOLIC: 80.0}
    return Observation("r1", "C0:11:00:00:00:01", DeviceKind.BLOOD_PRESSURE, "bp", at, values)


def test_a_10_00_slot_in_shanghai_is_judged_at_shanghai_time() -> None:
    slot = ScheduleEntry(Vital.SYSTOLIC, time(10, 0), grace=timedelta(hours=1), escalate_after=timedelta(hours=2))
    start = datetime(2026, 11, 25, 6, 0, tzinfo=SHANGHAI)
    engine = engine_in(SHANGHAI, slot, start)
    assert missed(engine, datetime(2026, 11, 25, 10, 59, tzinfo=SHANGHAI)) is None
    assert missed(engine, datetime(2026, 11, 25, 3, 0, tzinfo=UTC)) is Tier.NOTICE  # 11:00 in Shanghai
    assert missed(engine, datetime(2026, 11, 25, 12, 59, tzinfo=SHANGHAI)) is Tier.NOTICE
    assert missed(engine, datetime(2026, 11, 25, 13, 0, tzinfo=SHANGHAI)) is Tier.WARNING
    # Measured at 14:00 local: satisfied until the next day's slot.
    engine.evaluate(bp_at(datetime(2026, 11, 25, 14, 0, tzinfo=SHANGHAI)))
    assert missed(engine, datetime(2026, 11, 26, 10, 59, tzinfo=SHANGHAI)) is None
    assert missed(engine, datetime(2026, 11, 26, 11, 0, tzinfo=SHANGHAI)) is Tier.NOTICE


def test_a_reading_taken_before_the_shanghai_window_does_not_count() -> None:
    slot = ScheduleEntry(Vital.SYSTOLIC, time(10, 0), grace=timedelta(hours=1), window=timedelta(hours=4))
    engine = engine_in(SHANGHAI, slot, datetime(2026, 11, 25, 0, 0, tzinfo=SHANGHAI))
    # 05:59 local is 21:59 UTC the day before: outside the window that opens at 06:00 local.
    engine.evaluate(bp_at(datetime(2026, 11, 24, 21, 59, tzinfo=UTC)))
    assert missed(engine, datetime(2026, 11, 25, 11, 0, tzinfo=SHANGHAI)) is Tier.NOTICE
    engine.evaluate(bp_at(datetime(2026, 11, 24, 22, 0, tzinfo=UTC)))  # 06:00 local: inside
    assert missed(engine, datetime(2026, 11, 25, 11, 0, tzinfo=SHANGHAI)) is None


@pytest.mark.parametrize(
    ("zone", "day", "due_utc"),
    [
        (BERLIN, date(2026, 3, 28), datetime(2026, 3, 28, 9, 0, tzinfo=UTC)),  # 10:00 CET
        (BERLIN, date(2026, 3, 29), datetime(2026, 3, 29, 8, 0, tzinfo=UTC)),  # 10:00 CEST, the first day
        (BERLIN, date(2026, 10, 25), datetime(2026, 10, 25, 9, 0, tzinfo=UTC)),  # 10:00 CET again
        (NEW_YORK, date(2026, 3, 7), datetime(2026, 3, 7, 15, 0, tzinfo=UTC)),  # 10:00 EST
        (NEW_YORK, date(2026, 3, 8), datetime(2026, 3, 8, 14, 0, tzinfo=UTC)),  # 10:00 EDT
        (NEW_YORK, date(2026, 11, 1), datetime(2026, 11, 1, 15, 0, tzinfo=UTC)),  # 10:00 EST
    ],
)
def test_a_10_00_slot_follows_the_dst_change(zone: ZoneInfo, day: date, due_utc: datetime) -> None:
    slot = ScheduleEntry(Vital.SYSTOLIC, time(10, 0), grace=timedelta(hours=1), escalate_after=timedelta(hours=2))
    engine = engine_in(zone, slot, datetime.combine(day, time(0, 0), tzinfo=zone))
    grace_end = due_utc + timedelta(hours=1)
    assert missed(engine, grace_end - timedelta(seconds=1)) is None
    assert missed(engine, grace_end) is Tier.NOTICE
    assert missed(engine, grace_end + timedelta(hours=2) - timedelta(seconds=1)) is Tier.NOTICE
    assert missed(engine, grace_end + timedelta(hours=2)) is Tier.WARNING


def test_a_slot_in_the_skipped_spring_hour_falls_due_an_hour_later() -> None:
    # Berlin, 29 March 2026: 02:00 CET is followed by 03:00 CEST; "02:30" is read as 03:30 CEST (01:30 UTC).
    slot = ScheduleEntry(Vital.SYSTOLIC, time(2, 30), grace=timedelta(minutes=30), escalate_after=timedelta(hours=1))
    engine = engine_in(BERLIN, slot, datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN))
    assert missed(engine, datetime(2026, 3, 29, 1, 59, tzinfo=UTC)) is None  # 03:59 CEST
    assert missed(engine, datetime(2026, 3, 29, 2, 0, tzinfo=UTC)) is Tier.NOTICE  # 04:00 CEST: 30 min after
    assert missed(engine, datetime(2026, 3, 29, 3, 0, tzinfo=UTC)) is Tier.WARNING


def test_a_slot_in_the_repeated_autumn_hour_falls_due_once_at_its_first_occurrence() -> None:
    # Berlin, 25 October 2026: 02:00-03:00 happens twice (CEST, then CET); "02:30" is the first, 00:30 UTC.
    slot = ScheduleEntry(Vital.SYSTOLIC, time(2, 30), grace=timedelta(minutes=30), escalate_after=timedelta(hours=1))
    engine = engine_in(BERLIN, slot, datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN))
    assert missed(engine, datetime(2026, 10, 25, 0, 59, tzinfo=UTC)) is None
    assert missed(engine, datetime(2026, 10, 25, 1, 0, tzinfo=UTC)) is Tier.NOTICE  # 02:00 CET, 30 min after
    assert missed(engine, datetime(2026, 10, 25, 2, 0, tzinfo=UTC)) is Tier.WARNING  # one hour later, not two
    engine.evaluate(bp_at(datetime(2026, 10, 25, 2, 5, tzinfo=UTC)))
    assert missed(engine, datetime(2026, 10, 25, 2, 10, tzinfo=UTC)) is None  # the second 02:30 is no new slot


@pytest.mark.parametrize(
    ("zone", "due", "start", "grace_end"),
    [
        # New York, 1 November 2026: 01:30 EDT (05:30 UTC) + 1 h of grace ends at 01:30 EST (06:30 UTC), not at
        # 02:30 EST: the grace is an hour of elapsed time, though the wall clock shows 01:30 twice.
        (
            NEW_YORK,
            time(1, 30),
            datetime(2026, 10, 31, 12, 0, tzinfo=NEW_YORK),
            datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
        ),
        # Berlin, 29 March 2026: 01:30 CET (00:30 UTC) + 1 h ends at 03:30 CEST (01:30 UTC).
        (BERLIN, time(1, 30), datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
    ],
)
def test_grace_across_a_dst_change_is_elapsed_time(
    zone: ZoneInfo, due: time, start: datetime, grace_end: datetime
) -> None:
    slot = ScheduleEntry(Vital.SYSTOLIC, due, grace=timedelta(hours=1))
    engine = engine_in(zone, slot, start)
    assert missed(engine, grace_end - timedelta(seconds=1)) is None
    assert missed(engine, grace_end) is Tier.NOTICE


# -- reminders at the due time --------------------------------------------------------------------------------------


def reminded(engine: RuleEngine, at: datetime) -> list[str]:
    return [r.subject for r in engine.tick(at).reminders]


def test_a_10_00_slot_in_shanghai_is_reminded_at_10_00_shanghai_time_once() -> None:
    slot = ScheduleEntry(Vital.SYSTOLIC, time(10, 0), grace=timedelta(hours=1))
    engine = engine_in(SHANGHAI, slot, datetime(2026, 11, 25, 6, 0, tzinfo=SHANGHAI))
    assert reminded(engine, datetime(2026, 11, 25, 9, 59, 59, tzinfo=SHANGHAI)) == []
    assert reminded(engine, datetime(2026, 11, 25, 2, 0, tzinfo=UTC)) == ["systolic@10:00"]  # 10:00 in Shanghai
    assert reminded(engine, datetime(2026, 11, 25, 10, 30, tzinfo=SHANGHAI)) == []  # once per slot
    assert reminded(engine, datetime(2026, 11, 26, 10, 0, tzinfo=SHANGHAI)) == ["systolic@10:00"]  # the next day's


def test_no_reminder_when_already_measured_for_the_slot_nor_after_its_grace() -> None:
    slot = ScheduleEntry(Vital.SYSTOLIC, time(10, 0), grace=timedelta(hours=1), window=timedelta(hours=4))
    engine = engine_in(SHANGHAI, slot, datetime(2026, 11, 25, 6, 0, tzinfo=SHANGHAI))
    engine.evaluate(bp_at(datetime(2026, 11, 25, 8, 0, tzinfo=SHANGHAI)))  # inside the window before 10:00
    assert reminded(engine, datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI)) == []
    # A tick that comes only after the grace ended (the hub was busy or off) does not remind late: it is missed.
    assert reminded(engine, datetime(2026, 11, 26, 11, 0, tzinfo=SHANGHAI)) == []
    assert missed(engine, datetime(2026, 11, 26, 11, 0, tzinfo=SHANGHAI)) is Tier.NOTICE


@pytest.mark.parametrize(
    ("zone", "day", "due_utc"),
    [
        (BERLIN, date(2026, 3, 29), datetime(2026, 3, 29, 8, 0, tzinfo=UTC)),  # 10:00 CEST, the first day
        (BERLIN, date(2026, 10, 25), datetime(2026, 10, 25, 9, 0, tzinfo=UTC)),  # 10:00 CET again
        (NEW_YORK, date(2026, 3, 8), datetime(2026, 3, 8, 14, 0, tzinfo=UTC)),  # 10:00 EDT
        (NEW_YORK, date(2026, 11, 1), datetime(2026, 11, 1, 15, 0, tzinfo=UTC)),  # 10:00 EST
    ],
)
def test_the_reminder_follows_the_dst_change(zone: ZoneInfo, day: date, due_utc: datetime) -> None:
    slot = ScheduleEntry(Vital.SYSTOLIC, time(10, 0), grace=timedelta(hours=1))
    engine = engine_in(zone, slot, datetime.combine(day, time(0, 0), tzinfo=zone))
    assert reminded(engine, due_utc - timedelta(seconds=1)) == []
    assert reminded(engine, due_utc) == ["systolic@10:00"]
