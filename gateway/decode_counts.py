"""How many of a meter's readings the hub decoded only tolerantly, or kept raw (issue 14 item 5), kept durably.

The hub decodes tolerantly (``protocols.gatt.tolerant``): a reading with padding or reserved flag bits becomes a
measurement flagged ``tolerated``, one that does not decode at all a ``raw_reading`` record. Both reach the platform
sealed, so the hub cannot count them from its outbox later; it keeps a per-meter tally in an outbox cursor
(``decode:<address>``, stored in the clear in the same transaction as the readings), which ``carehub doctor`` reads to
tell the installer which meter sends what the specification does not allow. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["DecodeCounts", "DecodeTally", "decode_cursor_key"]

_PREFIX: Final = "decode:"
_VALUE: Final = re.compile(r"tolerated=(\d{1,18}) raw=(\d{1,18})")


def decode_cursor_key(address: str) -> str:
    """The outbox cursor holding a meter's tally."""
    return f"{_PREFIX}{address}"


@dataclass(frozen=True, slots=True)
class DecodeCounts:
    """One meter's tally since the outbox was created.

    Attributes:
        tolerated: readings decoded only tolerantly (padding after the last field, reserved flag bits).
        raw: readings that did not decode at all, kept as raw readings.
    """

    tolerated: int = 0
    raw: int = 0

    def cursor_value(self) -> str:
        """The cursor's text, e.g. ``tolerated=3 raw=0``."""
        return f"tolerated={self.tolerated} raw={self.raw}"

    @classmethod
    def parse(cls, value: object) -> DecodeCounts | None:
        """The tally a cursor holds; None when it holds something else."""
        match = _VALUE.fullmatch(value) if isinstance(value, str) else None
        return None if match is None else cls(int(match.group(1)), int(match.group(2)))

    def describe(self) -> str:
        """For ``carehub doctor``; empty when every reading decoded strictly."""
        parts = []
        if self.tolerated:
            parts.append(f"{self.tolerated} reading(s) decoded tolerantly (padding or reserved flag bits)")
        if self.raw:
            parts.append(f"{self.raw} undecodable reading(s) kept raw")
        return ", ".join(parts)


class DecodeTally:
    """The hub's per-meter tallies, restored from the outbox at start and committed with the readings."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, DecodeCounts] = {}

    def restore(self, address: str, value: object) -> bool:
        """Take a meter's stored tally (None: none yet); False when the stored value is unreadable (it restarts)."""
        if value is None:
            return True
        counts = DecodeCounts.parse(value)
        if counts is None:
            return False
        self._counts[address] = counts
        return True

    def get(self, address: str) -> DecodeCounts:
        """A meter's tally."""
        return self._counts.get(address, DecodeCounts())

    def count(self, address: str, *, tolerated: bool = False, raw: bool = False) -> None:
        """One more reading of ``address`` decoded tolerantly, or kept raw."""
        now = self.get(address)
        self._counts[address] = DecodeCounts(now.tolerated + tolerated, now.raw + raw)

    def cursors(self, addresses: Iterable[str]) -> dict[str, str]:
        """The cursors to commit for ``addresses`` (their current tallies)."""
        return {decode_cursor_key(address): self.get(address).cursor_value() for address in set(addresses)}
