"""Writing hub configs as TOML: the one writer, so every string is escaped the same way.

The standard library reads TOML (``tomllib``) but does not write it; hub configs need only scalars, tables, arrays
of tables and inline tables, which :func:`render_config` writes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["render_config"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"a config value must be finite, got {value!r}")
        text = repr(value)
        return text if any(c in text for c in ".en") else f"{text}.0"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def render_config(data: Mapping[str, Any], *, header: str | None = None) -> str:
    """TOML text for config ``data`` (what :func:`parse_config` reads back): top-level scalars, then ``[tables]``,
    then ``[[arrays of tables]]``, with ``header`` as a leading comment.

    The one writer of hub configs: the installer's steps, the demo and the benchmarks build plain data and render it
    here, so strings are always escaped the same way. Tables nested deeper than one level are written inline
    (``thresholds = { "bp.systolic.critical_high" = 175.0 }``).

    Raises:
        ValueError: a float that is not finite.
        TypeError: a value TOML cannot hold.
    """
    lines = [] if header is None else [f"# {line}" for line in header.splitlines()]
    for name, value in data.items():
        if not isinstance(value, Mapping) and not _is_table_array(value):
            lines.append(f"{_key(name)} = {_value(value)}")
    for name, value in data.items():
        if isinstance(value, Mapping):
            lines += ["", f"[{_key(name)}]"]
            lines += [f"{_key(str(k))} = {_value(v)}" for k, v in value.items()]
    for name, value in data.items():
        if _is_table_array(value):
            for entry in value:
                lines += ["", f"[[{_key(name)}]]"]
                lines += [f"{_key(str(k))} = {_value(v)}" for k, v in entry.items()]
    return "\n".join(lines).lstrip("\n") + "\n"
