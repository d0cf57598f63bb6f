"""The platform worker's template unit (issue 15 item 10): systemd accepts it, and it runs the real command with a
per-worker config and metrics address that `carehub platform run` accepts."""

from __future__ import annotations

from pathlib import Path

from unit_files import DEPLOY, assert_systemd_accepts, exec_start, needs_systemd_analyze

from community.metrics import MetricsAddress

UNIT = DEPLOY / "carehub-platform@.service"


def test_the_unit_runs_platform_run_with_a_config_and_metrics_per_worker() -> None:
    program, *args = exec_start(UNIT)
    assert program.endswith("/carehub")
    assert args[:2] == ["platform", "run"]
    config = args[args.index("--config") + 1]
    metrics = args[args.index("--metrics") + 1]
    assert "%i" in config
    assert "%i" in metrics
    for instance in ("1", "2", "9"):
        address = MetricsAddress.parse(metrics.replace("%i", instance))
        assert address.host == "127.0.0.1"
        assert address.port == int(f"946{instance}")


@needs_systemd_analyze
def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    assert_systemd_accepts(UNIT, exec_start(UNIT)[0], tmp_path, "carehub-platform@1.service")
