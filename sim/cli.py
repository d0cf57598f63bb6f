"""``carehub sim home``: run a scenario's home on a link, printing what happens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gateway import aio
from sim.clock import CompressedClock
from sim.home import Home
from sim.scenario import ScenarioError, load_scenario

app = typer.Typer(help="Simulated homes: meters on a BLE link replaying a scenario.", no_args_is_help=True)


@app.callback()
def sim() -> None:
    """Simulated homes: meters on a BLE link replaying a scenario."""


@app.command()
def home(
    scenario: Annotated[Path, typer.Option(help="Scenario TOML file.")],
    link: Annotated[str, typer.Option(help="local[:name] or tcp:127.0.0.1:PORT.")] = "local",
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 60.0,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's jitter seed.")] = None,
    log: Annotated[Path | None, typer.Option(help="Write the ground-truth log here as JSON lines.")] = None,
) -> None:
    """Run every device of SCENARIO on LINK, replaying its timeline SPEED times faster than real time."""
    try:
        parsed = load_scenario(scenario)
    except ScenarioError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from error
    if speed <= 0:
        typer.echo("--speed must be positive", err=True)
        raise typer.Exit(2)

    async def run() -> list[str]:
        clock = CompressedClock(parsed.start_time, speed)
        async with Home(parsed, link=link, clock=clock, seed=seed, on_event=typer.echo) as running:
            await running.run()
        return [json.dumps(p.as_dict()) for p in running.log]

    lines = aio.run(run())
    if log is not None:
        log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    typer.echo(f"{len(lines)} measurements produced")
