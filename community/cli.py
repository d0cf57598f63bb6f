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

from community.brokerconf import TlsListener, write_broker_config
from community.config import PlatformConfig, PlatformConfigError, load_platform_config
from community.console.analytics import is_installation_test
from community.down_types import QueuedDown
from community.downbox import queue_message
from community.enrollment import bundle_command
from community.ingest import IngestWorker, WorkerSettings
from community.ingest_core import IngestWorkerBase
from community.storage import QuarantinedEnvelope, Storage, StorageError, StoredReading
from community.storage_open import migrate as migrate_schema
from community.storage_open import open_storage, schema_status
from community.wire import PlatformCodec
from protocols import atomic
from protocols.clinical_units import GlucoseDisplay, clinical_values, parse_glucose_display
from protocols.errors import EncodeError, KeyFileError
from protocols.keys import (
    PlatformIdentity,
    key_id,
    load_hub_public_key,
    save_platform_identity,
    save_platform_public_keys,
)
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
def run(
    config: ConfigOption,
    metrics: Annotated[
        str | None,
        typer.Option("--metrics", help="Serve /metrics (Prometheus) and /healthz at HOST:PORT, e.g. 127.0.0.1:9464."),
    ] = None,
    console_at: Annotated[
        str | None,
        typer.Option("--console", help="Serve the doctor's web console at HOST:PORT, e.g. 127.0.0.1:8080."),
    ] = None,
    escalate_after: Annotated[
        float,
        typer.Option(
            "--escalate-after", min=1.0, help="Seconds before the console shows an unanswered critical alarm escalated."
        ),
    ] = 300.0,
) -> None:
    """Run one ingest worker until interrupted; exit 1 if it fails repeatedly (so systemd restarts it)."""
    cfg = _config(config)
    address = None
    if metrics is not None:
        from community.metrics import MetricsAddress  # noqa: PLC0415 - aiohttp and prometheus only when asked

        try:
            address = MetricsAddress.parse(metrics)
        except ValueError as exc:
            raise _fail(f"--metrics: {exc}") from None
    console_address = None
    console_errors: tuple[type[Exception], ...] = (StorageError,)
    if console_at is not None:
        from community.console.web import ConsoleError  # noqa: PLC0415 - the console's parts only when asked
        from community.metrics import MetricsAddress  # noqa: PLC0415

        console_errors = (StorageError, ConsoleError)
        try:
            console_address = MetricsAddress.parse(console_at)
        except ValueError as exc:
            raise _fail(f"--console: {exc}") from None
    codec = _codec(cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # A district's worker reads a NATS JetStream cluster ([nats] in platform.toml; docs/platform-nats.md).
    source = f"{cfg.host}:{cfg.port}" if cfg.nats is None else f"JetStream at {', '.join(cfg.nats.servers)}"

    def worker_on(storage: Storage) -> IngestWorkerBase:
        if cfg.nats is None:
            return IngestWorker(_worker_settings(cfg), storage, codec)
        from community.nats_ingest import NatsIngestWorker  # noqa: PLC0415 - nats-py only for a JetStream worker

        return NatsIngestWorker(cfg.nats, storage, codec)

    async def console(worker: IngestWorkerBase, on_alarm: Callable[[], None]) -> None:
        await worker.connected.wait()
        _out.print(f"platform worker {cfg.client_id} ingesting from {source}", highlight=False)
        while True:
            _out.print(_alarm_line(await worker.alarms.get()), highlight=False)
            on_alarm()

    async def main() -> BaseException | None:
        async with (
            open_storage(cfg) as storage,
            worker_on(storage) as worker,
            contextlib.AsyncExitStack() as extras,
        ):
            if address is not None:
                from community.metrics import serve_metrics  # noqa: PLC0415

                port = await extras.enter_async_context(serve_metrics(worker, address))
                _out.print(f"metrics on http://{address.host}:{port}/metrics (health: /healthz)", highlight=False)
            on_alarm: Callable[[], None] = _nothing
            if console_address is not None:
                from community.console.web import ConsoleSettings, open_console, serve_console  # noqa: PLC0415

                settings = ConsoleSettings(escalate_after=_dt.timedelta(seconds=escalate_after))
                web_console = await extras.enter_async_context(
                    open_console(storage, worker, cfg.database, settings=settings)
                )
                web_port = await extras.enter_async_context(
                    serve_console(web_console, console_address.host, console_address.port)
                )
                _out.print(f"console on http://{console_address.host}:{web_port}/", highlight=False)
                on_alarm = web_console.feed.publish
            printer = asyncio.create_task(console(worker, on_alarm), name="platform-console")
            try:
                await worker.failed.wait()
            finally:
                printer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await printer
            return worker.failure

    try:
        failure = aio.run(main())
    except console_errors as exc:
        raise _fail(str(exc), 1) from None
    reason = "unknown" if failure is None else f"{type(failure).__name__}: {failure}"
    raise _fail(f"platform worker {cfg.client_id} stopped after repeated failures (last: {reason})", 1)


def _nothing() -> None:
    """No console to wake."""


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
        "installation_test": is_installation_test(r),
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


#: Decoded fields that say how or when a value was taken, not what it was: left out of the narrow table.
_NOT_A_VALUE = frozenset(
    {
        "timestamp",
        "base_time",
        "time_offset",
        "sequence_number",
        "user_id",
        "measurement_status",
        "type",
        "sample_location",
        "sensor_status",
        "context_follows",
        "unit",
        "unit_si",
        "concentration_si",
        "mean_arterial",
    }
)


def _reading_summary(r: StoredReading, display: GlucoseDisplay) -> str:
    """What a reading says, in a few words and clinical units (``111/71 mmHg pulse 61``, ``70 mg/dL``); an alarm or
    panic as its condition and state; installation-test data (docs/protocol.md §3.10) starts with ``TEST``."""
    summary = _summary(r, display)
    return f"TEST {summary}" if is_installation_test(r) else summary


def _summary(r: StoredReading, display: GlucoseDisplay) -> str:
    values = r.values
    if values is None:
        body = r.body
        if r.kind == "alarm":
            return f"{body.get('condition')} {body.get('tier')} {body.get('state')}"
        if r.kind == "panic":
            return f"panic {body.get('event')} from {body.get('pendant_id')}"
        return r.kind
    shown = clinical_values(values, display)
    unit = shown.get("unit")
    parts: list[str] = []
    if "systolic" in shown and "diastolic" in shown:
        parts.append(f"{_number(shown['systolic'])}/{_number(shown['diastolic'])} {unit or ''}".rstrip())
        unit = None
    for key, value in shown.items():
        if key in _NOT_A_VALUE or key in ("systolic", "diastolic") or key.endswith("_name"):
            continue
        if value is None or isinstance(value, dict | list):
            continue
        if key == "concentration" and unit:
            parts.append(f"{_number(value)} {unit}")
            unit = None
            continue
        parts.append(f"{key.replace('_rate', '')} {_number(value)}")
    return " ".join(parts) or "—"


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@app.command()
def readings(
    config: ConfigOption,
    hub: Annotated[str | None, typer.Option("--hub", help="Only this hub's readings.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON array instead of a table (values as recorded, in SI units).")
    ] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column: full record id, device time and all decoded values.")
    ] = False,
    units: Annotated[
        str, typer.Option("--units", metavar="mgdl|mmol", help="Glucose shown in mg/dL (default) or mmol/L.")
    ] = "mgdl",
) -> None:
    """List stored readings, oldest first: a table that fits 80 columns (--wide for every field), or JSON."""
    cfg = _config(config)
    try:
        display = parse_glucose_display(units)
    except ValueError as exc:
        raise _fail(str(exc)) from None

    async def main() -> list[StoredReading]:
        async with open_storage(cfg) as storage:
            return await storage.readings(hub)

    try:
        rows = aio.run(main())
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        output.emit(json.dumps([_reading_dict(r) for r in rows], ensure_ascii=False))
        return
    title = f"readings{f' of {hub}' if hub else ''}"
    if wide:
        table = Table(title=title)
        for column in ("hub", "kind", "record", "device", "values", "hub time", "device time"):
            table.add_column(column, no_wrap=column == "record", min_width=32 if column == "record" else None)
        for r in rows:
            shown = clinical_values(r.values, display) if r.values is not None else r.body
            table.add_row(
                escape(r.hub),
                f"{r.kind} (installation test)" if is_installation_test(r) else r.kind,
                r.record_id,
                escape(r.device or "—"),
                escape(json.dumps(dict(shown), ensure_ascii=False)),
                r.hub_time.strftime("%Y-%m-%d %H:%M:%S"),
                escape(r.device_time or "—"),
            )
        _out.print(table)
        return
    caption = "--wide for every field, --json for the records"
    if any(is_installation_test(r) for r in rows):
        caption += "; TEST: installation-test data, not the resident's"
    table = Table(title=title, caption=caption)
    table.add_column("hub time (UTC)", no_wrap=True)
    table.add_column("hub", overflow="fold")
    table.add_column("device", overflow="fold")
    table.add_column("reading", overflow="fold")
    table.add_column("record", no_wrap=True)
    for r in rows:
        table.add_row(
            r.hub_time.strftime("%m-%d %H:%M"),
            escape(r.hub),
            escape(r.device or "—"),
            escape(_reading_summary(r, display)),
            r.record_id[:8],
        )
    _out.print(table)


