"""Reading one TOML table of a config file with errors that name the file and the dotted key.

:class:`TableReader` gives typed access (strings, bounded integers and numbers, paths resolved against the file's
directory, sub-tables, arrays) and turns every wrong value into a :class:`ConfigError` such as
``hub.toml: broker.keepalive_s: expected an integer 5..3600, got 0``. `gateway.config` builds the hub's config
types on it.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MAX_CONFIG_BYTES", "ConfigError", "TableReader", "parse_size", "read_config_text"]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""

    def __init__(self, file: str, key: str, expected: str) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        super().__init__(f"{file}: {key}: {expected}")


class TableReader:
    """Typed access to one TOML table that reports errors with the file and dotted key."""

    def __init__(self, file: str, base: Path, table: Mapping[str, Any], prefix: str = "") -> None:
        self.file = file
        self.base = base
        self.table = table
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def fail(self, name: str, expected: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), expected)

    def sub(self, name: str, *, required: bool = True) -> TableReader:
        value = self.table.get(name)
        if value is None:
            if required:
                raise self.fail(name, "missing table")
            value = {}
        if not isinstance(value, Mapping):
            raise self.fail(name, f"expected a table, got {type(value).__name__}")
        return TableReader(self.file, self.base, value, f"{self.key(name)}.")

    def str_(self, name: str, default: str | None = None, *, required: bool = True) -> str:
        value = self.table.get(name, default)
        if value is None:
            if required:
                raise self.fail(name, "missing (expected a string)")
            return ""
        if not isinstance(value, str) or not value:
            raise self.fail(name, f"expected a non-empty string, got {value!r}")
        return value

    def opt_str(self, name: str) -> str | None:
        value = self.table.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(name, f"expected a non-empty string, got {value!r}")
        return value

    def int_(self, name: str, default: int | None = None, *, lo: int, hi: int) -> int:
        value = self.table.get(name, default)
        if value is None:
            raise self.fail(name, f"missing (expected an integer {lo}..{hi})")
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(name, f"expected an integer {lo}..{hi}, got {value!r}")
        return value

    def opt_int(self, name: str, *, lo: int, hi: int) -> int | None:
        if self.table.get(name) is None:
            return None
        return self.int_(name, lo=lo, hi=hi)

    def float_(self, name: str, default: float, *, lo: float, hi: float) -> float:
        value = self.table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"expected a number {lo}..{hi}, got {value!r}")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise self.fail(name, f"expected a number {lo}..{hi}, got {value!r}")
        return float(value)

    def path(self, name: str) -> Path:
        text = self.str_(name)
        if "\0" in text:
            raise self.fail(name, f"a path cannot contain a NUL byte, got {text!r}")
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def opt_path(self, name: str) -> Path | None:
        return self.path(name) if self.table.get(name) is not None else None

    def list_(self, name: str) -> list[Any]:
        value = self.table.get(name, [])
        if not isinstance(value, list):
            raise self.fail(name, f"expected an array, got {type(value).__name__}")
        return value


def parse_size(reader: TableReader, name: str, default: int) -> int:
    """Sizes may be integers (bytes) or strings with a unit: "64MB", "512 KiB"."""
    value = reader.table.get(name, default)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*", value, re.IGNORECASE)
        if m:
            units = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}
            size = int(float(m.group(1)) * units[(m.group(2) or "b").lower()])
            if size > 0:
                return size
    raise reader.fail(name, f'expected a positive size in bytes or with a unit ("64MB"), got {value!r}')


MAX_CONFIG_BYTES = 1 << 20
"""The largest hub config read: a home's hub.toml is a few kilobytes (16 devices, their residents' schedules and
thresholds); anything near a mebibyte is not a config, and reading it whole could exhaust a Pi's memory."""


def read_config_text(path: Path) -> str:
    """The config file's text, refused unless it is a regular file of at most :data:`MAX_CONFIG_BYTES` in UTF-8.

    Opened without blocking (a FIFO does not wait for a writer) and checked on the open descriptor, so a device such
    as ``/dev/zero`` or a huge file is never read without bound.
    """
    file = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot read: {exc.strerror}") from None
    except ValueError:  # an embedded NUL byte
        raise ConfigError(repr(file), "(file)", "a path cannot contain a NUL byte") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(file, "(file)", "not a regular file (a directory, device or FIFO); give hub.toml's path")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                file, "(file)", f"{info.st_size} bytes is too large for a config (at most {MAX_CONFIG_BYTES})"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES and (chunk := os.read(fd, MAX_CONFIG_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_CONFIG_BYTES:  # it grew while being read
            raise ConfigError(file, "(file)", f"too large for a config (more than {MAX_CONFIG_BYTES} bytes)")
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "(file)", f"not UTF-8 text (byte {exc.start})") from None
