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

The store-and-ack path, the down-message commands and supervision are the Mosquitto worker's
(:mod:`community.ingest_core`): a lost cluster is retried with backoff, a defect is logged, counted and restarted, and
after ``max_consecutive_failures`` of them in a row :attr:`NatsIngestWorker.failed` is set. :meth:`stream_lag` reads
each consumer's ``num_pending`` and ``num_ack_pending`` from the cluster for ``/metrics`` (:mod:`community.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import ssl
from collections.abc import Sequence

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from community.ingest_core import DownUnavailable, IngestWorkerBase, StreamLag
from community.nats_batch import Frame, topic_to_subject
from community.nats_config import ALARM_STREAM, ALARM_SUBJECTS, UP_STREAM, UP_SUBJECTS, NatsSettings
from community.storage import StorageError
from runtime.aio import keep_cancellation, raise_if_cancelling

__all__ = ["NatsIngestWorker", "ensure_streams"]

_log = logging.getLogger(__name__)
_STREAM_IN_USE = 10058  # JetStream: "stream name already in use with a different configuration"
_TOP_UP_S = 0.01  # a batch's top-up fetch takes what is in the stream; it waits this long when nothing is
_NAK_DELAY_S = 2.0  # a frame not stored because the database failed comes back after this
_LAG_TIMEOUT_S = 2.0  # a scrape waits at most this for the cluster's consumer info
_SEEN_PAYLOADS = 65_536  # digests of recent first-delivered payloads kept to spot one publish stored twice (~8 MB)


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
    """A publisher (community.downbox.DownPublisher) on a NATS connection: an MQTT topic becomes its subject (the
    hub's MQTT subscription receives it through NATS's MQTT listener)."""

    def __init__(self, nc: NatsClient, *, flush: bool) -> None:
        self._nc = nc
        self._flush = flush

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish on the topic's subject; with ``flush``, wait until the server has it (a down-message is counted
        as sent only then; acks need no wait: the stream's own acks follow them on the same connection)."""
        del qos  # NATS core publish; the hub's QoS 1 subscription takes it, the downbox resends until confirmed
        try:
            await self._nc.publish(topic_to_subject(topic), payload)
            if self._flush:
                await self._nc.flush()
        except nats.errors.Error as exc:
            raise DownUnavailable(f"not published to the cluster: {exc!r}") from exc