@app.command("broker-config")
def broker_config(  # noqa: PLR0917 - typer options are parameters
    out: Annotated[Path, typer.Option("--out", help="Directory for mosquitto.conf, passwords, acl, credentials.")],
    hubs: Annotated[list[str], typer.Option("--hub", help="A hub id (repeat for each hub).")],
    port: Annotated[int, typer.Option("--port", help="Listener port.")] = 1883,
    platform_user: Annotated[str, typer.Option("--platform-user", help="The ingest workers' user.")] = "platform",
    workers: Annotated[
        int, typer.Option("--workers", help="Ingest workers; each gets its own user (client ids are user names).")
    ] = 1,
    tls_dir: Annotated[
        Path | None,
        typer.Option("--tls-dir", help="Site CA directory (carehub platform tls init): adds the hubs' TLS listener."),
    ] = None,
    tls_port: Annotated[int, typer.Option("--tls-port", help="The hubs' TLS listener port.")] = 8883,
    nats_nodes: Annotated[
        list[str] | None,
        typer.Option(
            "--nats-node",
            metavar="NAME=HOST[:CLIENT:ROUTE:MQTT]",
            help="Write a NATS JetStream cluster's node configs instead of Mosquitto's (repeat for each node).",
        ),
    ] = None,
    nats_store: Annotated[Path, typer.Option("--nats-store", help="JetStream's store directory on every node.")] = Path(
        "/var/lib/nats/jetstream"
    ),
    nats_version: Annotated[
        str | None,
        typer.Option(
            "--nats-version",
            metavar="X.Y[.Z]",
            help="The nodes' nats-server version (default: this machine's nats-server's); "
            "2.11 and later get stream ingest limits sized for the hubs.",
        ),
    ] = None,
) -> None:
    """Write a Mosquitto config, password file and per-hub ACL (client ids bound to users, sizes bounded), or with
    --nats-node a NATS cluster's node configs (per-hub permissions, bcrypt password hashes, TLS on every listener).

    The plaintext listener is on 127.0.0.1 only (the platform's workers on this machine, the demo); hubs connect
    to the TLS listener that --tls-dir adds, with the site CA's broker certificate.
    """
    if not 1 <= port <= 65535:
        raise _fail(f"--port {port}: a TCP port is 1..65535")
    if workers < 1:
        raise _fail(f"--workers {workers}: at least one ingest worker is needed")
    tls = None
    if tls_dir is not None:
        if not 1 <= tls_port <= 65535:
            raise _fail(f"--tls-port {tls_port}: a TCP port is 1..65535")
        missing = [n for n in ("ca.pem", "broker.pem", "broker.key") if not (tls_dir / n).is_file()]
        if missing:
            raise _fail(f"--tls-dir {tls_dir}: no {', '.join(missing)}; run carehub platform tls init first")
        tls = TlsListener(tls_dir / "ca.pem", tls_dir / "broker.pem", tls_dir / "broker.key", tls_port)
    if nats_nodes:
        _nats_config(out, hubs, nats_nodes, platform_user, workers, tls, nats_store, nats_version)
        return
    try:
        files = write_broker_config(out, hubs, platform_user=platform_user, workers=workers, port=port, tls=tls)
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    _out.print(
        f"wrote {files.config}, {files.password_file}, {files.acl_file}; credentials in {files.credentials}",
        highlight=False,
    )


