"""Tolerant decoding (issue 14 item 5): what the hub accepts from real meters that the strict decoders refuse.

The strict decoders (:func:`protocols.gatt.decode`) stay exact: a value must be exactly the fields its flags call for,
with no reserved flag bit set. Shop meters are not always exact, and Nordic's libraries (on which many meters'
companion apps are built) accept both deviations below, so the hub does too, through :func:`decode_tolerant`, which
accepts exactly two deviations and names each one it accepted:

* :attr:`DecodeTolerance.TRAILING_BYTES`: bytes after the last field (e.g. a cuff padding its indication with two
  zero bytes). The value is decoded without them; they stay in the record's raw bytes.
* :attr:`DecodeTolerance.RFU_FLAGS`: flag bits the specification reserves. No reserved bit selects a field, so the
  value is decoded with those bits cleared.

Anything else the strict decoder refuses (truncation, a reserved IEEE-11073 word, an impossible date...) is refused
here too: such a value cannot be read at all, and the hub keeps it as a raw reading instead.

A value the strict decoder accepts decodes to the same measurement with no tolerance; a strict value with padding
appended decodes to the same measurement with :attr:`DecodeTolerance.TRAILING_BYTES`. One exception follows from the
format: a Heart Rate Measurement with RR-Intervals has no fixed end (the intervals fill the rest of the value), so
even-length padding there reads as more intervals.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

from protocols.errors import DecodeError
from protocols.gatt.common import Measurement, RfuFlagsError, TrailingBytesError

__all__ = ["DecodeTolerance", "Tolerated", "tolerances_from_names", "tolerate"]

_StrictDecode: TypeAlias = Callable[[bytes], Measurement]

_MAX_RETRIES: Final = 2  # one per tolerance: clearing RFU bits never changes the layout, dropping padding ends it


class DecodeTolerance(enum.StrEnum):
    """A deviation from the specification that :func:`decode_tolerant` accepted (its value is the wire name)."""

    TRAILING_BYTES = "trailing_bytes"
    """Bytes followed the last field the flags call for; the value was decoded without them."""
    RFU_FLAGS = "rfu_flags"
    """Reserved flag bits were set; the value was decoded with them cleared."""


def tolerances_from_names(names: Iterable[object]) -> frozenset[DecodeTolerance]:
    """The tolerances named by their wire names.

    Raises:
        ValueError: a name that is not text or not a known tolerance.
    """
    known = {t.value: t for t in DecodeTolerance}
    out = set()
    for name in names:
        tolerance = known.get(name) if isinstance(name, str) else None
        if tolerance is None:
            raise ValueError(f"unknown decode tolerance {name!r:.40}")
        out.add(tolerance)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Tolerated:
    """What :func:`decode_tolerant` made of one value.

    Attributes:
        measurement: the decoded value (as the strict decoder gives it for the corrected bytes).
        tolerances: the deviations accepted; empty when the strict decoder accepts the value as it is.
        padding: the trailing bytes dropped (empty without :attr:`DecodeTolerance.TRAILING_BYTES`).
        rfu_flags: the reserved flag bits that were set (0 without :attr:`DecodeTolerance.RFU_FLAGS`).
        rfu_at: the offset of the Flags byte they were set in (0 but for CGM Measurement, whose Size comes first).
    """

    measurement: Measurement
    tolerances: frozenset[DecodeTolerance] = frozenset()
    padding: bytes = b""
    rfu_flags: int = 0
    rfu_at: int = 0

    @property
    def strict(self) -> bool:
        """True when nothing had to be tolerated."""
        return not self.tolerances

    def describe(self) -> str:
        """One line naming what was tolerated (empty when nothing was)."""
        parts = []
        if self.rfu_flags:
            parts.append(f"reserved flag bits 0x{self.rfu_flags:02X} ignored")
        if self.padding:
            parts.append(f"{len(self.padding)} trailing byte(s) {self.padding.hex()} ignored")
        return "; ".join(parts)


def tolerate(strict: _StrictDecode, data: bytes) -> Tolerated:
    """Decode ``data`` with ``strict`` (one characteristic's strict decoder), accepting the documented deviations.

    Raises:
        DecodeError: the value cannot be decoded even with them.
    """
    current = bytes(data)
    tolerances: set[DecodeTolerance] = set()
    padding = b""
    rfu = at = 0
    for _ in range(_MAX_RETRIES):
        try:
            return Tolerated(strict(current), frozenset(tolerances), padding, rfu, at)
        except RfuFlagsError as exc:
            if rfu:
                raise
            rfu = exc.bits
            tolerances.add(DecodeTolerance.RFU_FLAGS)
            at = exc.at
            current = current[:at] + bytes([current[at] & ~exc.bits & 0xFF]) + current[at + 1 :]
        except TrailingBytesError as exc:
            if padding:
                raise
            padding = current[exc.end :]
            tolerances.add(DecodeTolerance.TRAILING_BYTES)
            current = current[: exc.end]
    try:
        return Tolerated(strict(current), frozenset(tolerances), padding, rfu, at)
    except (RfuFlagsError, TrailingBytesError) as exc:  # both were tolerated once: a decoder defect, say so
        raise DecodeError(exc.what, exc.offset, f"{exc.reason} (after tolerating {sorted(tolerances)})") from None
