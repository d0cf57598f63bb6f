"""``carehub platform`` commands: keygen, broker-config, enroll, readings; config errors name file and key."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from sim.platform.cli import app
from sim.platform.config import load_platform_config
from sim.platform.storage import EnvelopeToStore, SqliteStorage, StoredReading

runner = CliRunner()


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "platform.toml"
    cfg.write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1883"\nusername = "platform"\npassword = "pw"\n'
        '[storage]\ndatabase = "db/platform.db"\n'
        '[keys]\nsigning_key = "keys/platform.sign"\nbox_key = "keys/platform.box"\n'
    )
    return cfg


def test_keygen_enroll_and_readings(tmp_path: Path):
    cfg_path = write_config(tmp_path)
    result = runner.invoke(app, ["keygen", "--out", str(tmp_path / "keys")])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "keys" / "platform.sign").stat().st_mode) == 0o600
    cfg = load_platform_config(cfg_path)
    assert cfg.database == tmp_path / "db" / "platform.db"
    assert bytes(cfg.signing_key().verify_key).hex() in result.output

    result = runner.invoke(app, ["enroll", "-c", str(cfg_path), "--hub", "hubA", "--key", "ab" * 32])
    assert result.exit_code == 0, result.output

    async def seed() -> dict[str, bytes]:
        async with SqliteStorage(cfg.database) as db:
            reading = StoredReading("hubA", "bp:1", "measurement", "bp-1", {"systolic": 121}, 1.7e9, 1, 1.7e9)
            await db.store_batch([EnvelopeToStore("hubA", 1, (reading,))])
            return await db.hubs()

    assert asyncio.run(seed()) == {"hubA": bytes.fromhex("ab" * 32)}
    result = runner.invoke(app, ["readings", "-c", str(cfg_path), "--hub", "hubA", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["record_id"], r["values"]) for r in rows] == [("bp:1", {"systolic": 121})]
    result = runner.invoke(app, ["readings", "-c", str(cfg_path)])
    assert result.exit_code == 0
    assert "bp:1" in result.output


def test_broker_config_command(tmp_path: Path):
    result = runner.invoke(app, ["broker-config", "--out", str(tmp_path), "--hub", "hubA", "--hub", "hubB"])
    assert result.exit_code == 0, result.output
    acl = (tmp_path / "acl").read_text()
    assert "user hubB\ntopic write carehub/v1/hubB/up" in acl
    assert (tmp_path / "passwords").read_text().count(":$7$101$") == 3


def test_bad_inputs_fail_with_one_clear_line(tmp_path: Path):
    cfg_path = write_config(tmp_path)
    result = runner.invoke(app, ["enroll", "-c", str(cfg_path), "--hub", "hubA", "--key", "zz"])
    assert result.exit_code == 2
    assert "not hex" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[broker]\nurl = 5\n[storage]\n[keys]\n")
    result = runner.invoke(app, ["readings", "-c", str(bad)])
    assert result.exit_code == 2
    assert "[broker] url must be a string" in result.output
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "platform.sign").write_text("00" * 32)
    (tmp_path / "keys" / "platform.sign").chmod(0o644)
    (tmp_path / "keys" / "platform.box").write_text("00" * 32)
    result = runner.invoke(app, ["ack-alarm", "-c", str(cfg_path), "--hub", "h", "--record", "r", "--caregiver", "c"])
    assert result.exit_code == 2
    assert "readable by others" in result.output
