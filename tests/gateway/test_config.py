"""The hub config: parsed once, validated, and every error names the file and the key."""

from __future__ import annotations

import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.clock import ZoneSource
from gateway.config import ConfigError, DeviceKind, load_config, parse_config

GOOD = """
[hub]
id = "hub-0001"
key_file = "keys/hub.key"

[platform]
public_key_file = "keys/platform.pub"

[broker]
url = "mqtts://broker.example:8883"
username = "hub-0001"
password = "s3cret"

[storage]
path = "var/outbox.sqlite"
max_bytes = "64MB"

[ble]
link = "local:home"
max_connections = 2

[alarms]
fallback_command = ["/usr/local/bin/send-sms", "+000"]
panic_ack_timeout_s = 3

[[residents]]
id = "r1"
name = "Wang Fang"
language = "zh"
profiles = ["hypertension", "type2_diabetes"]
schedule = [{ vital = "blood_pressure", due = "10:00" }, { vital = "glucose", due = "08:30", grace_s = 1800 }]
[residents.thresholds]
"bp.systolic.critical_high" = 175

[[devices]]
address = "aa:bb:cc:dd:ee:01"
kind = "blood_pressure"
resident = "r1"

[[devices]]
address = "AA:BB:CC:DD:EE:02"
kind = "pendant"
resident = "r1"
pendant_key_file = "/etc/carehub/pendant.key"
"""


def test_good_config_parses_into_typed_values(tmp_path: Path) -> None:
    cfg = parse_config(GOOD, tmp_path / "hub.toml")
    assert cfg.hub_id == "hub-0001"
    assert cfg.hub_key_file == tmp_path / "keys/hub.key"
    assert cfg.broker.tls
    assert cfg.broker.port == 8883
    assert cfg.storage_max_bytes == 64_000_000
    assert cfg.ble_max_connections == 2
    assert cfg.fallback_command == ("/usr/local/bin/send-sms", "+000")
    assert cfg.panic_ack_timeout_s == 3.0
    assert cfg.resident("r1").thresholds == {"bp.systolic.critical_high": 175.0}
    assert [(e.vital, e.due.isoformat(), e.grace_s) for e in cfg.resident("r1").schedule] == [
        ("blood_pressure", "10:00:00", 3600.0),
        ("glucose", "08:30:00", 1800.0),
    ]
    assert cfg.device("AA:BB:CC:DD:EE:01") is not None
    assert cfg.device("aa:bb:cc:dd:ee:01") is not None
    assert cfg.device("AA:BB:CC:DD:EE:99") is None
    pendant = cfg.device("AA:BB:CC:DD:EE:02")
    assert pendant is not None
    assert pendant.kind is DeviceKind.PENDANT
    assert pendant.pendant_key_file == Path("/etc/carehub/pendant.key")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('url = "mqtts://broker.example:8883"', 'url = "http://x"', "broker.url"),
        ('id = "hub-0001"', 'id = "Hub/1"', "hub.id"),
        ('max_bytes = "64MB"', 'max_bytes = "lots"', "storage.max_bytes"),
        ("max_connections = 2", "max_connections = 0", "ble.max_connections"),
        ('kind = "blood_pressure"', 'kind = "toaster"', "devices[0].kind"),
        ('address = "aa:bb:cc:dd:ee:01"', 'address = "nope"', "devices[0].address"),
        ('language = "zh"', 'language = "xx"', "residents[0].language"),
        (
            '"bp.systolic.critical_high" = 175',
            '"bp.systolic.critical_high" = "high"',
            "residents[0].thresholds.bp.systolic.critical_high",
        ),
        ('pendant_key_file = "/etc/carehub/pendant.key"', "", "devices[1].pendant_key_file"),
        ('resident = "r1"\n\n[[devices]]', 'resident = "r9"\n\n[[devices]]', "devices[0].resident"),
        ("panic_ack_timeout_s = 3", "panic_ack_timeout_s = -1", "alarms.panic_ack_timeout_s"),
        ('due = "10:00"', 'due = "ten"', "residents[0].schedule[0].due"),
        ('vital = "glucose"', 'vital = "mood"', "residents[0].schedule[1].vital"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace(old, new, 1), tmp_path / "hub.toml")
    assert info.value.key == key
    assert str(info.value).startswith(f"{tmp_path / 'hub.toml'}: {key}: ")


def test_missing_table_and_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"hub\.toml: broker: missing table"):
        parse_config(GOOD.replace("[broker]", "[brokr]"), tmp_path / "hub.toml")
    with pytest.raises(ConfigError, match=r"\(syntax\)"):
        parse_config("[hub\n", tmp_path / "hub.toml")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


# -- the home's time zone ----------------------------------------------------------------------------------------

ZONED = GOOD.replace('key_file = "keys/hub.key"', 'key_file = "keys/hub.key"\ntimezone = "Asia/Shanghai"', 1)


def test_timezone_is_read_from_hub_toml(tmp_path: Path) -> None:
    cfg = parse_config(ZONED, tmp_path / "hub.toml")
    assert cfg.timezone == ZoneInfo("Asia/Shanghai")
    assert cfg.home_zone.source is ZoneSource.CONFIG
    assert cfg.timezone_note == ""


@pytest.mark.parametrize(
    "value",
    ['"Mars/Olympus_Mons"', '"Asia"', '"localtime"', '"../../etc/passwd"', '"+08:00"', '"Asia/Shanghai "', "8", '""'],
)
def test_a_timezone_that_is_not_an_iana_zone_names_the_file_and_key(tmp_path: Path, value: str) -> None:
    text = ZONED.replace('timezone = "Asia/Shanghai"', f"timezone = {value}", 1)
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "hub.toml")
    assert info.value.key == "hub.timezone"
    assert str(info.value).startswith(f"{tmp_path / 'hub.toml'}: hub.timezone: ")


def test_without_a_timezone_the_systems_zone_is_used_and_noted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    cfg = parse_config(GOOD, tmp_path / "hub.toml")
    assert cfg.timezone == ZoneInfo("America/New_York")
    assert cfg.home_zone.source is ZoneSource.TZ_VARIABLE
    assert "America/New_York" in cfg.timezone_note
    assert "not set" in cfg.timezone_note


def test_a_system_zone_that_names_no_iana_zone_falls_back_to_utc_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TZ", "CST-8")  # a POSIX rule: the C library follows it, the hub cannot name it
    with caplog.at_level(logging.WARNING, logger="gateway.config"):
        cfg = parse_config(GOOD, tmp_path / "hub.toml")
    assert cfg.timezone == ZoneInfo("UTC")
    assert cfg.home_zone.source is ZoneSource.FALLBACK
    assert "set [hub] timezone" in cfg.timezone_note
    assert any("hub.timezone" in r.getMessage() and "UTC" in r.getMessage() for r in caplog.records)
