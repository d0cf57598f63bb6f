"""The ``carehub`` command: one entry point for residents' hubs, installers, the simulator and the platform.

Failures print one clear line on standard error and exit non-zero (2 for bad input, 1 for a failed run).

The command groups of the installer, the simulator and the platform pull in heavy modules (aiohttp, the simulated
devices, the platform's storage). :func:`main` imports only the group its command line names, so the resident's
daemon (``carehub gateway run``) does not carry the others in memory; ``carehub --help`` (no group named) loads
them all. :data:`app` (the full command, for tests and tools) is built on first use.
"""

from __future__ import annotations

import importlib
import json
import sys
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["LAZY_GROUPS", "build_app", "main"]

#: Command groups imported only when named: name -> (module, attribute). ``doctor`` is a command, not a group.
LAZY_GROUPS: dict[str, tuple[str, str]] = {
    "platform": ("sim.platform.cli", "app"),
    "sim": ("sim.cli", "app"),
    "provision": ("carehub.provision_cli", "app"),
    "doctor": ("carehub.provision_cli", "doctor_command"),
}

_root = typer.Typer(
    name="carehub",
    help="carehub: a home health hub that keeps an elderly resident safe and their readings flowing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
gateway_app = typer.Typer(help="Run or check the hub daemon.", no_args_is_help=True)
_root.add_typer(gateway_app, name="gateway")

_out = Console()
_err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@_root.command()
def decode(
    uuid: Annotated[str, typer.Argument(help='Characteristic UUID: "2A35", "0x2A35" or the 128-bit form.')],
    hex_bytes: Annotated[
        str,
        typer.Argument(metavar="HEX", help="The notification's bytes in hex (spaces and colons allowed)."),
    ],
    pretty: Annotated[bool, typer.Option("--pretty", help="Print a table instead of JSON.")] = False,
) -> None:
    """Decode one captured GATT notification or read (e.g. from nRF Connect) and print its values."""
    from protocols import gatt
    from protocols.errors import DecodeError

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
        measurement = gatt.decode(uuid_arg, data)
    except DecodeError as exc:
        raise _fail(str(exc)) from None
    values = measurement.as_dict()
    if not pretty:
        print(json.dumps(values, ensure_ascii=False))
        return
    table = Table(title=type(measurement).__name__, show_header=True)
    table.add_column("field")
    table.add_column("value")
    for key, value in values.items():
        table.add_row(key, "—" if value is None else json.dumps(value, ensure_ascii=False))
    _out.print(table)


@gateway_app.command("run")
def gateway_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="The hub's TOML config file.")],
    check: Annotated[bool, typer.Option("--check", help="Only validate the config and the key files.")] = False,
    voice: Annotated[bool, typer.Option("--voice/--no-voice", help="Speak to the resident with espeak-ng.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False,
) -> None:
    """Run the hub daemon (or, with --check, validate its configuration and keys).

    A service runs the same daemon as ``carehub-hub`` (:mod:`gateway.__main__`), which leaves this toolkit out.
    """
    from gateway.config import ConfigError
    from gateway.runner import GatewayStartError, load_checked, serve, summary

    try:
        cfg = load_checked(config)
    except (ConfigError, GatewayStartError) as exc:
        raise _fail(str(exc)) from None
    if check:
        _out.print(f"[green]ok[/] {summary(cfg, config)}")
        return
    try:
        serve(cfg, voice=voice, verbose=verbose)
    except GatewayStartError as exc:
        raise _fail(str(exc), 1) from None


@_root.command()
def demo(
    hours: Annotated[float, typer.Option(help="Simulated hours of the day to play.", min=0.5, max=24)] = 18.0,
    speed: Annotated[
        float | None, typer.Option(help="Simulated seconds per real second (default: the day in about a minute).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the scenario's timing jitter.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    outage: Annotated[bool, typer.Option("--outage/--no-outage", help="Stop the broker for a while.")] = True,
    broker: Annotated[str, typer.Option(help="auto, mosquitto or embedded.")] = "auto",
) -> None:
    """Play a resident's day end to end: meters, pendant, hub, broker, platform, caregiver."""
    from gateway import aio
    from sim.demo import DemoOptions, run_demo
    from sim.demo_view import DemoView

    if broker not in ("auto", "mosquitto", "embedded"):
        raise _fail(f"--broker: expected auto, mosquitto or embedded, got {broker!r}")
    import logging

    # Connection warnings during the staged outage are expected; the demo reports the outage itself.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    options = DemoOptions(hours=hours, speed=speed, seed=seed, outage=outage, broker=broker)
    view = DemoView(_err if as_json else _out, quiet=as_json)
    with view:
        summary = aio.run(run_demo(options, say=view.say))
    if as_json:
        print(json.dumps(summary.as_dict(), ensure_ascii=False))
    else:
        view.print_summary(summary)
    if not summary.ok:
        raise typer.Exit(1)


@_root.command()
def bench(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller counts (seconds, for smoke tests).")] = False,
) -> None:
    """Measure the hub's speed figures on this machine: codec, outbox, end to end, panic latency, memory."""
    from carehub.bench import format_rows, run_all
    from gateway import aio
    from sim.broker import mosquitto_available

    if not mosquitto_available():
        raise _fail("carehub bench needs mosquitto (apt-get install mosquitto)", 1)
    results = aio.run(run_all(quick=quick))
    if as_json:
        print(json.dumps(results))
        return
    table = Table(title="carehub bench" + (" (quick)" if quick else ""))
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in format_rows(results):
        table.add_row(key, value)
    _out.print(table)


def build_app(only: str | None = None) -> typer.Typer:
    """The ``carehub`` command with every lazy group registered, or (``only``) just the one named, if any."""
    app = typer.Typer(
        name=_root.info.name,
        help=_root.info.help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
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


def _named_command(argv: list[str]) -> str | None:
    """The first word of the command line that is not an option (the command or group it names)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


@cache
def _full_app() -> typer.Typer:
    return build_app()


def __getattr__(name: str) -> Any:
    if name == "app":
        return _full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point."""
    try:
        build_app(_named_command(sys.argv[1:]))()
    except KeyboardInterrupt:
        sys.exit(130)
