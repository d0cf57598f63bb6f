"""The platform's ingest worker: uplink frames in, records stored exactly once, signed acks out.

One worker subscribes to ``$share/<group>/carehub/v1/+/up`` so several can share the load. For each frame it:

1. splits the frame into envelopes (:func:`protocols.topics.decode_uplink`; a malformed frame is refused whole);
2. opens each envelope with the platform's private key against the enrolled hubs' verify keys
   (:func:`protocols.envelope.open_envelope`), passing the hub named by the topic as the expected signer, so an
   envelope from hub A on hub B's topic is refused (``hub_mismatch``); an envelope whose values the database cannot
   hold is refused as ``malformed``. The keys come from the worker's :class:`~community.hubkeys.HubKeyCache`, which
   reads one hub's row on a miss and the registry's changes at most once a second, never the whole registry: the
   cost of an envelope is the same with 10 hubs enrolled as with 200,000;
3. stores every accepted envelope of the frame and quarantines every refused one in ONE transaction
   (:meth:`Storage.store_batch`), where a re-sent envelope (same hub and sequence number) is recognised as a replay
   and its records' ids dedup any record that arrives again in a new envelope; a
   :class:`protocols.envelope.ReplayWindow` of what this worker committed recognises most re-sends without a
   transaction (the database stays the authority);
4. only after that commit, publishes the platform-signed :class:`protocols.acks.Ack` to ``carehub/v1/<hub>/ack``
   naming the stored envelopes (replays included: their content is stored, so the hub may forget them) and the
   refused ones whose sequence number it could read and whose content names the topic's hub, with the reason
   (``rejected``). An envelope that cannot be opened names no sequence number; it is quarantined only. A database
   failure is never a refusal: nothing is acked and the hub sends the frame again.

Supervision: any exception other than a broker disconnect or a database failure is a defect. It is logged with its
traceback and the task's name, counted (:attr:`IngestStats.failures`), and the worker reconnects with backoff; after
:attr:`WorkerSettings.max_consecutive_failures` failures with no frame handled in between, the worker stops and
sets :attr:`IngestWorker.failed`, and ``carehub platform run`` exits non-zero so systemd restarts it. A worker never
stays up doing nothing.

Newly stored alarm and panic records (:class:`protocols.record.Record`) are offered on :attr:`IngestWorker.alarms`
for a (simulated) caregiver, never a record of the hub's installation test (:func:`is_alarm`; ``docs/protocol.md``
§3.10: such a record is stored with its mark and only logged as test data). The caregiver answers with
:meth:`IngestWorker.ack_alarm`; :meth:`IngestWorker.update_thresholds` sends a resident's new thresholds. Both are
platform-signed :class:`protocols.messages.DownMessage` with a per-hub sequence number allocated durably in storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import itertools
import logging
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

import aiomqtt
import nacl.signing

from community.downbox import RESEND_AFTER_S, SWEEP_EVERY_S, DownBox, queue_message
from community.hubkeys import HubKeyCache
from community.storage import (
    EnvelopeToStore,
    Outcome,
    Refusal,
    Storage,
    StorageError,
    UnstorableError,
)
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
    "IngestStats",
    "IngestWorker",
    "PlatformWire",
    "WorkerSettings",
    "is_alarm",
    "publish_down",
]

_log = logging.getLogger(__name__)

ALARM_KINDS = frozenset({RecordKind.ALARM, RecordKind.PANIC})


def is_alarm(record: Record) -> bool:
    """Whether a stored record is offered to the caregiver as an alarm: an alarm or panic record that is not
    installation-test data (``docs/protocol.md`` §3.10: the installer's test press is no call for help)."""
    return record.kind in ALARM_KINDS and not record.installation_test


# Refusals a stale key cache could cause: the signer enrolled (or re-enrolled with a new key) since it was cached.
_KEY_REFUSALS = frozenset({EnvelopeRejection.UNKNOWN_HUB, EnvelopeRejection.BAD_SIGNATURE})


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


async def publish_down(
    client: aiomqtt.Client,
    storage: Storage,
    wire: PlatformWire,
    hub: str,
    body: DownBody,
    *,
    issued_at: _dt.datetime,
) -> DownMessage:
    """Sign ``body`` as the next down-message for ``hub`` (seq allocated and the message stored durably first,
    :mod:`community.downbox`) and publish it (QoS 1).

    Raises:
        aiomqtt.MqttError: the publish failed; the message stays stored and a worker publishes it again.
        EncodeError: the body or hub id cannot be carried.
    """
    message, queued = await queue_message(storage, wire, hub, body, issued_at)
    await client.publish(wire.down_topic(hub), queued.payload, qos=1)
    await storage.mark_down_sent(hub, queued.seq, issued_at)
    return message


class AlarmsFirst(asyncio.PriorityQueue[Any]):
    """The worker's queue of received MQTT messages (aiomqtt's ``queue_type``): priority-lane frames
    (``carehub/v1/<hub>/alarm``: panic calls, alarms) are handled before routine ones, each lane in arrival order.

    The broker hands a worker everything it has for it; in a storm of backlogged routine frames a panic would
    otherwise wait behind all of them, one commit each (issue 15 item 4, found by ``carehub bench platform``: p99
    about 20 s with 1,000 hubs reconnecting)."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._arrival = itertools.count()

    def _put(self, item: aiomqtt.Message) -> None:
        lane = 0 if str(item.topic).endswith("/alarm") else 1
        super()._put((lane, next(self._arrival), item))

    def _get(self) -> aiomqtt.Message:
        message: aiomqtt.Message = super()._get()[2]
        return message


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Broker access for one ingest worker."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    share_group: str = "ingest"
    client_id: str = "carehub-platform"
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    max_consecutive_failures: int = 5
    down_resend_after_s: float = RESEND_AFTER_S
    """An unconfirmed down-message is published again this long after its last publish (community.downbox)."""
    down_sweep_every_s: float = SWEEP_EVERY_S
    """How often the worker looks for unconfirmed down-messages to publish again, whichever hub they are for."""

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"broker port {self.port} is outside 1..65535")
        if self.max_consecutive_failures < 1:
            raise ValueError("max_consecutive_failures must be at least 1")
        if self.down_resend_after_s <= 0 or self.down_sweep_every_s <= 0:
            raise ValueError("down_resend_after_s and down_sweep_every_s must be positive")


COMMIT_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds of the commit-duration buckets, in seconds (a frame's one transaction, fsync included)."""


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
    #: Frames not acked because the database failed (the hub sends them again).
    storage_errors: int = 0
    #: Unexpected exceptions (defects) the worker's loop survived or, the last time, died of.
    failures: int = 0
    #: Commits (one per frame with something to store or refuse): how many, their total and bucketed duration.
    commits: int = 0
    commit_seconds: float = 0.0
    #: Commits that took at most :data:`COMMIT_BUCKETS_S` [i] seconds (not cumulative).
    commit_buckets: list[int] = field(default_factory=lambda: [0] * len(COMMIT_BUCKETS_S))
    #: When (wall time, seconds since the epoch) each hub last had an envelope stored or acked by this worker.
    hubs_last_seen: dict[str, float] = field(default_factory=dict)

    def observe_commit(self, seconds: float) -> None:
        """Count one commit of ``seconds``; one beyond the last bucket counts only in the total."""
        self.commits += 1
        self.commit_seconds += seconds
        for i, bound in enumerate(COMMIT_BUCKETS_S):
            if seconds <= bound:
                self.commit_buckets[i] += 1
                break


class IngestWorker:
    """One ingest worker; ``async with IngestWorker(settings, storage, wire) as worker``.

    Args:
        settings: broker address and credentials, share group.
        storage: where records go (one transaction per frame).
        wire: frame, envelope and ack codecs.
        wall_time: the wall clock for ``received_at``, in seconds since the Unix epoch.
        hub_keys: the enrolled hubs' verify keys; by default a :class:`~community.hubkeys.HubKeyCache` over
            ``storage``.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        storage: Storage,
        wire: PlatformWire,
        *,
        wall_time: Callable[[], float] = time.time,
        hub_keys: HubKeyCache | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.wire = wire
        self.stats = IngestStats()
        #: Newly stored alarm and panic records, for the caregiver console.
        self.alarms: asyncio.Queue[Record] = asyncio.Queue(maxsize=1024)
        #: Set after every committed batch (cleared by whoever waits on it).
        self.stored = asyncio.Event()
        #: Set after every counted rejection (cleared by whoever waits on it).
        self.rejected = asyncio.Event()
        #: Set while connected and subscribed.
        self.connected = asyncio.Event()
        #: Set when the worker gave up after repeated unexpected failures (:attr:`failure` holds the last one).
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        #: Set each time the loop is restarted after a defect (cleared by whoever waits on it).
        self.restarted = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._wall_time = wall_time
        self._keys = hub_keys if hub_keys is not None else HubKeyCache(storage)
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._window = ReplayWindow()
        self._ack_seqs: dict[str, int] = {}
        #: Down-messages kept until the hub confirms them (sent, re-sent, confirmed).
        self.downbox = DownBox(
            storage,
            wire,
            self._now,
            resend_after_s=settings.down_resend_after_s,
            sweep_every_s=settings.down_sweep_every_s,
        )
        self._consecutive_failures = 0
        self._attempt = 0

    @property
    def task_name(self) -> str:
        """The name of the worker's task, as its log lines give it."""
        return f"ingest:{self.settings.client_id}"

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
            aiomqtt.MqttError: not connected to the broker.
            EncodeError: an argument the protocol cannot carry.
        """
        return await self._send_down(hub, AlarmAcknowledgement(alarm_id, caregiver, at, role, note))

    async def update_thresholds(
        self, hub: str, resident_id: str, thresholds: Mapping[str, float | None]
    ) -> DownMessage:
        """Publish a resident's new threshold settings (keys as in ``../shared/thresholds.md``; ``None`` restores
        the default for that key).

        Returns:
            The message as published.

        Raises:
            aiomqtt.MqttError: not connected to the broker.
            EncodeError: an argument the protocol cannot carry.
        """
        return await self._send_down(hub, ThresholdUpdate(resident_id, thresholds))

    async def snooze_alarm(self, hub: str, alarm_id: str, by: str, duration_s: int, at: _dt.datetime) -> DownMessage:
        """Ask the hub to stop re-announcing an alarm for `duration_s` (refused by the hub for a critical alarm).

        Raises:
            aiomqtt.MqttError: not connected to the broker.
            EncodeError: an argument the protocol cannot carry.
        """
        return await self._send_down(hub, AlarmSnooze(alarm_id, by, duration_s, at))

    async def _send_down(self, hub: str, body: DownBody) -> DownMessage:
        client = self._client
        if client is None or not self.connected.is_set():
            raise aiomqtt.MqttError("the platform is not connected to the broker")
        # One at a time (DownBox.lock): a later seq must not overtake an earlier one, or the hub ignores the earlier.
        return await self.downbox.send(client, hub, body)

    def _now(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self._wall_time(), _dt.UTC)

    async def _supervise(self) -> None:
        """Run the ingest loop; restart it with backoff after a defect, give up after too many in a row."""
        s = self.settings
        while True:
            defect = False
            try:
                await self._run()
            except aiomqtt.MqttError as exc:
                _log.warning("platform worker %s: broker connection lost (%s)", s.client_id, exc)
            except Exception as exc:  # noqa: BLE001 - supervision: a defect is logged, counted, restarted or fatal
                self.stats.failures += 1
                self._consecutive_failures += 1
                if self._consecutive_failures >= s.max_consecutive_failures:
                    _log.critical(
                        "task %s failed %d times in a row without handling a frame; giving up",
                        self.task_name,
                        self._consecutive_failures,
                        exc_info=exc,
                    )
                    self.failure = exc
                    self.failed.set()
                    return
                defect = True
                _log.error(
                    "task %s failed (%d in a row); restarting its loop",
                    self.task_name,
                    self._consecutive_failures,
                    exc_info=exc,
                )
            finally:
                self.connected.clear()
                self._client = None
            if defect:
                self.restarted.set()
            delay = backoff_delay(
                self._attempt, base=s.backoff_base, cap=s.backoff_cap, jitter_fraction=0.2, rng=self._rng
            )
            self._attempt += 1
            await asyncio.sleep(delay)

    async def _run(self) -> None:
        s = self.settings
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=s.client_id,
            clean_session=True,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            queue_type=AlarmsFirst,
        )
        async with client:
            await keep_cancellation(client.subscribe(self.wire.uplink_filter(s.share_group), qos=1))
            await keep_cancellation(client.subscribe(self.wire.alarm_filter(s.share_group), qos=1))
            self._client = client
            self.connected.set()
            self._attempt = 0
            sweeps = asyncio.create_task(self.downbox.run_sweeps(client), name=f"{self.task_name}:down")
            try:
                await self._consume(client)
            finally:
                sweeps.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeps

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            try:
                await self._handle(client, topic, bytes(message.payload))
            except StorageError as exc:
                # Transient: nothing more is acked or refused for this frame; the hub sends it again.
                self.stats.storage_errors += 1
                _log.error("platform: frame on %s not handled, not acked (%s)", topic, exc)
                continue
            self._consecutive_failures = 0

    async def _reject(self, reason: str, hub: str | None, detail: str) -> None:
        self.stats.rejections[reason] = self.stats.rejections.get(reason, 0) + 1
        await self.storage.count_rejection(reason, hub)
        _log.warning("platform: rejected from %s (%s): %s", hub or "?", reason, detail)
        self.rejected.set()

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

    async def _handle(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        received_at = self._wall_time()
        hub = self.wire.hub_of_uplink(topic)
        if hub is None:
            refusal = self._refusal(
                None, payload, EnvelopeRejection.MALFORMED, f"not an uplink topic: {topic!r}", received_at
            )
            await self._commit_refusals([refusal])
            return
        self.stats.frames += 1
        try:
            envelopes = self.wire.split_frame(payload)
        except ProtocolError as exc:
            refusal = self._refusal(None, payload, EnvelopeRejection.MALFORMED, f"frame: {exc}", received_at)
            await self._commit_refusals([dataclasses.replace(refusal, topic_hub=hub)])
            return
        await self._keys.refresh_if_due()  # StorageError: see _run
        to_store: list[EnvelopeToStore] = []
        accepted: list[OpenedEnvelope] = []
        refused: list[Refusal] = []
        acked: list[int] = []
        for raw in envelopes:
            try:
                opened = await self._open(raw, hub)
            except EnvelopeError as exc:
                refused.append(self._refusal(hub, raw, exc.reason, exc.detail, received_at))
                continue
            except ProtocolError as exc:
                refused.append(self._refusal(hub, raw, EnvelopeRejection.MALFORMED, str(exc), received_at))
                continue
            if self._window.check(hub, opened.seq) is SeqStatus.DUPLICATE:
                await self._replayed(hub, opened.seq)
                acked.append(opened.seq)
                continue
            try:
                to_store.append(EnvelopeToStore.from_opened(opened, received_at))
                accepted.append(opened)
            except UnstorableError as exc:
                digest = hashlib.sha256(raw).hexdigest()
                detail = str(exc)
                refused.append(
                    Refusal(hub, hub, opened.seq, EnvelopeRejection.MALFORMED, detail, len(raw), digest, received_at)
                )
        if to_store or refused:
            started = time.perf_counter()
            outcomes = await self.storage.store_batch(to_store, refused)  # StorageError: see _run
            self.stats.observe_commit(time.perf_counter() - started)
            # Committed: only now may the hub be told.
            self._count_refusals(refused)
            for env, outcome in zip(accepted, outcomes, strict=True):
                self._window.mark(hub, env.seq)
                acked.append(env.seq)
                if outcome.outcome is Outcome.REPLAYED:
                    await self._replayed(hub, env.seq)
                    continue
                self._offer_alarms(env, outcome.new_record_ids)
                await self.downbox.confirm(hub, env.decoded, outcome.new_record_ids)
                self.stats.envelopes_stored += 1
                self.stats.records_stored += len(outcome.new_record_ids)
                self.stats.records_duplicate += len(outcome.duplicate_record_ids)
            if to_store:
                self.stored.set()
        stored = set(acked)
        rejected = {
            r.envelope_seq: Rejected(r.envelope_seq, r.reason)
            for r in refused
            if r.envelope_seq is not None and r.claimed_hub == hub and r.envelope_seq not in stored
        }
        if not acked and not rejected:
            return
        if acked:  # the hub proved itself: an envelope it signed was stored or recognised
            self.stats.hubs_last_seen[hub] = received_at
        ack_seq = self._ack_seqs.get(hub, 0) + 1
        self._ack_seqs[hub] = ack_seq
        ack = Ack(hub, ack_seq, self._now(), stored=tuple(dict.fromkeys(acked)), rejected=tuple(rejected.values()))
        await keep_cancellation(client.publish(self.wire.ack_topic(hub), self.wire.encode_ack(ack), qos=1))
        self.stats.acks_sent += 1
        self.stats.rejected_in_acks += len(rejected)
        if acked:  # the hub is online: what it has not confirmed goes to it again (if due)
            await self.downbox.on_hub_seen(client, hub)

    async def _open(self, raw: bytes, topic_hub: str) -> OpenedEnvelope:
        """Open one envelope with the cached keys; on a missing key, or a cached key that did not verify it, read
        the signer's row once and, if that gave a key the cache lacked, open it again.

        Raises:
            EnvelopeError, ProtocolError: refused (see :meth:`PlatformWire.open`).
            StorageError: the signer's row cannot be read.
        """
        keys = self._keys.lookup()
        try:
            return self.wire.open(raw, keys, topic_hub)
        except EnvelopeError as exc:
            signer = keys.asked
            if signer is None or exc.reason not in _KEY_REFUSALS or not await self._keys.reload(signer):
                raise
        return self.wire.open(raw, self._keys.lookup(), topic_hub)

    async def _commit_refusals(self, refused: list[Refusal]) -> None:
        await self.storage.store_batch((), refused)
        self._count_refusals(refused)

    def _count_refusals(self, refused: Sequence[Refusal]) -> None:
        for r in refused:
            reason = r.reason.value
            self.stats.rejections[reason] = self.stats.rejections.get(reason, 0) + 1
            _log.warning(
                "platform: refused from %s (%s, seq %s): %s",
                r.topic_hub or "?",
                reason,
                "?" if r.envelope_seq is None else r.envelope_seq,
                r.detail,
            )
        if refused:
            self.rejected.set()

    async def _replayed(self, hub: str, seq: int) -> None:
        self.stats.replays += 1
        await self._reject(EnvelopeRejection.REPLAYED.value, hub, f"envelope {seq} seen before")

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
