"""`carehub decode` on captures real meters send (issue 14 item 5): strict by default, explaining padding and
reserved flag bits in one line with exit 2; `--tolerant` decodes them as the hub does and says what it tolerated."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from carehub.cli import app

runner = CliRunner()
PADDED = "04 7800 5000 6400 4800 0000"  # 120/80/100 mmHg, pulse 72, then two bytes of padding
RFU = "E4 7800 5000 6400 4800"  # the same reading with the reserved flag bits 5-7 set


def test_a_padded_capture_is_refused_strictly_with_the_padding_explained() -> None:
    result = runner.invoke(app, ["decode", "2A35", PADDED])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "2A35 at offset 9: 2 trailing byte(s) after the last field" in line
    assert "0000: padding after the value" in line
    assert "--tolerant" in line
    assert result.stdout == ""


def test_tolerant_decodes_a_padded_capture_and_says_so() -> None:
    result = runner.invoke(app, ["decode", "2A35", PADDED, "--tolerant"])
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)
    assert (values["systolic"], values["diastolic"], values["pulse_rate"]) == (120, 80, 72)
    assert values["tolerated"] == ["trailing_bytes"]
    assert "2 trailing byte(s) 0000 ignored" in result.stderr


def test_reserved_flag_bits_are_explained_strictly_and_tolerated_on_request() -> None:
    strict = runner.invoke(app, ["decode", "2A35", RFU])
    assert strict.exit_code == 2
    assert "reserved (RFU) flag bits 0xE0 are set" in strict.stderr
    assert len(strict.stderr.strip().splitlines()) == 1
    tolerant = runner.invoke(app, ["decode", "2A35", RFU + " 0000", "--tolerant", "--pretty"])
    assert tolerant.exit_code == 0, tolerant.output
    assert "tolerated" in tolerant.stdout
    assert "rfu_flags" in tolerant.stdout
    assert "trailing_bytes" in tolerant.stdout
    assert "reserved flag bits 0xE0 ignored" in tolerant.stderr


def test_tolerant_changes_nothing_for_an_exact_capture_and_refuses_what_cannot_be_read() -> None:
    exact = runner.invoke(app, ["decode", "2A35", "04 7800 5000 6400 4800", "--tolerant"])
    assert exact.exit_code == 0, exact.output
    assert "tolerated" not in json.loads(exact.stdout)
    assert exact.stderr == ""
    cut = runner.invoke(app, ["decode", "2A35", "04 7800 5000 6400", "--tolerant"])
    assert cut.exit_code == 2
    assert "Pulse Rate needs 2 byte(s)" in cut.stderr
    assert len(cut.stderr.strip().splitlines()) == 1
