"""The ``carehub`` command: one entry point for residents' hubs, installers, the simulator and the platform.

Failures print one clear line on standard error and exit non-zero (2 for bad input - an unknown or invalid option,
a missing config, a missing optional extra - and 1 for a failed run). Output is written completely or the command
fails (:mod:`runtime.output`); path options are made absolute while the command line is parsed
(:mod:`carehub.params`).

The command groups of the installer, the simulator and the platform pull in heavy modules (aiohttp, the simulated
devices, the platform's storage). :func:`main` imports only the group its command line names, so the resident's
daemon (``carehub gateway run``) does not carry the others in memory; ``carehub --help`` (no group named) loads
them all. :data:`app` (the full command, for tests and tools) is built on first use.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.main
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError  # typer's own click: no public name for "no args, show help"

from carehub.params import absolute_path, optional_absolute_path, positive_number
from runtime import output

__all__ = ["EXTRAS", "LAZY_GROUPS", "build_app", "main", "run"]

#: Command groups imported only when named: name -> (module, attribute). ``doctor`` is a command, not a group.
LAZY_GROUPS: dict[str, tuple[str, str]] = {
    "platform": ("community.cli", "app"),
    "sim": ("sim.cli", "app"),
    "provision": ("carehub.provision_cli", "app"),
    "doctor": ("carehub.provision_cli", "doctor_command"),
}

#: Optional dependencies -> the extra of ``pyproject.toml`` that installs them. A command that needs one that is
#: missing says which extra to install, in one line (exit status 2); ``carehub --help`` works without any of them.
EXTRAS: dict[str, str] = {"bumble": "sim", "amqtt": "sim", "aiohttp": "installer", "gpiozero": "pi"}

_root = typer.Typer(
    name="carehub",
    help="carehub: a home health hub that keeps an elderly resident safe and their readings flowing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
gateway_app = typer.Typer(help="Run or check the hub daemon.", no_args_is_help=True, rich_markup_mode=None)
_root.add_typer(gateway_app, name="gateway")

_out = Console()
_err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _report(message)
    return typer.Exit(code)


def _report_note(message: str) -> None:
    """One line on standard error: ``note: message``."""
    _err.print(f"[bold yellow]note:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def _report(message: str) -> None:
    """One line on standard error: ``error: message`` (newlines in ``message`` folded)."""
    _err.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


@_root.command()
def decode(
    uuid: Annotated[
        str, typer.Argument(metavar="UUID", help='Characteristic UUID: "2A35", "0x2A35" or the 128-bit form.')
    ],
    hex_bytes: Annotated[
        str,
        typer.Argument(metavar="HEX", help="The notification's bytes in hex (spaces and colons allowed)."),
    ],
    pretty: Annotated[bool, typer.Option("--pretty", help="Print a table instead of JSON.")] = False,
    units: Annotated[
        str, typer.Option("--units", metavar="mgdl|mmol", help="Glucose shown in mg/dL (default) or mmol/L.")
    ] = "mgdl",
    tolerant: Annotated[
        bool,
        typer.Option(
            "--tolerant", help="Decode as the hub does: accept padding and reserved flag bits, and say which."
        ),
    ] = False,
) -> None:
    """Decode one captured GATT notification or read (e.g. from nRF Connect) and print its values.

    Decoding is strict: a value with bytes after its last field (padding) or with reserved flag bits set is refused,
    with what is wrong. --tolerant decodes it as the hub does and adds "tolerated" (trailing_bytes, rfu_flags).
    A glucose concentration is shown in mg/dL or mmol/L; the value as sent (kg/L or mol/L) follows as
    concentration_si and unit_si.
    """
    from protocols import gatt
    from protocols.clinical_units import clinical_values, parse_glucose_display
    from protocols.errors import DecodeError

    try:
        display = parse_glucose_display(units)
    except ValueError as exc:
        raise _fail(str(exc)) from None

    cleaned = hex_bytes.replace(" ", "").replace(":", "").replace("-", "")
    cleaned = cleaned.removeprefix("0x")
    try:
        data = bytes.fromhex(cleaned)
    except ValueError:
        raise _fail(f"HEX: not a hexadecimal byte string: {hex_bytes!r}") from None
    uuid_arg: str | int = uuid
    if uuid.lower().startswith("0x"):
        try:
            uuid_arg = int(uuid, 16)
        except ValueError:
            raise _fail(f"UUID: not a hexadecimal number: {uuid!r}") from None
    try:
        decoded = gatt.decode_tolerant(uuid_arg, data) if tolerant else gatt.Tolerated(gatt.decode(uuid_arg, data))
    except gatt.TrailingBytesError as exc:
        padding = data[exc.end :].hex()
        raise _fail(f"{exc} ({padding}: padding after the value); --tolerant decodes it without them") from None
    except gatt.RfuFlagsError as exc:
        raise _fail(f"{exc}; they select no field: --tolerant decodes the value without them") from None
    except DecodeError as exc:
        raise _fail(str(exc)) from None
    measurement = decoded.measurement
    values = clinical_values(measurement.as_dict(), display)
    if decoded.tolerances:
        values["tolerated"] = sorted(t.value for t in decoded.tolerances)
        _report_note(decoded.describe())
    if not pretty:
        output.emit(json.dumps(values, ensure_ascii=False))
        return
    table = Table(title=type(measurement).__name__, show_header=True)
    table.add_column("field")
    table.add_column("value")
    for key, value in values.items():
        table.add_row(key, "—" if value is None else json.dumps(value, ensure_ascii=False))
    _out.print(table)


@gateway_app.command("run")
def gateway_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="The hub's TOML config file.", callback=absolute_path)],
    check: Annotated[bool, typer.Option("--check", help="Only validate the config and the key files.")] = False,
    voice: Annotated[bool, typer.Option("--voice/--no-voice", help="Speak to the resident with espeak-ng.")] = True,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Log every step of the hub; -vv: of every library too.")
    ] = 0,
    debug_lib: Annotated[
        list[str] | None,
        typer.Option(
            "--debug-lib", metavar="LOGGER", help="Also log this library's debug output (e.g. bumble); repeat."
        ),
    ] = None,
) -> None:
    """Run the hub daemon (or, with --check, validate its configuration and keys).

    The service runs the same daemon as carehub-hub, which takes the same options without loading this toolkit.
    """
    from gateway.config import ConfigError
    from gateway.provision.errors import NotInitialisedError
    from gateway.provision.files import HubPaths, require_config
    from gateway.runner import GatewayStartError, load_checked, serve, summary

    try:
        require_config(HubPaths.for_config(config))
        cfg = load_checked(config)
    except NotInitialisedError as exc:
        raise _fail(f"{exc.what}. Fix: {exc.fix}") from None
    except (ConfigError, GatewayStartError) as exc:
        raise _fail(str(exc)) from None
    if check:
        _out.print(f"[green]ok[/] {summary(cfg, config)}")
        return
    try:
        serve(cfg, voice=voice, verbosity=verbose, debug_libraries=tuple(debug_lib or ()))
    except GatewayStartError as exc:
        raise _fail(str(exc), 1) from None


@_root.command()
def demo(
    hours: Annotated[
        float, typer.Option(help="Simulated hours of the day to play.", min=0.5, max=24, callback=positive_number)
    ] = 18.0,
    speed: Annotated[
        float | None,
        typer.Option(
            help="Simulated seconds per real second, 1 (real time) to 86400 (default: the day in about a minute).",
            min=1.0,
            max=86400.0,
            callback=positive_number,
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the scenario's timing jitter.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    outage: Annotated[bool, typer.Option("--outage/--no-outage", help="Stop the broker for a while.")] = True,
    broker: Annotated[str, typer.Option(help="auto, mosquitto or embedded.")] = "auto",
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            metavar="DIR",
            help="Leave the platform's database and config (and the hub's files) in DIR, a new or empty directory.",
            callback=optional_absolute_path,
        ),
    ] = None,
    console: Annotated[
        str | None,
        typer.Option(
            "--console",
            metavar="HOST:PORT",
            help="Serve the doctor's web console during the day (e.g. 127.0.0.1:8080); the doctor acts through it.",
        ),
    ] = None,
) -> None:
    """Play a resident's day end to end: meters, pendant, hub, broker, platform, caregiver."""
    from sim.demo import PLATFORM_CONFIG, DemoOptions, play_demo
    from sim.demo_view import DemoView

    if broker not in ("auto", "mosquitto", "embedded"):
        raise _fail(f"--broker: expected auto, mosquitto or embedded, got {broker!r}")
    if console is not None:
        from community.metrics import MetricsAddress

        try:
            MetricsAddress.parse(console)
        except ValueError as exc:
            raise _fail(f"--console: {exc}") from None
    if keep is not None:
        if keep.exists() and not keep.is_dir():
            raise _fail(f"--keep {keep}: not a directory")
        if keep.is_dir() and any(keep.iterdir()):
            raise _fail(f"--keep {keep}: the directory is not empty; name a new or empty one")
    import logging

    # Connection warnings during the staged outage are expected; the demo reports the outage itself.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    options = DemoOptions(
        hours=hours, speed=speed, seed=seed, outage=outage, broker=broker, workdir=keep, console=console
    )
    view = DemoView(_err if as_json else _out, quiet=as_json)
    with view:
        summary = play_demo(options, say=view.say)
    if as_json:
        output.emit(json.dumps(summary.as_dict(), ensure_ascii=False))
    else:
        view.print_summary(summary)
    if keep is not None:
        (_err if as_json else _out).print(
            f"kept the demo's platform in {keep}; look at it with: "
            f"carehub platform readings -c {keep / PLATFORM_CONFIG}",
            highlight=False,
            soft_wrap=True,
        )
    if not summary.ok:
        raise typer.Exit(1)


