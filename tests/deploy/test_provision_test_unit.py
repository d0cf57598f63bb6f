"""Issue 16.5/16.7: `carehub provision test` tells the installer to stop the unit the hub really runs as."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from clirun import carehub

from gateway.provision.testrun import SERVICE_UNIT, STOP_SERVICE
from protocols.keys import PlatformIdentity, save_platform_public_keys

ROOT = Path(__file__).resolve().parents[2]


def test_the_named_unit_is_the_shipped_unit_file_and_runs_the_daemon() -> None:
    unit_file = ROOT / "deploy" / f"{SERVICE_UNIT}.service"
    assert unit_file.is_file()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(unit_file, encoding="utf-8")
    assert Path(unit["Service"]["ExecStart"].split()[0]).name == "carehub-hub"
    assert f"systemctl stop {SERVICE_UNIT})" in STOP_SERVICE


def test_provision_test_tells_the_installer_to_stop_carehub_hub(tmp_path: Path) -> None:
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    config = tmp_path / "hub" / "hub.toml"
    init = carehub(
        "provision", "init", "--config", config, "--hub-id", "hub-0001",
        "--platform-keys", tmp_path / "platform.pub", "--broker-url", "mqtt://127.0.0.1:1",
        cwd=tmp_path,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    args = ("--config", config, "--installer", "me", "--link", "local:none")
    result = carehub("provision", "test", *args, cwd=tmp_path)
    # No device is paired, so the test stops there; the instruction comes first.
    assert "no devices are paired yet" in result.stderr
    assert "sudo systemctl stop carehub-hub)" in result.stdout
    assert re.search(r"systemctl stop carehub(?!-hub)", result.stdout) is None
