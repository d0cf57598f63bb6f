"""The uplink: sealed envelopes from the outbox to the platform over MQTT, removed only when the platform says so.

This is the async shell around the sans-I/O delivery core (:class:`gateway.delivery.Delivery`, which holds the
window, ack and resend rules) and a transport (:mod:`gateway.transport`: aiomqtt in production, an in-memory broker
in tests). It reads the outbox, publishes the frames the core chooses, verifies acks with the :class:`UplinkWire`,
deletes what the core says the platform stored or refused for good, and wakes up for the core's deadlines.

Invariant 1: an envelope leaves the outbox only when a platform-signed ack names it as stored (or permanently
refused, which is counted by reason, logged, and kept in the outbox's cursors as ``uplink.refused:<reason>`` for
``carehub doctor``); an MQTT PUBACK is not delivery. Invariant 4: the priority lane is read first, a priority put
wakes the sender at once, and priority frames have a window of their own.

* aiomqtt over TCP or TLS (CA file, optional client certificate, hostname checks on unless ``tls_insecure``),
  user name and password, TCP_NODELAY on the socket.
* Frames go QoS 1 to ``carehub/v1/<hub>/up``; acks arrive on ``carehub/v1/<hub>/ack`` and down-messages
  (:class:`protocols.messages.DownMessage`, verified, for :attr:`Uplink.down`) on ``carehub/v1/<hub>/down``.
* A frame not acked in time is sent again after an exponentially growing, jittered wait; lost connections are
  retried with :func:`gateway.backoff.backoff_delay` (jittered) and everything in flight is sent again.
* Supervision: an ack the hub cannot map (sequence numbers it never sent) is counted and ignored; any unexpected
  exception in the connection's tasks is logged with its traceback, counted in :attr:`UplinkMetrics.crashes`, and
  the uplink reconnects after a backoff that grows while it keeps failing - it never dies quietly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self

import aiomqtt

from gateway.aio import raise_if_cancelling
from gateway.backoff import backoff_delay
from gateway.clock import Clock, SystemClock
from gateway.config import GatewayConfig
from gateway.delivery import AckOutcome, Delivery, DeliveryPolicy, Frame
from gateway.errors import OutboxError, UplinkError
from gateway.outbox import CursorValue, Lane, Outbox
from gateway.transport import Connector, MqttConnector, Transport, TransportError
from protocols.acks import Ack
from protocols.errors import EnvelopeRejection, ProtocolError
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

_RECENT_ACKS: Final = 65_536  # record ids remembered as acked, so a late waiter still learns the answer
_LOGGED_SEQS: Final = 8  # sequence numbers quoted in one log line

REFUSED_CURSOR_PREFIX: Final = "uplink.refused:"
"""Outbox cursor ``uplink.refused:<reason>``: how many envelopes the platform refused for good, by reason."""


def refusal_counts(cursors: Mapping[str, CursorValue]) -> dict[EnvelopeRejection, int]:
    """The permanent refusals recorded in an outbox's cursors (``carehub doctor`` reads them read-only)."""
    counts: dict[EnvelopeRejection, int] = {}
    for reason in EnvelopeRejection:
        value = cursors.get(REFUSED_CURSOR_PREFIX + reason.value)
        if isinstance(value, int) and value > 0:
            counts[reason] = value
    return counts


