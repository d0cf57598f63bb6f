"""The platform's ingest worker: uplink frames in, records stored exactly once, signed acks out.

One worker subscribes to ``$share/<group>/carehub/v1/+/up`` so several can share the load. For each frame it:

1. splits the frame into envelopes (a malformed frame is counted and dropped);
2. opens each envelope with the platform's private key against the registry of enrolled hubs, passing the hub
   named by the topic as the expected signer, so an envelope from hub A on hub B's topic is refused
   (``hub_mismatch``); every refusal is counted per reason and nothing of it is stored;
3. stores every accepted envelope of the frame in ONE transaction (:meth:`Storage.store_batch`), where a re-sent
   envelope (same hub and sequence number) is recognised as a replay and its records' ids dedup any record that
   arrives again in a new envelope;
4. only after that commit, publishes the signed ack to ``carehub/v1/<hub>/ack`` naming the stored envelopes
   (replays included: their content is stored, so the hub may forget them).

Newly stored alarm and panic records are also offered on :attr:`IngestWorker.alarms` for a (simulated) caregiver,
who answers with :meth:`IngestWorker.ack_alarm`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import aiomqtt

from gateway.backoff import backoff_delay
from gateway.clock import Clock, SystemClock
from protocols.errors import EnvelopeError, EnvelopeRejection, ProtocolError
from sim.platform.storage import EnvelopeToStore, Outcome, Storage, StoredReading

__all__ = ["ALARM_KINDS", "IngestStats", "IngestWorker", "PlatformWire", "WorkerSettings"]

_log = logging.getLogger(__name__)

ALARM_KINDS = frozenset({"alarm", "panic", "panic_event"})


class PlatformWire(Protocol):
    """The wire format as the platform sees it."""

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

    def split_frame(self, payload: bytes) -> list[bytes]:
        """The envelopes in an uplink frame; raise :class:`ProtocolError` if malformed."""
        ...

    def open(
        self, envelope: bytes, known_hubs: Mapping[str, bytes], expected_hub: str, received_at: float
    ) -> EnvelopeToStore:
        """Open, verify and decode one envelope; raise :class:`EnvelopeError` to refuse it."""
        ...

    def encode_ack(self, hub: str, stored: Sequence[EnvelopeToStore], rejected: Sequence[tuple[int, str]]) -> bytes:
        """The platform-signed ack for ``hub``."""
        ...

    def encode_alarm_ack(self, hub: str, record_id: str, caregiver: str, at: float) -> bytes:
        """A platform-signed alarm acknowledgement down-message."""
        ...


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
        self.alarms: asyncio.Queue[StoredReading] = asyncio.Queue(maxsize=1024)
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

    async def ack_alarm(self, hub: str, record_id: str, caregiver: str, at: float) -> None:
        """Publish a caregiver's signed acknowledgement of an alarm to the hub's down topic.

        Raises:
            aiomqtt.MqttError: not connected to the broker.
        """
        client = self._client
        if client is None or not self.connected.is_set():
            raise aiomqtt.MqttError("the platform is not connected to the broker")
        payload = self.wire.encode_alarm_ack(hub, record_id, caregiver, at)
        await client.publish(self.wire.down_topic(hub), payload, qos=1)

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
                    await client.subscribe(self.wire.uplink_filter(s.share_group), qos=1)
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
        accepted: list[EnvelopeToStore] = []
        for raw in envelopes:
            try:
                accepted.append(self.wire.open(raw, known, hub, self._clock.wall()))
            except EnvelopeError as exc:
                await self._reject(exc.reason.value, hub, exc.detail)
            except ProtocolError as exc:
                await self._reject(EnvelopeRejection.MALFORMED.value, hub, str(exc))
        if not accepted:
            return
        outcomes = await self.storage.store_batch(accepted)
        # Committed: only now may the hub be told.
        for env, outcome in zip(accepted, outcomes, strict=True):
            if outcome.outcome is Outcome.REPLAYED:
                self.stats.replays += 1
                await self._reject(EnvelopeRejection.REPLAYED.value, hub, f"envelope {env.envelope_seq} seen before")
                continue
            self.stats.envelopes_stored += 1
            self.stats.records_stored += len(outcome.new_record_ids)
            self.stats.records_duplicate += len(outcome.duplicate_record_ids)
            new = set(outcome.new_record_ids)
            for reading in env.readings:
                if reading.record_id in new and reading.kind in ALARM_KINDS:
                    try:
                        self.alarms.put_nowait(reading)
                    except asyncio.QueueFull:
                        _log.error("platform: alarm console queue full; %s not offered", reading.record_id)
        self.stored.set()
        await client.publish(self.wire.ack_topic(hub), self.wire.encode_ack(hub, accepted, ()), qos=1)
        self.stats.acks_sent += 1
