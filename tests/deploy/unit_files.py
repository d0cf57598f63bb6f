"""The systemd unit files under deploy/, read and checked as systemd reads them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

#: For the tests that run ``systemd-analyze verify``.
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def exec_start(unit: Path) -> list[str]:
    """The words of the unit's one ``ExecStart=`` line (the program first)."""
    (line,) = [line for line in unit.read_text(encoding="utf-8").splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


def assert_systemd_accepts(unit: Path, program: str, tmp_path: Path, name: str) -> None:
    """``systemd-analyze verify`` passes the unit without a word of warning. verify insists that ExecStart's program
    exists, so it checks a copy named ``name`` (an instance name for a template) in ``tmp_path`` whose ``program`` is
    an executable stand-in."""
    stand_in = tmp_path / Path(program).name
    stand_in.write_text("#!/bin/sh\n", encoding="utf-8")
    stand_in.chmod(0o755)
    copy = tmp_path / name
    copy.write_text(unit.read_text(encoding="utf-8").replace(program, str(stand_in)), encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "systemd warns about the unit (an unknown key, a bad value)"
