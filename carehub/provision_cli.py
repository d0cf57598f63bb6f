"""``carehub provision ...`` and ``carehub doctor``: set up a hub in a home, from a terminal.

Steps, each idempotent and resumable (state in the config's directory): ``init`` -> ``enroll`` -> ``resident`` ->
``scan``/``pair`` -> ``thresholds`` -> ``test``; ``status`` shows what is done, ``pin`` and ``web`` offer the same
workflow on a phone. Failures print one line, what happened and what to do, and exit non-zero (2 for bad input, 1
for a failed run); the existing configuration is never left half-written. Every command but ``init`` first checks
that the hub has a config and, when it has none, says so in the same words (exit status 2) without creating
anything.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from carehub.params import absolute_path, optional_absolute_path, positive_number
from gateway import aio
from gateway.config import ConfigError, DeviceKind, GatewayConfig, load_config
from gateway.provision.errors import (
    BluetoothUnavailableError,
    NotInitialisedError,
    ProvisionError,
    ThresholdInputError,
)
from gateway.provision.files import CONFIG_NAME, HubPaths, load_state, require_config
from runtime import output

__all__ = ["app", "doctor_command"]

app = typer.Typer(
    help="Set up a hub in a home: identity, enrollment, pairing, thresholds, installation test.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

_out = Console()
_err = Console(stderr=True)

DEFAULT_CONFIG = Path(os.environ.get("CAREHUB_CONFIG", f"/var/lib/carehub/{CONFIG_NAME}"))

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="The hub's config file (its directory holds keys and state).",
        callback=absolute_path,
    ),
]
LinkOption = Annotated[
    str | None,
    typer.Option(
        "--link", help="Simulated radio link (local[:NAME] or tcp:HOST:PORT); default: the config's, else BlueZ."
    ),
]


def _fail(exc: ProvisionError | str, code: int = 1) -> typer.Exit:
    if isinstance(exc, ProvisionError):
        text = f"[bold red]error:[/] {escape(exc.what)}. [bold]Fix:[/] {escape(exc.fix)}"
        code = 2 if isinstance(exc, ThresholdInputError | NotInitialisedError | BluetoothUnavailableError) else code
    else:
        text = f"[bold red]error:[/] {escape(exc)}"
    _err.print(text, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _initialised(config: Path) -> HubPaths:
    """The hub's paths, once it is known to have a config (else one line and exit status 2; nothing is created)."""
    paths = HubPaths.for_config(config)
    try:
        require_config(paths)
    except NotInitialisedError as exc:
        raise _fail(exc) from None
    return paths


def _load(config: Path) -> GatewayConfig:
    _initialised(config)
    try:
        return load_config(config)
    except ConfigError as exc:
        raise _fail(f"{exc}. Fix: correct that key, or run `carehub provision init` again") from None


def _link(config: Path, link: str | None) -> str | None:
    if link is not None:
        return link
    try:
        return load_config(config).ble_link
    except ConfigError:
        return None


def _hub_id(value: str | None) -> str | None:
    from protocols.topics import is_valid_hub_id  # noqa: PLC0415 - loaded per command

    if value is not None and not is_valid_hub_id(value):
        raise typer.BadParameter(f"{value!r} is not a hub id: lowercase letters, digits and '-', 2 to 63 characters")
    return value