class UplinkWire(Protocol):
    """The wire format the uplink speaks: topics, frames, and verification of what the platform sends.

    :class:`gateway.wire.HubWire` implements it over :mod:`protocols.topics`, :mod:`protocols.acks` and
    :mod:`protocols.messages`.
    """

    def up_topic(self) -> str:
        """This hub's uplink topic."""
        ...

    def ack_topic(self) -> str:
        """This hub's ack topic."""
        ...

    def down_topic(self) -> str:
        """This hub's down-message topic."""
        ...

    def encode_frame(self, envelopes: Sequence[bytes]) -> bytes:
        """One uplink frame carrying ``envelopes``."""
        ...

    def open_ack(self, payload: bytes) -> Ack:
        """Verify and decode an ack; raise :class:`ProtocolError` if it is not from the platform for this hub."""
        ...

    def open_down(self, payload: bytes) -> DownMessage:
        """Verify and decode a down-message; raise :class:`ProtocolError` if not authentic or a replay."""
        ...


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """How to reach the broker and how hard to push.

    Attributes:
        hub_id: this hub's id (also the MQTT client id suffix).
        host: broker host name.
        port: broker port.
        username: broker user name (``None`` for anonymous).
        password: broker password.
        tls: connect with TLS.
        ca_file: CA bundle for the broker's certificate (system defaults if ``None``).
        client_cert: client certificate for mutual TLS.
        client_key: its key.
        tls_insecure: skip the hostname check (never in production).
        max_inflight_frames: routine frames awaiting the platform's ack at once.
        max_inflight_bytes: envelope bytes awaiting the platform's ack at once.
        max_inflight_priority_frames: frames of the priority lane awaiting the ack at once (a window of their own).
        frame_max_envelopes: envelopes per frame.
        frame_max_bytes: envelope bytes per frame.
        ack_timeout: the first wait, in seconds, before an unacked frame is sent again; it doubles (with jitter)
            for each round in a row that goes unacknowledged, and follows a slow platform's ack latency.
        ack_timeout_cap: the longest such wait.
        resend_jitter: fraction of each ack wait removed at random.
        backoff_base: first reconnect delay.
        backoff_cap: longest reconnect delay.
        backoff_jitter: fraction of the reconnect delay removed at random (spreads a fleet after a broker restart).
        keepalive: MQTT keepalive in seconds.
    """

    hub_id: str
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    tls_insecure: bool = False
    max_inflight_frames: int = 8
    max_inflight_bytes: int = 512 * 1024
    max_inflight_priority_frames: int = 16
    frame_max_envelopes: int = 64
    frame_max_bytes: int = 64 * 1024
    ack_timeout: float = 20.0
    ack_timeout_cap: float = 300.0
    resend_jitter: float = 0.25
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    backoff_jitter: float = 0.5
    keepalive: int = 30

    def __post_init__(self) -> None:
        try:
            self.policy()
        except ValueError as exc:
            raise UplinkError(str(exc)) from exc
        if not (0 < self.backoff_base <= self.backoff_cap) or not 0.0 <= self.backoff_jitter <= 1.0:
            raise UplinkError("reconnect backoff needs 0 < backoff_base <= backoff_cap and a jitter in [0, 1]")
        if self.client_key is not None and self.client_cert is None:
            raise UplinkError("client_key given without client_cert")

    def policy(self) -> DeliveryPolicy:
        """The window and resend part, for :class:`gateway.delivery.Delivery`.

        Raises:
            ValueError: a window or timing value is out of range.
        """
        return DeliveryPolicy(
            max_inflight_frames=self.max_inflight_frames,
            max_inflight_bytes=self.max_inflight_bytes,
            max_inflight_priority_frames=self.max_inflight_priority_frames,
            frame_max_envelopes=self.frame_max_envelopes,
            frame_max_bytes=self.frame_max_bytes,
            ack_timeout=self.ack_timeout,
            ack_timeout_cap=max(self.ack_timeout, self.ack_timeout_cap),
            resend_jitter=self.resend_jitter,
        )

    @classmethod
    def from_config(cls, config: GatewayConfig) -> UplinkSettings:
        """The broker part of a hub's config (window sizes and timings at their defaults)."""
        b = config.broker
        return cls(
            hub_id=config.hub_id,
            host=b.host,
            port=b.port,
            username=b.username,
            password=b.password,
            tls=b.tls,
            ca_file=b.ca_file,
            client_cert=b.client_cert,
            client_key=b.client_key,
            keepalive=b.keepalive_s,
            backoff_cap=b.reconnect_max_s,
        )


def mqtt_client(
    settings: UplinkSettings, *, identifier: str | None = None, timeout: float | None = None
) -> aiomqtt.Client:
    """The MQTT client the uplink connects with (``carehub doctor`` checks the broker with the same one).

    TLS verifies the broker's certificate against ``ca_file`` (or the system's CAs) and its name or address against
    ``host``, unless ``tls_insecure``; TCP_NODELAY, as acks are small.

    Raises:
        UplinkError: a configured TLS file does not exist.
    """
    s = settings
    tls_params: aiomqtt.TLSParameters | None = None
    if s.tls:
        for path in (s.ca_file, s.client_cert, s.client_key):
            if path is not None and not path.is_file():
                raise UplinkError(f"TLS file {path} does not exist")
        tls_params = aiomqtt.TLSParameters(
            ca_certs=None if s.ca_file is None else str(s.ca_file),
            certfile=None if s.client_cert is None else str(s.client_cert),
            keyfile=None if s.client_key is None else str(s.client_key),
            cert_reqs=ssl.CERT_REQUIRED,
        )
    return aiomqtt.Client(
        s.host,
        s.port,
        username=s.username,
        password=s.password,
        identifier=identifier or f"carehub-hub-{s.hub_id}",
        clean_session=True,
        keepalive=s.keepalive,
        tls_params=tls_params,
        tls_insecure=s.tls_insecure if s.tls else None,
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        max_queued_incoming_messages=1024,
        timeout=timeout,
    )


