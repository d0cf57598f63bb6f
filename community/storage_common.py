"""What both storage engines (SQLite, :mod:`community.storage`; PostgreSQL, :mod:`community.storage_pg`) share below
the :class:`community.storage.Storage` interface: the errors, and how values the protocol allows are mapped onto
columns both databases can hold.

Sequence numbers are unsigned 64-bit integers on the wire (``docs/protocol.md`` §4); SQLite's INTEGER and
PostgreSQL's BIGINT are signed 64-bit, so every sequence-number column holds ``value - 2**63``, which maps
``0..2**64-1`` onto the whole signed range one to one and keeps the order.

PostgreSQL text cannot hold the NUL character (SQLite can): a text value with NUL is refused before any transaction
in both engines, so an envelope is stored or refused the same way whichever engine runs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import functools
import logging
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

__all__ = [
    "EPOCH",
    "PRIVATE_MODE",
    "StorageError",
    "UnstorableError",
    "body_json",
    "check_text",
    "make_private",
    "micros",
    "seq_from_db",
    "seq_to_db",
]

_log = logging.getLogger(__name__)

PRIVATE_MODE: Final = 0o600
_U64_END: Final = 2**64
_BIAS: Final = 2**63
EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


class StorageError(RuntimeError):
    """The platform database cannot be opened or written (transient: nothing of the failed call was kept)."""


class UnstorableError(ValueError):
    """A value the protocol does not allow and the database cannot hold; the envelope is refused as malformed."""


def seq_to_db(value: int, what: str) -> int:
    """An unsigned 64-bit sequence number as a signed 64-bit column holds it (``value - 2**63``; order kept).

    Raises:
        UnstorableError: ``value`` is not an integer in ``0..2**64-1`` (``what`` names it in the message).
    """
    if type(value) is not int or not 0 <= value < _U64_END:
        raise UnstorableError(f"{what} {value!r} is not an unsigned 64-bit integer")
    return value - _BIAS


def seq_from_db(value: object) -> int:
    """The sequence number a column holds (the inverse of :func:`seq_to_db`).

    Raises:
        StorageError: the column holds something else than an integer.
    """
    if type(value) is not int:
        raise StorageError(f"a sequence number column holds {value!r}")
    return value + _BIAS


_PLAIN: Final = (str, int, float, bool, type(None))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _same(value: object) -> Any:
    return value


def _enum_value(value: enum.Enum) -> Any:
    return value.value


def _iso(value: _dt.datetime) -> str:
    return value.isoformat()


def _items(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [_jsonable(v) for v in value]


def _sorted_items(value: set[Any] | frozenset[Any]) -> list[Any]:  # a measurement's `tolerated`: names, sorted
    return sorted(_jsonable(v) for v in value)


def _map(value: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k): _jsonable(v) for k, v in value.items()}


def _fields_of(cls: type) -> Callable[[Any], dict[str, Any]]:
    names = _field_names(cls)

    def fields(value: object) -> dict[str, Any]:
        return {name: _jsonable(getattr(value, name)) for name in names}

    return fields


def _converter(cls: type) -> Callable[[Any], Any]:
    """How a value of exactly type ``cls`` becomes JSON-ready data (the rules of :func:`body_json`, in order)."""
    if cls in _PLAIN:  # exact types: an IntEnum or a bool subclass goes on
        return _same
    if issubclass(cls, enum.Enum):
        return _enum_value
    if issubclass(cls, bytes):
        return bytes.hex
    if issubclass(cls, _dt.datetime):
        return _iso
    if dataclasses.is_dataclass(cls):
        return _fields_of(cls)
    if issubclass(cls, list | tuple):
        return _items
    if issubclass(cls, set | frozenset):
        return _sorted_items
    if issubclass(cls, Mapping):
        return _map
    return _same


# The converter of each type met so far, chosen once per type: a value costs a lookup and a call instead of a chain
# of isinstance checks (an ABC's among them) per value (issue 15: body_json was about 4 % of the ingest worker).
_CONVERTERS: Final[dict[type, Callable[[Any], Any]]] = {}


def _jsonable(value: object) -> Any:
    cls = type(value)
    convert = _CONVERTERS.get(cls)
    if convert is None:
        convert = _CONVERTERS[cls] = _converter(cls)
    return convert(value)


def body_json(body: object) -> dict[str, Any]:
    """A record body (a :mod:`protocols.record` body dataclass) as JSON-ready data: its field names, enums as their
    values, bytes (raw GATT values, record ids) as lowercase hex, times as ISO 8601 in UTC, nested dataclasses as
    maps; a measurement's ``values`` exactly as decoded on the hub.

    What ``dataclasses.asdict`` and then a conversion of each value gave, in one walk and without ``asdict``'s deep
    copy of every value (a third of the ingest worker's CPU beyond opening the envelope, issue 15).
    """
    out: dict[str, Any] = _jsonable(body)
    return out


def micros(t: _dt.datetime) -> int:
    """An aware time as whole microseconds since the Unix epoch."""
    return (t - EPOCH) // _dt.timedelta(microseconds=1)


def check_text(value: str | None, what: str) -> None:
    """Refuse text a database column cannot hold in every engine (the NUL character).

    Raises:
        UnstorableError: ``value`` holds NUL.
    """
    if value is not None and "\x00" in value:
        raise UnstorableError(f"{what} holds a NUL character")


def make_private(path: Path) -> None:
    """Create the SQLite file ``path`` mode 0600 if missing; tighten it and its ``-wal``/``-shm`` files to 0600 if this
    user owns them and others may read them (the platform's files hold health data, password hashes, the audit log)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, PRIVATE_MODE)
            _log.warning("%s was readable by others; now mode 0600", path)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            st = side.stat()
        except FileNotFoundError:
            continue
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
            side.chmod(PRIVATE_MODE)
