"""An operator's first day with ``carehub platform`` (issue 16 item 6), through the ``carehub`` entry point: ``init``
writes a checked config and keys and changes nothing when run again; ``enroll`` shows the hub's key id as
``provision init`` does; ``readings`` fits 80 columns and shows glucose in clinical units."""

from __future__ import annotations

import asyncio
import datetime as _dt
import stat
import subprocess
from pathlib import Path

from clirun import CAREHUB, carehub, environment, one_error_line

from community.config import load_platform_config
from community.samples import T0, bp_record
from community.storage import EnvelopeToStore, SqliteStorage, StoredReading
from protocols.datetime_ import DateTime
from protocols.gatt import GlucoseMeasurement
from protocols.ieee11073 import MderFloat
from protocols.keys import HubIdentity, load_platform_public_keys, save_hub_public_key
from protocols.record import MeasurementBody, Record, measurement_record_id


def _init(directory: Path) -> Path:
    result = carehub("platform", "init", "--dir", directory)
    assert result.returncode == 0, result.stderr
    return directory / "platform.toml"


def test_init_writes_a_checked_config_and_keys_and_is_idempotent(tmp_path: Path) -> None:
    home = tmp_path / "platform"
    config = _init(home)
    cfg = load_platform_config(config)
    assert cfg.database == home / "platform.db"
    assert stat.S_IMODE(cfg.identity_file.stat().st_mode) == 0o600
    public = load_platform_public_keys(home / "keys" / "platform.pub")
    assert cfg.identity().public == public
    before = {p.name: p.read_bytes() for p in (config, cfg.identity_file, home / "keys" / "platform.pub")}

    again = carehub("platform", "init", "--dir", home)
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    assert public.key_id in again.stdout
    after = {p.name: p.read_bytes() for p in (config, cfg.identity_file, home / "keys" / "platform.pub")}
    assert after == before


def test_init_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    bad = carehub("platform", "init", "--dir", tmp_path / "a", "--broker", "http://broker:1883")
    assert bad.returncode == 2
    assert "mqtt://host:port" in one_error_line(bad)
    assert not (tmp_path / "a" / "platform.toml").exists()

    broken = tmp_path / "b"
    broken.mkdir()
    (broken / "platform.toml").write_text("[broker\n")
    result = carehub("platform", "init", "--dir", broken)
    assert result.returncode == 2
    assert "not valid TOML" in one_error_line(result)
    assert (broken / "platform.toml").read_text() == "[broker\n"  # left for the operator to fix


def test_enroll_shows_the_key_id_provision_init_shows(tmp_path: Path) -> None:
    config = _init(tmp_path)
    hub = HubIdentity.generate("hub-a")
    save_hub_public_key(tmp_path / "hub-a.pub", hub.public)
    result = carehub("platform", "enroll", "-c", config, "--key-file", tmp_path / "hub-a.pub")
    assert result.returncode == 0, result.stderr
    # `carehub provision init` prints HubIdentity.key_id (gateway.provision.steps: hub_key_id).
    assert f"key id {hub.key_id}" in result.stdout


def _glucose_record(hub_id: str, seq: int) -> Record:
    at = T0 + _dt.timedelta(minutes=30)
    reading = GlucoseMeasurement(
        sequence_number=3,
        base_time=DateTime(at.year, at.month, at.day, at.hour, at.minute, 0),
        concentration=MderFloat.from_value(70e-5),  # 70 mg/dL, as the meter sends it: kg/L
        type=1,
        sample_location=1,
    )
    raw = bytes(reading)
    return Record(
        record_id=measurement_record_id("glucose-meter-with-a-long-name", 0x2A18, raw, None, None, at),
        hub_id=hub_id,
        seq=seq,
        hub_time=at,
        body=MeasurementBody(0x2A18, raw, reading.as_dict(), resident_id="resident-1"),
        device_id="glucose-meter-with-a-long-name",
    )


def _readings(config: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CAREHUB, "platform", "readings", "-c", str(config), *args],
        env=environment() | {"COLUMNS": str(columns)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_readings_fit_80_columns_and_show_glucose_in_clinical_units(tmp_path: Path) -> None:
    config = _init(tmp_path)
    cfg = load_platform_config(config)
    records = (
        bp_record("a-hub-with-a-rather-long-identifier", 1),
        _glucose_record("a-hub-with-a-rather-long-identifier", 2),
    )

    async def seed() -> None:
        async with SqliteStorage(cfg.database) as db:
            rows = tuple(StoredReading.from_record(r, 1, 1.7e9) for r in records)
            await db.store_batch([EnvelopeToStore("a-hub-with-a-rather-long-identifier", 1, rows)])

    asyncio.run(seed())
    result = _readings(config)
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
    assert "70 mg/dL" in result.stdout
    assert "kg/L" not in result.stdout
    assert "111/71 mmHg" in result.stdout
    mmol = _readings(config, "--units", "mmol")
    assert "3.89 mmol/L" in mmol.stdout
    wide = _readings(config, "--wide", columns=250)
    assert records[1].record_id.hex() in wide.stdout
    assert "kg/L" in wide.stdout  # every field, the value as sent too
    bad = _readings(config, "--units", "grains")
    assert bad.returncode == 2
    assert "expected mgdl" in one_error_line(bad)
