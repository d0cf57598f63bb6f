"""``carehub platform``: run the reference platform, list readings, write broker configs, manage keys and hubs.

Failures print one clear line on standard error and exit non-zero (2 for bad input, 1 for a failed run).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import aiomqtt
import nacl.public
import nacl.signing
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sim.platform.brokerconf import write_broker_config
from sim.platform.config import PlatformConfig, PlatformConfigError, load_platform_config, write_key
from sim.platform.ingest import IngestWorker, WorkerSettings
from sim.platform.storage import SqliteStorage, StorageError, StoredReading
from sim.platform.wire import PlatformCodec

__all__ = ["app"]

app = typer.Typer(help="The reference community platform.", no_args_is_help=True, add_completion=False)

_out = Console()
_err = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The platform's TOML config file.")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _config(path: Path) -> PlatformConfig:
    try:
        return load_platform_config(path)
    except PlatformConfigError as exc:
        raise _fail(str(exc)) from None


def _worker_settings(cfg: PlatformConfig, suffix: str = "") -> WorkerSettings:
    return WorkerSettings(
        cfg.host,
        cfg.port,
        username=cfg.username,
        password=cfg.password,
        share_group=cfg.share_group,
        client_id=cfg.client_id + suffix,
    )


def _codec(cfg: PlatformConfig) -> PlatformCodec:
    try:
        return PlatformCodec(cfg.signing_key(), cfg.box_key())
    except PlatformConfigError as exc:
        raise _fail(str(exc)) from None


@app.command()
def run(config: ConfigOption) -> None:
    """Run one ingest worker until interrupted."""
    cfg = _config(config)
    codec = _codec(cfg)

    async def main() -> None:
        async with (
            SqliteStorage(cfg.database) as storage,
            IngestWorker(_worker_settings(cfg), storage, codec) as worker,
        ):
            await worker.connected.wait()
            _out.print(f"platform worker {cfg.client_id} ingesting from {cfg.host}:{cfg.port}")
            while True:
                alarm = await worker.alarms.get()
                _out.print(f"[bold red]ALARM[/] {alarm.hub} {alarm.kind} {alarm.record_id} {json.dumps(alarm.values)}")

    try:
        asyncio.run(main())
    except StorageError as exc:
        raise _fail(str(exc), 1) from None


def _reading_dict(r: StoredReading) -> dict[str, object]:
    return {
        "hub": r.hub,
        "record_id": r.record_id,
        "kind": r.kind,
        "device": r.device,
        "values": dict(r.values),
        "recorded_at": r.recorded_at,
        "envelope_seq": r.envelope_seq,
        "received_at": r.received_at,
    }


@app.command()
def readings(
    config: ConfigOption,
    hub: Annotated[str | None, typer.Option("--hub", help="Only this hub's readings.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = False,
) -> None:
    """List stored readings, oldest first."""
    cfg = _config(config)

    async def main() -> list[StoredReading]:
        async with SqliteStorage(cfg.database) as storage:
            return await storage.readings(hub)

    try:
        rows = asyncio.run(main())
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        typer.echo(json.dumps([_reading_dict(r) for r in rows], ensure_ascii=False))
        return
    table = Table(title=f"readings{f' of {hub}' if hub else ''}")
    for column in ("hub", "record", "kind", "device", "values", "recorded at"):
        table.add_column(column)
    for r in rows:
        at = "—" if r.recorded_at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.recorded_at))
        table.add_row(r.hub, r.record_id, r.kind, r.device or "—", json.dumps(dict(r.values), ensure_ascii=False), at)
    _out.print(table)


@app.command("broker-config")
def broker_config(
    out: Annotated[Path, typer.Option("--out", help="Directory for mosquitto.conf, passwords, acl, credentials.")],
    hubs: Annotated[list[str], typer.Option("--hub", help="A hub id (repeat for each hub).")],
    port: Annotated[int, typer.Option("--port", help="Listener port.")] = 1883,
    platform_user: Annotated[str, typer.Option("--platform-user", help="The ingest workers' user.")] = "platform",
) -> None:
    """Write a Mosquitto config, password file and per-hub ACL."""
    try:
        files = write_broker_config(out, hubs, platform_user=platform_user, port=port)
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    _out.print(f"wrote {files.config}, {files.password_file}, {files.acl_file}; credentials in {files.credentials}")


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for the key files.")],
) -> None:
    """Create the platform's Ed25519 signing key and X25519 box key (files mode 0600) and print the public halves."""
    sign = nacl.signing.SigningKey.generate()
    box = nacl.public.PrivateKey.generate()
    try:
        write_key(out / "platform.sign", bytes(sign))
        write_key(out / "platform.box", bytes(box))
        (out / "platform.verify.pub").write_text(bytes(sign.verify_key).hex() + "\n", encoding="ascii")
        (out / "platform.box.pub").write_text(bytes(box.public_key).hex() + "\n", encoding="ascii")
    except OSError as exc:
        raise _fail(f"{out}: {exc}", 1) from None
    _out.print(f"verify key {bytes(sign.verify_key).hex()}")
    _out.print(f"box public key {bytes(box.public_key).hex()}")


@app.command()
def enroll(
    config: ConfigOption,
    hub: Annotated[str, typer.Option("--hub", help="The hub id.")],
    key: Annotated[str, typer.Option("--key", help="The hub's Ed25519 verify key, 64 hex digits.")],
) -> None:
    """Register a hub's public key so its envelopes are accepted."""
    cfg = _config(config)
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        raise _fail(f"--key: not hex: {key!r}") from None
    if len(raw) != 32:
        raise _fail(f"--key: an Ed25519 verify key is 32 bytes, got {len(raw)}")

    async def main() -> None:
        async with SqliteStorage(cfg.database) as storage:
            await storage.enroll_hub(hub, raw)

    try:
        asyncio.run(main())
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    _out.print(f"enrolled {hub}")


@app.command("ack-alarm")
def ack_alarm(
    config: ConfigOption,
    hub: Annotated[str, typer.Option("--hub", help="The hub that raised the alarm.")],
    record: Annotated[str, typer.Option("--record", help="The alarm's record id.")],
    caregiver: Annotated[str, typer.Option("--caregiver", help="Who is answering.")],
) -> None:
    """Acknowledge an alarm as a caregiver: sends a signed down-message to the hub."""
    cfg = _config(config)
    codec = _codec(cfg)

    async def main() -> None:
        async with aiomqtt.Client(cfg.host, cfg.port, username=cfg.username, password=cfg.password) as client:
            await client.publish(
                codec.down_topic(hub), codec.encode_alarm_ack(hub, record, caregiver, time.time()), qos=1
            )

    try:
        asyncio.run(main())
    except aiomqtt.MqttError as exc:
        raise _fail(f"broker {cfg.host}:{cfg.port}: {exc}", 1) from None
    _out.print(f"acknowledged {record} on {hub} as {caregiver}")
