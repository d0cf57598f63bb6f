"""A home's day as FHIR resources: every resource validates with fhir.resources (R4B), references resolve, panic calls
are Communications (priority stat) with a Flag active only while unanswered, and an export made again is the same."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from analytics_data import store
from fhir_data import Day, all_resources, stored, validate

from community.fhir.mapping import exportable
from community.fhir.readback import expected_facts, observation_facts
from community.fhir.resources import RESOURCE_TYPES, build_export


def _day() -> Day:
    day = Day()
    day.every_meter(0)
    day.every_meter(30)
    day.panic(90, "panic-1", answered_after=2, counter=1)
    day.panic(200, "panic-2", answered_after=None, counter=2)
    return day


def _references(resource: Any) -> list[str]:
    if isinstance(resource, dict):
        found = [resource["reference"]] if isinstance(resource.get("reference"), str) else []
        return found + [ref for value in resource.values() for ref in _references(value)]
    if isinstance(resource, list):
        return [ref for value in resource for ref in _references(value)]
    return []


async def test_a_stored_day_exports_valid_linked_resources(tmp_path: Path):
    readings = await store(tmp_path / "platform.db", [_day(), Day(hub="hub-li", resident="mr-li")])
    export = build_export(readings)
    resources = all_resources(export.resources)
    for resource in resources:
        validate(resource)
    assert set(export.resources) == set(RESOURCE_TYPES)
    # Two homes: 12 + 0 measurements, a glucose context record each twice that is no Observation of its own.
    assert export.count("Observation") == 12
    assert export.count("Patient") == 1  # mr-li's hub sent nothing yet
    assert export.count("Device") == 7  # six meters and the pendant
    assert export.count("Communication") == 2
    assert export.count("Flag") == 2
    assert export.skipped == {"measurement 0x2A34": 2, "alarm record (in its Flag)": 3}
    ids = {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert len(ids) == len(resources)
    for resource in resources:
        assert set(_references(resource)) <= ids, resource["id"]
    # Each Observation reads back as its stored reading.
    by_record = {r.record_id: r for r in readings}
    for obs in export.resources["Observation"]:
        facts = observation_facts(obs)
        assert facts == expected_facts(by_record[facts.record_id])
    assert sum(1 for r in readings if exportable(r) is None) == 12
    # Exported again: the same resources, byte for byte.
    assert build_export(readings) == export


def test_panic_calls_are_stat_communications_with_a_flag_while_unanswered():
    readings = _stored(_day())
    export = build_export(readings)
    comms = export.resources["Communication"]
    # The pendant's records read back from their Communications: record id, time, pendant, resident.
    presses = {r.record_id: r for r in readings if r.kind == "panic"}
    for c in comms:
        press = presses[c["identifier"][0]["value"]]
        assert _dt.datetime.fromisoformat(c["sent"]) == press.hub_time
        assert c["sender"]["identifier"]["value"] == press.device
        assert c["subject"]["identifier"]["value"] == "mrs-wang"
    assert len(comms) == len(presses)
    assert [c["priority"] for c in comms] == ["stat", "stat"]
    assert all(c["category"][0]["coding"][0]["code"] == "alert" for c in comms)
    assert all(c["subject"]["identifier"]["value"] == "mrs-wang" for c in comms)
    flags = {f["identifier"][0]["value"]: f for f in export.resources["Flag"]}
    assert flags["panic-1"]["status"] == "inactive"
    assert "end" in flags["panic-1"]["period"]
    assert flags["panic-2"]["status"] == "active"
    assert "end" not in flags["panic-2"]["period"]
    assert flags["panic-2"]["subject"]["identifier"]["value"] == "mrs-wang"
    assert flags["panic-2"]["author"]["identifier"]["value"] == "pendant-1"
    about = {c["about"][0]["reference"] for c in comms}
    assert about == {f"Flag/{f['id']}" for f in flags.values()}
    # The device types: MDC device specialisations; the pendant has none.
    types = {d["identifier"][0]["value"]: d["type"] for d in export.resources["Device"]}
    assert types["bp-1"]["coding"][0]["code"] == "528391"
    assert types["oxi-1"]["coding"][0]["code"] == "528388"
    assert types["pendant-1"] == {"text": "panic pendant"}
    assert all(d["patient"]["identifier"]["value"] == "mrs-wang" for d in export.resources["Device"])


def test_answering_the_call_turns_its_flag_inactive_under_the_same_id():
    open_day = Day()
    open_day.panic(10, "panic-9", answered_after=None)
    answered_day = Day()
    answered_day.panic(10, "panic-9", answered_after=3)
    before = build_export(_stored(open_day)).resources["Flag"][0]
    after = build_export(_stored(answered_day)).resources["Flag"][0]
    assert before["id"] == after["id"]
    assert (before["status"], after["status"]) == ("active", "inactive")
    ended = _dt.datetime.fromisoformat(after["period"]["end"]) - _dt.datetime.fromisoformat(after["period"]["start"])
    assert ended == _dt.timedelta(minutes=3)


def _stored(day: Day) -> list[Any]:
    return [stored(r) for r in day.records]