class NatsIngestWorker(IngestWorkerBase):
    """One JetStream ingest worker; ``async with NatsIngestWorker(settings, storage, wire) as worker``.

    Its public face is :class:`community.ingest.IngestWorker`'s (:class:`community.ingest_core.IngestWorkerBase`).
    """

    settings: NatsSettings
    connection_errors = (nats.errors.Error, OSError, DownUnavailable)
    task_prefix = "nats-ingest"
    _js: JetStreamContext | None = None

    @functools.cached_property
    def _seen_payloads(self) -> dict[bytes, int]:
        """Digest of each recent first-delivered frame's payload -> its stream sequence (oldest first, bounded)."""
        return {}

    async def stream_lag(self) -> Sequence[StreamLag]:
        """Each stream's consumer: frames not yet handed out and handed out but not yet acked, as the cluster
        reports them now; none while not connected or when the cluster does not answer within a moment."""
        js = self._js
        if js is None or not self.connected.is_set():
            return ()
        s = self.settings
        lags: list[StreamLag] = []
        try:
            for stream, durable in ((UP_STREAM, s.durable), (ALARM_STREAM, s.alarm_durable)):
                info = await js.consumer_info(stream, durable, timeout=_LAG_TIMEOUT_S)
                lags.append(StreamLag(stream, info.num_pending or 0, info.num_ack_pending or 0))
        except (nats.errors.Error, TimeoutError) as exc:
            _log.warning("platform worker %s: consumer info not read (%r)", s.client_name, exc)
            return ()
        return lags

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
        try:
            await self._consume(nc)
        finally:
            self._js = None
            with contextlib.suppress(nats.errors.Error, OSError):
                await nc.close()

    async def _consume(self, nc: NatsClient) -> None:
        s = self.settings
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
        self._js = js
        publisher = _NatsPublisher(nc, flush=True)
        self._connected_through(publisher)
        acks_out = _NatsPublisher(nc, flush=False)
        tasks = [
            asyncio.create_task(self._lane(nc, (publisher, acks_out), sub, batch), name=f"{self.task_name}:{name}")
            for (sub, batch), name in zip(subs, ("up", "alarm"), strict=True)
        ]
        tasks.append(asyncio.create_task(self.downbox.run_sweeps(publisher), name=f"{self.task_name}:down"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # the lane's failure, as it was raised (the supervisor tells a lost cluster from a defect)

    async def _lane(
        self,
        nc: NatsClient,
        out: tuple[_NatsPublisher, _NatsPublisher],
        sub: JetStreamContext.PullSubscription,
        batch: int,
    ) -> None:
        """Fetch, store and ack one lane's frames until the connection ends; ``out``: the down-message and the ack
        publishers."""
        s = self.settings
        while True:
            # nats-py's fetch waits through asyncio.wait_for, which on Python 3.11 may return a result and lose this
            # task's cancellation (runtime.aio.keep_cancellation): the lane would fetch on and the worker's shutdown
            # wait for it for ever (seen once, under load, in the 5,000-envelope panic test).
            raise_if_cancelling()
            try:
                # One frame first: a fetch of a whole batch that finds the stream empty waits for the batch to fill
                # or for fetch_wait_s to pass, so a lone panic waited up to a second (issue 15 item 4).
                messages = await keep_cancellation(sub.fetch(1, timeout=s.fetch_wait_s))
            except (nats.errors.TimeoutError, TimeoutError):  # no frame within fetch_wait_s (or the node went)
                if nc.is_closed:
                    raise nats.errors.ConnectionClosedError from None
                continue
            if batch > 1:  # then whatever else is already waiting, up to the batch (no waiting for more)
                with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                    messages += await keep_cancellation(sub.fetch(batch - 1, timeout=_TOP_UP_S))
            if messages:
                await self._handle(out, messages)

    def _classify(self, messages: Sequence[Msg], replays_by_frame: Sequence[int]) -> None:
        """Count where a batch's frames came from (issue 15: envelopes re-received though stored): frames JetStream
        delivered again, and first deliveries of a payload an earlier stream message carried (the same bytes
        published twice: one MQTT PUBLISH stored twice, or a hub re-sending an identical frame); each with the
        replays they carried. A digest per frame, a few counters: no log line, no write."""
        stats, seen = self.stats, self._seen_payloads
        for m, replays in zip(messages, replays_by_frame, strict=True):
            try:
                meta = m.metadata
            except nats.errors.NotJSMessageError:
                continue
            if meta.num_delivered > 1:
                stats.redelivered_frames += 1
                stats.redelivered_replays += replays
                continue
            digest = hashlib.blake2b(m.data, digest_size=16).digest()
            earlier = seen.get(digest)
            if earlier is not None and earlier != meta.sequence.stream:
                stats.duplicate_message_frames += 1
                stats.duplicate_message_replays += replays
                continue
            seen[digest] = meta.sequence.stream
            if len(seen) > _SEEN_PAYLOADS:
                del seen[next(iter(seen))]

    async def _handle(self, out: tuple[_NatsPublisher, _NatsPublisher], messages: list[Msg]) -> None:
        downs, acks_out = out
        frames = [Frame(m.subject, bytes(m.data)) for m in messages]
        try:
            acks, replays_by_frame = await self._core.handle_counted(frames)
            self._classify(messages, replays_by_frame)
        except StorageError as exc:
            # Transient: nothing is acked to the hub or to JetStream; the frames come back after the delay.
            self.stats.storage_errors += 1
            _log.error("platform: %d frame(s) not stored, not acked (%s)", len(frames), exc)
            for m in messages:
                with contextlib.suppress(nats.errors.Error):
                    await m.nak(delay=_NAK_DELAY_S)
            return
        self.stored.set()
        await self._core.publish_acks(acks_out, acks)
        for m in messages:
            await m.ack()
        try:
            await self._resend_to_acked_hubs(downs, acks)
        except StorageError as exc:  # stored and acked already; the next sweep publishes what is due
            _log.error("platform: down-messages not checked (%s)", exc)
        self._handled()
