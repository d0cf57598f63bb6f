"""``carehub platform``: run the reference platform, list readings, write broker configs, manage keys and hubs.

Failures print one clear line on standard error and exit non-zero (2 for bad input, 1 for a failed run).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import aiomqtt
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from community.brokerconf import write_broker_config
from community.config import PlatformConfig, PlatformConfigError, load_platform_config
from community.enrollment import bundle_command
from community.ingest import IngestWorker, WorkerSettings, publish_down
from community.storage import QuarantinedEnvelope, SqliteStorage, StorageError, StoredReading
from community.wire import PlatformCodec
from protocols.errors import EncodeError, KeyFileError
from protocols.keys import PlatformIdentity, load_hub_public_key, save_platform_identity, save_platform_public_keys
from protocols.messages import AlarmAcknowledgement, DownBody, ThresholdUpdate
from protocols.record import AlarmBody, PanicBody, Record
from protocols.thresholds import ThresholdError, check_update
from runtime import aio, output

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
        return PlatformCodec(cfg.identity())
    except PlatformConfigError as exc:
        raise _fail(str(exc)) from None


@app.command()
def run(config: ConfigOption) -> None:
    """Run one ingest worker until interrupted; exit 1 if it fails repeatedly (so systemd restarts it)."""
    cfg = _config(config)
    codec = _codec(cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def console(worker: IngestWorker) -> None:
        await worker.connected.wait()
        _out.print(f"platform worker {cfg.client_id} ingesting from {cfg.host}:{cfg.port}", highlight=False)
        while True:
            _out.print(_alarm_line(await worker.alarms.get()), highlight=False)

    async def main() -> BaseException | None:
        async with (
            SqliteStorage(cfg.database) as storage,
            IngestWorker(_worker_settings(cfg), storage, codec) as worker,
        ):
            printer = asyncio.create_task(console(worker), name="platform-console")
            try:
                await worker.failed.wait()
            finally:
                printer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await printer
            return worker.failure

    try:
        failure = aio.run(main())
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    reason = "unknown" if failure is None else f"{type(failure).__name__}: {failure}"
    raise _fail(f"platform worker {cfg.client_id} stopped after repeated failures (last: {reason})", 1)


def _alarm_line(record: Record) -> str:
    body = record.body
    what = record.kind.value
    if isinstance(body, AlarmBody):
        what = f"alarm {body.alarm_id} {body.condition} {body.tier.value} {body.state.value}: {body.message}"
    elif isinstance(body, PanicBody):
        what = f"panic {body.event.value} from {body.pendant_id} (alarm {body.alarm_id or '-'})"
    return f"[bold red]ALARM[/] {escape(record.hub_id)} {escape(what)} record {record.record_id.hex()}"


def _reading_dict(r: StoredReading) -> dict[str, object]:
    return {
        "hub": r.hub,
        "kind": r.kind,
        "record_id": r.record_id,
        "record_seq": r.record_seq,
        "device": r.device,
        "values": None if r.values is None else dict(r.values),
        "body": dict(r.body),
        "hub_time": r.hub_time.isoformat(),
        "device_time": r.device_time,
        "envelope_seq": r.envelope_seq,
        "received_at": _dt.datetime.fromtimestamp(r.received_at, _dt.UTC).isoformat(),
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
        rows = aio.run(main())
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        output.emit(json.dumps([_reading_dict(r) for r in rows], ensure_ascii=False))
        return
    table = Table(title=f"readings{f' of {hub}' if hub else ''}")
    for column in ("hub", "kind", "record", "device", "values", "hub time", "device time"):
        table.add_column(column, no_wrap=column == "record", min_width=32 if column == "record" else None)
    for r in rows:
        shown = r.values if r.values is not None else r.body
        table.add_row(
            r.hub,
            r.kind,
            r.record_id,
            r.device or "—",
            escape(json.dumps(dict(shown), ensure_ascii=False)),
            r.hub_time.strftime("%Y-%m-%d %H:%M:%S"),
            r.device_time or "—",
        )
    _out.print(table)


@app.command("broker-config")
def broker_config(
    out: Annotated[Path, typer.Option("--out", help="Directory for mosquitto.conf, passwords, acl, credentials.")],
    hubs: Annotated[list[str], typer.Option("--hub", help="A hub id (repeat for each hub).")],
    port: Annotated[int, typer.Option("--port", help="Listener port.")] = 1883,
    platform_user: Annotated[str, typer.Option("--platform-user", help="The ingest workers' user.")] = "platform",
    workers: Annotated[
        int, typer.Option("--workers", help="Ingest workers; each gets its own user (client ids are user names).")
    ] = 1,
) -> None:
    """Write a Mosquitto config, password file and per-hub ACL (client ids bound to users, sizes bounded)."""
    if not 1 <= port <= 65535:
        raise _fail(f"--port {port}: a TCP port is 1..65535")
    if workers < 1:
        raise _fail(f"--workers {workers}: at least one ingest worker is needed")
    try:
        files = write_broker_config(out, hubs, platform_user=platform_user, workers=workers, port=port)
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    _out.print(
        f"wrote {files.config}, {files.password_file}, {files.acl_file}; credentials in {files.credentials}",
        highlight=False,
    )


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for the key files.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing identity file.")] = False,
) -> None:
    """Create the platform's identity (platform.key, mode 0600) and its public keys for hubs (platform.pub)."""
    private, public = out / "platform.key", out / "platform.pub"
    if private.exists() and not force:
        raise _fail(f"{private} exists; pass --force to replace the platform's keys (hubs must then be re-provisioned)")
    identity = PlatformIdentity.generate()
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_platform_identity(private, identity)
        save_platform_public_keys(public, identity.public)
    except (OSError, KeyFileError) as exc:
        raise _fail(f"{out}: {exc}", 1) from None
    _out.print(f"wrote {private} (private) and {public} (install on hubs)", highlight=False)
    _out.print(f"verify key {bytes(identity.public.verify_key).hex()}", highlight=False)
    _out.print(
        f"box public key {bytes(identity.public.box_key).hex()} (key id {identity.public.key_id})", highlight=False
    )


