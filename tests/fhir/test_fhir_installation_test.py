"""Issue 16 item 2: installation-test records are no FHIR resource of the resident's. Every measurement of a day,
marked as the installation test's, exports no Observation (and the mapping refuses one, saying why); a marked test
press exports no Communication and no Flag; the same day unmarked exports them all."""

from __future__ import annotations

import dataclasses
import datetime as _dt

import pytest
from fhir_data import Day, stored

from community.fhir.mapping import ExportError, exportable, observation
from community.fhir.resources import build_export
from protocols.record import MeasurementBody, PanicBody, PanicEventType, Record, panic_record_id

T0 = _dt.datetime(2026, 3, 2, 1, 0, tzinfo=_dt.UTC)


def marked(record: Record) -> Record:
    body = record.body
    assert isinstance(body, MeasurementBody | PanicBody)
    return dataclasses.replace(record, body=dataclasses.replace(body, installation_test=True))


def installer_press(counter: int = 1) -> Record:
    body = PanicBody("pendant-1", PanicEventType.PRESS, counter, battery=90, installation_test=True)
    return Record(panic_record_id("pendant-1", counter, PanicEventType.PRESS), "hub-wang", 99, T0, body, "pendant-1")


def test_a_marked_day_exports_nothing_of_the_residents() -> None:
    day = Day()
    day.every_meter()
    real = build_export([stored(r) for r in day.records])
    assert real.count("Observation") == 6
    test_day = [stored(marked(r)) for r in day.records] + [stored(installer_press())]
    export = build_export(test_day)
    assert export.count("Observation") == 0
    assert export.count("Communication") == 0
    assert export.count("Flag") == 0
    assert export.count("Patient") == 0  # nothing in it is the resident's
    assert export.skipped["installation-test measurement"] == len(day.records)
    assert export.skipped["installation-test panic"] == 1


def test_the_mapping_says_why_and_refuses() -> None:
    day = Day()
    day.every_meter()
    reading = stored(marked(day.records[0]))
    assert exportable(reading) == "installation-test measurement"
    with pytest.raises(ExportError, match="installation-test measurement"):
        observation(reading)
    assert exportable(stored(day.records[0])) is None


def test_records_stored_before_the_mark_existed_export_as_ever() -> None:
    """A body stored without the key (every record before revision 6) is the resident's."""
    day = Day()
    day.every_meter()
    old = stored(day.records[0])
    body = {k: v for k, v in old.body.items() if k != "installation_test"}
    assert exportable(dataclasses.replace(old, body=body)) is None
