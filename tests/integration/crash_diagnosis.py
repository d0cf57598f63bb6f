"""Where a reading the platform never stored is, after the crash test's drain bound: a post-mortem, not a check.

Looked for in every place the hub's path keeps a reading: the hub's indication journal (what a crash left
uncommitted, sealed with the journal key beside it), the outbox (envelopes committed but not acknowledged, sealed to
the platform; the test holds the platform's key and opens them), and the platform's database. A reading in none of
them is either still in the meter's memory (never confirmed by any hub) or lost; the gateway logs that mention the
meter's address say which hub saw it last.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from community.wire import PlatformCodec
from gateway.journal import IndicationJournal


@dataclass(frozen=True, slots=True)
class OutboxHit:
    seq: int
    lane: int
    age_s: float  # seconds since the hub committed the envelope


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """Where one missing reading (device address, raw hex) was found."""

    address: str
    raw: str
    journal: int  # entries in the journal holding it
    outbox: tuple[OutboxHit, ...]
    platform: int  # rows at the platform (0 for a missing reading, unless the drain bound ended mid-store)

    def verdict(self) -> str:
        if self.outbox:
            oldest = max(hit.age_s for hit in self.outbox)
            return f"LATE: committed in the outbox (unacknowledged) for {oldest:.1f} s; delivery has not sent/acked it"
        if self.journal:
            return "LATE: in the hub's journal, not yet committed to the outbox (replayed at the next start)"
        if self.platform:
            return "LATE: reached the platform after the drain bound"
        return (
            "NOT IN THE HUB: still in the meter's memory when the home ended (see its 'unconfirmed in meter memory'"
            " line: never collected) or LOST (confirmed to the meter, then dropped by a hub)"
        )


def _hex(value: object) -> str | None:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return value if isinstance(value, str) else None


def journal_readings(outbox_path: Path) -> list[tuple[str, str]]:
    """(address, raw hex) of every entry the journal beside ``outbox_path`` still holds."""
    journal = IndicationJournal(outbox_path.with_suffix(".journal"))
    return [(e.address, e.data.hex()) for e in journal.pending()]


def outbox_readings(
    outbox_path: Path, codec: PlatformCodec, hub_id: str, hub_key: nacl.signing.VerifyKey
) -> list[tuple[str, str, OutboxHit]]:
    """(address, raw hex, where) of every measurement in the outbox's unacknowledged envelopes."""
    found: list[tuple[str, str, OutboxHit]] = []
    conn = sqlite3.connect(f"file:{outbox_path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT seq, lane, created, envelope FROM outbox ORDER BY seq").fetchall()
    finally:
        conn.close()
    now = time.time()
    for seq, lane, created, envelope in rows:
        opened = codec.open(bytes(envelope), {hub_id: hub_key}, hub_id)
        for record in opened.decoded:
            raw = _hex(getattr(record.body, "raw", None))
            if raw is not None and record.device_id is not None:
                found.append((record.device_id, raw, OutboxHit(seq, lane, now - created)))
    return found


def locate(
    missing: Iterable[tuple[str, str]],
    *,
    journal: Iterable[tuple[str, str]],
    outbox: Iterable[tuple[str, str, OutboxHit]],
    platform: Mapping[tuple[str, str], int],
) -> list[Whereabouts]:
    """Each missing (address, raw) with where it was found."""
    journal_list = [(a.upper(), r.lower()) for a, r in journal]
    outbox_list = [(a.upper(), r.lower(), hit) for a, r, hit in outbox]
    result = []
    for address, raw in missing:
        key = (address.upper(), raw.lower())
        result.append(
            Whereabouts(
                address,
                raw,
                journal=sum(1 for k in journal_list if k == key),
                outbox=tuple(hit for a, r, hit in outbox_list if (a, r) == key),
                platform=platform.get((address, raw), 0),
            )
        )
    return result


def report(found: list[Whereabouts], logs: Mapping[str, list[str]]) -> str:
    """One paragraph per missing reading: the verdict and the log lines that name its meter."""
    out = []
    for w in found:
        out.append(f"missing {w.address} {w.raw}: journal={w.journal} outbox={list(w.outbox)} platform={w.platform}")
        out.append(f"  -> {w.verdict()}")
        for what, lines in logs.items():
            mentions = [
                line
                for line in lines
                if w.address in line or "SIGKILLED" in line or "unconfirmed in meter memory" in line
            ]
            out.extend(f"  [{what}] {line}" for line in mentions[-8:])
    return "\n".join(out)
