"""The platform on PostgreSQL (issue 15 item 2): ``[storage] url`` in platform.toml selects the engine for every
``carehub platform`` command, ``carehub platform migrate`` shows and applies the schema, and a real
``carehub platform run`` process stores a hub's envelope in PostgreSQL and acks it (real Mosquitto, real server)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from pg_server import PostgresServer
from test_platform_supervision import REPO, frame, next_ack, spawn, stop, wait_ingesting, write_platform

from community.config import PlatformConfigError, load_platform_config
from community.samples import bp_record
from community.storage_pg import PostgresStorage
from community.storage_pg_schema import MIGRATIONS
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity, save_platform_identity
from sim.broker import MosquittoBroker


def carehub(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from carehub.cli import main; main()", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pg_config(tmp_path: Path, url: str, broker: str = "mqtt://127.0.0.1:1883") -> Path:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    if not (keys / "platform.key").exists():
        save_platform_identity(keys / "platform.key", PlatformIdentity.generate())
    cfg = tmp_path / "platform.toml"
    cfg.write_text(f'[broker]\nurl = "{broker}"\n[storage]\nurl = "{url}"\n[keys]\nidentity = "keys/platform.key"\n')
    return cfg


def test_storage_url_selects_postgresql_and_is_checked(tmp_path: Path) -> None:
    cfg = pg_config(tmp_path, "postgresql://carehub:secret@db.example:5432/carehub")
    loaded = load_platform_config(cfg)
    assert loaded.postgres_url == "postgresql://carehub:secret@db.example:5432/carehub"
    assert loaded.database == tmp_path / "platform.db"  # the console's local files sit beside it
    for bad, why in (("mysql://db/x", "postgresql://"), ("postgresql://db:99999/x", "valid port")):
        cfg.write_text(f'[broker]\nurl = "mqtt://h:1"\n[storage]\nurl = "{bad}"\n[keys]\nidentity = "k"\n')
        with pytest.raises(PlatformConfigError, match=why):
            load_platform_config(cfg)


def test_migrate_on_sqlite_creates_then_reports_current(tmp_path: Path) -> None:
    cfg = tmp_path / "platform.toml"
    cfg.write_text('[broker]\nurl = "mqtt://127.0.0.1:1883"\n[storage]\ndatabase = "p.db"\n[keys]\nidentity = "k"\n')
    pending = carehub("platform", "migrate", "-c", cfg, "--check")
    assert pending.returncode == 1
    assert "schema 0" in pending.stderr
    assert "pending" in pending.stderr
    assert len(pending.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.db").exists()  # --check changes nothing
    done = carehub("platform", "migrate", "-c", cfg)
    assert done.returncode == 0, done.stderr
    assert "(sqlite): schema 0 -> " in done.stdout
    again = carehub("platform", "migrate", "-c", cfg)
    assert "already up to date" in again.stdout
    assert carehub("platform", "migrate", "-c", cfg, "--check").returncode == 0


def test_migrate_on_postgresql_applies_once_and_hides_the_password(tmp_path: Path, pg_server: PostgresServer) -> None:
    url = pg_server.create_database()
    cfg = pg_config(tmp_path, url)
    pending = carehub("platform", "migrate", "-c", cfg, "--check")
    assert pending.returncode == 1
    latest = MIGRATIONS[-1].version
    assert f"(postgresql): schema 0, {latest} migration(s)" in pending.stderr
    assert pg_server.password not in pending.stderr
    done = carehub("platform", "migrate", "-c", cfg)
    assert done.returncode == 0, done.stderr
    assert f"schema 0 -> {latest}" in done.stdout
    assert pg_server.password not in done.stdout
    assert carehub("platform", "migrate", "-c", cfg, "--check").returncode == 0


def test_migrate_reports_an_unreachable_database_in_one_line(tmp_path: Path, pg_server: PostgresServer) -> None:
    wrong = secrets.token_hex(8)
    cfg = pg_config(tmp_path, pg_server.url("postgres", password=wrong))
    result = carehub("platform", "migrate", "-c", cfg)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "password authentication failed" in result.stderr
    assert wrong not in result.stderr


@pytest.mark.integration
async def test_platform_run_on_postgresql_stores_and_acks(
    tmp_path: Path, mosquitto: MosquittoBroker, pg_server: PostgresServer
) -> None:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    write_platform(tmp_path, mosquitto, platform)  # keys and the broker section
    url = pg_server.create_database()
    cfg = tmp_path / "platform.toml"
    cfg.write_text(cfg.read_text().replace('database = "platform.db"', f'url = "{url}"'))
    async with PostgresStorage(url) as storage:
        await storage.enroll_hub(hub.public)
    proc = await spawn(["platform", "run", "-c", str(cfg)])
    try:
        await wait_ingesting(proc)
        wire = HubWire(hub, platform.public)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe("carehub/v1/hub-a/ack", qos=1)
            records = [bp_record("hub-a", n) for n in range(3)]
            await client.publish("carehub/v1/hub-a/up", frame(wire, 1, records), qos=1)
            assert (await next_ack(client, wire)).stored == (1,)
    finally:
        await stop(proc)
    listed = carehub("platform", "readings", "-c", cfg, "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 3
    assert not (tmp_path / "platform.db").exists()  # nothing went to SQLite
