"""Delivering down-messages until the hub confirms them (issue 15 item 7; states in :mod:`community.down_types`).

A message is stored (``queued``) with its signed bytes before it is first published, then published (``sent``).
The hub answers every message it verifies with a ``down_applied`` or ``down_refused`` record (``docs/protocol.md``
§3.5, §3.9), which reaches the platform through the hub's outbox like any record: exactly once, however long the
hub was offline. :meth:`DownBox.confirm` records it. Until then the ingest worker publishes the message again
(the same bytes, the same ``seq``):

- when the hub is heard from (it sent a frame: it is online and subscribed), at most once per ``resend_after_s``;
- and on a sweep every ``sweep_every_s``, for messages not published within ``resend_after_s``.

Hearing from a hub costs no query when it has nothing open: the box keeps the set of hubs with open messages, read
in one query (:meth:`~community.storage.Storage.open_down_hubs`) at most once per ``open_refresh_s`` while hubs
are heard from, and only a hub in that set has its messages read. A message this worker queues puts its hub in the
set at once; one queued by another process (``carehub platform ack-alarm``, the console, another worker) is seen
at the next read, at most ``open_refresh_s`` later (before, every hub cost a query on its first frame and then at
most every ``resend_after_s``, which also left a message queued meanwhile unsent until that much had passed). A
message is never missed for good: the sweep reads the messages themselves.

Re-sending is safe: the hub ignores a ``seq`` it has already accepted. Publishing is serialised per worker
(:attr:`DownBox.lock`) so a later ``seq`` never overtakes an earlier one from the same worker.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from community.down_types import DownState, QueuedDown
from community.storage import Storage
from community.storage_common import StorageError
from protocols.messages import DownBody, DownMessage
from protocols.record import DownAppliedBody, DownRefusedBody, Record

__all__ = ["OPEN_REFRESH_S", "RESEND_AFTER_S", "SWEEP_EVERY_S", "DownBox", "DownPublisher", "DownWire", "queue_message"]

_log = logging.getLogger(__name__)

RESEND_AFTER_S = 30.0
SWEEP_EVERY_S = 30.0
OPEN_REFRESH_S = 1.0


class DownWire(Protocol):
    """What the down-message path needs of the platform's codec."""

    def down_topic(self, hub: str) -> str:
        """The hub's down topic (refuses an invalid hub id)."""
        ...

    def encode_down(self, message: DownMessage) -> bytes:
        """The platform-signed down-message."""
        ...


class DownPublisher(Protocol):
    """An MQTT client's publish (aiomqtt.Client)."""

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:  # pragma: no cover - protocol
        """Publish at ``qos``."""
        ...


async def queue_message(
    storage: Storage, wire: DownWire, hub: str, body: DownBody, issued_at: _dt.datetime
) -> tuple[DownMessage, QueuedDown]:
    """Allocate ``hub``'s next ``seq`` (durably), sign the message and store it (``queued``) before any publish.

    Raises:
        EncodeError: the body or hub id cannot be carried (checked before a seq is allocated).
        StorageError: the database failed.
    """
    wire.down_topic(hub)  # refuses an invalid hub id before a seq is allocated for it
    message = DownMessage(hub, await storage.next_down_seq(hub), issued_at, body)
    queued = QueuedDown(hub, message.seq, body.TYPE, wire.encode_down(message), DownState.QUEUED, issued_at)
    await storage.queue_down(queued)
    return message, queued


