"""Bulk FHIR export to a directory: one NDJSON file per resource type (``Observation.ndjson``...), as the FHIR Bulk
Data format has it (one resource per line, UTF-8, ``application/fhir+ndjson``).

The export is whole or absent: every file is written into a fresh sibling directory, fsynced, and that directory is
renamed to the target in one step (then the parent is fsynced). The target must not exist or be an empty directory;
on any failure the partial directory is removed and :class:`BulkExportError` says why in one line. Files are mode
0600 and the directory 0700: they hold residents' health data.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from community.fhir.resources import RESOURCE_TYPES, FhirExport
from protocols import atomic

__all__ = ["NDJSON_SUFFIX", "BulkExportError", "check_target", "ndjson_line", "write_ndjson"]

NDJSON_SUFFIX: Final = ".ndjson"


class BulkExportError(RuntimeError):
    """The export directory could not be written; nothing was left behind."""


def ndjson_line(resource: Mapping[str, Any]) -> bytes:
    """One resource as one NDJSON line (compact JSON, UTF-8, a trailing newline)."""
    text = json.dumps(resource, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text + "\n").encode()


def check_target(directory: Path) -> None:
    """Refuse a target that is not a new or empty directory.

    Raises:
        BulkExportError: it exists and is a file, a symbolic link or a directory with entries.
    """
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise BulkExportError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise BulkExportError(f"{directory} is not empty (an export goes into a new or empty directory)")


def write_ndjson(export: FhirExport, directory: Path) -> dict[str, Path]:
    """Write ``export`` into ``directory`` (new or empty): ``<Type>.ndjson`` for each resource type it holds.

    Returns:
        resource type -> the file written (types without resources get no file).

    Raises:
        BulkExportError: the directory is not new or empty, or a write failed (nothing is left behind).
    """
    try:
        check_target(directory)
        atomic.make_directories(directory.parent)
    except OSError as exc:
        raise BulkExportError(f"{directory}: {exc.strerror or exc}") from None
    staging = directory.parent / f".{directory.name}.partial-{secrets.token_hex(6)}"
    written: dict[str, Path] = {}
    try:
        staging.mkdir(mode=0o700)
        for resource_type in RESOURCE_TYPES:
            resources = export.resources.get(resource_type, ())
            if not resources:
                continue
            name = resource_type + NDJSON_SUFFIX
            data = b"".join(ndjson_line(r) for r in resources)
            atomic.write_atomic(staging / name, data, mode=0o600)
            written[resource_type] = directory / name
        atomic.fsync_directory(staging)
        os.rename(staging, directory)  # replaces an empty directory, fails on a non-empty one
        atomic.fsync_directory(directory.parent)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        where = exc.filename or directory
        raise BulkExportError(f"FHIR export to {directory} failed: {where}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written