@app.command()
def enroll(
    config: ConfigOption,
    key_file: Annotated[Path, typer.Option("--key-file", help="The hub's public key file (hub id and key).")],
    residents: Annotated[
        list[str] | None,
        typer.Option("--resident", help="A resident the hub serves (repeat); thresholds can then be sent for them."),
    ] = None,
) -> None:
    """Register a hub from its public key file so its envelopes are accepted."""
    cfg = _config(config)
    try:
        hub = load_hub_public_key(key_file)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None

    async def main() -> None:
        async with SqliteStorage(cfg.database) as storage:
            await storage.enroll_hub(hub, residents or ())

    try:
        aio.run(main())
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    _out.print(f"enrolled {hub.hub_id} (key id {bytes(hub.verify_key).hex()[:16]}…)", highlight=False)


Check = Callable[[SqliteStorage], Awaitable[str | None]]


def _enrolled(hub: str) -> Check:
    async def check(storage: SqliteStorage) -> str | None:
        enrolled = await storage.hub_key(hub) is not None
        return None if enrolled else f"hub {hub!r} is not enrolled (carehub platform enroll)"

    return check


class _RefusedError(Exception):
    """A down-message the platform's own records show cannot apply (unknown hub, resident or alarm)."""


def _send_down(cfg: PlatformConfig, hub: str, body: DownBody, checks: tuple[Check, ...]) -> int:
    """Publish ``body`` to ``hub`` as a signed down-message, once every check passed; its seq comes from the
    platform database."""
    codec = _codec(cfg)

    async def main() -> int:
        async with SqliteStorage(cfg.database) as storage:
            for check in checks:
                problem = await check(storage)
                if problem is not None:
                    raise _RefusedError(problem)
            async with aiomqtt.Client(cfg.host, cfg.port, username=cfg.username, password=cfg.password) as client:
                message = await publish_down(client, storage, codec, hub, body, issued_at=_dt.datetime.now(_dt.UTC))
                return message.seq

    try:
        return aio.run(main())
    except _RefusedError as exc:
        raise _fail(str(exc)) from None
    except EncodeError as exc:
        raise _fail(str(exc)) from None
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    except aiomqtt.MqttError as exc:
        raise _fail(f"broker {cfg.host}:{cfg.port}: {exc}", 1) from None


