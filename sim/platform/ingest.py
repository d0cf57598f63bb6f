"""The platform's ingest worker: uplink frames in, records stored exactly once, signed acks out.

One worker subscribes to ``$share/<group>/carehub/v1/+/up`` so several can share the load. For each frame it:

1. splits the frame into envelopes (:func:`protocols.topics.decode_uplink`; a malformed frame is counted, dropped);
2. opens each envelope with the platform's private key against the registry of enrolled hubs
   (:func:`protocols.envelope.open_envelope`), passing the hub named by the topic as the expected signer, so an
   envelope from hub A on hub B's topic is refused (``hub_mismatch``); every refusal is counted per reason and
   nothing of it is stored;
3. stores every accepted envelope of the frame in ONE transaction (:meth:`Storage.store_batch`), where a re-sent
   envelope (same hub and sequence number) is recognised as a replay and its records' ids dedup any record that
   arrives again in a new envelope; a :class:`protocols.envelope.ReplayWindow` of what this worker committed
   recognises most re-sends without a transaction (the database stays the authority);
4. only after that commit, publishes the platform-signed :class:`protocols.acks.Ack` to ``carehub/v1/<hub>/ack``
   naming the stored envelopes (replays included: their content is stored, so the hub may forget them).

Newly stored alarm and panic records (:class:`protocols.record.Record`) are offered on :attr:`IngestWorker.alarms`
for a (simulated) caregiver, who answers with :meth:`IngestWorker.ack_alarm`; :meth:`IngestWorker.update_thresholds`
sends a resident's new thresholds. Both are platform-signed :class:`protocols.messages.DownMessage` with a per-hub
sequence number allocated durably in storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import aiomqtt
import nacl.signing

from gateway.aio import keep_cancellation
from gateway.backoff import backoff_delay
from gateway.clock import Clock, SystemClock
from protocols.acks import Ack
from protocols.envelope import OpenedEnvelope, ReplayWindow, SeqStatus
from protocols.errors import EnvelopeError, EnvelopeRejection, ProtocolError
from protocols.messages import AlarmAcknowledgement, AlarmSnooze, DownBody, DownMessage, ThresholdUpdate
from protocols.record import Record, RecordKind
from sim.platform.storage import EnvelopeToStore, Outcome, Storage

__all__ = ["ALARM_KINDS", "IngestStats", "IngestWorker", "PlatformWire", "WorkerSettings", "publish_down"]

_log = logging.getLogger(__name__)

ALARM_KINDS = frozenset({RecordKind.ALARM, RecordKind.PANIC})


class PlatformWire(Protocol):
    """The wire format as the platform sees it (implemented over :mod:`protocols` by ``PlatformCodec``)."""

    def uplink_filter(self, share_group: str) -> str:
        """The shared-subscription filter for every hub's uplink."""
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
    """Sign ``body`` as the next down-message for ``hub`` (seq allocated durably first) and publish it (QoS 1).

    Raises:
        aiomqtt.MqttError: the publish failed (the allocated seq is skipped; gaps are harmless).
        EncodeError: the body or hub id cannot be carried.
    """
    topic = wire.down_topic(hub)  # refuses an invalid hub id before a seq is allocated for it
    message = DownMessage(hub, await storage.next_down_seq(hub), issued_at, body)
    await client.publish(topic, wire.encode_down(message), qos=1)
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