@app.command()
def init(
    config: ConfigOption = DEFAULT_CONFIG,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Enrollment bundle from the platform.", callback=optional_absolute_path),
    ] = None,
    platform_key_id: Annotated[
        str | None, typer.Option("--platform-key-id", help="The platform key id the operator gave you (checked).")
    ] = None,
    hub_id: Annotated[
        str | None, typer.Option("--hub-id", help="This hub's id (without --bundle).", callback=_hub_id)
    ] = None,
    platform_keys: Annotated[
        Path | None,
        typer.Option(
            "--platform-keys",
            help="The platform's platform.pub (without --bundle).",
            callback=optional_absolute_path,
        ),
    ] = None,
    broker_url: Annotated[
        list[str] | None,
        typer.Option(
            "--broker-url",
            help="mqtts://HOST:PORT (without --bundle); repeat it for each node of a broker cluster, in the order the"
            " hub should try them.",
        ),
    ] = None,
    username: Annotated[str | None, typer.Option("--username", help="Broker user (default: the hub id).")] = None,
    password: Annotated[
        str | None, typer.Option("--password", envvar="CAREHUB_BROKER_PASSWORD", help="Broker password.")
    ] = None,
    link: LinkOption = None,
) -> None:
    """Create the hub's identity and write a validated config (from a bundle, or from keys and broker details)."""
    from gateway.provision.steps import init_hub, load_platform_keys  # noqa: PLC0415 - loaded per command

    paths = HubPaths.for_config(config)
    try:
        if bundle is not None:
            from community.enrollment import BundleError, read_bundle  # noqa: PLC0415

            try:
                parsed = read_bundle(bundle.read_bytes(), expect_key_id=platform_key_id)
            except (BundleError, OSError) as exc:
                raise ProvisionError(
                    f"cannot use the bundle {bundle}: {exc}", "ask the platform operator for a new enrollment bundle"
                ) from exc
            result = init_hub(
                paths,
                hub_id=parsed.hub_id,
                platform=parsed.platform,
                broker_url=parsed.broker_urls,
                username=parsed.username,
                password=parsed.password,
                link=link,
                broker_ca=parsed.broker_ca,
            )
        elif hub_id is None or platform_keys is None or not broker_url:
            raise _fail(
                ProvisionError(
                    "init needs a bundle, or --hub-id, --platform-keys and --broker-url",
                    "pass --bundle FILE from the platform operator, or all three options",
                ),
                2,
            )
        else:
            result = init_hub(
                paths,
                hub_id=hub_id,
                platform=load_platform_keys(platform_keys),
                broker_url=broker_url,
                username=username or hub_id,
                password=password,
                link=link,
            )
    except ProvisionError as exc:
        raise _fail(exc) from None
    made = "created" if result.created_identity else "kept the existing"
    _out.print(f"hub {result.config.hub_id}: {made} identity, key id [bold]{result.hub_key_id}[/]", highlight=False)
    _out.print(f"platform key id {result.platform_key_id}; config {config} is valid", highlight=False)
    _out.print(f"next: carehub provision enroll --config {config}", highlight=False)