class DownBox:
    """A worker's down-message delivery: send new messages, re-send open ones, record the hubs' confirmations.

    Args:
        storage: where messages are kept.
        wire: signs and addresses them.
        now: the wall clock (aware UTC) stamping sends and confirmations.
        resend_after_s: an open message is published again once this long has passed since its last publish.
        sweep_every_s: how often :meth:`run_sweeps` looks for open messages to publish again.
        open_refresh_s: the longest time the set of hubs with open messages is used before it is read again
            (while hubs are heard from); >= 0 (0: read on every hub heard from).
        monotonic: the clock pacing the per-hub checks and the reads of that set.
    """

    def __init__(
        self,
        storage: Storage,
        wire: DownWire,
        now: Callable[[], _dt.datetime],
        *,
        resend_after_s: float = RESEND_AFTER_S,
        sweep_every_s: float = SWEEP_EVERY_S,
        open_refresh_s: float = OPEN_REFRESH_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if resend_after_s <= 0 or sweep_every_s <= 0:
            raise ValueError("resend_after_s and sweep_every_s must be positive")
        if open_refresh_s < 0:
            raise ValueError("open_refresh_s must be >= 0")
        self._storage = storage
        self._wire = wire
        self._now = now
        self._resend_after = _dt.timedelta(seconds=resend_after_s)
        self._sweep_every_s = sweep_every_s
        self._monotonic = monotonic
        self._open_refresh_s = open_refresh_s
        self._checked: dict[str, float] = {}
        #: Hubs with open (unconfirmed) messages as last read, and when (monotonic; None: never).
        self._open_hubs: set[str] = set()
        self._open_read_at: float | None = None
        self.lock = asyncio.Lock()
        self.resends = 0
        self.confirmations = 0
        #: Set after each publish has been counted in storage (cleared by whoever waits on it).
        self.published = asyncio.Event()

    async def send(self, client: DownPublisher, hub: str, body: DownBody) -> DownMessage:
        """Store ``body`` as ``hub``'s next message, then publish it (QoS 1).

        Raises:
            aiomqtt.MqttError: the publish failed; the message stays stored (``queued``) and is sent again later.
            EncodeError, StorageError: as :func:`queue_message`.
        """
        async with self.lock:
            message, queued = await queue_message(self._storage, self._wire, hub, body, self._now())
            self._open_hubs.add(hub)
            await self.publish(client, queued)
        return message

    async def publish(self, client: DownPublisher, queued: QueuedDown) -> None:
        """Publish a stored message (QoS 1) and count the send."""
        await client.publish(self._wire.down_topic(queued.hub), queued.payload, qos=1)
        await self._storage.mark_down_sent(queued.hub, queued.seq, self._now())
        self.published.set()

    async def confirm(self, hub: str, records: Iterable[Record], new_record_ids: Sequence[str]) -> None:
        """Record the hub's ``down_applied`` / ``down_refused`` records among newly stored ``records``."""
        new = set(new_record_ids)
        for record in records:
            body = record.body
            if record.record_id.hex() not in new:
                continue
            at = self._now()
            if isinstance(body, DownAppliedBody):
                await self._storage.confirm_down(hub, body.down_seq, DownState.APPLIED, at=at)
            elif isinstance(body, DownRefusedBody):
                await self._storage.confirm_down(
                    hub, body.down_seq, DownState.REFUSED, at=at, reason=body.reason.value, detail=body.detail
                )
            else:
                continue
            self.confirmations += 1

    async def on_hub_seen(self, client: DownPublisher, hub: str) -> int:
        """The hub sent a frame (it is online): publish its open messages again if due; returns how many.

        A hub without open messages (as last read, see the module docstring) costs no query.

        Raises:
            StorageError: the open messages cannot be read.
        """
        mono = self._monotonic()
        last = self._checked.get(hub)
        if last is not None and mono - last < self._resend_after.total_seconds():
            return 0
        if not await self._has_open(hub, mono):
            return 0
        self._checked[hub] = mono
        return await self._resend(client, hub)

    async def _has_open(self, hub: str, mono: float) -> bool:
        """Whether ``hub`` had open messages at the last read of the set, read again first if it is older than
        ``open_refresh_s``."""
        read_at = self._open_read_at
        if read_at is None or mono - read_at >= self._open_refresh_s:
            # Under the lock: a message this worker queues meanwhile (send) is added after the read, not lost by it.
            async with self.lock:
                if self._open_read_at == read_at:  # not read by another caller while this one waited
                    self._open_hubs = set(await self._storage.open_down_hubs())
                    self._open_read_at = mono
        return hub in self._open_hubs

    async def sweep(self, client: DownPublisher) -> int:
        """Publish again every open message not published within ``resend_after_s``; returns how many."""
        return await self._resend(client, None)

    async def run_sweeps(self, client: DownPublisher) -> None:
        """Sweep every ``sweep_every_s`` until cancelled (the worker runs it while connected)."""
        while True:
            await asyncio.sleep(self._sweep_every_s)
            try:
                await self.sweep(client)
            except StorageError as exc:  # the database is down for now: the next sweep tries again
                _log.error("down-messages not swept: %s", exc)

    async def _resend(self, client: DownPublisher, hub: str | None) -> int:
        async with self.lock:
            due = await self._storage.down_messages(hub, open_only=True, sent_before=self._now() - self._resend_after)
            for queued in due:
                await self.publish(client, queued)
                _log.info("down-message %s for %s sent again (%s)", queued.seq, queued.hub, queued.state.value)
            self.resends += len(due)
            return len(due)
