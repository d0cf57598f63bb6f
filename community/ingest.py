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
   (:meth:`Storage.store_batch`); frames that are already waiting in the worker's queue when it takes one are
   stored with it, up to :attr:`WorkerSettings.batch_frames` (:func:`batches`: one commit, one fsync, for a
   storm's queued frames instead of one each; a batch that starts with priority-lane frames takes no routine
   one). A re-sent envelope (same hub and sequence number) is recognised as a replay and its records' ids dedup any
   record that arrives again in a new envelope; a
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
import datetime as _dt
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt

from community.downbox import RESEND_AFTER_S, SWEEP_EVERY_S, queue_message
from community.ingest_core import (
    ALARM_KINDS,
    COMMIT_BUCKETS_S,
    IngestStats,
    IngestWorkerBase,
    PlatformWire,
    UplinkFrame,
    is_alarm,
)
from community.storage import Storage, StorageError
from protocols.messages import DownBody, DownMessage
from runtime.aio import keep_cancellation

__all__ = [
    "ALARM_KINDS",
    "COMMIT_BUCKETS_S",
    "AlarmsFirst",
    "IngestStats",
    "IngestWorker",
    "MessageQueue",
    "PlatformWire",
    "WorkerSettings",
    "batches",
    "is_alarm",
    "publish_down",
]

_log = logging.getLogger(__name__)


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


class MessageQueue(Protocol):
    """The received messages as aiomqtt hands them out (``client.messages``): the next one, and how many wait."""

    def __len__(self) -> int:
        """Messages received and not yet taken."""
        ...

    def __anext__(self) -> Awaitable[aiomqtt.Message]:
        """The next message (waits for one)."""
        ...


def _priority(message: aiomqtt.Message) -> bool:
    return str(message.topic).endswith("/alarm")


async def batches(messages: MessageQueue, limit: int) -> AsyncIterator[list[aiomqtt.Message]]:
    """The messages in batches to store together: the next one, waited for, and those already waiting behind it, up
    to ``limit`` in all; never waits for a batch to fill. A batch that starts with a priority-lane frame (the queue
    hands those out first, :class:`AlarmsFirst`) ends before the first routine one, which starts the next batch, so a
    panic's commit never carries routine envelopes."""
    carry: aiomqtt.Message | None = None
    while True:
        first = carry if carry is not None else await anext(messages)
        carry = None
        batch = [first]
        priority = _priority(first)
        while len(batch) < limit and len(messages) > 0:
            message = await anext(messages)
            if priority and not _priority(message):
                carry = message
                break
            batch.append(message)
        yield batch


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
    batch_frames: int = 4
    """At most this many frames already waiting in the worker's queue are stored in one transaction."""

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"broker port {self.port} is outside 1..65535")
        if self.max_consecutive_failures < 1:
            raise ValueError("max_consecutive_failures must be at least 1")
        if self.batch_frames < 1:
            raise ValueError("batch_frames must be at least 1")
        if self.down_resend_after_s <= 0 or self.down_sweep_every_s <= 0:
            raise ValueError("down_resend_after_s and down_sweep_every_s must be positive")

    @property
    def worker_name(self) -> str:
        """Its MQTT client id."""
        return self.client_id


class IngestWorker(IngestWorkerBase):
    """One ingest worker on an MQTT broker; ``async with IngestWorker(settings, storage, wire) as worker``
    (``settings``: broker address and credentials, share group; the rest as
    :class:`~community.ingest_core.IngestWorkerBase`). The frames waiting in its queue are stored in one transaction,
    up to ``settings.batch_frames`` (:func:`batches`)."""

    settings: WorkerSettings
    connection_errors = (aiomqtt.MqttError,)
    task_prefix = "ingest"

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
            self._connected_through(client)
            sweeps = asyncio.create_task(self.downbox.run_sweeps(client), name=f"{self.task_name}:down")
            try:
                await self._consume(client)
            finally:
                sweeps.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeps

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for batch in batches(client.messages, self.settings.batch_frames):
            frames = [UplinkFrame(str(m.topic), bytes(m.payload)) for m in batch]
            try:
                acks = await self._core.handle(frames)
                await self._core.publish_acks(client, acks)
                await self._resend_to_acked_hubs(client, acks)
            except StorageError as exc:
                # Transient: nothing more is acked or refused for these frames; the hubs send them again.
                self.stats.storage_errors += 1
                _log.error(
                    "platform: %d frame(s) from %s not handled, not acked (%s)", len(frames), frames[0].topic, exc
                )
                continue
            self._handled()
