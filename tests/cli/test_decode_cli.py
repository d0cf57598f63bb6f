"""`carehub decode`: JSON by default, a table with --pretty, one clear line and exit 2 on bad input."""

from __future__ import annotations

import json

import pytest
from clirun import carehub
from typer.testing import CliRunner

from carehub.cli import app
from protocols import gatt
from protocols.datetime_ import DateTime
from protocols.gatt.glucose import GlucoseUnit
from protocols.ieee11073 import MderFloat

runner = CliRunner()


def test_decode_prints_json() -> None:
    result = runner.invoke(app, ["decode", "2A35", "06 82 00 52 00 62 00 E2 07 04 11 0F 33 00 4E 00"])
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)
    assert values["systolic"] == 130
    assert values["diastolic"] == 82
    assert values["mean_arterial"] == 98
    assert values["pulse_rate"] == 78
    assert values["timestamp"] == "2018-04-17T15:51:00"
    assert values["unit"] == "mmHg"


def test_decode_accepts_uuid_forms_and_pretty() -> None:
    for uuid in ("0x2A19", "2a19", "00002a19-0000-1000-8000-00805f9b34fb"):
        result = runner.invoke(app, ["decode", uuid, "5a"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"battery_level": 90}
    pretty = runner.invoke(app, ["decode", "2A19", "5a", "--pretty"])
    assert pretty.exit_code == 0
    assert "battery_level" in pretty.stdout


@pytest.mark.parametrize(
    ("uuid", "data", "message"),
    [
        ("2A35", "06 82 00", "2A35 at offset 3"),
        ("2A99", "00", "unknown characteristic"),
        ("2A19", "zz", "not a hexadecimal"),
        ("0xZZ", "00", "not a hexadecimal number"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(uuid: str, data: str, message: str) -> None:
    result = runner.invoke(app, ["decode", uuid, data])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_every_command_has_help() -> None:
    for args in (["--help"], ["decode", "--help"], ["gateway", "--help"], ["platform", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.stdout


def _glucose_hex(concentration: float, unit: int = 0) -> str:
    measurement = gatt.GlucoseMeasurement(
        sequence_number=7,
        base_time=DateTime(2026, 11, 25, 3, 10, 0),
        concentration=MderFloat.from_value(concentration),
        unit=GlucoseUnit(unit),
        type=1,
        sample_location=1,
    )
    return bytes(measurement).hex()


def test_decode_shows_glucose_in_clinical_units_and_keeps_the_si_value() -> None:
    """Issue 16 item 6: 0.0007 kg/L is 70 mg/dL (3.89 mmol/L); 5.5 mmol/L sent as mol/L is 99.1 mg/dL."""
    result = carehub("decode", "2A18", _glucose_hex(70e-5))
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert (values["concentration"], values["unit"]) == (70.0, "mg/dL")
    assert (values["concentration_si"], values["unit_si"]) == (0.0007, "kg/L")
    mmol = json.loads(carehub("decode", "2A18", _glucose_hex(70e-5), "--units", "mmol").stdout)
    assert (mmol["concentration"], mmol["unit"]) == (3.89, "mmol/L")
    sent_in_mol = json.loads(carehub("decode", "2A18", _glucose_hex(55e-4, unit=1)).stdout)
    assert (sent_in_mol["concentration"], sent_in_mol["unit"]) == (99.1, "mg/dL")
    pretty = carehub("decode", "2A18", _glucose_hex(70e-5), "--pretty", "--units", "mg/dL")
    assert pretty.returncode == 0, pretty.stderr
    assert "mg/dL" in pretty.stdout
    assert "kg/L" in pretty.stdout  # the value as sent stays visible
    bad = carehub("decode", "2A18", _glucose_hex(70e-5), "--units", "stones")
    assert bad.returncode == 2
    assert "expected mgdl (mg/dL) or mmol (mmol/L)" in bad.stderr
