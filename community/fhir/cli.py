"""``carehub platform export --fhir DIR``: every stored record as FHIR R4 resources, one NDJSON file per type.

Whole or nothing (:mod:`community.fhir.ndjson`); a failure is one line on standard error: exit 2 for bad input (a
config that does not load, an unknown time zone, a directory that is not new or empty), 1 for a failed run (the
database, a record that cannot be exported, a write).
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo
from pathlib import Path
from typing import Annotated

import typer

from community.config import PlatformConfigError, load_platform_config
from community.fhir.mapping import ExportError
from community.fhir.ndjson import BulkExportError, check_target, write_ndjson
from community.fhir.resources import RESOURCE_TYPES, FhirExport, build_export
from community.storage import StorageError, StoredReading
from community.storage_open import open_storage
from runtime import aio, output

__all__ = ["export_command"]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(code)


def _zone(name: str | None) -> _dt.tzinfo | None:
    if name is None:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _fail(f"--zone {name!r} is not an IANA time zone (e.g. Asia/Shanghai)") from None


def _summary(export: FhirExport, written: dict[str, Path], directory: Path) -> str:
    lines = [f"FHIR R4 export in {directory}:"]
    lines += [f"  {export.count(t):>8} {t:<13} {written[t].name}" for t in RESOURCE_TYPES if t in written]
    if not written:
        lines.append("  no resources (the database holds no exportable records)")
    if export.skipped:
        shown = ", ".join(f"{n} {why}" for why, n in sorted(export.skipped.items()))
        lines.append(f"  not resources of their own: {shown}")
    return "\n".join(lines)


def export_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="The platform's TOML config file.")],
    fhir: Annotated[
        Path,
        typer.Option("--fhir", metavar="DIR", help="Write FHIR R4 NDJSON (one file per resource type) into DIR."),
    ],
    hub: Annotated[str | None, typer.Option("--hub", help="Only this hub's records.")] = None,
    zone: Annotated[
        str | None,
        typer.Option("--zone", help="The homes' IANA time zone: readings are dated by the meter's own clock in it."),
    ] = None,
) -> None:
    """Export every stored record as HL7 FHIR R4 (Patient, Device, Observation, Communication, Flag), one NDJSON
    file per resource type in DIR (new or empty); re-exporting gives the same resources with the same ids."""
    tz = _zone(zone)
    directory = fhir.absolute()
    try:
        check_target(directory)
    except BulkExportError as exc:
        raise _fail(str(exc)) from None
    try:
        cfg = load_platform_config(config)
    except PlatformConfigError as exc:
        raise _fail(str(exc)) from None

    async def read() -> list[StoredReading]:
        async with open_storage(cfg) as storage:
            return await storage.readings(hub)

    try:
        export = build_export(aio.run(read()), tz)
        written = write_ndjson(export, directory)
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    except ExportError as exc:
        raise _fail(f"FHIR export failed, nothing written: {exc}", 1) from None
    except BulkExportError as exc:
        raise _fail(str(exc), 1) from None
    output.emit(_summary(export, written, directory))
