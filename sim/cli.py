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
            held = ", ".join(f"{device_id} {device.stored_count()}" for device_id, device in running.devices.items())
            output.emit(f"unconfirmed in meter memory at the end: {held}")
        return [json.dumps(p.as_dict()) for p in running.log]

    lines = aio.run(run())
    if log is not None:
        try:
            log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        except OSError as exc:
            typer.echo(f"error: cannot write the log {log} ({exc.strerror})", err=True)
            raise typer.Exit(1) from None
    output.emit(f"{len(lines)} measurements produced")


@app.command()
def soak(
    days: Annotated[int, typer.Option(help="Simulated days to play (day 0 is a warm-up).", min=2, max=366)] = 30,
    quick: Annotated[
        bool, typer.Option("--quick", help="CI pass: 2 days, an outage and a hub restart every day, 5 s ticks.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the month's values and timing jitter.")] = 17,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    broker: Annotated[str, typer.Option(help="auto, mosquitto or embedded.")] = "auto",
) -> None:
    """Play a compressed month of a busy home against the real hub, sampling memory, descriptors, tasks, the outbox
    and the bytes written to storage per day; exit 1 when something grows where it should not (see sim/soak.py)."""
    import logging  # noqa: PLC0415 - see the module docstring

    from sim.soak import QUICK_DAYS, SoakOptions, play_soak, report_json  # noqa: PLC0415

    try:
        options = (
            SoakOptions(days=QUICK_DAYS, seed=seed, broker=broker, outage_every=1, restart_every=1, tick_s=5.0)
            if quick
            else SoakOptions(days=days, seed=seed, broker=broker)
        )
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    # Connection warnings during the staged outages are expected; the report counts the outages itself.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    report = play_soak(options, say=lambda line: typer.echo(line, err=True))
    output.emit(report_json(report) if as_json else report.table())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def fleet(  # noqa: PLR0917 - typer options are parameters
    config: Annotated[Path, typer.Option(help="The platform's platform.toml (hubs are enrolled in its database).")],
    hubs: Annotated[int, typer.Option(help="Hubs in the fleet, one MQTT connection each.", min=1)] = 20,
    backlog: Annotated[int, typer.Option(help="Envelopes in each hub's outbox when the storm starts.", min=0)] = 10,
    panics: Annotated[int, typer.Option(help="Panic presses during the storm, spread over hubs and time.", min=0)] = 2,
    panic_from: Annotated[float, typer.Option(help="Seconds into the storm of the first press.")] = 1.0,
    panic_to: Annotated[float, typer.Option(help="Seconds into the storm of the last press.")] = 3.0,
    broker: Annotated[
        list[str] | None,
        typer.Option(
            help="mqtt://host:port (default: the platform config's); repeat it for each node of a broker cluster: the"
            " hubs are spread over the nodes round-robin."
        ),
    ] = None,
    processes: Annotated[int | None, typer.Option(help="Worker processes (default: one per 5,000 hubs).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds the fleet may take to drain.")] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Storm a platform with HUBS protocol-level hubs (the hub's own outbox and uplink, no radio), each with BACKLOG
    envelopes, and PANICS panic presses; report stored/lost/duplicated, panic latency, amplification, drain time.
    Exit 1 when a record was lost or duplicated."""
    from gateway import aio  # noqa: PLC0415 - see the module docstring
    from sim.fleet import FleetError, FleetOptions, run_fleet  # noqa: PLC0415

    try:
        options = FleetOptions(
            config=config.absolute(),
            hubs=hubs,
            backlog=backlog,
            panics=panics,
            panic_from=panic_from,
            panic_to=panic_to,
            broker=tuple(broker) if broker else None,
            processes=processes,
            timeout_s=timeout,
        )
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        report = aio.run(run_fleet(options))
    except FleetError as error:
        typer.echo(f"error: {' '.join(str(error).split())}", err=True)
        raise typer.Exit(1) from None
    output.emit(report.to_json() if as_json else "\n".join(report.lines()))
    if not report.ok:
        raise typer.Exit(1)
