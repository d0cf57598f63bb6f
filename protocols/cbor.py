"""Strict, deterministic CBOR for the carehub wire format (RFC 8949).

Encoding follows the core deterministic encoding requirements of RFC 8949 §4.2.1 (preferred serialization,
definite lengths, map keys sorted bytewise by their encoding), as produced by ``cbor2.dumps(..., canonical=True)``.

Decoding is strict: the input must be exactly one data item of the *carehub data model* and must be byte-for-byte
the deterministic encoding of the value it decodes to. The carehub data model is the subset of CBOR that JSON and
Python agree on, plus byte strings:

* ``null``, ``true``/``false``, integers in ``-2**64 .. 2**64 - 1`` (major types 0 and 1, no bignum tags),
* floating point numbers (major type 7; shortest form that keeps the value, so ``1.5`` is ``f9 3e00``),
* byte strings, UTF-8 text strings,
* arrays, and maps whose keys are text strings.

Tags (bignums included), ``undefined``, simple values, indefinite lengths, duplicate map keys, trailing bytes and
non-shortest forms are all rejected with :class:`~protocols.errors.DecodeError`; no ``cbor2`` exception escapes, and
no semantic decoder of ``cbor2`` (dates, regular expressions, MIME messages, shared references, bignums) ever runs on
untrusted input. Error messages never format a decoded value (see :func:`protocols.errors.quote`).

The carehub messages narrow the integers further: every unsigned integer on the wire is at most :data:`MAX_UINT`
(``2**63 - 1``, so it fits a signed 64-bit column on every storage engine) unless the format gives a narrower range;
:func:`is_uint` and :meth:`Fields.uint` apply that bound by default.
"""

from __future__ import annotations

import datetime as _dt
import enum
import math
from typing import Final, NoReturn, TypeAlias, TypeVar

import cbor2

from protocols.errors import DecodeError, EncodeError, quote

__all__ = [
    "MAX_DEPTH",
    "MAX_UINT",
    "CborValue",
    "Fields",
    "dumps",
    "from_micros",
    "is_number",
    "is_uint",
    "loads",
    "to_micros",
]

_E = TypeVar("_E", bound=enum.Enum)

CborValue: TypeAlias = bool | int | float | str | bytes | list["CborValue"] | dict[str, "CborValue"] | None

MAX_DEPTH: Final = 16
"""Deepest nesting of arrays and maps accepted (records nest at most five levels)."""

MAX_UINT: Final = 2**63 - 1
"""Largest unsigned integer any carehub message carries (``docs/protocol.md`` §1, integer ranges)."""

_INT_MIN: Final = -(2**64)
_INT_MAX: Final = 2**64 - 1


class _RefusedTagError(Exception):
    """Raised inside ``cbor2`` by the tag hooks below; ``cbor2`` wraps it in ``CBORDecodeError``."""


def _refuse_semantic(_value: object, _immutable: bool) -> NoReturn:
    raise _RefusedTagError("tags are not part of the carehub data model")


def _refuse_tag(_tag: cbor2.CBORTag, _immutable: bool) -> NoReturn:
    raise _RefusedTagError("tags are not part of the carehub data model")


_BUILTIN_TAGS: Final = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 43000,
                         55799)  # fmt: skip
"""Every tag ``cbor2`` decodes itself (found by probing tags 0..69999 and a few large ones; the test suite probes
again, so a ``cbor2`` upgrade that adds one fails the tests). Each is overridden to refuse, so a bignum never becomes
a 14,000-digit ``int`` and no date, regular expression, MIME or shared-reference decoder runs on untrusted bytes.
Unknown tags reach ``tag_hook``, which refuses too."""
_REFUSE_TAGS: Final = dict.fromkeys(_BUILTIN_TAGS, _refuse_semantic)


def _fail(what: str, reason: str, error: type[DecodeError] | type[EncodeError]) -> NoReturn:
    if error is DecodeError:
        raise DecodeError(what, None, reason)
    raise EncodeError(f"{what}: {reason}")


_PLAIN_SCALARS: Final = frozenset({type(None), bool, str, bytes})


