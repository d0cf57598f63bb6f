"""What the platform sends the uplink: acks applied to the delivery core and the outbox, down-messages queued.

:class:`AckHandler` is the uplink's receiving half, free of connection management:

* an ack is verified (:meth:`UplinkWire.open_ack`); one that does not verify is counted and ignored;
* the delivery core (:class:`gateway.delivery.Delivery`) says what the ack means; the envelopes it names stored or
  refused for good are deleted from the outbox, and the core learns whether the delete happened (invariant 1: if it
  did not, the envelopes stay, are sent again and acked again);
* an ack naming envelopes this hub never sent is counted in :attr:`UplinkMetrics.odd_acks` and ignored; transient
  refusals are counted by reason and kept; permanent refusals are counted by reason, logged, and added to the
  outbox's cursors ``uplink.refused:<reason>`` for ``carehub doctor``;
* every record id in a delivered envelope wakes its :meth:`AckHandler.wait_acked` waiters;
* a down-message is verified and queued in :attr:`AckHandler.down` (bounded: when it is full, the message is dropped
  and logged).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.clock import Clock
from gateway.delivery import AckOutcome, Delivery
from gateway.errors import OutboxError
from gateway.outbox import Outbox
from gateway.outbox_rows import Lane
from gateway.uplink_settings import REFUSED_CURSOR_PREFIX, UplinkWire
from protocols.acks import Ack
from protocols.errors import EnvelopeRejection, ProtocolError
from protocols.messages import DownMessage

__all__ = ["AckHandler", "UplinkMetrics"]

# The uplink's logger: what is logged here is the uplink's story, filtered and configured under that one name.
_log = logging.getLogger("gateway.uplink")

_RECENT_ACKS: Final = 65_536  # record ids remembered as acked, so a late waiter still learns the answer
_LOGGED_SEQS: Final = 8  # sequence numbers quoted in one log line


@dataclass(slots=True)
class UplinkMetrics:
    """Counters and gauges; read them, don't write them.

    Attributes:
        refused: envelopes the platform refused for good, by reason (dropped from the outbox; this run only - the
            totals across runs are in the outbox's cursors, see :func:`gateway.uplink_settings.refusal_counts`).
        deferred: transient refusals by reason (kept and resent; never counted as refusals).
        odd_acks: verified acks naming envelopes this hub never sent (ignored).
        frames_sent, envelopes_sent: frames (and the envelopes in them) the broker PUBACKed.
        frames_published, envelopes_published: frames (and envelopes) handed to MQTT, PUBACKed or not: a publish
            whose session was lost before its PUBACK may still have been stored by the broker, so these count what
            the hub put on the wire, resends included.
        crashes: unexpected exceptions in the uplink's runner (each released what was in flight and ended the
            runner; its supervisor logged the traceback and restarted it).
    """

    connects: int = 0
    connection_failures: int = 0
    frames_sent: int = 0
    envelopes_sent: int = 0
    frames_published: int = 0
    envelopes_published: int = 0
    resends: int = 0
    delivered_envelopes: int = 0
    delivered_priority: int = 0
    rejected_envelopes: int = 0
    bad_acks: int = 0
    odd_acks: int = 0
    bad_downs: int = 0
    crashes: int = 0
    read_failures: int = 0  # outbox reads that failed (a full disk) and were tried again
    inflight_frames: int = 0
    inflight_envelopes: int = 0
    last_ack_at: float | None = None
    last_error: str | None = None
    refused: dict[EnvelopeRejection, int] = field(default_factory=dict)
    deferred: dict[EnvelopeRejection, int] = field(default_factory=dict)


def _quote(seqs: Sequence[int]) -> str:
    shown = ", ".join(str(s) for s in seqs[:_LOGGED_SEQS])
    return shown if len(seqs) <= _LOGGED_SEQS else f"{shown}, ... ({len(seqs)} in all)"


class AckHandler:
    """Applies verified acks and queues verified down-messages for one hub's uplink.

    Args:
        hub_id: this hub's id (for logs).
        outbox: where acked envelopes are deleted and refusals recorded.
        wire: verifies acks and down-messages.
        delivery: the delivery core the acks are applied to.
        metrics: the uplink's counters, updated here.
        clock: wall time of the last ack, monotonic time for ack latencies.
        wake: set when an ack made room in the window or released envelopes (the sender waits on it).
        down_queue_size: how many verified down-messages may wait in :attr:`down`.
    """

    def __init__(
        self,
        hub_id: str,
        outbox: Outbox,
        wire: UplinkWire,
        *,
        delivery: Delivery,
        metrics: UplinkMetrics,
        clock: Clock,
        wake: asyncio.Event,
        down_queue_size: int,
    ) -> None:
        self._hub = hub_id
        self._outbox = outbox
        self._wire = wire
        self._delivery = delivery
        self._metrics = metrics
        self._clock = clock
        self._wake = wake
        #: Verified down-messages (alarm acknowledgements, threshold updates) for the alarm engine.
        self.down: asyncio.Queue[DownMessage] = asyncio.Queue(maxsize=down_queue_size)
        #: Set on every verified ack (cleared by whoever waits on it).
        self.acked = asyncio.Event()
        self._acked_records: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._record_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._refused_totals: dict[EnvelopeRejection, int] = {}  # as stored in the outbox's cursors

    # ---------------------------------------------------------------- waiting for records

    async def wait_acked(self, record_id: str) -> None:
        """Return once the platform has acked the envelope carrying ``record_id`` as stored."""
        if record_id in self._acked_records:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._record_waiters.setdefault(record_id, []).append(fut)
        try:
            await fut
        finally:
            waiters = self._record_waiters.get(record_id)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._record_waiters[record_id]

    def cancel_waiters(self) -> None:
        """Cancel every :meth:`wait_acked` still waiting (the uplink is closing)."""
        for waiters in self._record_waiters.values():
            for fut in waiters:
                fut.cancel()
        self._record_waiters.clear()

    def _record_acked(self, record_id: str) -> None:
        self._acked_records[record_id] = None
        self._acked_records.move_to_end(record_id)
        while len(self._acked_records) > _RECENT_ACKS:
            self._acked_records.popitem(last=False)
        for fut in self._record_waiters.pop(record_id, []):
            if not fut.done():
                fut.set_result(None)

    # ---------------------------------------------------------------- acks

    async def on_ack(self, payload: bytes) -> None:
        """Verify and apply one ack payload."""
        hub, metrics, delivery = self._hub, self._metrics, self._delivery
        try:
            ack = self._wire.open_ack(payload)
        except ProtocolError as exc:
            metrics.bad_acks += 1
            _log.warning("uplink %s: ignoring an ack that does not verify: %s", hub, exc)
            return
        outcome = delivery.on_ack(ack, self._clock.monotonic())
        _log.debug(
            "uplink %s: ack %d: %d stored, %d refused (%d for good); deleting %d envelope(s)",
            hub,
            ack.ack_seq,
            len(ack.stored),
            len(ack.rejected),
            len(outcome.refused),
            len(outcome.delete),
        )
        self._note_oddities(ack, outcome)
        if outcome.delete:
            try:
                await self._outbox.ack(outcome.delete)
            except OutboxError as exc:
                # Nothing was deleted; the envelopes stay, are sent again and acked again.
                delivery.delete_failed(outcome.delete)
                self.update_gauges()
                self._wake.set()
                _log.error("uplink %s: could not remove acked envelopes: %s", hub, exc)
                return
            except BaseException:
                delivery.delete_failed(outcome.delete)
                raise
            delivery.deleted(outcome.delete)
        if outcome.refused:
            await self._count_refusals(outcome)
        for item in outcome.delivered:
            metrics.delivered_envelopes += 1
            if item.lane is Lane.PRIORITY:
                metrics.delivered_priority += 1
            for rid in item.record_ids:
                self._record_acked(rid)
        metrics.last_ack_at = self._clock.wall()
        self.update_gauges()
        self.acked.set()
        self._wake.set()

    def _note_oddities(self, ack: Ack, outcome: AckOutcome) -> None:
        hub = self._hub
        if outcome.unknown:
            self._metrics.odd_acks += 1
            _log.warning(
                "uplink %s: ack %d names envelope(s) this hub never sent (%s); ignored",
                hub,
                ack.ack_seq,
                _quote(outcome.unknown),
            )
        for entry in outcome.deferred:
            self._metrics.deferred[entry.reason] = self._metrics.deferred.get(entry.reason, 0) + 1
            _log.warning(
                "uplink %s: platform refused envelope %d for now (%s); kept", hub, entry.seq, entry.reason.value
            )

    async def _count_refusals(self, outcome: AckOutcome) -> None:
        """Count permanent refusals by reason, here and durably in the outbox's cursors (for ``carehub doctor``)."""
        hub, metrics = self._hub, self._metrics
        totals = self._refused_totals
        added: dict[EnvelopeRejection, int] = {}
        for entry in outcome.refused:
            added[entry.reason] = added.get(entry.reason, 0) + 1
            _log.error(
                "uplink %s: platform refused envelope %d for good (%s); dropped", hub, entry.seq, entry.reason.value
            )
        metrics.rejected_envelopes += len(outcome.refused)
        for reason, count in added.items():
            metrics.refused[reason] = metrics.refused.get(reason, 0) + count
            key = REFUSED_CURSOR_PREFIX + reason.value
            try:
                if reason not in totals:
                    stored = await self._outbox.get_cursor(key, 0)
                    totals[reason] = stored if isinstance(stored, int) else 0
                totals[reason] += count
                await self._outbox.set_cursor(key, totals[reason])
            except OutboxError as exc:
                _log.error("uplink %s: could not record %d refusal(s) (%s): %s", hub, count, reason.value, exc)

    # ---------------------------------------------------------------- down-messages

    def on_down(self, payload: bytes) -> None:
        """Verify one down-message payload and queue it for the hub."""
        try:
            message = self._wire.open_down(payload)
        except ProtocolError as exc:
            self._metrics.bad_downs += 1
            _log.warning("uplink %s: ignoring a down-message that does not verify: %s", self._hub, exc)
            return
        try:
            self.down.put_nowait(message)
        except asyncio.QueueFull:
            _log.error("uplink %s: down-message queue full; dropping %r", self._hub, message)

    def update_gauges(self) -> None:
        """Copy the delivery core's in-flight counts into the metrics."""
        self._metrics.inflight_frames = self._delivery.inflight_frames
        self._metrics.inflight_envelopes = self._delivery.inflight_envelopes