@app.command()
def enroll(
    config: ConfigOption = DEFAULT_CONFIG,
    platform_config: Annotated[
        Path | None,
        typer.Option(
            "--platform-config",
            help="The reference platform's config, to enroll directly (operator).",
            callback=optional_absolute_path,
        ),
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace another key enrolled under this hub id.")] = False,
) -> None:
    """Register the hub's public key with the platform (or print what to hand the operator)."""
    from gateway.provision.steps import ReferencePlatformEnroller, enroll_hub  # noqa: PLC0415

    paths = HubPaths.for_config(config)
    _load(config)
    if platform_config is None:
        _out.print(
            f"Give the platform operator {paths.hub_pub} and ask them to run:\n"
            f"  carehub platform enroll --config PLATFORM.toml --key-file hub.pub\n"
            "then run `carehub provision test`: the platform acknowledges only enrolled hubs.",
            highlight=False,
        )
        return
    try:
        receipt = aio.run(enroll_hub(paths, ReferencePlatformEnroller(platform_config), replace=replace))
    except ProvisionError as exc:
        raise _fail(exc) from None
    _out.print(receipt, highlight=False)


@app.command()
def resident(
    resident_id: Annotated[str, typer.Argument(metavar="ID", help="Short id, e.g. r1.")],
    config: ConfigOption = DEFAULT_CONFIG,
    name: Annotated[str | None, typer.Option("--name", help="The resident's name as the hub speaks it.")] = None,
    language: Annotated[str | None, typer.Option("--language", help="Voice language: en or zh.")] = None,
) -> None:
    """Add a resident (or change their name or language)."""
    from gateway.provision.steps import set_resident  # noqa: PLC0415

    paths = _initialised(config)
    try:
        cfg = set_resident(paths, resident_id, name=name, language=language)
    except ProvisionError as exc:
        raise _fail(exc) from None
    r = cfg.resident(resident_id)
    _out.print(f"resident {r.id}: {r.name}, language {r.language}", highlight=False)


def _scan_table(rows: tuple[Any, ...], seconds: float) -> Table:
    table = Table(title=f"Health devices nearby (listening {seconds:g} s)")
    for column in ("address", "kind", "name", "RSSI", "paired"):
        table.add_column(column)
    for f in rows:
        table.add_row(
            f.address,
            f.kind.value if f.kind else "-",
            f.name or "-",
            "-" if f.rssi is None else f"{f.rssi} dBm",
            "yes" if f.paired else "no",
        )
    return table


@app.command()
def scan(
    config: ConfigOption = DEFAULT_CONFIG,
    seconds: Annotated[float, typer.Option("--seconds", help="How long to listen.", callback=positive_number)] = 10.0,
    link: LinkOption = None,
    everything: Annotated[bool, typer.Option("--all", help="Show devices that are not kit, too.")] = False,
) -> None:
    """List nearby health devices live: kind (by service), name, signal, paired or not."""
    from gateway.provision.radio import open_radio, scan_devices  # noqa: PLC0415

    paths = HubPaths.for_config(config)
    paired = [d.address for d in _load(config).devices]

    async def main() -> None:
        async with open_radio(_link(config, link), keystore=paths.bonds) as (scanner, _):
            with Live(_scan_table((), seconds), console=_out, refresh_per_second=4) as live:
                async for rows in scan_devices(
                    seconds, paired=paired, scanner_backend=scanner, only_kit=not everything
                ):
                    live.update(_scan_table(rows, seconds))

    try:
        aio.run(main())
    except ProvisionError as exc:
        raise _fail(exc) from None


def _pendant_key_arg(value: str | None) -> bytes | None:
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ProvisionError(f"cannot read {value[1:]} ({exc})", "give the key as 64 hex digits") from exc
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ProvisionError(
            "--pendant-key is not 32 bytes of hex", "copy the 64 hex digits of the key loaded into the pendant"
        )
    return key


@app.command()
def pair(
    address: Annotated[str, typer.Argument(metavar="ADDRESS", help="The device's Bluetooth address (from `scan`).")],
    resident_id: Annotated[str, typer.Option("--resident", help="Whose device it is.")],
    config: ConfigOption = DEFAULT_CONFIG,
    kind: Annotated[DeviceKind | None, typer.Option("--kind", help="Expected kind (checked).")] = None,
    user: Annotated[
        int | None,
        typer.Option(
            "--user",
            help="On a multi-user meter, the User ID it stamps on this resident's readings: 0 to 254, as the meter "
            "numbers its users (255 means unknown user). Leave out for a single-user meter.",
        ),
    ] = None,
    consent_code: Annotated[
        int | None,
        typer.Option(
            "--consent-code",
            help="On a multi-user scale with the User Data Service, the consent code (0 to 9999) chosen when the "
            "resident's --user was registered on it; tried on the scale while pairing.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A label, e.g. 'bedroom cuff'.")] = None,
    pendant_key: Annotated[
        str | None,
        typer.Option(
            "--pendant-key",
            help="The key loaded into the pendant (64 hex digits or @FILE); the pendant must prove it before it is "
            "saved. Not needed to pair a pendant again with the key the hub keeps.",
        ),
    ] = None,
    move: Annotated[
        bool, typer.Option("--move", help="Give a device paired for another resident to this one.")
    ] = False,
    link: LinkOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to find and bond the device.", callback=positive_number)
    ] = 30.0,
    passkey: Annotated[
        str | None,
        typer.Option(
            "--passkey",
            help="The 6-digit PIN a meter shows while it pairs (Accu-Chek Guide, many cuffs). Without it, you are "
            "asked for the PIN on a terminal when the meter wants one.",
        ),
    ] = None,
) -> None:
    """Bond a device, assign it to a resident (and user slot), provision a pendant's key, add it to the config.

    The address, the resident, the user and the pendant key are checked before the radio is used (exit status 2).
    """
    from gateway.ble_passkey import PasskeyDesk  # noqa: PLC0415
    from gateway.provision.consent import consent_to_check  # noqa: PLC0415
    from gateway.provision.document import load_document  # noqa: PLC0415
    from gateway.provision.radio import INSTRUCTIONS, installer_passkeys, open_radio, pair_device  # noqa: PLC0415
    from gateway.provision.steps import (  # noqa: PLC0415
        add_device,
        check_assignment,
        check_user_id,
        pendant_key_to_check,
        provision_pendant_key,
    )

    paths = _initialised(config)
    try:  # what the installer typed, before any radio work
        load_document(paths)
        address = check_assignment(paths, address, resident_id, move=move)
        check_user_id(user)
        consent = consent_to_check(user, consent_code)
        key = pendant_key_to_check(paths, address, _pendant_key_arg(pendant_key))
        passkeys = installer_passkeys(passkey, interactive=sys.stdin.isatty())
    except ProvisionError as exc:
        raise _fail(exc, 2) from None
    try:
        if kind is not None:
            _out.print(f"[bold]{escape(INSTRUCTIONS[kind])}[/]", highlight=False)

        async def main() -> Any:
            desk = PasskeyDesk()  # a meter's PIN request goes to passkeys, on BlueZ and the simulated radio alike
            async with open_radio(_link(config, link), keystore=paths.bonds, desk=desk) as (scanner, client):
                return await pair_device(
                    address,
                    expect=kind,
                    scanner_backend=scanner,
                    client_backend=client,
                    give_up_after=timeout,
                    pendant_key=key,
                    desk=desk,
                    passkeys=passkeys,
                    consent=consent,
                )

        result = aio.run(main())
        key_file = None
        if result.kind is DeviceKind.PENDANT:
            key_file, _, _ = provision_pendant_key(paths, result.address, key)  # proved by pair_device (§9.7)
        cfg = add_device(
            paths,
            address=result.address,
            kind=result.kind,
            resident=resident_id,
            name=name or result.name,
            user_id=user,
            pendant_key_file=key_file,
            move=move,
            consent_code=consent_code,
        )
    except ProvisionError as exc:
        raise _fail(exc) from None
    battery = "" if result.battery is None else f", battery {result.battery}%"
    count = len(cfg.devices)
    _out.print(
        f"paired {result.address} ({result.kind.value}{battery}) for {resident_id}; "
        f"{count} device{'' if count == 1 else 's'} now",
        highlight=False,
    )


