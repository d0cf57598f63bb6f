"""Running ``carehub`` and ``carehub-hub`` as real processes, the way a shell runs them (for any test directory:
tests/ is on the import path, ``from clirun import carehub``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: ``carehub ARGS...`` through its console-script entry point (:func:`carehub.cli.main`).
CAREHUB = (sys.executable, "-c", "from carehub.cli import main; main()")
#: ``carehub-hub ARGS...`` (:func:`gateway.__main__.main`).
CAREHUB_HUB = (sys.executable, "-m", "gateway")

ROOT = Path(__file__).resolve().parents[1]


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment with the repository importable from any working directory, and wide lines."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["COLUMNS"] = "400"  # rich wraps at 80 columns on a pipe: keep each message on one line
    env.update(extra or {})
    return env


def carehub(
    *args: str | Path,
    cwd: Path | None = None,
    program: Sequence[str] = CAREHUB,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the command to completion; text output captured (``env``: variables to set on top of this one's)."""
    return subprocess.run(
        [*program, *map(str, args)],
        cwd=cwd,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on standard error (asserted to be just one, and no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]
