"""What both ingest workers share: the store-and-ack path, the refusal and alarm helpers, the counters, supervision
and the down-message commands (issue 15 items 3, 6, 7, 10).

The Mosquitto worker (:class:`community.ingest.IngestWorker`, one MQTT frame at a time) and the JetStream worker
(:class:`community.nats_ingest.NatsIngestWorker`, a fetched batch at a time) differ only in how frames arrive and how
acks leave. Everything between is here:

- :class:`IngestCore` takes a batch of :class:`UplinkFrame` (one frame is a batch of one), opens and verifies each
  envelope (a stale key cache is reloaded once for the signer, :class:`~community.hubkeys.HubKeyCache`), refuses
  what the protocol refuses (``docs/protocol.md`` §4, §7), stores every accepted envelope and quarantines every
  refused one in ONE :meth:`~community.storage.Storage.store_batch` call, and only after that commit returns the
  acks, one per hub, naming the stored envelopes (re-sends included) and the refused ones it can name. A
  :class:`~community.storage.StorageError` leaves nothing acked: the frames come again.
- :class:`IngestWorkerBase` is the worker's public face (:attr:`~IngestWorkerBase.stats`, the events, the alarm
  queue, :meth:`~IngestWorkerBase.ack_alarm`, :meth:`~IngestWorkerBase.update_thresholds`,
  :meth:`~IngestWorkerBase.snooze_alarm`) and its supervision: a lost connection is retried with backoff, a defect
  is logged with its traceback, counted and restarted, and after ``max_consecutive_failures`` defects in a row the
  worker stops and sets :attr:`~IngestWorkerBase.failed`. A subclass provides only :meth:`~IngestWorkerBase._run`
  (connect, consume until the connection ends) and, if its transport has one, :meth:`~IngestWorkerBase.stream_lag`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Protocol, Self

import aiomqtt
import nacl.signing

from community.downbox import DownBox, DownPublisher
from community.hubkeys import HubKeyCache
from community.storage import EnvelopeOutcome, EnvelopeToStore, Outcome, Refusal, Storage, UnstorableError
from community.storage_common import StorageError
from protocols.acks import Ack, Rejected
from protocols.backoff import backoff_delay
from protocols.envelope import OpenedEnvelope, ReplayWindow, SeqStatus
from protocols.errors import EnvelopeError, EnvelopeRejection, ProtocolError
from protocols.messages import AlarmAcknowledgement, AlarmSnooze, DownBody, DownMessage, ThresholdUpdate
from protocols.record import Record, RecordKind
from runtime.aio import keep_cancellation

__all__ = [
    "ALARM_KINDS",
    "COMMIT_BUCKETS_S",
    "STORED_HOOK_KINDS",
    "DownUnavailable",
    "IngestCore",
    "IngestStats",
    "IngestWorkerBase",
    "PlatformWire",
    "StreamLag",
    "Uplink",
    "UplinkFrame",
    "WorkerPolicy",
    "is_alarm",
    "refusal_of",
]

_log = logging.getLogger(__name__)

ALARM_KINDS: Final = frozenset({RecordKind.ALARM, RecordKind.PANIC})

# Refusals a stale key cache could cause: the signer enrolled (or re-enrolled with a new key) since it was cached.
_KEY_REFUSALS: Final = frozenset({EnvelopeRejection.UNKNOWN_HUB, EnvelopeRejection.BAD_SIGNATURE})

COMMIT_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds of the commit-duration buckets, in seconds (one batch's transaction, fsync included)."""


def is_alarm(record: Record) -> bool:
    """Whether a stored record is offered to the caregiver as an alarm: an alarm or panic record that is not
    installation-test data (``docs/protocol.md`` §3.10: the installer's test press is no call for help)."""
    return record.kind in ALARM_KINDS and not record.installation_test


