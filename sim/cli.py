"""``carehub sim home``: run a scenario's home on a link, printing what happens.

The simulated devices (and bumble, from the ``[sim]`` extra) are imported when a command runs, so ``carehub --help``
and ``carehub sim --help`` work without that extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from carehub.params import absolute_path, optional_absolute_path, positive_number
from runtime import output

app = typer.Typer(
    help="Simulated homes: meters on a BLE link replaying a scenario.", no_args_is_help=True, rich_markup_mode=None
)


@app.callback()
def sim() -> None:
    """Simulated homes: meters on a BLE link replaying a scenario."""


@app.command()
def home(
    scenario: Annotated[Path, typer.Option(help="Scenario TOML file.", callback=absolute_path)],
    link: Annotated[str, typer.Option(help="local[:name] or tcp:127.0.0.1:PORT.")] = "local",
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second.", callback=positive_number)] = 60.0,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's jitter seed.")] = None,
    log: Annotated[
        Path | None,
        typer.Option(help="Write the ground-truth log here as JSON lines.", callback=optional_absolute_path),
    ] = None,
) -> None:
    """Run every device of SCENARIO on LINK, replaying its timeline SPEED times faster than real time."""
    from gateway import aio  # noqa: PLC0415 - see the module docstring
    from sim.ble.config import parse_link  # noqa: PLC0415
    from sim.ble.errors import LinkConfigError  # noqa: PLC0415
    from sim.clock import CompressedClock  # noqa: PLC0415
    from sim.home import Home  # noqa: PLC0415
    from sim.scenario import ScenarioError, load_scenario  # noqa: PLC0415

    try:
        parse_link(link)
        parsed = load_scenario(scenario)
    except (LinkConfigError, ScenarioError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None

    async def run() -> list[str]:
        clock = CompressedClock(parsed.start_time, speed)
        async with Home(parsed, link=link, clock=clock, seed=seed, on_event=output.emit) as running:
            await running.run()
        return [json.dumps(p.as_dict()) for p in running.log]

    lines = aio.run(run())
    if log is not None:
        try:
            log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        except OSError as exc:
            typer.echo(f"error: cannot write the log {log} ({exc.strerror})", err=True)
            raise typer.Exit(1) from None
    output.emit(f"{len(lines)} measurements produced")
