"""Issue 17 item 6: the config check passes what the daemon then dies on.

``thresholds = { "bp.sistolic" = 180 }`` (a misspelt key), ``critical_high = -5`` (implausible), a warning above
the critical value (tiers out of order) and an unknown profile passed ``carehub-hub --check`` and ``carehub doctor``;
the daemon then died at start with a ``ThresholdError`` traceback. The config parser now resolves each resident's
thresholds as the hub does, so the check, the doctor and the start-up refuse the same sets with one line naming the
file and the key (exit status 2), through the real entry points.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from carehub.bench import provision
from gateway.config import ConfigError, load_config
from gateway.thresholds import resolve_thresholds

BAD = [
    ('thresholds = { "bp.sistolic" = 180 }', "residents[0].thresholds.bp.sistolic", "unknown threshold key"),
    ('thresholds = { "bp.systolic.critical_high" = -5 }', "residents[0].thresholds.bp.systolic.critical_high", "-5"),
    (
        'thresholds = { "bp.systolic.warning_high" = 190, "bp.systolic.critical_high" = 185 }',
        "residents[0].thresholds.bp.systolic.",
        "critical_high",
    ),
    ('profiles = ["hypertensoin"]', "residents[0].profiles", "hypertensoin"),
]


def _home(tmp_path: Path, line: str) -> Path:
    home = provision(tmp_path, "mqtt://127.0.0.1:9", link="local:thresholds-test")
    text = home.path.read_text(encoding="utf-8")
    assert "profiles = []\n" in text
    if line.startswith("profiles"):
        text = text.replace("profiles = []\n", line + "\n", 1)
    else:
        text = text.replace("profiles = []\n", "profiles = []\n" + line + "\n", 1)
    home.path.write_text(text, encoding="utf-8")
    return home.path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "400"}  # rich wraps the doctor's table at 80 columns on a pipe
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, check=False, env=env)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(("line", "key", "detail"), BAD)
def test_the_parser_refuses_what_the_hub_could_not_use(tmp_path: Path, line: str, key: str, detail: str) -> None:
    path = _home(tmp_path, line)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {key}")
    assert detail in str(info.value)


@pytest.mark.parametrize(("line", "key", "detail"), BAD)
def test_check_and_start_refuse_alike_in_one_line(tmp_path: Path, line: str, key: str, detail: str) -> None:
    path = _home(tmp_path, line)
    check = _run("-m", "gateway", "--config", str(path), "--check")
    start = _run("-m", "gateway", "--config", str(path), "--no-voice")
    assert (check.returncode, start.returncode) == (2, 2), (check.stderr, start.stderr[-2000:])
    assert _one_line(check) == _one_line(start)
    assert _one_line(check).startswith(f"error: {path}: {key}")
    assert detail in _one_line(check)


def test_doctor_reports_it_too(tmp_path: Path) -> None:
    path = _home(tmp_path, BAD[0][0])
    result = _run("-c", "from carehub.cli import main; main()", "doctor", "-c", str(path))
    assert result.returncode != 0
    assert "residents[0].thresholds.bp.sistolic" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_good_override_still_passes(tmp_path: Path) -> None:
    path = _home(tmp_path, 'thresholds = { "bp.systolic.critical_high" = 175 }')
    resident = load_config(path).residents[0]
    assert resident.thresholds == {"bp.systolic.critical_high": 175.0}
    resolve_thresholds(resident.profiles, dict(resident.thresholds))
    assert _run("-m", "gateway", "--config", str(path), "--check").returncode == 0
