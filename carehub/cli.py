"""The ``carehub`` command: one entry point for residents' hubs, installers, the simulator and the platform.

Failures print one clear line on standard error and exit non-zero (2 for bad input, 1 for a failed run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from protocols import gatt
from protocols.errors import DecodeError
from sim.platform.cli import app as platform_app

app = typer.Typer(
    name="carehub",
    help="carehub: a home health hub that keeps an elderly resident safe and their readings flowing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
gateway_app = typer.Typer(help="Run or check the hub daemon.", no_args_is_help=True)
app.add_typer(gateway_app, name="gateway")
app.add_typer(platform_app, name="platform")

_out = Console()
_err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def decode(
    uuid: Annotated[str, typer.Argument(help='Characteristic UUID: "2A35", "0x2A35" or the 128-bit form.')],
    hex_bytes: Annotated[
        str,
        typer.Argument(metavar="HEX", help="The notification's bytes in hex (spaces and colons allowed)."),
    ],
    pretty: Annotated[bool, typer.Option("--pretty", help="Print a table instead of JSON.")] = False,
) -> None:
    """Decode one captured GATT notification or read (e.g. from nRF Connect) and print its values."""
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


@gateway_app.command("check")
def gateway_check(
    config: Annotated[Path, typer.Option("--config", "-c", help="The hub's TOML config file.")],
) -> None:
    """Validate a hub config file without starting anything."""
    from gateway.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    _out.print(
        f"[green]ok[/] {config}: hub {cfg.hub_id}, {len(cfg.residents)} resident(s), "
        f"{len(cfg.devices)} device(s), broker {cfg.broker.host}:{cfg.broker.port}"
    )


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
