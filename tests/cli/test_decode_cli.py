"""`carehub decode`: JSON by default, a table with --pretty, one clear line and exit 2 on bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from carehub.cli import app

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
