"""Option checks shared by every ``carehub`` command: paths made absolute once, numbers that must be finite.

Each runs as the option's callback, while the command line is parsed: a bad value is a usage error (one line, exit
status 2) before the command starts, and a path is absolute from then on, so a relative ``--config hub.toml`` means
the same file wherever it is used later (as a ``file:`` URI, in messages, in the config's own relative paths).
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

__all__ = ["absolute_path", "optional_absolute_path", "positive_number"]


def absolute_path(value: Path) -> Path:
    """``value`` with ``~`` expanded, made absolute against the working directory (symbolic links are kept)."""
    return value.expanduser().absolute()


def optional_absolute_path(value: Path | None) -> Path | None:
    """:func:`absolute_path` for an option that may be left out."""
    return None if value is None else absolute_path(value)


def positive_number(value: float | None) -> float | None:
    """Refuse zero, negative numbers, ``nan`` and ``inf`` (a duration, a speed); ``None`` passes (left out)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"expected a positive number, got {value:g}")
    return value
