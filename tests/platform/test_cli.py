"""``carehub platform`` commands: keygen, broker-config, enroll, readings, ack-alarm, thresholds; config and key errors
name the file and key."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from community.cli import app
from community.config import load_platform_config
from community.samples import alarm_record, bp_record
from community.storage import EnvelopeToStore, Refusal, SqliteStorage, StoredReading
from protocols.errors import EnvelopeRejection
from protocols.keys import HubIdentity, load_platform_public_keys, save_hub_public_key
from protocols.record import MeasurementBody

runner = CliRunner()


def write_config(tmp_path: Path, port: int = 1883) -> Path:
    cfg = tmp_path / "platform.toml"
    cfg.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\n'
        '[storage]\ndatabase = "db/platform.db"\n'
        '[keys]\nidentity = "keys/platform.key"\n'
    )
    return cfg


def test_keygen_enroll_and_readings(tmp_path: Path):
    cfg_path = write_config(tmp_path)
    result = runner.invoke(app, ["keygen", "--out", str(tmp_path / "keys")])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "keys" / "platform.key").stat().st_mode) == 0o600
    cfg = load_platform_config(cfg_path)
    assert cfg.database == tmp_path / "db" / "platform.db"
    public = load_platform_public_keys(tmp_path / "keys" / "platform.pub")
    assert cfg.identity().public == public
    assert bytes(public.verify_key).hex() in result.output
    again = runner.invoke(app, ["keygen", "--out", str(tmp_path / "keys")])
    assert again.exit_code == 2
    assert "--force" in again.output

    hub = HubIdentity.generate("hub-a")
    save_hub_public_key(tmp_path / "hub-a.pub", hub.public)
    result = runner.invoke(app, ["enroll", "-c", str(cfg_path), "--key-file", str(tmp_path / "hub-a.pub")])
    assert result.exit_code == 0, result.output

    record, alarm = bp_record("hub-a", 1), alarm_record("hub-a", "alarm-1", 2)

    async def seed() -> None:
        async with SqliteStorage(cfg.database) as db:
            assert await db.hubs() == {"hub-a": hub.verify_key}
            rows = tuple(StoredReading.from_record(r, 1, 1.7e9) for r in (record, alarm))
            await db.store_batch([EnvelopeToStore("hub-a", 1, rows)])

    asyncio.run(seed())
    result = runner.invoke(app, ["readings", "-c", str(cfg_path), "--hub", "hub-a", "--json"])
    assert result.exit_code == 0, result.output
    measurement, alarm_row = json.loads(result.output)
    assert isinstance(record.body, MeasurementBody)
    assert measurement["kind"] == "measurement"
    assert measurement["record_id"] == record.record_id.hex()
    assert measurement["device"] == "bp-1"
    assert measurement["values"] == record.body.values
    assert measurement["hub_time"] == "2025-03-01T07:01:02+00:00"
    assert measurement["device_time"] == "2025-03-01T07:01:00"
    assert (alarm_row["kind"], alarm_row["values"], alarm_row["body"]["alarm_id"]) == ("alarm", None, "alarm-1")
    result = runner.invoke(app, ["readings", "-c", str(cfg_path)])
    assert result.exit_code == 0
    assert record.record_id.hex()[:8] in result.output
    result = runner.invoke(app, ["readings", "-c", str(cfg_path), "--wide"], terminal_width=200)
    assert result.exit_code == 0
    assert record.record_id.hex() in result.output


def test_broker_config_command(tmp_path: Path):
    result = runner.invoke(app, ["broker-config", "--out", str(tmp_path), "--hub", "hubA", "--hub", "hubB"])
    assert result.exit_code == 0, result.output
    acl = (tmp_path / "acl").read_text()
    assert "user hubB\ntopic write carehub/v1/hubB/up" in acl
    assert (tmp_path / "passwords").read_text().count(":$7$101$") == 3


def test_bad_inputs_fail_with_one_clear_line(tmp_path: Path):
    cfg_path = write_config(tmp_path)
    (tmp_path / "bad.pub").write_text("hub hub-a\ned25519-public zz\n")
    result = runner.invoke(app, ["enroll", "-c", str(cfg_path), "--key-file", str(tmp_path / "bad.pub")])
    assert result.exit_code == 2
    assert "ed25519-public is not 32 bytes" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[broker]\nurl = 5\n[storage]\n[keys]\n")
    result = runner.invoke(app, ["readings", "-c", str(bad)])
    assert result.exit_code == 2
    assert "[broker] url must be a string" in result.output
    runner.invoke(app, ["keygen", "--out", str(tmp_path / "keys")])
    (tmp_path / "keys" / "platform.key").chmod(0o644)
    args = ["ack-alarm", "-c", str(cfg_path), "--hub", "hub-a", "--alarm", "a", "--caregiver", "c"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "[keys] identity" in result.output
    assert "chmod 600" in result.output
    args = ["thresholds", "-c", str(cfg_path), "--hub", "hub-a", "--resident", "r", "--set", "bp.systolic.critical"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "expected KEY=NUMBER" in result.output


def _enroll(tmp_path: Path, cfg_path: Path, *residents: str) -> None:
    hub = HubIdentity.generate("hub-a")
    save_hub_public_key(tmp_path / "hub-a.pub", hub.public)
    extra = [arg for r in residents for arg in ("--resident", r)]
    result = runner.invoke(app, ["enroll", "-c", str(cfg_path), "--key-file", str(tmp_path / "hub-a.pub"), *extra])
    assert result.exit_code == 0, result.output


def _seed_alarm(cfg_path: Path, alarm_id: str) -> None:
    async def seed() -> None:
        async with SqliteStorage(load_platform_config(cfg_path).database) as db:
            row = StoredReading.from_record(alarm_record("hub-a", alarm_id, 2), 1, 1.7e9)
            await db.store_batch([EnvelopeToStore("hub-a", 1, (row,))])

    asyncio.run(seed())


def test_ack_alarm_and_thresholds_publish_signed_down_messages(tmp_path: Path, mosquitto):
    # Exercised end to end (hub verification, replay refusal) in tests/integration; here: the CLI's numbering.
    cfg_path = write_config(tmp_path, mosquitto.port)
    assert runner.invoke(app, ["keygen", "--out", str(tmp_path / "keys")]).exit_code == 0
    _enroll(tmp_path, cfg_path, "r1")
    _seed_alarm(cfg_path, "alarm-1")
    args = ["ack-alarm", "-c", str(cfg_path), "--hub", "hub-a", "--alarm", "alarm-1", "--caregiver", "Mei Lin"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "message 1" in result.output
    args = ["thresholds", "-c", str(cfg_path), "--hub", "hub-a", "--resident", "r1"]
    sets = ["--set", "bp.systolic.critical_high=175", "--set", "bp.diastolic.critical_high=default"]
    result = runner.invoke(app, [*args, *sets])
    assert result.exit_code == 0, result.output
    assert "sent 2 threshold(s) for r1 to hub-a (message 2)" in result.output
    # The resident a stored record names is known too (the seeded alarm is resident-1's).
    result = runner.invoke(
        app, ["thresholds", "-c", str(cfg_path), "--hub", "hub-a", "--resident", "resident-1", *sets]
    )
    assert result.exit_code == 0, result.output
    assert "(message 3)" in result.output


def _one_line_refusal(args: list[str], expected: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert expected in lines[0], lines[0]


def test_down_messages_that_cannot_apply_are_refused_at_the_command(tmp_path: Path):
    """Nothing is sent (no broker is even running here): an inapplicable message is refused before it exists."""
    cfg_path = write_config(tmp_path, 9)  # port 9 (discard): a send would fail loudly with exit 1, not 2
    assert runner.invoke(app, ["keygen", "--out", str(tmp_path / "keys")]).exit_code == 0
    _enroll(tmp_path, cfg_path, "r1")
    _seed_alarm(cfg_path, "alarm-1")
    base = ["thresholds", "-c", str(cfg_path), "--hub", "hub-a", "--resident", "r1", "--set"]
    _one_line_refusal([*base, "bp.systolic.critical_high=50"], "bp.systolic.critical_high")
    _one_line_refusal([*base, "bp.sys=150"], "bp.sys: unknown threshold key")
    _one_line_refusal([*base, "bp.sys=default"], "bp.sys: unknown threshold key")
    _one_line_refusal([*base, "spo2.low.critical=1800"], "outside 50..100")
    _one_line_refusal([*base, "glucose.swing.enabled=0.5"], "expected 0 (off) or 1 (on)")
    _one_line_refusal([*base, "bp.systolic.critical_high=nan"], "finite")
    nobody = ["thresholds", "-c", str(cfg_path), "--hub", "hub-a", "--resident", "nobody"]
    _one_line_refusal([*nobody, "--set", "bp.systolic.critical_high=175"], "no resident 'nobody'")
    huge = ["thresholds", "-c", str(cfg_path), "--hub", "hub-a", "--resident", "r" * 100_000]
    _one_line_refusal([*huge, "--set", "bp.systolic.critical_high=175"], "resident_id must be text of 1..256")
    other_hub = ["thresholds", "-c", str(cfg_path), "--hub", "hub-z", "--resident", "r1"]
    _one_line_refusal([*other_hub, "--set", "bp.systolic.critical_high=175"], "hub 'hub-z' is not enrolled")
    ack = ["ack-alarm", "-c", str(cfg_path), "--caregiver", "Mei Lin"]
    _one_line_refusal([*ack, "--hub", "hub-a", "--alarm", "alarm-2"], "hub 'hub-a' has reported no alarm 'alarm-2'")
    _one_line_refusal([*ack, "--hub", "hub-z", "--alarm", "alarm-1"], "hub 'hub-z' is not enrolled")
    enroll = ["enroll", "-c", str(cfg_path), "--key-file", str(tmp_path / "hub-a.pub"), "--resident", "r" * 100_000]
    _one_line_refusal(enroll, "must be text of 1..256 characters")


def test_ports_outside_1_to_65535_are_refused(tmp_path: Path):
    _one_line_refusal(["broker-config", "--out", str(tmp_path / "b"), "--hub", "hubA", "--port", "99999"], "--port")
    _one_line_refusal(["broker-config", "--out", str(tmp_path / "b"), "--hub", "hubA", "--port", "0"], "--port")
    assert not (tmp_path / "b").exists()
    for port in ("99999", "0", "x"):
        cfg = tmp_path / f"p{port}.toml"
        cfg.write_text(
            f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\n[storage]\ndatabase = "p.db"\n[keys]\nidentity = "k"\n'
        )
        _one_line_refusal(["readings", "-c", str(cfg)], "[broker] url has no valid port")


def test_rejected_lists_the_quarantine(tmp_path: Path):
    cfg_path = write_config(tmp_path)
    refusals = [
        Refusal(
            "hub-a",
            "hub-a",
            2**64 - 1,
            EnvelopeRejection.BAD_SIGNATURE,
            "not signed by hub 'hub-a'",
            300,
            "ab" * 32,
            1.7e9,
        ),
        Refusal("hub-a", None, None, EnvelopeRejection.CANNOT_OPEN, "line\nbreak", 120, "cd" * 32, 1.7e9 + 1),
        Refusal(
            "hub-b", "hub-z", 4, EnvelopeRejection.UNKNOWN_HUB, "hub 'hub-z' is not enrolled", 90, "ef" * 32, 1.7e9
        ),
    ]

    async def seed() -> None:
        async with SqliteStorage(load_platform_config(cfg_path).database) as db:
            await db.store_batch([], refusals)

    asyncio.run(seed())
    result = runner.invoke(app, ["rejected", "-c", str(cfg_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 3
    assert "hub-a seq 18446744073709551615 bad_signature 300 bytes" in lines[0]
    assert "seq - cannot_open" in lines[1]
    assert "line\\x0abreak" in lines[1]
    assert "hub-b claims hub-z seq 4 unknown_hub" in lines[2]
    result = runner.invoke(app, ["rejected", "-c", str(cfg_path), "--hub", "hub-a", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["hub"], r["seq"], r["reason"], r["sha256"]) for r in rows] == [
        ("hub-a", 2**64 - 1, "bad_signature", "ab" * 32),
        ("hub-a", None, "cannot_open", "cd" * 32),
    ]
    assert rows[1]["detail"] == "line\nbreak"