class PlatformWire(Protocol):
    """The wire format as the platform sees it (implemented over :mod:`protocols` by ``PlatformCodec``)."""

    def uplink_filter(self, share_group: str) -> str:
        """The shared-subscription filter for every hub's uplink."""
        ...

    def alarm_filter(self, share_group: str) -> str:
        """The shared-subscription filter for every hub's priority-lane uplink (``carehub/v1/+/alarm``)."""
        ...

    def hub_of_uplink(self, topic: str) -> str | None:
        """The hub id in an uplink topic, or ``None`` if the topic is not an uplink."""
        ...

    def ack_topic(self, hub: str) -> str:
        """A hub's ack topic."""
        ...

    def down_topic(self, hub: str) -> str:
        """A hub's down-message topic."""
        ...

    def split_frame(self, payload: bytes) -> Sequence[bytes]:
        """The envelopes in an uplink frame; raise :class:`ProtocolError` if malformed."""
        ...

    def open(
        self, envelope: bytes, known_hubs: Mapping[str, nacl.signing.VerifyKey], expected_hub: str
    ) -> OpenedEnvelope:
        """Open, verify and decode one envelope; raise :class:`EnvelopeError` to refuse it."""
        ...

    def peek(self, envelope: bytes) -> tuple[str, int] | None:
        """The hub id and sequence number an envelope's content names, WITHOUT checking its signature (to name a
        refused envelope in an ack); ``None`` if it cannot be opened or does not name them."""
        ...

    def encode_ack(self, ack: Ack) -> bytes:
        """The platform-signed ack."""
        ...

    def encode_down(self, message: DownMessage) -> bytes:
        """The platform-signed down-message."""
        ...


@dataclass(slots=True)
class IngestStats:
    """Counters of one worker since start."""

    frames: int = 0
    envelopes_stored: int = 0
    records_stored: int = 0
    records_duplicate: int = 0
    replays: int = 0
    acks_sent: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    #: Envelopes named in an ack's ``rejected`` list.
    rejected_in_acks: int = 0
    #: Frames not acked because the database failed (the hub or the stream sends them again).
    storage_errors: int = 0
    #: Unexpected exceptions (defects) the worker's loop survived or, the last time, died of.
    failures: int = 0
    #: Commits (one per batch with something to store or refuse): how many, their total and bucketed duration.
    commits: int = 0
    commit_seconds: float = 0.0
    #: Commits that took at most :data:`COMMIT_BUCKETS_S` [i] seconds (not cumulative).
    commit_buckets: list[int] = field(default_factory=lambda: [0] * len(COMMIT_BUCKETS_S))
    #: When (wall time, seconds since the epoch) each hub last had an envelope stored or acked by this worker.
    hubs_last_seen: dict[str, float] = field(default_factory=dict)
    #: JetStream only (issue 15: where re-received envelopes come from). Frames the stream delivered again
    #: (``num_delivered`` > 1: fetched before and not acked within ack_wait), and the replays they carried.
    redelivered_frames: int = 0
    redelivered_replays: int = 0
    #: Frames delivered for the first time whose payload an earlier stream message (another stream sequence)
    #: already carried to this worker, and the replays they carried: the same bytes published twice, by the MQTT
    #: layer storing one PUBLISH twice or by a hub re-sending an identical frame (the bytes cannot tell which).
    duplicate_message_frames: int = 0
    duplicate_message_replays: int = 0

    def observe_commit(self, seconds: float) -> None:
        """Count one commit of ``seconds``; one beyond the last bucket counts only in the total."""
        self.commits += 1
        self.commit_seconds += seconds
        for i, bound in enumerate(COMMIT_BUCKETS_S):
            if seconds <= bound:
                self.commit_buckets[i] += 1
                break

    def count_rejection(self, reason: EnvelopeRejection) -> None:
        """Count one refused (or replayed) envelope or frame under its reason."""
        self.rejections[reason.value] = self.rejections.get(reason.value, 0) + 1


@dataclass(frozen=True, slots=True)
class StreamLag:
    """How far one consumer of a stream is behind: frames not yet handed to any worker (``pending``) and handed
    out but not yet acked (``ack_pending``)."""

    stream: str
    pending: int
    ack_pending: int


class DownUnavailable(aiomqtt.MqttError):
    """A down-message could not be published now (the worker is not connected to its broker or cluster); it stays
    stored and is published again when the hub is next heard from. An :class:`aiomqtt.MqttError`, so whoever
    handles the Mosquitto worker's publish failures (the doctor's console) handles the JetStream worker's too."""


class Uplink(Protocol):
    """One uplink frame as a broker delivered it (:class:`UplinkFrame`, :class:`community.nats_batch.Frame`)."""

    @property
    def topic(self) -> str:
        """The MQTT topic it was published on (``carehub/v1/<hub>/up`` or ``.../alarm``)."""
        ...

    @property
    def payload(self) -> bytes:
        """The frame."""
        ...