def _check(
    value: object, what: str, depth: int, error: type[DecodeError] | type[EncodeError], *, order: bool = False
) -> bool:
    """Raise ``error`` unless ``value`` is in the data model; with ``order``, return whether its plain encoding is
    the deterministic one.

    ``cbor2``'s plain encoder writes maps in their own order and floats in 64 bits; everything else it writes as
    the deterministic encoding does. So without floats, and with every map's keys already in deterministic order
    (ASCII keys: shorter first, then bytewise, as their encodings sort), the plain encoding is the deterministic
    one, and much cheaper to make than ``canonical=True``, which sorts every map again. Decoded maps keep the order
    of the bytes, so :func:`loads` checks a deterministic input this way.
    """
    if depth > MAX_DEPTH:
        _fail(what, f"nested deeper than {MAX_DEPTH} levels", error)
    kind = type(value)
    # Exact types first (the hot path of every record); subclasses (IntEnum, str enums) take the slower checks below.
    if kind in _PLAIN_SCALARS:
        return True
    if kind is float:
        return False
    if kind is int or (kind is not bool and isinstance(value, int)):
        if not _INT_MIN <= value <= _INT_MAX:  # type: ignore[operator]
            _fail(what, f"integer {quote(value)} outside the 64-bit CBOR range", error)
        return True
    if kind is list or isinstance(value, list):
        plain = True
        for item in value:  # type: ignore[attr-defined]
            if not _check(item, what, depth + 1, error, order=order):
                plain = False
        return plain
    if kind is dict or isinstance(value, dict):
        plain = order
        previous = ""
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str and not isinstance(key, str):
                _fail(what, f"map key {quote(key)} is not a text string", error)
            if plain:
                size = len(key)
                plain = key.isascii() and (size > len(previous) or (size == len(previous) and key > previous))
                previous = key
            if not _check(item, what, depth + 1, error, order=order):
                plain = False
        return plain
    if isinstance(value, bool | str | bytes):
        return True
    if isinstance(value, float):
        return False
    _fail(what, f"{type(value).__name__} is not part of the carehub CBOR data model", error)


def dumps(value: CborValue, what: str = "cbor") -> bytes:
    """Encode ``value`` deterministically (RFC 8949 §4.2.1).

    Args:
        value: a value of the carehub data model (see the module docstring).
        what: the format name used in error messages.

    Returns:
        The deterministic encoding.

    Raises:
        EncodeError: ``value`` holds a type outside the data model, a non-text map key or an out-of-range integer.
    """
    _check(value, what, 0, EncodeError)  # the builders' maps are in no particular order: sorted while encoding
    try:
        return bytes(cbor2.dumps(value, canonical=True))
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError) as exc:
        raise EncodeError(f"{what}: cannot encode ({exc})") from exc


def loads(data: bytes, what: str = "cbor") -> CborValue:
    """Decode exactly one deterministically encoded data item of the carehub data model.

    Args:
        data: the untrusted bytes.
        what: the format name used in :class:`DecodeError`.

    Returns:
        The decoded value (lists and dicts, never tuples).

    Raises:
        DecodeError: the bytes are not CBOR, hold something outside the data model, have trailing bytes, or are not
            the deterministic encoding of their value.
    """
    if not data:
        raise DecodeError(what, 0, "empty input")
    try:
        value: object = cbor2.loads(
            data,
            max_depth=MAX_DEPTH + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            semantic_decoders=_REFUSE_TAGS,
            tag_hook=_refuse_tag,
        )
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, EOFError, RecursionError) as exc:
        if isinstance(exc.__cause__, _RefusedTagError):
            raise DecodeError(what, None, f"{exc.__cause__} ({str(exc)[:80]})") from exc
        raise DecodeError(what, None, f"not well-formed CBOR ({str(exc)[:120]})") from exc
    plain = _check(value, what, 0, DecodeError, order=True)
    try:
        again = cbor2.dumps(value) if plain else cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError) as exc:  # pragma: no cover - checked above
        raise DecodeError(what, None, f"value cannot be re-encoded ({str(exc)[:120]})") from exc
    if again != data:
        if data.startswith(again):
            raise DecodeError(what, len(again), "trailing bytes after the data item")
        raise DecodeError(what, None, "not the deterministic encoding (RFC 8949 §4.2.1) of its value")
    return value  # type: ignore[return-value]  # _check proved it is a CborValue


# --- helpers shared by the carehub message codecs ----------------------------------------------------------------

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MAX_US: Final = 2**63 - 1


def to_micros(when: _dt.datetime) -> int:
    """A timezone-aware time as integer microseconds since 1970-01-01T00:00:00Z (the v1 wire time).

    Raises:
        EncodeError: ``when`` is naive or before 1970.
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise EncodeError(f"{when!r} has no timezone; wire times are UTC instants")
    delta = when - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if micros < 0:
        raise EncodeError(f"{when.isoformat()} is before 1970")
    return micros


def from_micros(micros: int) -> _dt.datetime:
    """The inverse of :func:`to_micros`, as a UTC datetime.

    Raises:
        ValueError: out of the range of :class:`datetime.datetime`.
    """
    if not 0 <= micros <= _MAX_US:
        raise ValueError(f"time {micros} out of range")
    try:
        return _EPOCH + _dt.timedelta(microseconds=micros)
    except OverflowError as exc:
        raise ValueError(f"time {micros} out of range") from exc


def is_uint(value: object, limit: int = MAX_UINT) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``) in ``0..limit``."""
    return type(value) is int and 0 <= value <= limit


