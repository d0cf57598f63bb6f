"""A stateless ingest worker on a NATS JetStream cluster (issue 15 items 3 and 4; ``docs/platform-nats.md``).

Hubs connect to the cluster's MQTT listener and publish as they do to Mosquitto (``docs/protocol.md`` §5): routine
frames on ``carehub/v1/<hub>/up``, priority-lane frames (alarms, panic events, eviction reports) on
``carehub/v1/<hub>/alarm``. NATS maps each topic to a subject (``carehub.v1.<hub>.up``); the worker keeps two
streams capturing them, :data:`~community.nats_config.UP_STREAM` and :data:`~community.nats_config.ALARM_STREAM`
(work-queue retention: a frame leaves the stream once a worker acked it), each read through ONE durable pull
consumer that every worker shares. So any number of workers, on any machines, split the load, and a worker that dies
holds nothing: what it fetched and did not ack is delivered again after ``ack_wait_s``.

Per lane, a worker loops: fetch up to ``batch`` frames, store them in one transaction
(:class:`community.nats_batch.BatchIngest`), publish each hub's signed ack on ``carehub.v1.<hub>.ack`` (which the
MQTT listener delivers to the hub's subscription), then ack the JetStream messages. A database failure acks nothing:
the messages are nak'ed with a delay and come back. Work in flight is bounded twice: a worker holds at most one batch
per lane, and the consumer hands out at most ``max_ack_pending`` unacked frames over all workers; a storm waits in
the stream, on disk, not in a worker's memory.

**Alarms never wait behind data**: the alarm lane has its own stream, its own consumer and its own task, so however
deep the routine stream's backlog, an alarm frame is fetched at once and waits at most for the one routine batch
whose commit is under way.

Supervision as :class:`community.ingest.IngestWorker`: a lost cluster is retried with backoff, a defect is logged,
counted and restarted, and after ``max_consecutive_failures`` of them in a row :attr:`NatsIngestWorker.failed` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from community.downbox import DownBox
from community.hubkeys import HubKeyCache
from community.ingest import IngestStats, PlatformWire
from community.nats_batch import BatchIngest, Frame, topic_to_subject
from community.nats_config import ALARM_STREAM, ALARM_SUBJECTS, UP_STREAM, UP_SUBJECTS, NatsSettings
from community.storage import Storage, StorageError
from protocols.backoff import backoff_delay
from protocols.messages import AlarmAcknowledgement, AlarmSnooze, DownBody, DownMessage, ThresholdUpdate
from protocols.record import Record

__all__ = ["NatsIngestWorker", "ensure_streams"]

_log = logging.getLogger(__name__)
_STREAM_IN_USE = 10058  # JetStream: "stream name already in use with a different configuration"
_NAK_DELAY_S = 2.0  # a frame not stored because the database failed comes back after this


async def ensure_streams(js: JetStreamContext, settings: NatsSettings) -> None:
    """Create the routine and alarm streams (or bring an existing one to this config); idempotent, so every worker
    runs it when it starts."""
    for name, subjects in ((UP_STREAM, UP_SUBJECTS), (ALARM_STREAM, ALARM_SUBJECTS)):
        config = StreamConfig(
            name=name,
            subjects=[subjects],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=settings.replicas,
            max_msg_size=1 << 20,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_IN_USE:
                raise
            await js.update_stream(config)


class _NatsPublisher:
    """community.downbox's publisher on a NATS connection: an MQTT topic becomes its subject (the hub's MQTT
    subscription receives it through NATS's MQTT listener)."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        del qos  # NATS core publish; the hub's QoS 1 subscription takes it, and the downbox resends until confirmed
        await self._nc.publish(topic_to_subject(topic), payload)
        await self._nc.flush()


