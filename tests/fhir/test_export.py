"""``carehub platform export --fhir DIR`` as a real process over a real SQLite platform database: one NDJSON file per
resource type, every line a valid R4B resource, every Observation reads back as its stored reading, re-export gives
the same bytes; bad input and failed runs are one line and leave nothing behind."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from analytics_data import store
from clirun import carehub, one_error_line
from fhir_data import T0, Day, measurement_record, validate

from community.fhir.readback import expected_facts, observation_facts
from protocols import gatt
from protocols.ieee11073 import MderFloat
from protocols.record import MeasurementBody, Record
from runtime import aio


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "platform.toml"
    cfg.write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1883"\n[storage]\ndatabase = "platform.db"\n'
        '[keys]\nidentity = "keys/platform.key"\n'
    )
    return cfg


def _read(directory: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        path.stem: [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted(directory.glob("*.ndjson"))
    }


def test_export_writes_valid_ndjson_that_reads_back_exactly(tmp_path: Path):
    day = Day()
    day.every_meter(0)
    day.every_meter(30)
    day.panic(90, "panic-1", answered_after=None)
    readings = aio.run(store(tmp_path / "platform.db", [day]))
    cfg = _config(tmp_path)

    result = carehub("platform", "export", "-c", cfg, "--fhir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "12 Observation" in result.stdout
    exported = _read(tmp_path / "out")
    assert sorted(exported) == ["Communication", "Device", "Flag", "Observation", "Patient"]
    assert {k: len(v) for k, v in exported.items()} == {
        "Communication": 1,
        "Device": 7,
        "Flag": 1,
        "Observation": 12,
        "Patient": 1,
    }
    for resource_type, resources in exported.items():
        for resource in resources:
            assert resource["resourceType"] == resource_type
            validate(resource)
    by_record = {r.record_id: r for r in readings}
    for obs in exported["Observation"]:
        facts = observation_facts(obs)
        assert facts == expected_facts(by_record[facts.record_id])
    for path in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # Exported again (into an empty directory that exists): the same bytes.
    (tmp_path / "again").mkdir()
    assert carehub("platform", "export", "-c", cfg, "--fhir", tmp_path / "again").returncode == 0
    for path in (tmp_path / "out").iterdir():
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes()


def test_bad_input_and_failed_runs_are_one_line_and_leave_nothing(tmp_path: Path):
    day = Day()
    day.every_meter(0)
    # A hub may seal any values into a measurement record; these are no blood pressure.
    good = measurement_record(gatt.BloodPressureMeasurement(MderFloat(120), MderFloat(80), MderFloat(93)), T0)
    broken = Record(
        record_id=bytes(16),
        hub_id="hub-wang",
        seq=99,
        hub_time=good.hub_time,
        body=MeasurementBody(0x2A35, b"", {"systolic": "high", "unit": "mmHg"}, resident_id="mrs-wang"),
        device_id="bp-1",
    )
    day.records.append(broken)
    aio.run(store(tmp_path / "platform.db", [day]))
    cfg = _config(tmp_path)

    failed = carehub("platform", "export", "-c", cfg, "--fhir", tmp_path / "out")
    assert failed.returncode == 1
    line = one_error_line(failed)
    assert "nothing written" in line
    assert "systolic" in line
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    refused = carehub("platform", "export", "-c", cfg, "--fhir", tmp_path / "full")
    assert refused.returncode == 2
    assert "not empty" in one_error_line(refused)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]

    zone = carehub("platform", "export", "-c", cfg, "--fhir", tmp_path / "z", "--zone", "Mars/Olympus")
    assert zone.returncode == 2
    assert "IANA" in one_error_line(zone)

    missing = carehub("platform", "export", "-c", tmp_path / "nope.toml", "--fhir", tmp_path / "m")
    assert missing.returncode == 2
    one_error_line(missing)