def is_number(value: object) -> bool:
    """Whether ``value`` is a finite ``int`` or ``float`` (not a ``bool``)."""
    if type(value) is int:
        return True
    return type(value) is float and math.isfinite(value)


_SHOWN_KEYS: Final = 4
"""Unexpected map keys named in an error message; the rest are counted."""


class Fields:
    """Strict reader over a decoded CBOR map with an exact, known key set.

    Every accessor raises :class:`DecodeError` naming ``what`` and the key when the value has the wrong type or
    range, so a codec reads a map in a few lines without leaking ``KeyError`` or ``TypeError``.
    """

    __slots__ = ("_map", "_what")

    def __init__(self, value: object, what: str, keys: frozenset[str]) -> None:
        if not isinstance(value, dict):
            raise DecodeError(what, None, "not a map")
        if value.keys() != keys:
            missing = sorted(keys - value.keys())
            extra = [quote(key, 24) for key in sorted(value.keys() - keys)[:_SHOWN_KEYS]]
            more = f" and {len(value) - len(keys & value.keys()) - len(extra)} more" if len(value) > len(keys) else ""
            raise DecodeError(what, None, f"wrong keys (missing {missing}, unexpected [{', '.join(extra)}]{more})")
        self._map: dict[str, CborValue] = value
        self._what = what

    def fail(self, key: str, reason: str) -> DecodeError:
        """A :class:`DecodeError` about ``key``."""
        return DecodeError(self._what, None, f"{key!r}: {reason}")

    def raw(self, key: str) -> CborValue:
        """The value as decoded."""
        return self._map[key]

    def uint(self, key: str, limit: int = MAX_UINT) -> int:
        """An unsigned integer ``0..limit``."""
        value = self._map[key]
        if not is_uint(value, limit):
            raise self.fail(key, f"expected an unsigned integer up to {limit}")
        return value  # type: ignore[return-value]  # is_uint checked the type

    def opt_uint(self, key: str, limit: int = MAX_UINT) -> int | None:
        """An unsigned integer or null."""
        return None if self._map[key] is None else self.uint(key, limit)

    def text(self, key: str, max_len: int = 256) -> str:
        """A text string of 1..``max_len`` characters."""
        value = self._map[key]
        if not isinstance(value, str) or not 0 < len(value) <= max_len:
            raise self.fail(key, f"expected text of 1..{max_len} characters")
        return value

    def opt_text(self, key: str, max_len: int = 256) -> str | None:
        """Text or null."""
        return None if self._map[key] is None else self.text(key, max_len)

    def bytes_(self, key: str, min_len: int = 0, max_len: int = 2**32) -> bytes:
        """A byte string of ``min_len..max_len`` bytes."""
        value = self._map[key]
        if not isinstance(value, bytes) or not min_len <= len(value) <= max_len:
            raise self.fail(key, f"expected a byte string of {min_len}..{max_len} bytes")
        return value

    def opt_bytes(self, key: str, min_len: int = 0, max_len: int = 2**32) -> bytes | None:
        """A byte string or null."""
        return None if self._map[key] is None else self.bytes_(key, min_len, max_len)

    def boolean(self, key: str) -> bool:
        """``true`` or ``false``."""
        value = self._map[key]
        if not isinstance(value, bool):
            raise self.fail(key, "expected true or false")
        return value

    def number(self, key: str) -> int | float:
        """A finite integer or float."""
        value = self._map[key]
        if not is_number(value):
            raise self.fail(key, "expected a finite number")
        return value  # type: ignore[return-value]  # is_number checked the type

    def opt_number(self, key: str) -> int | float | None:
        """A finite number or null."""
        return None if self._map[key] is None else self.number(key)

    def time(self, key: str) -> _dt.datetime:
        """A wire time (microseconds since the Unix epoch, UTC)."""
        value = self.uint(key, _MAX_US)
        try:
            return from_micros(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from exc

    def opt_time(self, key: str) -> _dt.datetime | None:
        """A wire time or null."""
        return None if self._map[key] is None else self.time(key)

    def choice(self, key: str, enum_type: type[_E]) -> _E:
        """A text value naming a member of ``enum_type`` (by value)."""
        value = self._map[key]
        for member in enum_type:
            if member.value == value and isinstance(value, str):
                return member
        raise self.fail(key, f"expected one of {[m.value for m in enum_type]}")

    def opt_choice(self, key: str, enum_type: type[_E]) -> _E | None:
        """An enum value or null."""
        return None if self._map[key] is None else self.choice(key, enum_type)