@dataclass(slots=True)
class UplinkMetrics:
    """Counters and gauges; read them, don't write them.

    Attributes:
        refused: envelopes the platform refused for good, by reason (dropped from the outbox; this run only - the
            totals across runs are in the outbox's cursors, see :func:`refusal_counts`).
        deferred: transient refusals by reason (kept and resent; never counted as refusals).
        odd_acks: verified acks naming envelopes this hub never sent (ignored).
        crashes: unexpected exceptions in the uplink's tasks (each logged with its traceback; the uplink restarted).
    """

    connects: int = 0
    connection_failures: int = 0
    frames_sent: int = 0
    envelopes_sent: int = 0
    resends: int = 0
    delivered_envelopes: int = 0
    delivered_priority: int = 0
    rejected_envelopes: int = 0
    bad_acks: int = 0
    odd_acks: int = 0
    bad_downs: int = 0
    crashes: int = 0
    inflight_frames: int = 0
    inflight_envelopes: int = 0
    last_ack_at: float | None = None
    last_error: str | None = None
    refused: dict[EnvelopeRejection, int] = field(default_factory=dict)
    deferred: dict[EnvelopeRejection, int] = field(default_factory=dict)


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait(), name="uplink-wait") for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _quote(seqs: Sequence[int]) -> str:
    shown = ", ".join(str(s) for s in seqs[:_LOGGED_SEQS])
    return shown if len(seqs) <= _LOGGED_SEQS else f"{shown}, ... ({len(seqs)} in all)"


