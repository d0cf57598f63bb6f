"""`carehub decode` on CGM captures (issue 14 item 7): a hypo record with its warning octet, a padded one explained
strictly and decoded with ``--tolerant``, and a corrupted E2E-CRC refused in one line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from carehub.cli import app
from protocols.gatt.cgm import e2e_crc

runner = CliRunner()
HYPO = "07 20 3400 2300 04"  # size 7 | warning octet present | 52 mg/dL | 35 min | below the hypo level


def _with_crc(body: bytes) -> bytes:
    return body + e2e_crc(body).to_bytes(2, "little")


def test_a_hypo_record_decodes() -> None:
    result = runner.invoke(app, ["decode", "2AA7", HYPO])
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)
    assert (values["glucose"], values["unit"], values["time_offset_min"]) == (52, "mg/dL", 35)
    assert values["annunciation_names"] == ["below_hypo"]


def test_padding_is_explained_strictly_and_tolerated_on_request() -> None:
    strict = runner.invoke(app, ["decode", "2AA7", HYPO + " 0000"])
    assert strict.exit_code == 2
    assert len(strict.stderr.strip().splitlines()) == 1
    assert "2 trailing byte(s)" in strict.stderr
    tolerant = runner.invoke(app, ["decode", "2AA7", HYPO + " 0000", "--tolerant"])
    assert tolerant.exit_code == 0, tolerant.output
    assert json.loads(tolerant.stdout)["tolerated"] == ["trailing_bytes"]


def test_a_corrupted_crc_is_refused_in_one_line() -> None:
    good = _with_crc(bytes.fromhex("09 20 3400 2300 04"))
    assert runner.invoke(app, ["decode", "2AA7", good.hex()]).exit_code == 0
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    for flags in ([], ["--tolerant"]):
        result = runner.invoke(app, ["decode", "2AA7", bad.hex(), *flags])
        assert result.exit_code != 0
        assert len(result.stderr.strip().splitlines()) == 1
        assert "E2E-CRC" in result.stderr