def _nats_config(  # noqa: PLR0917 - the options of broker-config, passed on
    out: Path,
    hubs: list[str],
    specs: list[str],
    platform_user: str,
    workers: int,
    tls: TlsListener | None,
    store: Path,
    version_text: str | None,
) -> None:
    from community.brokerconf_nats import (  # noqa: PLC0415  bcrypt only when used
        IngestBuffer,
        NatsNode,
        local_server_version,
        parse_version,
        write_nats_config,
    )

    try:
        version = local_server_version() if version_text is None else parse_version(version_text)
    except ValueError as exc:
        raise _fail(f"--nats-version: {exc}") from None
    try:
        nodes = [NatsNode.parse(spec) for spec in specs]
        files = write_nats_config(
            out,
            hubs,
            nodes,
            platform_user=platform_user,
            workers=workers,
            tls=tls,
            store_dir=store,
            server_version=version,
        )
    except (ValueError, OSError) as exc:
        raise _fail(f"--nats-node: {exc}") from None
    written = ", ".join(str(p) for p in files.configs.values())
    if version is None:
        limits = "an unknown nats-server, without stream ingest limits (give --nats-version for 2.11 and later)"
    else:
        with_ = "with" if IngestBuffer.supported(version) else "without"
        limits = f"nats-server {'.'.join(map(str, version))}, {with_} stream ingest limits"
    _out.print(
        f"wrote {written} for {limits}; credentials in {files.credentials}",
        highlight=False,
        soft_wrap=True,
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


def _config_text(broker: str, username: str | None, client_id: str) -> str:
    """A platform.toml (see :mod:`community.config`); strings quoted as TOML basic strings (JSON's escapes)."""
    user = "" if username is None else f"username = {json.dumps(username)}\n"
    return (
        "# The reference platform's config: carehub platform run -c this-file (see community/config.py).\n"
        "[broker]\n"
        f"url = {json.dumps(broker)}\n"
        f"{user}"
        '# password = "..."   # the broker password of this user (carehub platform broker-config writes it)\n'
        'share_group = "ingest"\n'
        f"client_id = {json.dumps(client_id)}\n"
        "\n[storage]\n"
        'database = "platform.db"          # relative to this file\n'
        "\n[keys]\n"
        'identity = "keys/platform.key"    # mode 0600; keys/platform.pub goes on every hub\n'
    )


@app.command()
def init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where platform.toml, platform.db and keys/ go (created if missing).")
    ] = Path(),
    broker: Annotated[str, typer.Option("--broker", help="The broker's URL, mqtt://host:port.")] = (
        "mqtt://127.0.0.1:1883"
    ),
    username: Annotated[str | None, typer.Option("--username", help="The ingest worker's broker user.")] = None,
    client_id: Annotated[str, typer.Option("--client-id", help="This worker's MQTT client id.")] = "carehub-platform-1",
) -> None:
    """Create the platform's config (platform.toml) and identity keys; run again, it checks them and changes nothing."""
    config_path = directory / "platform.toml"
    keys = directory / "keys"
    if config_path.exists():
        cfg = _config(config_path)
        try:
            public = cfg.identity().public
        except PlatformConfigError as exc:
            raise _fail(f"{exc} (platform.toml exists: fix it, or run carehub platform keygen --out {keys})") from None
        _out.print(f"{config_path} already set up and valid; nothing changed", highlight=False)
        _print_next_steps(cfg, public.key_id)
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic.write_atomic(config_path, _config_text(broker, username, client_id).encode(), mode=0o600)
    except OSError as exc:
        raise _fail(f"{config_path}: cannot write ({exc.strerror or exc})", 1) from None
    try:
        cfg = load_platform_config(config_path)
    except PlatformConfigError as exc:
        config_path.unlink(missing_ok=True)
        raise _fail(str(exc).replace(f"{config_path}: [broker] url", f"--broker {broker!r}")) from None
    private = cfg.identity_file
    if private.exists():
        identity_key_id = _config_identity(cfg).public.key_id
        made = "kept the existing"
    else:
        identity = PlatformIdentity.generate()
        try:
            keys.mkdir(parents=True, exist_ok=True)
            save_platform_identity(private, identity)
            save_platform_public_keys(keys / "platform.pub", identity.public)
        except (OSError, KeyFileError) as exc:
            raise _fail(f"{keys}: {exc}", 1) from None
        identity_key_id = identity.public.key_id
        made = "created the"
    _out.print(f"wrote {config_path}; {made} platform identity {private}", highlight=False)
    _print_next_steps(cfg, identity_key_id)