@app.command("ack-alarm")
def ack_alarm(
    config: ConfigOption,
    hub: Annotated[str, typer.Option("--hub", help="The hub that raised the alarm.")],
    alarm: Annotated[str, typer.Option("--alarm", help="The alarm id (as in the hub's alarm or panic record).")],
    caregiver: Annotated[str, typer.Option("--caregiver", help="Who is answering, as shown to the resident.")],
    role: Annotated[str | None, typer.Option("--role", help="Their role (daughter, nurse...).")] = None,
) -> None:
    """Acknowledge an alarm as a caregiver: sends a signed down-message to the hub."""
    cfg = _config(config)
    try:
        body = AlarmAcknowledgement(alarm, caregiver, _dt.datetime.now(_dt.UTC), role)
    except EncodeError as exc:
        raise _fail(str(exc)) from None

    async def known_alarm(storage: SqliteStorage) -> str | None:
        if await storage.knows_alarm(hub, alarm):
            return None
        return f"hub {hub!r} has reported no alarm {alarm!r}"

    seq = _send_down(cfg, hub, body, (_enrolled(hub), known_alarm))
    _out.print(f"acknowledged alarm {alarm} on {hub} as {caregiver} (message {seq})", highlight=False)


def _threshold(item: str) -> tuple[str, float | None]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise _fail(f"--set {item!r}: expected KEY=NUMBER or KEY=default")
    if value == "default":
        return key, None
    try:
        return key, float(value)
    except ValueError:
        raise _fail(f"--set {item!r}: {value!r} is not a number") from None


@app.command()
def thresholds(
    config: ConfigOption,
    hub: Annotated[str, typer.Option("--hub", help="The resident's hub.")],
    resident: Annotated[str, typer.Option("--resident", help="The resident id.")],
    settings: Annotated[
        list[str], typer.Option("--set", help="KEY=NUMBER (units implied by the key) or KEY=default; repeat.")
    ],
) -> None:
    """Send a resident's new thresholds to the hub as a signed down-message."""
    cfg = _config(config)
    values = dict(_threshold(item) for item in settings)
    try:
        body = ThresholdUpdate(resident, values)
        check_update(values)
    except EncodeError as exc:
        raise _fail(str(exc)) from None
    except ThresholdError as exc:
        raise _fail(f"--set {exc}") from None

    async def known_resident(storage: SqliteStorage) -> str | None:
        if await storage.knows_resident(hub, resident):
            return None
        return f"hub {hub!r} has no resident {resident!r} (enrol with --resident, or wait for their first record)"

    seq = _send_down(cfg, hub, body, (_enrolled(hub), known_resident))
    _out.print(f"sent {len(body.values)} threshold(s) for {resident} to {hub} (message {seq})", highlight=False)


def _printable(text: str) -> str:
    """``text`` on one line: control characters (a sender may have chosen them) shown escaped."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _quarantined_dict(q: QuarantinedEnvelope) -> dict[str, object]:
    r = q.refusal
    return {
        "id": q.row_id,
        "received_at": _dt.datetime.fromtimestamp(r.received_at, _dt.UTC).isoformat(),
        "hub": r.topic_hub,
        "claimed_hub": r.claimed_hub,
        "seq": r.envelope_seq,
        "reason": r.reason.value,
        "detail": r.detail,
        "size": r.size,
        "sha256": r.digest,
    }


@app.command()
def rejected(
    config: ConfigOption,
    hub: Annotated[str | None, typer.Option("--hub", help="Only what arrived on this hub's uplink.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of lines.")] = False,
) -> None:
    """List refused envelopes (the quarantine), oldest first: one line each, with the reason."""
    cfg = _config(config)

    async def main() -> list[QuarantinedEnvelope]:
        async with SqliteStorage(cfg.database) as storage:
            return await storage.quarantine(hub)

    try:
        rows = aio.run(main())
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        output.emit(json.dumps([_quarantined_dict(q) for q in rows], ensure_ascii=False))
        return
    lines: list[str] = []
    for q in rows:
        d = _quarantined_dict(q)
        seq = "-" if d["seq"] is None else d["seq"]
        claimed = "" if d["claimed_hub"] in (None, d["hub"]) else f" claims {d['claimed_hub']}"
        lines.append(
            f"{d['id']} {d['received_at']} {d['hub'] or '-'}{claimed} seq {seq} {d['reason']}"
            f" {d['size']} bytes sha256 {str(d['sha256'])[:16]}: {_printable(q.refusal.detail)}"
        )
    if lines:
        output.emit("\n".join(lines))


app.command("bundle")(bundle_command)