@_root.command()
def bench(
    which: Annotated[
        str | None,
        typer.Argument(
            metavar="[fhir|platform]",
            help="Only these figures: fhir (the FHIR export; no broker needed), or platform (a real platform worker"
            " under a fleet's reconnect storm; see carehub.bench_platform).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller counts (seconds, for smoke tests).")] = False,
    hubs: Annotated[int | None, typer.Option(help="platform: hubs in the storm (default 1000).", min=1)] = None,
    backlog: Annotated[int | None, typer.Option(help="platform: envelopes per hub (default 20).", min=1)] = None,
    panics: Annotated[int | None, typer.Option(help="platform: panic presses (default 10).", min=1)] = None,
    processes: Annotated[int | None, typer.Option(help="platform: fleet processes (default 1 per 5000).")] = None,
    postgres: Annotated[str | None, typer.Option(help="platform: store on this PostgreSQL URL.")] = None,
    nats: Annotated[
        bool, typer.Option("--nats", help="platform: a nats-server with JetStream (hubs on its MQTT listener).")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="platform: platform worker processes (default 1).", min=1)] = None,
    panics_after_connect: Annotated[
        bool,
        typer.Option("--panics-after-connect", help="platform: press each panic 2-6 s after its hub connected."),
    ] = False,
    enrolled: Annotated[
        int | None, typer.Option(help="platform: hubs enrolled besides the fleet's, before the storm.", min=0)
    ] = None,
    nats_default_ingest_buffer: Annotated[
        bool,
        typer.Option(
            "--nats-default-ingest-buffer",
            help="platform --nats: keep nats-server's default stream ingest limits instead of a district's.",
        ),
    ] = False,
) -> None:
    """Measure the hub's speed figures on this machine: codec, outbox, end to end, panic latency, memory, and the
    platform's FHIR export (carehub bench fhir: that figure alone; carehub bench platform: the platform's)."""
    from carehub.bench import format_rows, run_all
    from gateway import aio
    from sim.broker import mosquitto_available

    if which not in (None, "fhir", "platform"):
        raise _fail(f"unknown bench {which!r}: carehub bench [fhir|platform] (none: every hub figure)")
    platform_only = (hubs, backlog, panics, processes, postgres, workers, enrolled)
    platform_flags = (nats, panics_after_connect, nats_default_ingest_buffer)
    if which != "platform" and (any(platform_flags) or any(x is not None for x in platform_only)):
        raise _fail(
            "--hubs, --backlog, --panics, --processes, --postgres, --nats, --workers, --enrolled are for carehub bench"
            " platform"
        )
    if which == "fhir":
        from community.fhir.bench import fhir_figures

        results: dict[str, float | int | str] = {"quick": quick, **fhir_figures(quick=quick)}
    else:
        if not nats and not mosquitto_available():
            raise _fail("carehub bench needs mosquitto (apt-get install mosquitto)", 1)
        if which == "platform":
            from carehub.bench_platform import PlatformBenchOptions, run_platform_bench
            from sim.broker import BrokerError
            from sim.fleet import FleetError

            options = PlatformBenchOptions(
                hubs,
                backlog,
                panics,
                processes,
                postgres,
                quick,
                nats,
                workers or 1,
                panics_after_connect,
                enrolled or 0,
                nats_default_ingest_buffer,
            )
            try:
                results = aio.run(run_platform_bench(options))
            except (FleetError, BrokerError, OSError) as exc:
                raise _fail(f"carehub bench platform: {exc}", 1) from None
        else:
            results = aio.run(run_all(quick=quick))
    if as_json:
        output.emit(json.dumps(results))
        return
    table = Table(title=" ".join(filter(None, ("carehub bench", which))) + (" (quick)" if quick else ""))
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in format_rows(results):
        table.add_row(key, value)
    _out.print(table)


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one-line message for a missing optional dependency, or None when ``exc`` is not about one."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    return f"this command needs carehub's [{extra}] extra ({module} is not installed): pip install 'carehub[{extra}]'"