def _config_identity(cfg: PlatformConfig) -> PlatformIdentity:
    try:
        return cfg.identity()
    except PlatformConfigError as exc:
        raise _fail(str(exc)) from None


def _print_next_steps(cfg: PlatformConfig, platform_key_id: str) -> None:
    _out.print(
        f"platform key id {platform_key_id} (give it to installers with {cfg.identity_file.parent / 'platform.pub'})",
        highlight=False,
    )
    _out.print(f"next: carehub platform run -c {cfg.path}", highlight=False)


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
        async with open_storage(cfg) as storage:
            await storage.enroll_hub(hub, residents or ())

    try:
        aio.run(main())
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    # The same id `carehub provision init` printed on the hub (protocols.keys.key_id of its verify key).
    _out.print(f"enrolled {hub.hub_id} (key id {key_id(hub.verify_key)})", highlight=False)


Check = Callable[[Storage], Awaitable[str | None]]


def _enrolled(hub: str) -> Check:
    async def check(storage: Storage) -> str | None:
        enrolled = await storage.hub_key(hub) is not None
        return None if enrolled else f"hub {hub!r} is not enrolled (carehub platform enroll)"

    return check


class _RefusedError(Exception):
    """A down-message the platform's own records show cannot apply (unknown hub, resident or alarm)."""


