"""The one exception tree of :mod:`protocols`.

Every decoder in this package turns malformed, truncated or hostile bytes into one of these errors and nothing
else: ``struct.error``, ``IndexError``, ``UnicodeDecodeError`` and ``cbor2.CBORDecodeError`` never escape.
"""

from __future__ import annotations

import enum
from typing import Final

_QUOTE_LIMIT: Final = 40


def quote(value: object, limit: int = _QUOTE_LIMIT) -> str:
    """A short, bounded text for an untrusted value, for use in error messages.

    Error messages must never format an untrusted value as it is: ``str()`` of a 2,000-byte integer raises
    ``ValueError`` (Python's int-to-str digit limit) and a 200 KB string makes a 200 KB log line. Integers wider
    than 64 bits, long strings and containers are shown by their size only.
    """
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        bits = value.bit_length()
        return str(value) if bits <= 64 else f"<{'negative ' if value < 0 else ''}integer of {bits} bits>"
    if isinstance(value, str | bytes | bytearray):
        shown = repr(value[:limit])
        return shown if len(value) <= limit else f"{shown}... ({len(value)} in all)"
    return f"<{type(value).__name__}>"


class ProtocolError(Exception):
    """Root of every error raised by :mod:`protocols`."""


class DecodeError(ProtocolError, ValueError):
    """Bytes that do not form a valid value of the named format.

    Attributes:
        what: the characteristic UUID (``"2A35"``) or format name (``"record"``) being decoded.
        offset: the byte offset at which decoding failed, or ``None`` when it is not positional.
        reason: a short human-readable explanation.
    """

    def __init__(self, what: str, offset: int | None, reason: str) -> None:
        self.what = what
        self.offset = offset
        self.reason = reason
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{what}{where}: {reason}")


class UnknownCharacteristicError(DecodeError):
    """The UUID names no characteristic this package can decode."""

    def __init__(self, uuid: str) -> None:
        super().__init__(uuid, None, "unknown characteristic UUID")


class EncodeError(ProtocolError, ValueError):
    """A value that cannot be represented in the target wire format (out of range, wrong type)."""


class EnvelopeRejection(enum.Enum):
    """Why an envelope was refused; counted per reason by the platform."""

    MALFORMED = "malformed"
    UNKNOWN_HUB = "unknown_hub"
    BAD_SIGNATURE = "bad_signature"
    HUB_MISMATCH = "hub_mismatch"
    CANNOT_OPEN = "cannot_open"
    REPLAYED = "replayed"


class EnvelopeError(ProtocolError, ValueError):
    """An envelope that must not be accepted, with the reason as an enum for counting."""

    def __init__(self, reason: EnvelopeRejection, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"envelope rejected ({reason.value}): {detail}")


class KeyFileError(ProtocolError):
    """A key file that is missing, unreadable, malformed or too widely readable."""


class AuthenticationError(ProtocolError, ValueError):
    """A pendant event or platform message whose authentication tag or signature does not verify."""


class ReplayError(AuthenticationError):
    """An authenticated message whose counter or sequence number was already seen."""
