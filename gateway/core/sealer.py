"""Record drafts -> numbered records -> signed, sealed outbox items (invariants 1-4; ``docs/protocol.md`` §3-§4).

The other cores make :class:`Draft` records without a sequence number; :meth:`Sealer.seal` numbers a commit's drafts
from a range the outbox reserved, derives the id of every hub-made record (device status, down-refused, eviction)
from that record's own sequence number (§3.7: unique across sessions and restarts, since the outbox never hands a
number out twice), and seals them: each priority-lane record (an alarm step, a panic event) in an envelope of its
own, the routine records in order, in runs of one kind sharing envelopes within the per-envelope bounds, so one
signature and one sealed box serve many readings.

Pure: no I/O, no clock (the caller passes ``now``), no event loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from nacl.public import PublicKey

from gateway.outbox_rows import Eviction, Lane, OutboxItem
from protocols.envelope import MAX_ENVELOPE_BYTES, seal
from protocols.keys import HubIdentity
from protocols.record import Body, EvictionBody, Record, RecordKind, status_record_id

__all__ = ["RECORDS_PER_ENVELOPE", "Draft", "Sealer", "envelope_chunks", "ordered"]

RECORDS_PER_ENVELOPE = 64
"""Routine records sealed together at most."""
_RECORD_BYTES_PER_ENVELOPE = MAX_ENVELOPE_BYTES - 4096
"""CBOR bytes of records per envelope; leaves room for the envelope's own fields, signature and seal."""


@dataclass(frozen=True, slots=True)
class Draft:
    """A record before its sequence number is known.

    Attributes:
        body: the record body.
        lane: priority (alarms, panic events, eviction reports) or routine.
        hub_time: when the hub received or made it.
        record_id: the stable id; ``None`` for a hub-made record whose id derives from its sequence number.
        device: the device it is about, if any.
        device_time: the device's own timestamp as reported, if any.
        standalone: a priority draft of a failed commit is offered again with the next commit; False for one that
            is only true together with the cursors of its own commit (a down-message's ``down_applied`` or
            ``down_refused`` goes with the message's ``seq``: the hub applies the message again instead).
    """

    body: Body
    lane: Lane
    hub_time: datetime
    record_id: bytes | None = None
    device: str | None = None
    device_time: str | None = None
    standalone: bool = True


def envelope_chunks(records: Sequence[Record], encoded: Sequence[bytes]) -> Iterator[tuple[list[Record], list[bytes]]]:
    """``records`` (and their CBOR) in order, in runs of one kind within the per-envelope bounds."""
    chunk: list[Record] = []
    chunk_cbor: list[bytes] = []
    size = 0
    for record, cbor in zip(records, encoded, strict=True):
        full = len(chunk) >= RECORDS_PER_ENVELOPE or size + len(cbor) > _RECORD_BYTES_PER_ENVELOPE
        if chunk and (full or record.kind is not chunk[0].kind):
            yield chunk, chunk_cbor
            chunk, chunk_cbor, size = [], [], 0
        chunk.append(record)
        chunk_cbor.append(cbor)
        size += len(cbor)
    if chunk:
        yield chunk, chunk_cbor


def ordered(drafts: Sequence[Draft]) -> list[Draft]:
    """Priority drafts first, then routine ones, each in the given order; a repeated fixed id is kept once.

    A priority record whose commit failed is offered again with the next commit, and a pendant's re-sent press
    makes the same panic record again: the first of them is stored, exactly once.
    """
    seen: set[bytes] = set()
    out: list[Draft] = []
    for lane_first in (True, False):
        for draft in drafts:
            if (draft.lane is Lane.PRIORITY) is not lane_first:
                continue
            if draft.record_id is not None:
                if draft.record_id in seen:
                    continue
                seen.add(draft.record_id)
            out.append(draft)
    return out


class Sealer:
    """Numbers, signs and seals records for one hub."""

    __slots__ = ("_box_key", "_identity")

    def __init__(self, identity: HubIdentity, box_key: PublicKey) -> None:
        self._identity = identity
        self._box_key = box_key

    @property
    def hub_id(self) -> str:
        """The hub whose records these are."""
        return self._identity.hub_id

    def number(self, drafts: Sequence[Draft], seqs: range) -> list[Record]:
        """``drafts`` (already :func:`ordered`) as records numbered from ``seqs``, one number each."""
        if len(seqs) != len(drafts):
            raise ValueError(f"{len(drafts)} drafts need as many sequence numbers, got {len(seqs)}")
        hub = self._identity.hub_id
        return [
            Record(
                record_id=d.record_id if d.record_id is not None else status_record_id(hub, d.body.KIND, seq),
                hub_id=hub,
                seq=seq,
                hub_time=d.hub_time,
                body=d.body,
                device_id=d.device,
                device_time=d.device_time,
            )
            for d, seq in zip(drafts, seqs, strict=True)
        ]

    def seal(self, drafts: Sequence[Draft], seqs: range, now: datetime) -> list[OutboxItem]:
        """Number ``drafts`` (already :func:`ordered`: priority first) and seal them into outbox items."""
        records = self.number(drafts, seqs)
        encoded = [r.to_cbor() for r in records]
        cut = sum(1 for d in drafts if d.lane is Lane.PRIORITY)
        items = [self.envelope([r], [e], now, Lane.PRIORITY) for r, e in zip(records[:cut], encoded[:cut], strict=True)]
        items.extend(
            self.envelope(chunk, chunk_cbor, now, Lane.ROUTINE)
            for chunk, chunk_cbor in envelope_chunks(records[cut:], encoded[cut:])
        )
        return items

    def envelope(self, records: Sequence[Record], encoded: Sequence[bytes], now: datetime, lane: Lane) -> OutboxItem:
        """Numbered ``records`` (``encoded`` as CBOR) sealed into one envelope, numbered as its first record."""
        seq = records[0].seq
        envelope = seal(self._identity, self._box_key, seq, now, encoded)
        ids = tuple(r.record_id.hex() for r in records)
        return OutboxItem(seq, envelope, lane, records[0].kind.value, ids, now.timestamp())

    def eviction_report(self, eviction: Eviction, seq: int, now: datetime) -> OutboxItem:
        """The eviction record (invariant 4) for what the outbox dropped, sealed in a priority envelope."""
        ids = [bytes.fromhex(r) for r in eviction.record_ids if len(r) == 32]
        record = Record(
            record_id=status_record_id(self._identity.hub_id, RecordKind.EVICTION, seq),
            hub_id=self._identity.hub_id,
            seq=seq,
            hub_time=now,
            body=EvictionBody(
                count=eviction.count,
                first_seq=eviction.first_seq,
                last_seq=eviction.last_seq,
                bytes_freed=eviction.size,
                oldest_record_id=ids[0] if ids else None,
                newest_record_id=ids[-1] if ids else None,
            ),
        )
        return self.envelope([record], [record.to_cbor()], now, Lane.PRIORITY)