@app.command()
def thresholds(
    resident_id: Annotated[
        str | None, typer.Option("--resident", help="Whose thresholds. Required, except with --list.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    profile: Annotated[
        list[str] | None, typer.Option("--profile", help="Doctor's preset (repeat; replaces the list).")
    ] = None,
    edits: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE in the key's unit, or KEY=default (repeat).")
    ] = None,
    list_keys: Annotated[bool, typer.Option("--list", help="Show every key, unit, default and profile.")] = False,
) -> None:
    """Apply a doctor's profiles and per-value edits, validated; show the resulting values."""
    from gateway.provision.steps import apply_thresholds, parse_edit  # noqa: PLC0415
    from gateway.thresholds import DEFAULTS, PROFILES, SPECS  # noqa: PLC0415

    if list_keys:
        table = Table(title="threshold keys")
        for column in ("key", "unit", "default", "plausible"):
            table.add_column(column)
        for k, spec in SPECS.items():
            table.add_row(k.value, spec.unit, f"{spec.default:g}", f"{spec.lo:g}..{spec.hi:g}")
        _out.print(table)
        _out.print("profiles: " + ", ".join(PROFILES), highlight=False)
        return
    if resident_id is None:
        raise _fail(ProvisionError("--resident is required", "name the resident, e.g. --resident r1"), 2)
    paths = _initialised(config)
    try:
        parsed = [parse_edit(e) for e in edits or []]
        resolved = apply_thresholds(paths, resident_id, profiles=profile, edits=parsed)
    except ProvisionError as exc:
        raise _fail(exc, 2) from None
    table = Table(title=f"thresholds of {resident_id} (profiles: {', '.join(resolved.profiles) or 'defaults'})")
    for column in ("key", "value", "unit", "default"):
        table.add_column(column)
    for k, v in resolved.values.items():
        changed = v != DEFAULTS[k]
        table.add_row(k.value, f"[bold]{v:g}[/]" if changed else f"{v:g}", SPECS[k].unit, f"{DEFAULTS[k]:g}")
    _out.print(table)


def _say(kind: str, data: Mapping[str, Any]) -> None:
    if kind == "prompt":
        _out.print(f"[bold]{escape(data['address'])} ({data['kind']}):[/] {escape(data['text'])}", highlight=False)
    elif kind == "arrived":
        _out.print(
            f"  received after {data['seconds']:.2f} s, waiting for the platform's acknowledgement", highlight=False
        )
    elif kind == "result":
        mark = "[green]ok[/]" if data["ok"] else "[red]FAILED[/]"
        _out.print(f"  {mark} {escape(str(data['detail']))}", highlight=False)