def _send_down(cfg: PlatformConfig, hub: str, body: DownBody, checks: tuple[Check, ...]) -> int:
    """Store ``body`` for ``hub`` as a signed down-message once every check passed (its seq from the platform
    database), then publish it. A broker that cannot be reached leaves it stored: a running worker sends it when
    the hub is next online (community.downbox); that is said on standard error, and the command still succeeds."""
    codec = _codec(cfg)

    async def main() -> tuple[int, str | None]:
        async with open_storage(cfg) as storage:
            for check in checks:
                problem = await check(storage)
                if problem is not None:
                    raise _RefusedError(problem)
            message, queued = await queue_message(storage, codec, hub, body, _dt.datetime.now(_dt.UTC))
            try:
                async with aiomqtt.Client(cfg.host, cfg.port, username=cfg.username, password=cfg.password) as client:
                    await client.publish(codec.down_topic(hub), queued.payload, qos=1)
            except aiomqtt.MqttError as exc:
                return message.seq, f"broker {cfg.host}:{cfg.port}: {exc}"
            await storage.mark_down_sent(hub, queued.seq, _dt.datetime.now(_dt.UTC))
            return message.seq, None

    try:
        seq, unsent = aio.run(main())
    except _RefusedError as exc:
        raise _fail(str(exc)) from None
    except EncodeError as exc:
        raise _fail(str(exc)) from None
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    if unsent is not None:
        _err.print(
            f"message {seq} is stored but not sent yet ({unsent}); a running platform worker sends it when {hub} is"
            " next online (see carehub platform down-messages)",
            highlight=False,
            soft_wrap=True,
        )
    return seq


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

    async def known_alarm(storage: Storage) -> str | None:
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

    async def known_resident(storage: Storage) -> str | None:
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
        async with open_storage(cfg) as storage:
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
app.add_typer(__import__("community.tls_cli", fromlist=["app"]).app, name="tls")
app.add_typer(__import__("community.console.careplan", fromlist=["app"]).app, name="careplan")
app.add_typer(__import__("community.console.audit", fromlist=["app"]).app, name="audit")
app.add_typer(__import__("community.console.accounts", fromlist=["app"]).app, name="account")
app.add_typer(__import__("community.console.sharing_cli", fromlist=["app"]).app, name="sharing")
app.command("export")(__import__("community.fhir.cli", fromlist=["export_command"]).export_command)


