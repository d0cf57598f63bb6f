"""The transport-free core of the JetStream ingest worker: a fetched batch of uplink frames in, one transaction,
the acks to publish out.

:meth:`BatchIngest.handle` takes every frame of one fetch (each with the NATS subject it arrived on; MQTT topic
``carehub/v1/<hub>/up`` is subject ``carehub.v1.<hub>.up``), opens and verifies each envelope with the platform's
:class:`~community.ingest.PlatformWire`, refuses what the protocol refuses (``docs/protocol.md`` §4, §7), and stores
every accepted envelope and quarantines every refused one in ONE :meth:`Storage.store_batch` call, so a batch of 64
frames costs one commit, not 64. Only after that commit does it return the acks, one per hub of the batch, naming
the stored envelopes (re-sends included) and the refused ones it can name. The caller publishes them and then acks
the JetStream messages; on :class:`~community.storage.StorageError` nothing is acked and the stream delivers the
frames again.

An envelope that appears twice in one batch (a hub's re-send fetched together with the original) is stored once and
acked as stored; the database's ``(hub, seq)`` and record-id keys stay the authority across batches and workers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from community.hubkeys import HubKeyCache
from community.ingest import IngestStats, PlatformWire, is_alarm
from community.storage import EnvelopeOutcome, EnvelopeToStore, Outcome, Refusal, Storage, UnstorableError
from protocols.acks import Ack, Rejected
from protocols.envelope import OpenedEnvelope, ReplayWindow, SeqStatus
from protocols.errors import EnvelopeError, EnvelopeRejection, ProtocolError
from protocols.record import Record

__all__ = ["BatchIngest", "Frame", "subject_to_topic", "topic_to_subject"]

_log = logging.getLogger(__name__)
_KEY_REFUSALS = frozenset({EnvelopeRejection.UNKNOWN_HUB, EnvelopeRejection.BAD_SIGNATURE})


def topic_to_subject(topic: str) -> str:
    """The NATS subject of an MQTT topic, as NATS's MQTT listener maps it (``/`` becomes ``.``; carehub topics hold
    no ``.``, ``*`` or ``>``)."""
    return topic.replace("/", ".")


def subject_to_topic(subject: str) -> str:
    """The MQTT topic of a NATS subject (the inverse of :func:`topic_to_subject` for carehub topics)."""
    return subject.replace(".", "/")


@dataclass(frozen=True, slots=True)
class Frame:
    """One uplink frame as JetStream delivered it."""

    subject: str
    payload: bytes


@dataclass(slots=True)
class _Pending:
    """What one batch builds up before its commit."""

    to_store: list[EnvelopeToStore] = dataclasses.field(default_factory=list)
    accepted: list[OpenedEnvelope] = dataclasses.field(default_factory=list)
    refused: list[Refusal] = dataclasses.field(default_factory=list)
    acked: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    seen: set[tuple[str, int]] = dataclasses.field(default_factory=set)
    hubs: list[str] = dataclasses.field(default_factory=list)


class BatchIngest:
    """Stores batches of frames for one worker; keeps its replay window, key cache and ack counters.

    Args:
        storage: where records go.
        wire: frame and envelope codecs (:class:`community.wire.PlatformCodec`).
        stats: the worker's counters (:class:`community.ingest.IngestStats`).
        alarms: newly stored alarm and panic records are offered here (dropped with a log line when full).
        wall_time: seconds since the epoch, for ``received_at`` and the acks' ``at``.
        hub_keys: the verify-key cache; by default one over ``storage``.
        on_stored: called after the commit with each stored envelope's hub, records and newly stored record ids.
    """

    def __init__(
        self,
        storage: Storage,
        wire: PlatformWire,
        stats: IngestStats,
        alarms: asyncio.Queue[Record],
        *,
        wall_time: Callable[[], float] = time.time,
        hub_keys: HubKeyCache | None = None,
        on_stored: Callable[[str, Sequence[Record], Sequence[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.storage = storage
        self._on_stored = on_stored
        self.wire = wire
        self.stats = stats
        self.alarms = alarms
        self._wall_time = wall_time
        self._keys = hub_keys if hub_keys is not None else HubKeyCache(storage)
        self._window = ReplayWindow()
        self._ack_seqs: dict[str, int] = {}

    async def handle(self, frames: Sequence[Frame]) -> list[Ack]:
        """Store one batch in one transaction and return the acks to publish (after the commit).

        Raises:
            StorageError: the database failed; nothing of the batch was stored or may be acked.
        """
        received_at = self._wall_time()
        pending = _Pending()
        await self._keys.refresh_if_due()
        for frame in frames:
            await self._take(frame, received_at, pending)
        if pending.to_store or pending.refused:
            started = time.perf_counter()
            outcomes = await self.storage.store_batch(pending.to_store, pending.refused)
            self.stats.observe_commit(time.perf_counter() - started)
            await self._committed(pending, outcomes)
        return self._acks(pending, received_at)

    async def _take(self, frame: Frame, received_at: float, pending: _Pending) -> None:
        hub = self.wire.hub_of_uplink(subject_to_topic(frame.subject))
        if hub is None:
            detail = f"not an uplink subject: {frame.subject!r}"
            pending.refused.append(self._refusal(None, frame.payload, EnvelopeRejection.MALFORMED, detail, received_at))
            return
        self.stats.frames += 1
        if hub not in pending.acked:
            pending.acked[hub] = []
            pending.hubs.append(hub)
        try:
            envelopes = self.wire.split_frame(frame.payload)
        except ProtocolError as exc:
            refusal = self._refusal(None, frame.payload, EnvelopeRejection.MALFORMED, f"frame: {exc}", received_at)
            pending.refused.append(dataclasses.replace(refusal, topic_hub=hub))
            return
        for raw in envelopes:
            try:
                opened = await self._open(raw, hub)
            except EnvelopeError as exc:
                pending.refused.append(self._refusal(hub, raw, exc.reason, exc.detail, received_at))
                continue
            except ProtocolError as exc:
                pending.refused.append(self._refusal(hub, raw, EnvelopeRejection.MALFORMED, str(exc), received_at))
                continue
            key = (hub, opened.seq)
            if key in pending.seen or self._window.check(hub, opened.seq) is SeqStatus.DUPLICATE:
                await self._replayed(hub, opened.seq)
                pending.acked[hub].append(opened.seq)
                continue
            try:
                pending.to_store.append(EnvelopeToStore.from_opened(opened, received_at))
            except UnstorableError as exc:
                digest = hashlib.sha256(raw).hexdigest()
                pending.refused.append(
                    Refusal(hub, hub, opened.seq, EnvelopeRejection.MALFORMED, str(exc), len(raw), digest, received_at)
                )
                continue
            pending.accepted.append(opened)
            pending.seen.add(key)

    async def _committed(self, pending: _Pending, outcomes: Sequence[EnvelopeOutcome]) -> None:
        for r in pending.refused:
            reason = r.reason.value
            self.stats.rejections[reason] = self.stats.rejections.get(reason, 0) + 1
            _log.warning(
                "platform: refused from %s (%s, seq %s): %s",
                r.topic_hub or "?",
                reason,
                "?" if r.envelope_seq is None else r.envelope_seq,
                r.detail,
            )
        for env, outcome in zip(pending.accepted, outcomes, strict=True):
            self._window.mark(env.hub_id, env.seq)
            pending.acked[env.hub_id].append(env.seq)
            if outcome.outcome is Outcome.REPLAYED:
                await self._replayed(env.hub_id, env.seq)
                continue
            self._offer_alarms(env, outcome.new_record_ids)
            if self._on_stored is not None:  # the hubs' down_applied / down_refused records (community.downbox)
                await self._on_stored(env.hub_id, env.decoded, outcome.new_record_ids)
            self.stats.envelopes_stored += 1
            self.stats.records_stored += len(outcome.new_record_ids)
            self.stats.records_duplicate += len(outcome.duplicate_record_ids)

    def _acks(self, pending: _Pending, received_at: float) -> list[Ack]:
        acks: list[Ack] = []
        now = _dt.datetime.fromtimestamp(self._wall_time(), _dt.UTC)
        for hub in pending.hubs:
            acked = pending.acked[hub]
            stored = set(acked)
            rejected = {
                r.envelope_seq: Rejected(r.envelope_seq, r.reason)
                for r in pending.refused
                if r.envelope_seq is not None
                and r.topic_hub == hub
                and r.claimed_hub == hub
                and r.envelope_seq not in stored
            }
            if not acked and not rejected:
                continue
            if acked:
                self.stats.hubs_last_seen[hub] = received_at
            ack_seq = self._ack_seqs.get(hub, 0) + 1
            self._ack_seqs[hub] = ack_seq
            acks.append(Ack(hub, ack_seq, now, stored=tuple(dict.fromkeys(acked)), rejected=tuple(rejected.values())))
            self.stats.rejected_in_acks += len(rejected)
        return acks

    async def _open(self, raw: bytes, topic_hub: str) -> OpenedEnvelope:
        keys = self._keys.lookup()
        try:
            return self.wire.open(raw, keys, topic_hub)
        except EnvelopeError as exc:
            signer = keys.asked
            if signer is None or exc.reason not in _KEY_REFUSALS or not await self._keys.reload(signer):
                raise
        return self.wire.open(raw, self._keys.lookup(), topic_hub)

    def _refusal(
        self, topic_hub: str | None, raw: bytes, reason: EnvelopeRejection, detail: str, received_at: float
    ) -> Refusal:
        peeked = self.wire.peek(raw) if topic_hub is not None else None
        claimed, seq = peeked if peeked is not None else (None, None)
        return Refusal(
            topic_hub=topic_hub,
            claimed_hub=claimed,
            envelope_seq=seq,
            reason=reason,
            detail=detail,
            size=len(raw),
            digest=hashlib.sha256(raw).hexdigest(),
            received_at=received_at,
        )

    async def _replayed(self, hub: str, seq: int) -> None:
        del seq
        self.stats.replays += 1
        reason = EnvelopeRejection.REPLAYED.value
        self.stats.rejections[reason] = self.stats.rejections.get(reason, 0) + 1
        await self.storage.count_rejection(reason, hub)

    def _offer_alarms(self, env: OpenedEnvelope, new_record_ids: Sequence[str]) -> None:
        new = set(new_record_ids)
        for record in env.decoded:
            if is_alarm(record) and record.record_id.hex() in new:  # never installation-test data (§3.10)
                try:
                    self.alarms.put_nowait(record)
                except asyncio.QueueFull:
                    _log.error("platform: alarm console queue full; %s not offered", record.record_id.hex())