@dataclass(frozen=True, slots=True)
class UplinkFrame:
    """One uplink frame and the MQTT topic it arrived on (an MQTT broker's delivery)."""

    topic: str
    payload: bytes


def refusal_of(
    wire: PlatformWire, topic_hub: str | None, raw: bytes, reason: EnvelopeRejection, detail: str, *, received_at: float
) -> Refusal:
    """The quarantine entry of a refused envelope or frame; the hub and seq its content names are read (without
    trusting them) only when it came on a hub's topic."""
    peeked = wire.peek(raw) if topic_hub is not None else None
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


@dataclass(slots=True)
class _Pending:
    """What one batch builds up before its commit."""

    to_store: list[EnvelopeToStore] = field(default_factory=list)
    accepted: list[OpenedEnvelope] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    acked: dict[str, list[int]] = field(default_factory=dict)
    seen: set[tuple[str, int]] = field(default_factory=set)
    #: Envelopes recognised as stored before (re-sends), by hub: counted in one write per batch, logged per hub.
    replays: dict[str, list[int]] = field(default_factory=dict)
    #: The index of the frame each of :attr:`accepted` came in, and the replays each frame of the batch carried.
    frame_of: list[int] = field(default_factory=list)
    replays_by_frame: list[int] = field(default_factory=list)


StoredHook = Callable[[str, Sequence[Record], Sequence[str]], Awaitable[None]]
"""Called after a commit with a stored envelope's hub, its records and the ids of those stored for the first time,
for an envelope that carries a record of a kind in :data:`STORED_HOOK_KINDS` (the hub's confirmations of
down-messages); other envelopes are not shown to it."""

STORED_HOOK_KINDS: Final = frozenset({RecordKind.DOWN_APPLIED, RecordKind.DOWN_REFUSED})
# Records that need a look after their commit: alarms offered to the caregiver, confirmations for the hook, and any
# installation-test record (logged as test data). A routine measurement needs none, so its envelope costs nothing
# there (issue 15: a set and a hex id per record, and an awaited hook, per envelope).
_WATCHED_KINDS: Final = ALARM_KINDS | STORED_HOOK_KINDS


def _needs_look(records: Sequence[Record]) -> bool:
    return any(r.kind in _WATCHED_KINDS or r.installation_test for r in records)