class IngestWorker:
    """One ingest worker; ``async with IngestWorker(settings, storage, wire) as worker``.

    Args:
        settings: broker address and credentials, share group.
        storage: where records go (one transaction per frame).
        wire: frame, envelope and ack codecs.
        clock: wall-clock source for ``received_at``.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        storage: Storage,
        wire: PlatformWire,
        *,
        clock: Clock | None = None,
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
        self._client: aiomqtt.Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._clock = clock or SystemClock()
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._window = ReplayWindow()
        self._ack_seqs: dict[str, int] = {}
        self._down_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        self._runner = asyncio.create_task(self._run(), name=f"ingest:{self.settings.client_id}")
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
        # One at a time: a later seq must not overtake an earlier one, or the hub refuses the earlier as a replay.
        async with self._down_lock:
            return await publish_down(client, self.storage, self.wire, hub, body, issued_at=self._now())

    def _now(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self._clock.wall(), _dt.UTC)

    async def _run(self) -> None:
        s = self.settings
        attempt = 0
        while True:
            try:
                client = aiomqtt.Client(
                    s.host,
                    s.port,
                    username=s.username,
                    password=s.password,
                    identifier=s.client_id,
                    clean_session=True,
                    socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
                )
                async with client:
                    await keep_cancellation(client.subscribe(self.wire.uplink_filter(s.share_group), qos=1))
                    self._client = client
                    self.connected.set()
                    attempt = 0
                    async for message in client.messages:
                        await self._handle(client, str(message.topic), bytes(message.payload))
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self._client = None
                _log.warning("platform worker %s: broker connection lost (%s)", s.client_id, exc)
            delay = backoff_delay(attempt, base=s.backoff_base, cap=s.backoff_cap, jitter_fraction=0.2, rng=self._rng)
            attempt += 1
            await asyncio.sleep(delay)

    async def _reject(self, reason: str, hub: str | None, detail: str) -> None:
        self.stats.rejections[reason] = self.stats.rejections.get(reason, 0) + 1
        await self.storage.count_rejection(reason, hub)
        _log.warning("platform: rejected from %s (%s): %s", hub or "?", reason, detail)
        self.rejected.set()

    async def _handle(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        hub = self.wire.hub_of_uplink(topic)
        if hub is None:
            await self._reject(EnvelopeRejection.MALFORMED.value, None, f"not an uplink topic: {topic!r}")
            return
        self.stats.frames += 1
        try:
            envelopes = self.wire.split_frame(payload)
        except ProtocolError as exc:
            await self._reject(EnvelopeRejection.MALFORMED.value, hub, f"frame: {exc}")
            return
        known = await self.storage.hubs()
        received_at = self._clock.wall()
        opened_ok: list[OpenedEnvelope] = []
        acked: list[int] = []
        for raw in envelopes:
            try:
                opened = self.wire.open(raw, known, hub)
            except EnvelopeError as exc:
                await self._reject(exc.reason.value, hub, exc.detail)
                continue
            except ProtocolError as exc:
                await self._reject(EnvelopeRejection.MALFORMED.value, hub, str(exc))
                continue
            if self._window.check(hub, opened.seq) is SeqStatus.DUPLICATE:
                await self._replayed(hub, opened.seq)
                acked.append(opened.seq)
            else:
                opened_ok.append(opened)
        if opened_ok:
            outcomes = await self.storage.store_batch([EnvelopeToStore.from_opened(e, received_at) for e in opened_ok])
            # Committed: only now may the hub be told.
            for env, outcome in zip(opened_ok, outcomes, strict=True):
                self._window.mark(hub, env.seq)
                acked.append(env.seq)
                if outcome.outcome is Outcome.REPLAYED:
                    await self._replayed(hub, env.seq)
                    continue
                self._offer_alarms(env, outcome.new_record_ids)
                self.stats.envelopes_stored += 1
                self.stats.records_stored += len(outcome.new_record_ids)
                self.stats.records_duplicate += len(outcome.duplicate_record_ids)
            self.stored.set()
        if not acked:
            return
        ack_seq = self._ack_seqs.get(hub, 0) + 1
        self._ack_seqs[hub] = ack_seq
        ack = Ack(hub, ack_seq, self._now(), stored=tuple(acked))
        await keep_cancellation(client.publish(self.wire.ack_topic(hub), self.wire.encode_ack(ack), qos=1))
        self.stats.acks_sent += 1

    async def _replayed(self, hub: str, seq: int) -> None:
        self.stats.replays += 1
        await self._reject(EnvelopeRejection.REPLAYED.value, hub, f"envelope {seq} seen before")

    def _offer_alarms(self, env: OpenedEnvelope, new_record_ids: Sequence[str]) -> None:
        new = set(new_record_ids)
        for record in env.decoded:
            if record.kind in ALARM_KINDS and record.record_id.hex() in new:
                try:
                    self.alarms.put_nowait(record)
                except asyncio.QueueFull:
                    _log.error("platform: alarm console queue full; %s not offered", record.record_id.hex())