def build_app(only: str | None = None) -> typer.Typer:
    """The ``carehub`` command with every lazy group registered, or (``only``) just the one named, if any.

    The groups' modules import no optional extra (see :data:`EXTRAS`): their commands do, when they run.
    """
    app = typer.Typer(
        name=_root.info.name,
        help=_root.info.help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.registered_commands = list(_root.registered_commands)
    app.registered_groups = list(_root.registered_groups)
    names = LAZY_GROUPS if only is None else [only] if only in LAZY_GROUPS else []
    for name in names:
        module, attribute = LAZY_GROUPS[name]
        target = getattr(importlib.import_module(module), attribute)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)
    return app


def _named_command(argv: Sequence[str]) -> str | None:
    """The first word of the command line that is not an option (the command or group it names)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


@cache
def _full_app() -> typer.Typer:
    return build_app()


def __getattr__(name: str) -> Any:
    if name == "app":
        return _full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _invoke(argv: list[str]) -> int:
    """Parse ``argv`` and run the command it names; every failure becomes one line and an exit status."""
    try:
        command = typer.main.get_command(build_app(_named_command(argv)))
        result = command.main(argv, prog_name="carehub", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: unknown option, invalid or missing value
        path = getattr(getattr(exc, "ctx", None), "command_path", None)
        hint = f" (see `{path} --help`)" if isinstance(path, str) else ""
        _report(f"{exc.format_message()}{hint}")
        return exc.exit_code
    except typer.Abort:
        _report("aborted")
        return 1
    except ModuleNotFoundError as exc:
        message = _missing_extra(exc)
        if message is None:
            raise
        _report(message)
        return 2
    return result if isinstance(result, int) else 0


def run(argv: Sequence[str]) -> int:
    """Run ``carehub ARGV...`` and return its exit status; output is complete or the status says it is not."""
    try:
        with output.complete_output():
            return _invoke(list(argv))
    except output.OutputClosedError as exc:
        # If standard error is gone too, the exit status is all that is left to say it.
        with contextlib.suppress(output.OutputClosedError):
            output.write_all(2, f"error: {exc}\n".encode())
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point: ``carehub`` (``argv`` defaults to the process's arguments)."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))