class IngestCore:
    """Stores batches of uplink frames for one worker; keeps its replay window, key cache and ack counters.

    Args:
        storage: where records go.
        wire: frame and envelope codecs (:class:`community.wire.PlatformCodec`).
        stats: the worker's counters.
        alarms: newly stored alarm and panic records are offered here (dropped with a log line when full).
        wall_time: seconds since the epoch, for ``received_at`` and the acks' ``at``.
        hub_keys: the verify-key cache; by default one over ``storage``.
        on_stored: see :data:`StoredHook` (the down-message store's confirmations, :meth:`DownBox.confirm`).
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
        on_stored: StoredHook | None = None,
    ) -> None:
        self.storage = storage
        self.wire = wire
        self.stats = stats
        self.alarms = alarms
        #: Set after every commit that stored (or recognised as stored) an envelope.
        self.stored = asyncio.Event()
        #: Set after every counted refusal or replay.
        self.rejected = asyncio.Event()
        #: Set while the database is failing: the last batch's storage call raised StorageError (nothing acked,
        #: the frames come again); cleared by the next batch that gets through. Never a refusal.
        self.database_down = asyncio.Event()
        self._on_stored = on_stored
        self._wall_time = wall_time
        self._keys = hub_keys if hub_keys is not None else HubKeyCache(storage)
        self._window = ReplayWindow()
        self._ack_seqs: dict[str, int] = {}

    async def handle(self, frames: Sequence[Uplink]) -> list[Ack]:
        """Store one batch in one transaction and return the acks to publish (after the commit).

        Raises:
            StorageError: the database failed; nothing of the batch was stored or may be acked.
        """
        acks, _ = await self.handle_counted(frames)
        return acks

    async def handle_counted(self, frames: Sequence[Uplink]) -> tuple[list[Ack], list[int]]:
        """:meth:`handle`, also returning how many envelopes of each frame (in order) were replays (already
        stored); lanes run concurrently, so this is per call, never kept on the core.

        Raises:
            StorageError: the database failed; nothing of the batch was stored or may be acked.
        """
        received_at = self._wall_time()
        pending = _Pending(replays_by_frame=[0] * len(frames))
        try:
            await self._keys.refresh_if_due()
            # The keys of the batch's hubs not cached yet, in one read (a new hub's first envelope opened once).
            await self._keys.prefetch({h for f in frames if (h := self.wire.hub_of_uplink(f.topic)) is not None})
            for index, frame in enumerate(frames):
                await self._take(index, frame, received_at, pending)
                # Opening a frame's envelopes never awaits anything slow; without this a batch of routine frames
                # held the event loop (and the alarm lane's fetch) for all its signatures (issue 15 item 4).
                await asyncio.sleep(0)
            if pending.to_store or pending.refused:
                started = time.perf_counter()
                outcomes = await self.storage.store_batch(pending.to_store, pending.refused)
                self.stats.observe_commit(time.perf_counter() - started)
                await self._committed(pending, outcomes)
            await self._count_replays(pending.replays)
        except StorageError:
            if not self.database_down.is_set():
                _log.error("platform: the database is unavailable; frames are not acked until it answers")
            self.database_down.set()
            raise
        if frames and self.database_down.is_set():  # a batch with frames always reads or writes the database
            _log.warning("platform: the database answers again")
            self.database_down.clear()
        return self._acks(pending, received_at), pending.replays_by_frame

    async def publish_acks(self, publisher: DownPublisher, acks: Iterable[Ack]) -> None:
        """Publish each ack (QoS 1) to its hub's ack topic, counting it."""
        for ack in acks:
            await keep_cancellation(
                publisher.publish(self.wire.ack_topic(ack.hub_id), self.wire.encode_ack(ack), qos=1)
            )
            self.stats.acks_sent += 1

    async def _take(self, index: int, frame: Uplink, received_at: float, pending: _Pending) -> None:
        hub = self.wire.hub_of_uplink(frame.topic)
        if hub is None:
            detail = f"not an uplink topic: {frame.topic!r}"
            pending.refused.append(
                refusal_of(self.wire, None, frame.payload, EnvelopeRejection.MALFORMED, detail, received_at=received_at)
            )
            return
        self.stats.frames += 1
        acked = pending.acked.setdefault(hub, [])
        try:
            envelopes = self.wire.split_frame(frame.payload)
        except ProtocolError as exc:
            refusal = refusal_of(
                self.wire, None, frame.payload, EnvelopeRejection.MALFORMED, f"frame: {exc}", received_at=received_at
            )
            pending.refused.append(dataclasses.replace(refusal, topic_hub=hub))
            return
        for raw in envelopes:
            try:
                keys = self._keys.lookup()
                try:  # the cached keys, without a coroutine per envelope; a missing or stale key is read once
                    opened = self.wire.open(raw, keys, hub)
                except EnvelopeError as exc:
                    opened = await self._open_again(raw, hub, keys.asked, exc)
            except EnvelopeError as exc:
                pending.refused.append(refusal_of(self.wire, hub, raw, exc.reason, exc.detail, received_at=received_at))
                continue
            except ProtocolError as exc:
                pending.refused.append(
                    refusal_of(self.wire, hub, raw, EnvelopeRejection.MALFORMED, str(exc), received_at=received_at)
                )
                continue
            key = (hub, opened.seq)
            if key in pending.seen or self._window.check(hub, opened.seq) is SeqStatus.DUPLICATE:
                pending.replays.setdefault(hub, []).append(opened.seq)
                pending.replays_by_frame[index] += 1
                acked.append(opened.seq)
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
            pending.frame_of.append(index)
            pending.seen.add(key)

    async def _committed(self, pending: _Pending, outcomes: Sequence[EnvelopeOutcome]) -> None:
        for r in pending.refused:
            self.stats.count_rejection(r.reason)
            _log.warning(
                "platform: refused from %s (%s, seq %s): %s",
                r.topic_hub or "?",
                r.reason.value,
                "?" if r.envelope_seq is None else r.envelope_seq,
                r.detail,
            )
        if pending.refused:
            self.rejected.set()
        for env, index, outcome in zip(pending.accepted, pending.frame_of, outcomes, strict=True):
            self._window.mark(env.hub_id, env.seq)
            pending.acked[env.hub_id].append(env.seq)
            if outcome.outcome is Outcome.REPLAYED:
                pending.replays.setdefault(env.hub_id, []).append(env.seq)
                pending.replays_by_frame[index] += 1
                continue
            if outcome.new_record_ids and _needs_look(env.decoded):
                self._offer_alarms(env, outcome.new_record_ids)
                if self._on_stored is not None and any(r.kind in STORED_HOOK_KINDS for r in env.decoded):
                    await self._on_stored(env.hub_id, env.decoded, outcome.new_record_ids)  # community.downbox
            self.stats.envelopes_stored += 1
            self.stats.records_stored += len(outcome.new_record_ids)
            self.stats.records_duplicate += len(outcome.duplicate_record_ids)
        if pending.to_store:
            self.stored.set()

    def _acks(self, pending: _Pending, received_at: float) -> list[Ack]:
        acks: list[Ack] = []
        now = _dt.datetime.fromtimestamp(self._wall_time(), _dt.UTC)
        for hub, acked in pending.acked.items():
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
            if acked:  # the hub proved itself: an envelope it signed was stored or recognised
                self.stats.hubs_last_seen[hub] = received_at
            ack_seq = self._ack_seqs.get(hub, 0) + 1
            self._ack_seqs[hub] = ack_seq
            acks.append(Ack(hub, ack_seq, now, stored=tuple(dict.fromkeys(acked)), rejected=tuple(rejected.values())))
            self.stats.rejected_in_acks += len(rejected)
        return acks

    async def _open_again(
        self, raw: bytes, topic_hub: str, signer: str | None, refusal: EnvelopeError
    ) -> OpenedEnvelope:
        """After the cached keys refused an envelope (``refusal``; ``signer``: the hub whose key was asked for): on
        a missing key, or a cached key that did not verify it, read the signer's row once and, if that gave a key
        the cache lacked, open it again; otherwise raise ``refusal``.

        Raises:
            EnvelopeError, ProtocolError: refused (see :meth:`PlatformWire.open`).
            StorageError: the signer's row cannot be read.
        """
        if signer is None or refusal.reason not in _KEY_REFUSALS or not await self._keys.reload(signer):
            raise refusal
        return self.wire.open(raw, self._keys.lookup(), topic_hub)

    async def _count_replays(self, replays: Mapping[str, Sequence[int]]) -> None:
        """Count a batch's re-sent envelopes: in memory, in the database in ONE write for the whole batch (a resend
        storm wrote, and fsynced, one row per envelope), and one log line per hub."""
        if not replays:
            return
        reason = EnvelopeRejection.REPLAYED
        for hub, seqs in replays.items():
            self.stats.replays += len(seqs)
            self.stats.rejections[reason.value] = self.stats.rejections.get(reason.value, 0) + len(seqs)
            shown = ", ".join(str(seq) for seq in seqs[:8]) + (", ..." if len(seqs) > 8 else "")
            _log.warning(
                "platform: rejected from %s (%s): %d envelope(s) seen before: %s", hub, reason.value, len(seqs), shown
            )
        await self.storage.count_rejections({(reason.value, hub): len(seqs) for hub, seqs in replays.items()})
        self.rejected.set()

    def _offer_alarms(self, env: OpenedEnvelope, new_record_ids: Sequence[str]) -> None:
        new = set(new_record_ids)
        for record in env.decoded:
            if record.record_id.hex() not in new:
                continue
            if record.installation_test:
                _log.info(
                    "platform: installation-test %s %s from %s stored (test data, not an alarm)",
                    record.kind.value,
                    record.record_id.hex(),
                    record.hub_id,
                )
            elif is_alarm(record):
                try:
                    self.alarms.put_nowait(record)
                except asyncio.QueueFull:
                    _log.error("platform: alarm console queue full; %s not offered", record.record_id.hex())