class NatsIngestWorker:
    """One JetStream ingest worker; ``async with NatsIngestWorker(settings, storage, wire) as worker``.

    Its public face is :class:`community.ingest.IngestWorker`'s: :attr:`stats`, :attr:`alarms`, :attr:`stored`,
    :attr:`connected`, :attr:`failed`, :meth:`ack_alarm`, :meth:`update_thresholds`.
    """

    def __init__(
        self,
        settings: NatsSettings,
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
        self.alarms: asyncio.Queue[Record] = asyncio.Queue(maxsize=1024)
        #: Set after every committed batch (cleared by whoever waits on it).
        self.stored = asyncio.Event()
        #: Set while connected with both consumers bound.
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        self._wall_time = wall_time
        #: Down-messages kept until the hub confirms them (community.downbox), as the Mosquitto worker keeps them.
        self.downbox = DownBox(
            storage,
            wire,
            self._now,
            resend_after_s=settings.down_resend_after_s,
            sweep_every_s=settings.down_sweep_every_s,
        )
        self._core = BatchIngest(
            storage,
            wire,
            self.stats,
            self.alarms,
            wall_time=wall_time,
            hub_keys=hub_keys,
            on_stored=self.downbox.confirm,
        )
        self._nc: NatsClient | None = None
        self._runner: asyncio.Task[None] | None = None
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._consecutive_failures = 0
        self._attempt = 0

    @property
    def task_name(self) -> str:
        """The name of the worker's task, as its log lines give it."""
        return f"nats-ingest:{self.settings.client_name}"

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
        """Publish a caregiver's signed acknowledgement of an alarm on ``carehub.v1.<hub>.down``.

        Raises:
            nats.errors.Error: not connected to the cluster.
            EncodeError: an argument the protocol cannot carry.
        """
        return await self._send_down(hub, AlarmAcknowledgement(alarm_id, caregiver, at, role, note))

    async def update_thresholds(
        self, hub: str, resident_id: str, thresholds: Mapping[str, float | None]
    ) -> DownMessage:
        """Publish a resident's new threshold settings (see :meth:`community.ingest.IngestWorker.update_thresholds`)."""
        return await self._send_down(hub, ThresholdUpdate(resident_id, thresholds))

    async def snooze_alarm(self, hub: str, alarm_id: str, by: str, duration_s: int, at: _dt.datetime) -> DownMessage:
        """Ask the hub to stop re-announcing an alarm for ``duration_s``."""
        return await self._send_down(hub, AlarmSnooze(alarm_id, by, duration_s, at))

    async def _send_down(self, hub: str, body: DownBody) -> DownMessage:
        nc = self._nc
        if nc is None or not self.connected.is_set():
            raise nats.errors.ConnectionClosedError
        # Stored before it is published, sent again until the hub confirms it; one at a time (DownBox.lock).
        return await self.downbox.send(_NatsPublisher(nc), hub, body)

    def _now(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self._wall_time(), _dt.UTC)

    async def _supervise(self) -> None:
        s = self.settings
        while True:
            defect = False
            try:
                await self._run()
            except (nats.errors.Error, OSError) as exc:
                _log.warning("platform worker %s: cluster connection lost (%s)", s.client_name, exc)
            except Exception as exc:  # noqa: BLE001 - supervision: a defect is logged, counted, restarted or fatal
                self.stats.failures += 1
                self._consecutive_failures += 1
                if self._consecutive_failures >= s.max_consecutive_failures:
                    _log.critical(
                        "task %s failed %d times in a row without handling a batch; giving up",
                        self.task_name,
                        self._consecutive_failures,
                        exc_info=exc,
                    )
                    self.failure = exc
                    self.failed.set()
                    return
                defect = True
                _log.error("task %s failed; restarting its loop", self.task_name, exc_info=exc)
            finally:
                self.connected.clear()
                nc, self._nc = self._nc, None
                if nc is not None:
                    with contextlib.suppress(nats.errors.Error, OSError):
                        await nc.close()
            del defect
            delay = backoff_delay(self._attempt, base=0.2, cap=10.0, jitter_fraction=0.2, rng=self._rng)
            self._attempt += 1
            await asyncio.sleep(delay)

    async def _run(self) -> None:
        s = self.settings
        nc = await nats.connect(
            list(s.servers),
            name=s.client_name,
            user=s.username,
            password=s.password,
            tls=None if s.ca_file is None else ssl.create_default_context(cafile=str(s.ca_file)),
            connect_timeout=5,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
        )
        self._nc = nc
        js = nc.jetstream(timeout=10)
        await ensure_streams(js, s)
        lanes = (
            (UP_SUBJECTS, UP_STREAM, s.durable, s.batch),
            (ALARM_SUBJECTS, ALARM_STREAM, s.alarm_durable, s.alarm_batch),
        )
        subs: list[tuple[JetStreamContext.PullSubscription, int]] = []
        for subjects, stream, durable, batch in lanes:
            config = ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=s.ack_wait_s,
                max_ack_pending=s.max_ack_pending,
                max_deliver=-1,
                filter_subject=subjects,
            )
            sub = await js.pull_subscribe(subjects, durable=durable, stream=stream, config=config)
            subs.append((sub, batch))
        self.connected.set()
        self._attempt = 0
        tasks = [
            asyncio.create_task(self._lane(nc, sub, batch), name=f"{self.task_name}:{name}")
            for (sub, batch), name in zip(subs, ("up", "alarm"), strict=True)
        ]
        tasks.append(asyncio.create_task(self.downbox.run_sweeps(_NatsPublisher(nc)), name=f"{self.task_name}:down"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # the lane's failure, as it was raised (the supervisor tells a lost cluster from a defect)

    async def _lane(self, nc: NatsClient, sub: JetStreamContext.PullSubscription, batch: int) -> None:
        s = self.settings
        while True:
            try:
                messages = await sub.fetch(batch, timeout=s.fetch_wait_s)
            except (nats.errors.TimeoutError, TimeoutError):  # no frame within fetch_wait_s (or the node went)
                if nc.is_closed:
                    raise nats.errors.ConnectionClosedError from None
                continue
            await self._handle(nc, messages)

    async def _handle(self, nc: NatsClient, messages: list[Msg]) -> None:
        frames = [Frame(m.subject, bytes(m.data)) for m in messages]
        try:
            acks = await self._core.handle(frames)
        except StorageError as exc:
            # Transient: nothing is acked to the hub or to JetStream; the frames come back after the delay.
            self.stats.storage_errors += 1
            _log.error("platform: %d frame(s) not stored, not acked (%s)", len(frames), exc)
            for m in messages:
                with contextlib.suppress(nats.errors.Error):
                    await m.nak(delay=_NAK_DELAY_S)
            return
        self.stored.set()
        for ack in acks:
            await nc.publish(topic_to_subject(self.wire.ack_topic(ack.hub_id)), self.wire.encode_ack(ack))
            self.stats.acks_sent += 1
        for m in messages:
            await m.ack()
        publisher = _NatsPublisher(nc)
        for hub in {ack.hub_id for ack in acks if ack.stored}:  # online: what it has not confirmed goes again, if due
            await self.downbox.on_hub_seen(publisher, hub)
        self._consecutive_failures = 0
