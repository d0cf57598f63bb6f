"""Run ``carehub`` as a user would (a fresh interpreter), for the console's command tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def carehub(*args: str | Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="400")
    return subprocess.run(
        [sys.executable, "-c", "from carehub.cli import main; main()", *map(str, args)],
        env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