class Uplink:
    """Delivers the outbox to the platform; use as ``async with Uplink(settings, outbox, wire) as uplink``.

    Args:
        settings: broker address, credentials, TLS, window sizes and timings.
        outbox: the durable outbox to drain.
        wire: topics and frame/ack/down codecs.
        connector: the transport (default: aiomqtt with :func:`mqtt_client`); tests pass
            :meth:`gateway.transport.MemoryBroker.connector`.
        clock: time source for ack deadlines and metrics.
        rng: randomness for backoff and resend jitter.
        down_queue_size: how many verified down-messages may wait in :attr:`down`.
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
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.wire = wire
        self.metrics = UplinkMetrics()
        #: Verified down-messages (alarm acknowledgements, threshold updates) for the alarm engine.
        self.down: asyncio.Queue[DownMessage] = asyncio.Queue(maxsize=down_queue_size)
        #: Set while connected and subscribed.
        self.connected = asyncio.Event()
        #: Set while not connected (the complement of :attr:`connected`, to await a loss without polling).
        self.disconnected = asyncio.Event()
        self.disconnected.set()
        #: Set on every verified ack (cleared by whoever waits on it).
        self.acked = asyncio.Event()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._connector: Connector = connector or MqttConnector(lambda: mqtt_client(settings))
        self._delivery = Delivery(settings.policy(), rng=self._rng)
        self._wake = asyncio.Event()  # the sender: room in the window, or envelopes released for a resend
        self._rearm = asyncio.Event()  # the timer: a deadline earlier than the one it sleeps for
        self._armed_for: float | None = None
        self._acked_records: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._record_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._refused_totals: dict[EnvelopeRejection, int] = {}  # as stored in the outbox's cursors
        self._failing = 0  # crashes since the last ack handled: they lengthen the restart backoff
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        if isinstance(self._connector, MqttConnector):
            mqtt_client(self.settings)  # configuration errors (missing TLS files) surface here, not in the background
        self._runner = asyncio.create_task(self._run(), name=f"uplink:{self.settings.hub_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        for waiters in self._record_waiters.values():
            for fut in waiters:
                fut.cancel()
        self._record_waiters.clear()

    # ---------------------------------------------------------------- public API

    @property
    def inflight_seqs(self) -> frozenset[int]:
        """Envelope sequence numbers sent and not yet acked."""
        return self._delivery.inflight_seqs

    @property
    def delivery(self) -> Delivery:
        """The delivery core (window, acks, resend backoff); for inspection only."""
        return self._delivery

    async def wait_acked(self, record_id: str) -> None:
        """Return once the platform has acked the envelope carrying ``record_id`` as stored.

        Bound it with ``asyncio.timeout()``: "the platform acked my alarm within N s".
        """
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

    # ---------------------------------------------------------------- connection management

    def _raise_if_closing(self) -> None:
        # aiomqtt's calls can lose the runner's cancellation (see gateway.aio). The runner cannot ask its task
        # (Python 3.11's TaskGroup leaves a parent's cancellation count raised after a child failed), so it checks
        # the flag __aexit__ sets before it cancels.
        if self._closing:
            raise asyncio.CancelledError

    async def _run(self) -> None:
        attempt = 0
        hub = self.settings.hub_id
        while True:
            self._raise_if_closing()
            try:
                async with self._connector.session((self.wire.ack_topic(), self.wire.down_topic())) as transport:
                    self._raise_if_closing()
                    self.metrics.connects += 1
                    attempt = 0
                    self._delivery.on_connected()
                    self.disconnected.clear()
                    self.connected.set()
                    _log.info("uplink %s connected to %s:%d", hub, self.settings.host, self.settings.port)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._receive(transport), name=f"uplink-receive:{hub}")
                        tg.create_task(self._send(transport), name=f"uplink-send:{hub}")
                        tg.create_task(self._expire(), name=f"uplink-expire:{hub}")
            except* TransportError as group:
                self._connection_lost(group.exceptions[0])
            except* Exception as group:  # noqa: BLE001 - logged with traceback, counted, restarted (not swallowed)
                # A defect (or a library error nobody classified): never a live hub that no longer uploads.
                self._crashed(group)
            delay = backoff_delay(
                max(attempt, self._failing),
                base=self.settings.backoff_base,
                cap=self.settings.backoff_cap,
                jitter_fraction=self.settings.backoff_jitter,
                rng=self._rng,
            )
            attempt += 1
            await asyncio.sleep(delay)

    def _disconnected(self) -> None:
        self.connected.clear()
        self.disconnected.set()
        # Whatever was in flight may never be acked on this connection: it is all sent again on the next one.
        self.metrics.resends += self._delivery.on_disconnected()
        self._update_gauges()

    def _connection_lost(self, exc: BaseException) -> None:
        self._disconnected()
        self.metrics.connection_failures += 1
        self.metrics.last_error = f"{type(exc).__name__}: {exc}"
        _log.warning("uplink %s: connection lost (%s)", self.settings.hub_id, self.metrics.last_error)

    def _crashed(self, group: BaseExceptionGroup[Exception]) -> None:
        self._disconnected()
        self.metrics.crashes += 1
        self._failing += 1
        first = group.exceptions[0]
        self.metrics.last_error = f"{type(first).__name__}: {first}"
        for exc in group.exceptions:
            _log.error(
                "uplink %s: unexpected error, reconnecting (crash %d)",
                self.settings.hub_id,
                self.metrics.crashes,
                exc_info=exc,
            )

    # ---------------------------------------------------------------- sending

    async def _send(self, transport: Transport) -> None:
        delivery, outbox, clock = self._delivery, self.outbox, self._clock
        up_topic = self.wire.up_topic()
        while True:
            self._wake.clear()
            outbox.item_put.clear()
            outbox.priority_put.clear()
            sent = False
            while (room := delivery.room()) is not None:
                items = await outbox.peek_batch(room.limit, room.max_bytes, exclude=room.exclude)
                frame = delivery.prepare(items, clock.monotonic())
                if frame is None:
                    break
                self._arm(frame)
                self._update_gauges()
                await transport.publish(up_topic, self.wire.encode_frame([i.envelope for i in frame.items]))
                self.metrics.frames_sent += 1
                self.metrics.envelopes_sent += len(frame.items)
                sent = True
            if not sent:
                raise_if_cancelling()
                await _wait_any(self._wake, outbox.item_put, outbox.priority_put)

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
                self._update_gauges()
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
            delay = None if deadline is None else max(0.0, deadline - clock.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._rearm.wait()

    # ---------------------------------------------------------------- receiving

    async def _receive(self, transport: Transport) -> None:
        ack_topic = self.wire.ack_topic()
        down_topic = self.wire.down_topic()
        async for message in transport.incoming():
            if message.topic == ack_topic:
                await self._on_ack(message.payload)
            elif message.topic == down_topic:
                self._on_down(message.payload)

    async def _on_ack(self, payload: bytes) -> None:
        hub = self.settings.hub_id
        try:
            ack = self.wire.open_ack(payload)
        except ProtocolError as exc:
            self.metrics.bad_acks += 1
            _log.warning("uplink %s: ignoring an ack that does not verify: %s", hub, exc)
            return
        outcome = self._delivery.on_ack(ack, self._clock.monotonic())
        self._note_oddities(ack, outcome)
        if outcome.delete:
            try:
                await self.outbox.ack(outcome.delete)
            except OutboxError as exc:
                # Nothing was deleted; the envelopes stay, are sent again and acked again.
                self._delivery.delete_failed(outcome.delete)
                self._update_gauges()
                self._wake.set()
                _log.error("uplink %s: could not remove acked envelopes: %s", hub, exc)
                return
            except BaseException:
                self._delivery.delete_failed(outcome.delete)
                raise
            self._delivery.deleted(outcome.delete)
        if outcome.refused:
            await self._count_refusals(outcome)
        for item in outcome.delivered:
            self.metrics.delivered_envelopes += 1
            if item.lane is Lane.PRIORITY:
                self.metrics.delivered_priority += 1
            for rid in item.record_ids:
                self._record_acked(rid)
        self._failing = 0
        self.metrics.last_ack_at = self._clock.wall()
        self._update_gauges()
        self.acked.set()
        self._wake.set()

    def _note_oddities(self, ack: Ack, outcome: AckOutcome) -> None:
        hub = self.settings.hub_id
        if outcome.unknown:
            self.metrics.odd_acks += 1
            _log.warning(
                "uplink %s: ack %d names envelope(s) this hub never sent (%s); ignored",
                hub,
                ack.ack_seq,
                _quote(outcome.unknown),
            )
        for entry in outcome.deferred:
            self.metrics.deferred[entry.reason] = self.metrics.deferred.get(entry.reason, 0) + 1
            _log.warning(
                "uplink %s: platform refused envelope %d for now (%s); kept", hub, entry.seq, entry.reason.value
            )

    async def _count_refusals(self, outcome: AckOutcome) -> None:
        """Count permanent refusals by reason, here and durably in the outbox's cursors (for ``carehub doctor``)."""
        hub = self.settings.hub_id
        totals = self._refused_totals
        added: dict[EnvelopeRejection, int] = {}
        for entry in outcome.refused:
            added[entry.reason] = added.get(entry.reason, 0) + 1
            _log.error(
                "uplink %s: platform refused envelope %d for good (%s); dropped", hub, entry.seq, entry.reason.value
            )
        self.metrics.rejected_envelopes += len(outcome.refused)
        for reason, count in added.items():
            self.metrics.refused[reason] = self.metrics.refused.get(reason, 0) + count
            key = REFUSED_CURSOR_PREFIX + reason.value
            try:
                if reason not in totals:
                    stored = await self.outbox.get_cursor(key, 0)
                    totals[reason] = stored if isinstance(stored, int) else 0
                totals[reason] += count
                await self.outbox.set_cursor(key, totals[reason])
            except OutboxError as exc:
                _log.error("uplink %s: could not record %d refusal(s) (%s): %s", hub, count, reason.value, exc)

    def _record_acked(self, record_id: str) -> None:
        self._acked_records[record_id] = None
        self._acked_records.move_to_end(record_id)
        while len(self._acked_records) > _RECENT_ACKS:
            self._acked_records.popitem(last=False)
        for fut in self._record_waiters.pop(record_id, []):
            if not fut.done():
                fut.set_result(None)

    def _on_down(self, payload: bytes) -> None:
        try:
            message = self.wire.open_down(payload)
        except ProtocolError as exc:
            self.metrics.bad_downs += 1
            _log.warning("uplink %s: ignoring a down-message that does not verify: %s", self.settings.hub_id, exc)
            return
        try:
            self.down.put_nowait(message)
        except asyncio.QueueFull:
            _log.error("uplink %s: down-message queue full; dropping %r", self.settings.hub_id, message)

    def _update_gauges(self) -> None:
        self.metrics.inflight_frames = self._delivery.inflight_frames
        self.metrics.inflight_envelopes = self._delivery.inflight_envelopes
