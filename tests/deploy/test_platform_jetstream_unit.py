"""The JetStream worker's template unit (issue 15 item 10, docs/district.md): systemd accepts it, and it runs
`carehub platform run` with a per-worker config and its metrics on a per-worker loopback port."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from community.metrics import MetricsAddress

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "carehub-platform-jetstream@.service"


def _exec_start() -> list[str]:
    (line,) = [line for line in UNIT.read_text(encoding="utf-8").splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


def test_the_unit_runs_platform_run_with_a_config_and_metrics_per_worker() -> None:
    program, *args = _exec_start()
    assert program.endswith("/carehub")
    assert args[:2] == ["platform", "run"]
    assert "%i" in args[args.index("--config") + 1]
    address = args[args.index("--metrics") + 1]
    assert address.startswith("127.0.0.1:")
    assert address.endswith("%i")
    MetricsAddress.parse(address.replace("%i", "1"))
    assert "nats-server.service" in UNIT.read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    program = _exec_start()[0]
    stand_in = tmp_path / "carehub"
    stand_in.write_text("#!/bin/sh\n", encoding="utf-8")
    stand_in.chmod(0o755)
    copy = tmp_path / "carehub-platform-jetstream@1.service"
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(program, str(stand_in)), encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "systemd warns about the unit (an unknown key, a bad value)"
