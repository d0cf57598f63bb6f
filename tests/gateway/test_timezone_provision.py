"""`carehub provision init` writes the home's time zone into hub.toml: the installer's, else the machine's."""

# ruff: noqa: S106 - test broker passwords are fixed on purpose

from __future__ import annotations

import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.clock import ZoneSource
from gateway.config import load_config
from gateway.provision.errors import ProvisionError
from gateway.provision.files import HubPaths
from gateway.provision.steps import init_hub
from protocols.keys import PlatformIdentity

PLATFORM = PlatformIdentity.generate()
SHANGHAI = ZoneInfo("Asia/Shanghai")


def init(paths: HubPaths, timezone: str | None = None) -> None:
    init_hub(
        paths,
        hub_id="hub-0001",
        platform=PLATFORM.public,
        broker_url="mqtts://broker.example:8883",
        username="hub-0001",
        password="pw",
        timezone=timezone,
    )


def written_zone(paths: HubPaths) -> object:
    return tomllib.loads(paths.config.read_text())["hub"].get("timezone")


def test_the_installers_zone_is_written_and_kept_on_a_second_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    init(paths, "Asia/Shanghai")
    config = load_config(paths.config)
    assert (config.timezone, config.home_zone.source, config.timezone_note) == (SHANGHAI, ZoneSource.CONFIG, "")
    init(paths)  # again, without the option, on a machine set to another zone: the home's zone stays
    assert written_zone(paths) == "Asia/Shanghai"
    init(paths, "America/New_York")  # the installer corrects it
    assert load_config(paths.config).timezone == ZoneInfo("America/New_York")


def test_without_the_option_the_machines_zone_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    init(paths)
    assert written_zone(paths) == "Europe/Berlin"
    monkeypatch.setenv("TZ", "UTC")
    assert load_config(paths.config).timezone == ZoneInfo("Europe/Berlin")  # hub.toml, not the machine, decides


def test_a_machine_that_names_no_zone_writes_none_and_the_config_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "CST-8")
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    init(paths)
    assert written_zone(paths) is None
    config = load_config(paths.config)
    assert config.timezone == ZoneInfo("UTC")
    assert "[hub] timezone" in config.timezone_note


def test_a_wrong_zone_name_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    with pytest.raises(ProvisionError, match="Asia/Shangai") as info:
        init(paths, "Asia/Shangai")
    assert "IANA" in info.value.fix
    assert not paths.config.exists()
    init(paths, "Asia/Shanghai")
    before = paths.config.read_bytes()
    with pytest.raises(ProvisionError):
        init(paths, "GMT+8:00")
    assert paths.config.read_bytes() == before