@app.command("test")
def installation_test(
    installer: Annotated[str, typer.Option("--installer", help="Your name or id, for the sign-off.")],
    config: ConfigOption = DEFAULT_CONFIG,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Seconds per device, prompt to acknowledgement.", callback=positive_number),
    ] = 120.0,
    link: LinkOption = None,
) -> None:
    """Take a test reading from every device and a pendant press; prove each reached the platform; write the report."""
    from gateway.provision.files import mark_step  # noqa: PLC0415
    from gateway.provision.radio import open_radio  # noqa: PLC0415
    from gateway.provision.testrun import STOP_SERVICE, run_installation_test, write_report  # noqa: PLC0415

    paths = HubPaths.for_config(config)
    cfg = _load(config)
    _out.print(STOP_SERVICE, highlight=False)

    async def main() -> Any:
        async with open_radio(_link(config, link), keystore=cfg.storage_path.parent / "bonds.json") as (s, c):
            return await run_installation_test(
                cfg, installer=installer, per_device_timeout=timeout, scanner_backend=s, client_backend=c, progress=_say
            )

    try:
        report = aio.run(main())
        json_path, text_path = write_report(paths, report)
        mark_step(paths, "test", {"passed": report.passed, "report": str(json_path)})
    except ProvisionError as exc:
        raise _fail(exc) from None
    _out.print(report.to_text(), highlight=False, markup=False)
    _out.print(f"report written to {json_path} and {text_path}", highlight=False)
    if not report.passed:
        raise typer.Exit(1)


@app.command()
def pin(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Show a new one-time installer PIN for the web page (valid 24 h or one login)."""
    from gateway.provision.pin import issue_pin  # noqa: PLC0415

    paths = _initialised(config)
    try:
        value = issue_pin(paths)
    except ProvisionError as exc:
        raise _fail(exc) from None
    _out.print(f"installer PIN: [bold]{value[:3]} {value[3:]}[/] (one login, 24 hours)", highlight=False)


@app.command()
def status(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Which steps are done, and what is configured."""
    paths = _initialised(config)
    state = load_state(paths)
    table = Table(title=f"provisioning of {config}")
    table.add_column("step")
    table.add_column("done at")
    table.add_column("details")
    for step, details in sorted(state.steps.items()):
        rest = {k: v for k, v in details.items() if k != "at"}
        table.add_row(step, str(details.get("at", "")), json.dumps(rest, ensure_ascii=False))
    _out.print(table)
    for step in ("init", "enroll", "test"):
        if not state.done(step):
            _out.print(f"not yet done: {step}", highlight=False)


@app.command()
def web(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (the hub's LAN address).")] = "0.0.0.0",  # noqa: S104 - served to the installer's phone on the LAN, behind the PIN
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 8080,
    link: LinkOption = None,
    platform_config: Annotated[
        Path | None,
        typer.Option(
            "--platform-config",
            help="Reference platform config, for enrolling from the page.",
            callback=optional_absolute_path,
        ),
    ] = None,
) -> None:
    """Serve the installer web page on the local network (log in with the PIN from `carehub provision pin`)."""
    from gateway.provision.web import WebSettings, serve  # noqa: PLC0415

    paths = _initialised(config)
    settings = WebSettings(paths=paths, link=_link(config, link), platform_config=platform_config)
    _out.print(f"installer page on http://{host}:{port}/ - get a PIN with `carehub provision pin`", highlight=False)
    try:
        aio.run(serve(settings, host=host, port=port))
    except KeyboardInterrupt:
        return
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def doctor_command(
    config: ConfigOption = DEFAULT_CONFIG,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds allowed for the broker checks.", callback=positive_number)
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = False,
) -> None:
    """Check a hub: keys, clock, storage, outbox backlog, broker, devices; each problem with its fix."""
    from gateway.provision.doctor import Status, run_doctor  # noqa: PLC0415

    _initialised(config)
    checks = aio.run(run_doctor(config, broker_limit_s=timeout))
    if as_json:
        output.emit(
            json.dumps([{"check": c.name, "status": c.status.value, "detail": c.detail, "fix": c.fix} for c in checks])
        )
    else:
        table = Table(title=f"carehub doctor: {config}")
        for column in ("check", "status", "detail", "fix"):
            table.add_column(column)
        colour = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red"}
        for c in checks:
            table.add_row(c.name, f"[{colour[c.status]}]{c.status.value}[/]", escape(c.detail), escape(c.fix))
        _out.print(table)
    if any(c.status is Status.FAIL for c in checks):
        raise typer.Exit(1)
