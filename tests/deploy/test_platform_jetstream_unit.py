"""The JetStream worker's template unit (issue 15 item 10, docs/district.md): systemd accepts it, and it runs
`carehub platform run` with a per-worker config and its metrics on a per-worker loopback port."""

from __future__ import annotations

from pathlib import Path

from unit_files import DEPLOY, assert_systemd_accepts, exec_start, needs_systemd_analyze

from community.metrics import MetricsAddress

UNIT = DEPLOY / "carehub-platform-jetstream@.service"


def test_the_unit_runs_platform_run_with_a_config_and_metrics_per_worker() -> None:
    program, *args = exec_start(UNIT)
    assert program.endswith("/carehub")
    assert args[:2] == ["platform", "run"]
    assert "%i" in args[args.index("--config") + 1]
    address = args[args.index("--metrics") + 1]
    assert address.startswith("127.0.0.1:")
    assert address.endswith("%i")
    MetricsAddress.parse(address.replace("%i", "1"))
    assert "nats-server.service" in UNIT.read_text(encoding="utf-8")


@needs_systemd_analyze
def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    assert_systemd_accepts(UNIT, exec_start(UNIT)[0], tmp_path, "carehub-platform-jetstream@1.service")