@app.command("migrate")
def migrate(
    config: ConfigOption,
    check: Annotated[
        bool, typer.Option("--check", help="Only show the schema version; exit 1 if a migration is pending.")
    ] = False,
) -> None:
    """Bring the platform database's schema to this carehub's version (SQLite or PostgreSQL, as configured).

    Workers also migrate when they start; run this first to apply a migration as its own step of an upgrade.
    """
    cfg = _config(config)
    try:
        if check:
            status = aio.run(schema_status(cfg))
            if status.current > status.latest:
                raise _fail(
                    f"platform database {status.name} ({status.engine}): schema {status.current} is newer than this"
                    f" carehub knows ({status.latest}); upgrade carehub",
                    1,
                )
            if status.pending:
                raise _fail(
                    f"platform database {status.name} ({status.engine}): schema {status.current}, {status.pending}"
                    f" migration(s) to {status.latest} pending: run carehub platform migrate -c {config}",
                    1,
                )
            _out.print(
                f"platform database {status.name} ({status.engine}): schema {status.current}, up to date",
                highlight=False,
                soft_wrap=True,
            )
            return
        before, after = aio.run(migrate_schema(cfg))
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    change = (
        f"schema {before.current} -> {after.current}"
        if after.current != before.current
        else f"schema {after.current}, already up to date"
    )
    _out.print(f"platform database {after.name} ({after.engine}): {change}", highlight=False, soft_wrap=True)


def _down_dict(d: QueuedDown) -> dict[str, object]:
    def when(t: _dt.datetime | None) -> str | None:
        return None if t is None else t.isoformat(timespec="seconds")

    return {
        "hub": d.hub,
        "seq": d.seq,
        "type": d.message_type,
        "state": d.state.value,
        "sends": d.sends,
        "queued_at": when(d.queued_at),
        "sent_at": when(d.sent_at),
        "confirmed_at": when(d.confirmed_at),
        "reason": d.reason,
        "detail": d.detail,
    }


@app.command("down-messages")
def down_messages(
    config: ConfigOption,
    hub: Annotated[str | None, typer.Option("--hub", help="Only this hub's messages.")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only those the hub has not confirmed yet.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of lines.")] = False,
) -> None:
    """List messages sent down to hubs (acks, threshold changes, snoozes) and whether each hub confirmed them:
    queued, sent, applied, refused (with the hub's reason) or expired."""
    cfg = _config(config)

    async def main() -> list[QueuedDown]:
        async with open_storage(cfg) as storage:
            return await storage.down_messages(hub, open_only=open_only)

    try:
        rows = aio.run(main())
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        output.emit(json.dumps([_down_dict(d) for d in rows], ensure_ascii=False))
        return
    lines = []
    for d in rows:
        when = d.confirmed_at or d.sent_at or d.queued_at
        why = "" if d.reason is None else f": {_printable(d.reason)}"
        if d.detail is not None:
            why += f" ({_printable(d.detail)})"
        lines.append(f"{d.hub} {d.seq} {d.message_type} {d.state.value} {when:%Y-%m-%d %H:%M:%S} sent {d.sends}x{why}")
    if lines:
        output.emit("\n".join(lines))
