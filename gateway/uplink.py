"""The uplink: sealed envelopes from the outbox to the platform over MQTT, removed only when the platform says so.

This is the async shell around the sans-I/O delivery core (:class:`gateway.delivery.Delivery`, which holds the
window, ack and resend rules) and a transport (:mod:`gateway.transport`: aiomqtt in production, an in-memory broker
in tests). Its parts:

* :mod:`gateway.uplink_settings`: the settings, the MQTT client, the wire format it speaks;
* :mod:`gateway.uplink_acks`: acks applied to the core and the outbox, down-messages queued, the metrics;
* this module: the connection runner - connect, publish the frames the core chooses, wake up for its deadlines,
  hand what arrives to the ack handler, reconnect when the connection is lost.

Invariant 1: an envelope leaves the outbox only when a platform-signed ack names it as stored (or permanently
refused); an MQTT PUBACK is not delivery. Invariant 4: the priority lane is read first, a priority put wakes the
sender at once, and priority frames have a window of their own. The sender never awaits a PUBACK: each frame is
published by a task of its own, at most a window of them per lane awaiting their PUBACK however many ack deadlines
pass (a broker that never answers holds no more), so an alarm is never held behind a routine frame's PUBACK
from a slow broker (issue 15 item 4).

* Frames go QoS 1 to ``carehub/v1/<hub>/up``, priority-lane frames to ``carehub/v1/<hub>/alarm`` (so a platform
  can read them apart from a routine backlog, ``docs/protocol.md`` §5); acks arrive on ``carehub/v1/<hub>/ack``
  and down-messages (:class:`protocols.messages.DownMessage`, verified, for :attr:`Uplink.down`) on
  ``carehub/v1/<hub>/down``.
* A frame not acked in time is sent again after an exponentially growing, jittered wait; a lost connection is
  retried with :func:`gateway.backoff.backoff_delay` (jittered) and everything in flight is sent again. A lost
  connection is the network's business, not a failure: the runner reconnects for as long as it takes. With several
  broker nodes (a cluster, ``[broker] urls``) each failed or lost connection moves on to the next node
  (:class:`gateway.transport.FailoverConnector`); the node connected to is noted in the outbox's cursor
  :data:`gateway.uplink_settings.NODE_CURSOR` for ``carehub doctor``.
* Supervision: the runner is one task of a :class:`gateway.supervise.Supervisor` (the gateway's, or one of the
  uplink's own). An unexpected exception releases every frame in flight, is counted in
  :attr:`UplinkMetrics.crashes` and ends the runner; the supervisor logs it with its traceback and restarts the
  runner after a growing backoff, or - if it keeps failing - gives up so that the process exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from types import TracebackType
from typing import Self

from gateway.aio import raise_if_cancelling
from gateway.backoff import backoff_delay
from gateway.clock import Clock, SystemClock
from gateway.delivery import Delivery, Frame
from gateway.errors import OutboxError
from gateway.outbox import Outbox
from gateway.outbox_rows import Lane
from gateway.supervise import SupervisionPolicy, Supervisor
from gateway.transport import Connector, FailoverConnector, MqttConnector, Transport, TransportError
from gateway.uplink_acks import AckHandler, UplinkMetrics
from gateway.uplink_settings import (
    NODE_CURSOR,
    REFUSED_CURSOR_PREFIX,
    NodeStatus,
    UplinkSettings,
    UplinkWire,
    mqtt_client,
    mqtt_connector,
    refusal_counts,
)
from protocols.messages import DownMessage

__all__ = [
    "REFUSED_CURSOR_PREFIX",
    "Uplink",
    "UplinkMetrics",
    "UplinkSettings",
    "UplinkWire",
    "mqtt_client",
    "refusal_counts",
]

_log = logging.getLogger(__name__)

_TIMER_RECHECK_S = 0.25  # real seconds at most between readings of the clock while a frame awaits its ack
_READ_RETRY_S = 1.0  # seconds before a failed outbox read is tried again when nothing new is put meanwhile


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait(), name="uplink-wait") for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class Uplink:
    """Delivers the outbox to the platform; use as ``async with Uplink(settings, outbox, wire) as uplink``.

    Entering starts the runner (:meth:`run`) as a supervised task; leaving stops it.

    Args:
        settings: broker address, credentials, TLS, window sizes and timings.
        outbox: the durable outbox to drain.
        wire: topics and frame/ack/down codecs.
        connector: the transport (default: aiomqtt with :func:`mqtt_client`); tests pass
            :meth:`gateway.transport.MemoryBroker.connector`.
        clock: time source for ack deadlines and metrics.
        rng: randomness for backoff and resend jitter.
        down_queue_size: how many verified down-messages may wait in :attr:`down`.
        supervisor: the running supervisor to start the runner under (the gateway's, so that an uplink that keeps
            failing shuts the gateway down); without one the uplink runs its own, restarting the runner after
            ``backoff_base`` .. ``backoff_cap`` seconds.
    """

    def __init__(
        self,
        settings: UplinkSettings,
        outbox: Outbox,
        wire: UplinkWire,
        *,
        connector: Connector | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        down_queue_size: int = 256,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.wire = wire
        self.metrics = UplinkMetrics()
        #: Set while connected and subscribed.
        self.connected = asyncio.Event()
        #: Set while not connected (the complement of :attr:`connected`, to await a loss without polling).
        self.disconnected = asyncio.Event()
        self.disconnected.set()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._connector: Connector = connector or mqtt_connector(settings)
        self._node: NodeStatus | None = None  # the broker node connected to (lost_at set once the session ended)
        self._delivery = Delivery(settings.policy(), rng=self._rng)
        self._wake = asyncio.Event()  # the sender: room in the window, or envelopes released for a resend
        self._rearm = asyncio.Event()  # the timer: a deadline earlier than the one it sleeps for
        self._armed_for: float | None = None
        self._acks = AckHandler(
            settings.hub_id,
            outbox,
            wire,
            delivery=self._delivery,
            metrics=self.metrics,
            clock=self._clock,
            wake=self._wake,
            down_queue_size=down_queue_size,
        )
        #: Verified down-messages (alarm acknowledgements, threshold updates) for the alarm engine.
        self.down: asyncio.Queue[DownMessage] = self._acks.down
        #: Set on every verified ack (cleared by whoever waits on it).
        self.acked = self._acks.acked
        self._supervisor = supervisor
        self._stack = contextlib.AsyncExitStack()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    # ---------------------------------------------------------------- lifecycle

    @property
    def task_name(self) -> str:
        """The runner's name under its supervisor (in its logs and counters)."""
        return f"uplink:{self.settings.hub_id}"

    async def __aenter__(self) -> Self:
        if isinstance(self._connector, MqttConnector | FailoverConnector):
            mqtt_client(self.settings)  # configuration errors (missing TLS files) surface here, not in the background
        supervisor = self._supervisor
        if supervisor is None:
            s = self.settings
            policy = SupervisionPolicy(base_delay=s.backoff_base, max_delay=s.backoff_cap)
            supervisor = await self._stack.enter_async_context(Supervisor(policy))
        self._runner = supervisor.start(self.task_name, self.run)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        runner.cancel()
        try:
            # Waited for, not awaited: a runner whose supervisor gave up has that supervisor's task group report it.
            await asyncio.wait([runner])
        finally:
            await self._stack.__aexit__(exc_type, exc, tb)  # the uplink's own supervisor, if it has one
            self._acks.cancel_waiters()

    # ---------------------------------------------------------------- public API

    @property
    def inflight_seqs(self) -> frozenset[int]:
        """Envelope sequence numbers sent and not yet acked."""
        return self._delivery.inflight_seqs

    @property
    def node(self) -> str | None:
        """The broker node the uplink is connected to (``HOST:PORT``), or ``None`` while it is not connected."""
        node = self._node
        return None if node is None or node.lost_at is not None else node.node

    @property
    def delivery(self) -> Delivery:
        """The delivery core (window, acks, resend backoff); for inspection only."""
        return self._delivery

    async def wait_acked(self, record_id: str) -> None:
        """Return once the platform has acked the envelope carrying ``record_id`` as stored.

        Bound it with ``asyncio.timeout()``: "the platform acked my alarm within N s".
        """
        await self._acks.wait_acked(record_id)

    # ---------------------------------------------------------------- the runner

    def _raise_if_closing(self) -> None:
        # aiomqtt's calls can lose the runner's cancellation (see gateway.aio). The runner cannot ask its task
        # (Python 3.11's TaskGroup leaves a parent's cancellation count raised after a child failed), so it checks
        # the flag __aexit__ sets before it cancels.
        if self._closing:
            raise asyncio.CancelledError

    async def run(self) -> None:
        """Connect, deliver and reconnect for as long as the uplink is open (the supervised task).

        A lost connection (:class:`TransportError`) is retried here with a jittered backoff. Any other exception
        releases what was in flight, is counted, and is raised for the supervisor to log and restart.
        """
        attempt = 0
        hub = self.settings.hub_id
        while True:
            self._raise_if_closing()
            try:
                async with self._connector.session((self.wire.ack_topic(), self.wire.down_topic())) as transport:
                    self._raise_if_closing()
                    self.metrics.connects += 1
                    attempt = 0
                    self._node = NodeStatus(transport.node, self._clock.now())
                    await self._note_node()  # before `connected`: whoever saw it connected finds the node noted
                    self._delivery.on_connected()
                    self.disconnected.clear()
                    self.connected.set()
                    _log.info("uplink %s connected to %s", hub, transport.node)
                    try:
                        async with asyncio.TaskGroup() as tg:
                            tg.create_task(self._receive(transport), name=f"uplink-receive:{hub}")
                            tg.create_task(self._send(transport, tg), name=f"uplink-send:{hub}")
                            tg.create_task(self._expire(), name=f"uplink-expire:{hub}")
                    finally:
                        # However the session ends, what was in flight may never be acked on it: it is all sent
                        # again on the next connection.
                        self._disconnected()
            except* TransportError as group:
                self._connection_lost(group.exceptions[0])
            except* Exception as group:
                self._crashed(group)
                raise
            if self._node is not None and self._node.lost_at is None:
                self._node = dataclasses.replace(self._node, lost_at=self._clock.now())
                await self._note_node()
            delay = backoff_delay(
                attempt,
                base=self.settings.backoff_base,
                cap=self.settings.backoff_cap,
                jitter_fraction=self.settings.backoff_jitter,
                rng=self._rng,
            )
            attempt += 1
            await asyncio.sleep(delay)

    async def _note_node(self) -> None:
        """Note the broker node (connected or lost) in the outbox's cursors, for ``carehub doctor``; never fails."""
        if self._node is None:
            return
        try:
            await self.outbox.set_cursor(NODE_CURSOR, self._node.to_cursor())
        except OutboxError as exc:
            _log.warning("uplink %s: could not note the broker node in the outbox (%s)", self.settings.hub_id, exc)

    def _disconnected(self) -> None:
        self.connected.clear()
        self.disconnected.set()
        self.metrics.resends += self._delivery.on_disconnected()
        self._acks.update_gauges()

    def _connection_lost(self, exc: BaseException) -> None:
        self.metrics.connection_failures += 1
        self.metrics.last_error = f"{type(exc).__name__}: {exc}"
        _log.warning("uplink %s: connection lost (%s)", self.settings.hub_id, self.metrics.last_error)

    def _crashed(self, group: BaseExceptionGroup[Exception]) -> None:
        self.metrics.crashes += 1
        first = group.exceptions[0]
        self.metrics.last_error = f"{type(first).__name__}: {first}"
        # The traceback is logged once, by the supervisor that restarts the runner.
        _log.error(
            "uplink %s: unexpected error (crash %d: %s); in-flight frames released, the runner ends",
            self.settings.hub_id,
            self.metrics.crashes,
            self.metrics.last_error,
        )

    # ---------------------------------------------------------------- sending

    async def _send(self, transport: Transport, tg: asyncio.TaskGroup) -> None:
        delivery, outbox, clock = self._delivery, self.outbox, self._clock
        up_topic, alarm_topic = self.wire.up_topic(), self.wire.alarm_topic()
        policy = self.settings.policy()
        # Each lane has its own bound on publishes awaiting their PUBACK (indexed by Lane: priority, routine); the
        # sender never awaits one, so an alarm put while a routine frame waits for a slow broker's PUBACK is
        # published at once (issue 15 item 4). A lane at its bound takes no new frame: a frame whose ack deadline
        # passed leaves the core's window while its publish may still await the PUBACK, and a broker that never
        # answers would otherwise collect a new publish task per lane for every deadline.
        bounds = (policy.max_inflight_priority_frames, policy.max_inflight_frames)
        publishing = [0, 0]
        while True:
            self._wake.clear()
            outbox.item_put.clear()
            outbox.priority_put.clear()
            sent = False
            while (room := delivery.room()) is not None:
                try:
                    items = await outbox.peek_batch(room.limit, room.max_bytes, exclude=room.exclude)
                except OutboxError as exc:
                    # The read shared a commit that failed (a full disk fails every job of its group): nothing
                    # was read and nothing is lost. Try again after the next put or shortly, never crash.
                    self.metrics.read_failures += 1
                    _log.warning("uplink %s: could not read the outbox (%s); trying again", self.settings.hub_id, exc)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_READ_RETRY_S):
                            await _wait_any(outbox.item_put, outbox.priority_put)
                    continue
                if (
                    publishing[Lane.PRIORITY] >= bounds[Lane.PRIORITY]
                    or publishing[Lane.ROUTINE] >= bounds[Lane.ROUTINE]
                ):
                    items = [i for i in items if publishing[i.lane] < bounds[i.lane]]
                if delivery.is_stale(room):
                    # A deadline, an ack or a failed delete made an envelope the read excluded offerable again
                    # (while it ran): the offer may lack an older, released envelope or the probe. Read again.
                    continue
                frame = delivery.prepare(items, clock.monotonic(), room=room)
                if frame is None:
                    break
                self._arm(frame)
                self._acks.update_gauges()
                topic = alarm_topic if frame.priority else up_topic  # the priority lane's own topic (item 4)
                payload = self.wire.encode_frame([i.envelope for i in frame.items])
                lane = Lane.PRIORITY if frame.priority else Lane.ROUTINE
                publishing[lane] += 1
                # Tasks start in creation order, so frames reach the wire in the order the core chose them.
                tg.create_task(
                    self._publish(transport, publishing, lane, topic, payload, envelopes=len(frame.items)),
                    name="uplink-pub",
                )
                sent = True
            if not sent:
                raise_if_cancelling()
                await _wait_any(self._wake, outbox.item_put, outbox.priority_put)

    async def _publish(
        self, transport: Transport, publishing: list[int], lane: Lane, topic: str, payload: bytes, *, envelopes: int
    ) -> None:
        """Publish one frame (QoS 1); returns at its PUBACK, which is not delivery. Its lane's count of publishes
        awaiting a PUBACK goes down when it returns, and the sender is woken: the lane may take a frame again.

        A :class:`TransportError` ends the session's task group like any lost connection.
        """
        self.metrics.frames_published += 1
        self.metrics.envelopes_published += envelopes
        try:
            await transport.publish(topic, payload)
        finally:
            publishing[lane] -= 1
            self._wake.set()
        self.metrics.frames_sent += 1
        self.metrics.envelopes_sent += envelopes

    def _arm(self, frame: Frame) -> None:
        if self._armed_for is None or frame.deadline < self._armed_for:
            self._armed_for = frame.deadline
            self._rearm.set()

    async def _expire(self) -> None:
        delivery, clock, hub = self._delivery, self._clock, self.settings.hub_id
        while True:
            self._rearm.clear()
            expiry = delivery.on_timer(clock.monotonic())
            if expiry is not None:
                self.metrics.resends += expiry.envelopes
                self._acks.update_gauges()
                self._wake.set()
                _log.warning(
                    "uplink %s: no ack for %d envelope(s) in %d frame(s); sending again, next wait up to %.0f s",
                    hub,
                    expiry.envelopes,
                    expiry.frames,
                    expiry.next_wait,
                )
            deadline = delivery.next_deadline()
            self._armed_for = deadline
            # The deadline is on the injected clock, the wait on the event loop's. A simulated clock runs faster
            # (carehub demo: 1080x): a 20 s ack timeout slept as 20 real seconds was six simulated hours, so the
            # wait re-reads the clock at least every _TIMER_RECHECK_S while a frame is in flight.
            delay = None if deadline is None else min(_TIMER_RECHECK_S, max(0.0, deadline - clock.monotonic()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._rearm.wait()

    # ---------------------------------------------------------------- receiving

    async def _receive(self, transport: Transport) -> None:
        ack_topic = self.wire.ack_topic()
        down_topic = self.wire.down_topic()
        async for message in transport.incoming():
            if message.topic == ack_topic:
                await self._acks.on_ack(message.payload)
            elif message.topic == down_topic:
                self._acks.on_down(message.payload)