class WorkerPolicy(Protocol):
    """What every worker's settings say beyond its transport (:class:`community.ingest.WorkerSettings`,
    :class:`community.nats_config.NatsSettings`)."""

    @property
    def worker_name(self) -> str:
        """The worker's name in its task and log lines (its client id or connection name)."""
        ...

    @property
    def max_consecutive_failures(self) -> int:
        """Defects in a row after which the worker gives up."""
        ...

    @property
    def backoff_base(self) -> float:
        """The first reconnect delay, in seconds (doubling, jittered)."""
        ...

    @property
    def backoff_cap(self) -> float:
        """The longest reconnect delay, in seconds."""
        ...

    @property
    def down_resend_after_s(self) -> float:
        """An unconfirmed down-message is published again this long after its last publish."""
        ...

    @property
    def down_sweep_every_s(self) -> float:
        """How often the worker looks for unconfirmed down-messages to publish again."""
        ...


class IngestWorkerBase(abc.ABC):
    """One ingest worker: ``async with Worker(settings, storage, wire) as worker``; see the module docstring.

    Args:
        settings: the transport's settings, with the :class:`WorkerPolicy` every worker follows (a subclass
            narrows :attr:`settings` to its own settings class).
        storage: where records go.
        wire: frame, envelope and ack codecs.
        wall_time: the wall clock for ``received_at``, in seconds since the Unix epoch.
        hub_keys: the enrolled hubs' verify keys; by default a :class:`~community.hubkeys.HubKeyCache` over
            ``storage``.
        rng: the reconnect backoff's jitter (default: unseeded; ``carehub demo`` seeds it for a repeatable day).
    """

    #: Exceptions that mean the broker or cluster connection ended (retried with backoff, not a defect).
    connection_errors: tuple[type[BaseException], ...] = (aiomqtt.MqttError,)
    #: How the worker's task is named (``<prefix>:<name>``).
    task_prefix: str = "ingest"

    def __init__(
        self,
        settings: WorkerPolicy,
        storage: Storage,
        wire: PlatformWire,
        *,
        wall_time: Callable[[], float] = time.time,
        hub_keys: HubKeyCache | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.wire = wire
        self.name = settings.worker_name
        self.stats = IngestStats()
        #: Newly stored alarm and panic records, for the caregiver console.
        self.alarms: asyncio.Queue[Record] = asyncio.Queue(maxsize=1024)
        #: Set while connected and subscribed (consumers bound).
        self.connected = asyncio.Event()
        #: Set when the worker gave up after repeated unexpected failures (:attr:`failure` holds the last one).
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        #: Set each time the loop is restarted after a defect (cleared by whoever waits on it).
        self.restarted = asyncio.Event()
        self._wall_time = wall_time
        #: Down-messages kept until the hub confirms them (sent, re-sent, confirmed).
        self.downbox = DownBox(
            storage,
            wire,
            self._now,
            resend_after_s=settings.down_resend_after_s,
            sweep_every_s=settings.down_sweep_every_s,
        )
        self._core = IngestCore(
            storage,
            wire,
            self.stats,
            self.alarms,
            wall_time=wall_time,
            hub_keys=hub_keys,
            on_stored=self.downbox.confirm,
        )
        #: Set after every committed batch that stored an envelope (cleared by whoever waits on it).
        self.stored = self._core.stored
        #: Set after every counted refusal or replay (cleared by whoever waits on it).
        self.rejected = self._core.rejected
        #: Set while the database is failing (:attr:`IngestCore.database_down`): /healthz is not ready.
        self.database_down = self._core.database_down
        #: Where down-messages are published while connected (set by :meth:`_run`).
        self._down_client: DownPublisher | None = None
        self._runner: asyncio.Task[None] | None = None
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter (seeded by a simulation), not cryptography
        self._consecutive_failures = 0
        self._attempt = 0
        self._log = logging.getLogger(type(self).__module__)

    @property
    def task_name(self) -> str:
        """The name of the worker's task, as its log lines give it."""
        return f"{self.task_prefix}:{self.name}"

    async def __aenter__(self) -> Self:
        self._runner = asyncio.create_task(self._supervise(), name=self.task_name)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def stream_lag(self) -> Sequence[StreamLag]:
        """How far the worker's consumers are behind, per stream; a broker without streams reports none."""
        return ()

    async def ack_alarm(
        self,
        hub: str,
        alarm_id: str,
        caregiver: str,
        at: _dt.datetime,
        *,
        role: str | None = None,
        note: str | None = None,
    ) -> DownMessage:
        """Publish a caregiver's signed acknowledgement of an alarm (for a panic alarm: the call was answered).

        Args:
            hub: the hub that raised the alarm.
            alarm_id: the alarm's id (``AlarmBody.alarm_id`` / ``PanicBody.alarm_id``).
            caregiver: who answered, as shown to the resident.
            at: when they answered (timezone-aware).
            role: their role, if known.
            note: free text, if any.

        Returns:
            The message as published.

        Raises:
            DownUnavailable: not connected (the message is not stored).
            aiomqtt.MqttError: the publish failed (the message stays stored and is published again).
            EncodeError: an argument the protocol cannot carry.
        """
        return await self._send_down(hub, AlarmAcknowledgement(alarm_id, caregiver, at, role, note))

    async def update_thresholds(
        self, hub: str, resident_id: str, thresholds: Mapping[str, float | None]
    ) -> DownMessage:
        """Publish a resident's new threshold settings (keys as in ``../shared/thresholds.md``; ``None`` restores
        the default for that key). Raises as :meth:`ack_alarm`."""
        return await self._send_down(hub, ThresholdUpdate(resident_id, thresholds))

    async def snooze_alarm(self, hub: str, alarm_id: str, by: str, duration_s: int, at: _dt.datetime) -> DownMessage:
        """Ask the hub to stop re-announcing an alarm for ``duration_s`` (refused by the hub for a critical alarm).
        Raises as :meth:`ack_alarm`."""
        return await self._send_down(hub, AlarmSnooze(alarm_id, by, duration_s, at))

    async def _send_down(self, hub: str, body: DownBody) -> DownMessage:
        client = self._down_client
        if client is None or not self.connected.is_set():
            raise DownUnavailable("the platform is not connected to the broker")
        # One at a time (DownBox.lock): a later seq must not overtake an earlier one, or the hub ignores the earlier.
        return await self.downbox.send(client, hub, body)

    def _now(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self._wall_time(), _dt.UTC)

    async def _resend_to_acked_hubs(self, client: DownPublisher, acks: Iterable[Ack]) -> None:
        """The hubs whose envelopes were just acked as stored are online: publish what they have not confirmed
        again, if due (:meth:`DownBox.on_hub_seen`).

        Raises:
            StorageError: the open messages cannot be read (the frames are handled; the next frame tries again).
        """
        for ack in acks:
            if ack.stored:
                await self.downbox.on_hub_seen(client, ack.hub_id)

    def _connected_through(self, client: DownPublisher) -> None:
        """Connected and subscribed: down-messages go through ``client``; the next lost connection backs off from
        the start again."""
        self._down_client = client
        self._attempt = 0
        self.connected.set()

    def _handled(self) -> None:
        """A frame or batch was handled: the loop works, defects so far were not in a row."""
        self._consecutive_failures = 0

    @abc.abstractmethod
    async def _run(self) -> None:
        """Connect, set :attr:`connected` and :attr:`_down_client`, consume until the connection ends (raise one of
        :attr:`connection_errors`) or a defect."""

    async def _supervise(self) -> None:
        """Run the ingest loop; restart it with backoff after a defect, give up after too many in a row."""
        s = self.settings
        while True:
            defect = False
            try:
                await self._run()
            except self.connection_errors as exc:
                self._log.warning("platform worker %s: connection lost (%s)", self.name, exc)
            except Exception as exc:  # noqa: BLE001 - supervision: a defect is logged, counted, restarted or fatal
                self.stats.failures += 1
                self._consecutive_failures += 1
                if self._consecutive_failures >= s.max_consecutive_failures:
                    self._log.critical(
                        "task %s failed %d times in a row without handling a frame; giving up",
                        self.task_name,
                        self._consecutive_failures,
                        exc_info=exc,
                    )
                    self.failure = exc
                    self.failed.set()
                    return
                defect = True
                self._log.error(
                    "task %s failed (%d in a row); restarting its loop",
                    self.task_name,
                    self._consecutive_failures,
                    exc_info=exc,
                )
            finally:
                self.connected.clear()
                self._down_client = None
            if defect:
                self.restarted.set()
            delay = backoff_delay(
                self._attempt, base=s.backoff_base, cap=s.backoff_cap, jitter_fraction=0.2, rng=self._rng
            )
            self._attempt += 1
            await asyncio.sleep(delay)
