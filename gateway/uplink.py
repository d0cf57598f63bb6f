"""The uplink: sealed envelopes from the outbox to the platform over MQTT, removed only when the platform says so.

Invariant 1: an envelope leaves the outbox only when a platform-signed ack names it as stored (or as permanently
rejected, which is logged); an MQTT PUBACK is not delivery. Invariant 4: the priority lane is always read first, a
priority put wakes the sender at once, and priority frames may be sent even when the window is full of routine
backlog, so an alarm never queues behind a day of readings.

* aiomqtt over TCP or TLS (CA file, optional client certificate, hostname checks on unless ``tls_insecure``),
  user name and password, TCP_NODELAY on the socket.
* Frames are published QoS 1 to ``carehub/v1/<hub>/up`` with a bounded window of frames and bytes awaiting the
  platform's ack; a frame not acked within ``ack_timeout`` is released and its envelopes are sent again (the
  platform recognises the re-sent envelope and acks it without storing twice).
* Acks (:class:`protocols.acks.Ack`) arrive on ``carehub/v1/<hub>/ack``; each is verified (platform signature, hub
  id) by the :class:`UplinkWire` before anything is deleted; envelopes rejected for a permanent reason are dropped,
  the others stay for a re-send. Down-messages (:class:`protocols.messages.DownMessage`) from
  ``carehub/v1/<hub>/down`` are verified (signature, hub id, sequence number above the last accepted one) and go to
  :attr:`Uplink.down`.
* Lost connections are retried with :func:`gateway.backoff.backoff_delay`; everything in flight is sent again.

The wire format (frames, acks, down-messages) is behind :class:`UplinkWire`, so this module holds only the I/O.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import aiomqtt

from gateway.aio import keep_cancellation, raise_if_cancelling
from gateway.backoff import backoff_delay
from gateway.clock import Clock, SystemClock
from gateway.config import GatewayConfig
from gateway.errors import OutboxError, UplinkError
from gateway.outbox import Lane, Outbox, OutboxItem
from protocols.acks import Ack
from protocols.errors import ProtocolError
from protocols.messages import DownMessage

__all__ = [
    "Uplink",
    "UplinkMetrics",
    "UplinkSettings",
    "UplinkWire",
]

_log = logging.getLogger(__name__)

_RECENT_ACKS = 65_536  # record ids remembered as acked, so a late waiter still learns the answer


class UplinkWire(Protocol):
    """The wire format the uplink speaks: topics, frames, and verification of what the platform sends.

    ``sim.platform.wire.HubWire`` implements it over :mod:`protocols.topics`, :mod:`protocols.acks` and
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
        max_inflight_priority_frames: extra frames allowed for the priority lane when the window is full.
        frame_max_envelopes: envelopes per frame.
        frame_max_bytes: envelope bytes per frame.
        ack_timeout: seconds before an unacked frame is sent again.
        backoff_base: first reconnect delay.
        backoff_cap: longest reconnect delay.
        backoff_jitter: fraction of the delay removed at random.
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
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    backoff_jitter: float = 0.2
    keepalive: int = 30

    def __post_init__(self) -> None:
        if self.max_inflight_frames < 1 or self.max_inflight_priority_frames < 1:
            raise UplinkError("the in-flight windows need room for at least one frame")
        if self.frame_max_envelopes < 1 or self.frame_max_bytes < 1 or self.max_inflight_bytes < 1:
            raise UplinkError("frame and window sizes must be positive")
        if self.ack_timeout <= 0:
            raise UplinkError("ack_timeout must be positive")
        if self.client_key is not None and self.client_cert is None:
            raise UplinkError("client_key given without client_cert")

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
    """Counters and gauges; read them, don't write them."""

    connects: int = 0
    connection_failures: int = 0
    frames_sent: int = 0
    envelopes_sent: int = 0
    resends: int = 0
    delivered_envelopes: int = 0
    delivered_priority: int = 0
    rejected_envelopes: int = 0
    bad_acks: int = 0
    bad_downs: int = 0
    inflight_frames: int = 0
    inflight_envelopes: int = 0
    last_ack_at: float | None = None
    last_error: str | None = None
    rejections: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Frame:
    items: tuple[OutboxItem, ...]
    priority: bool
    size: int
    sent_at: float


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

    Args:
        settings: broker address, credentials, TLS and window sizes.
        outbox: the durable outbox to drain.
        wire: topics and frame/ack/down codecs.
        clock: time source for ack timeouts and metrics.
        rng: randomness for backoff jitter.
        down_queue_size: how many verified down-messages may wait in :attr:`down`.
    """

    def __init__(
        self,
        settings: UplinkSettings,
        outbox: Outbox,
        wire: UplinkWire,
        *,
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
        #: Set on every verified ack (cleared by whoever waits on it).
        self.acked = asyncio.Event()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._frames: dict[int, _Frame] = {}
        self._inflight: dict[int, int] = {}  # envelope seq -> frame id
        self._next_frame = 0
        self._wake = asyncio.Event()
        self._acked_records: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._record_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
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
        return frozenset(self._inflight)

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
        while True:
            self._raise_if_closing()
            try:
                client = mqtt_client(self.settings)
                async with client:
                    await client.subscribe(self.wire.ack_topic(), qos=1)
                    await client.subscribe(self.wire.down_topic(), qos=1)
                    self._raise_if_closing()
                    self.metrics.connects += 1
                    attempt = 0
                    self.connected.set()
                    _log.info(
                        "uplink %s connected to %s:%d", self.settings.hub_id, self.settings.host, self.settings.port
                    )
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._receive(client), name=f"uplink-receive:{self.settings.hub_id}")
                        tg.create_task(self._send(client), name=f"uplink-send:{self.settings.hub_id}")
                        tg.create_task(self._expire(), name=f"uplink-expire:{self.settings.hub_id}")
            except* aiomqtt.MqttError as group:
                self._connection_lost(group.exceptions[0])
            except* OSError as group:
                self._connection_lost(group.exceptions[0])
            delay = backoff_delay(
                attempt,
                base=self.settings.backoff_base,
                cap=self.settings.backoff_cap,
                jitter_fraction=self.settings.backoff_jitter,
                rng=self._rng,
            )
            attempt += 1
            await asyncio.sleep(delay)

    def _connection_lost(self, exc: BaseException) -> None:
        self.connected.clear()
        self.metrics.connection_failures += 1
        self.metrics.last_error = f"{type(exc).__name__}: {exc}"
        # Whatever was in flight may never be acked on this connection: send it all again.
        if self._frames:
            self.metrics.resends += len(self._inflight)
        self._frames.clear()
        self._inflight.clear()
        self._update_gauges()
        _log.warning("uplink %s: connection lost (%s)", self.settings.hub_id, self.metrics.last_error)

    # ---------------------------------------------------------------- sending

    def _window(self) -> tuple[bool, bool]:
        """(routine frames may be sent, priority frames may be sent)."""
        s = self.settings
        routine = [f for f in self._frames.values() if not f.priority]
        priority_count = len(self._frames) - len(routine)
        used_bytes = sum(f.size for f in routine)
        return (
            len(routine) < s.max_inflight_frames and used_bytes < s.max_inflight_bytes,
            priority_count < s.max_inflight_priority_frames,
        )

    async def _send(self, client: aiomqtt.Client) -> None:
        s = self.settings
        while True:
            self._wake.clear()
            self.outbox.item_put.clear()
            self.outbox.priority_put.clear()
            sent = False
            while True:
                routine_ok, priority_ok = self._window()
                if not (routine_ok or priority_ok):
                    break
                items = await self.outbox.peek_batch(
                    s.frame_max_envelopes, s.frame_max_bytes, exclude=self._inflight.keys()
                )
                if not routine_ok:
                    items = [i for i in items if i.lane is Lane.PRIORITY]
                elif not priority_ok and items and items[0].lane is Lane.PRIORITY:
                    # The priority window is full; routine items still have room behind it.
                    items = [i for i in items if i.lane is Lane.ROUTINE]
                if not items:
                    break
                await self._publish(client, tuple(items))
                sent = True
            if not sent:
                raise_if_cancelling()
                await _wait_any(self._wake, self.outbox.item_put, self.outbox.priority_put)

    async def _publish(self, client: aiomqtt.Client, items: tuple[OutboxItem, ...]) -> None:
        payload = self.wire.encode_frame([i.envelope for i in items])
        frame_id = self._next_frame
        self._next_frame += 1
        priority = any(i.lane is Lane.PRIORITY for i in items)
        self._frames[frame_id] = _Frame(items, priority, sum(i.size for i in items), self._clock.monotonic())
        for item in items:
            self._inflight[item.envelope_seq] = frame_id
        self._update_gauges()
        self._wake.set()  # the expiry task learns about the new deadline
        await keep_cancellation(client.publish(self.wire.up_topic(), payload, qos=1))
        self.metrics.frames_sent += 1
        self.metrics.envelopes_sent += len(items)

    async def _expire(self) -> None:
        timeout = self.settings.ack_timeout
        while True:
            now = self._clock.monotonic()
            expired = [fid for fid, f in self._frames.items() if now - f.sent_at >= timeout]
            for fid in expired:
                frame = self._frames.pop(fid)
                for item in frame.items:
                    if self._inflight.get(item.envelope_seq) == fid:
                        del self._inflight[item.envelope_seq]
                self.metrics.resends += len(frame.items)
                _log.warning(
                    "uplink %s: no ack for %d envelope(s) within %.1f s; sending again",
                    self.settings.hub_id,
                    len(frame.items),
                    timeout,
                )
            if expired:
                self._update_gauges()
                self._wake.set()
            oldest = min((f.sent_at for f in self._frames.values()), default=None)
            delay = timeout if oldest is None else max(0.0, oldest + timeout - self._clock.monotonic())
            await asyncio.sleep(delay)

    # ---------------------------------------------------------------- receiving

    async def _receive(self, client: aiomqtt.Client) -> None:
        ack_topic = self.wire.ack_topic()
        down_topic = self.wire.down_topic()
        async for message in client.messages:
            payload = bytes(message.payload)
            topic = str(message.topic)
            if topic == ack_topic:
                await self._on_ack(payload)
            elif topic == down_topic:
                self._on_down(payload)

    async def _on_ack(self, payload: bytes) -> None:
        try:
            ack = self.wire.open_ack(payload)
        except ProtocolError as exc:
            self.metrics.bad_acks += 1
            _log.warning("uplink %s: ignoring an ack that does not verify: %s", self.settings.hub_id, exc)
            return
        # Permanently rejected envelopes can never succeed: drop them (logged). Transient rejections (a hub not yet
        # enrolled) stay in the outbox and in flight until the ack timeout sends them again.
        dropped = [r for r in ack.rejected if r.permanent]
        hub = self.settings.hub_id
        for r in ack.rejected:
            reason = r.reason.value
            self.metrics.rejections[reason] = self.metrics.rejections.get(reason, 0) + 1
            if r.permanent:
                _log.error("uplink %s: platform permanently rejected envelope %d: %s", hub, r.seq, reason)
            else:
                _log.warning("uplink %s: platform refused envelope %d for now: %s", hub, r.seq, reason)
        done = [*ack.stored, *(r.seq for r in dropped)]
        try:
            await self.outbox.ack(done)
        except OutboxError as exc:
            # Nothing was deleted; the envelopes stay and will be acked again after a re-send.
            _log.error("uplink %s: could not remove acked envelopes: %s", self.settings.hub_id, exc)
            return
        stored = set(ack.stored)
        acked_ids: list[str] = []
        for seq in done:
            fid = self._inflight.pop(seq, None)
            if fid is None:
                continue
            frame = self._frames.get(fid)
            if frame is None:
                continue
            for item in frame.items:
                if item.envelope_seq == seq and seq in stored:
                    acked_ids.extend(item.record_ids)
                    self.metrics.delivered_envelopes += 1
                    if item.lane is Lane.PRIORITY:
                        self.metrics.delivered_priority += 1
            if not any(i.envelope_seq in self._inflight for i in frame.items):
                del self._frames[fid]
        self.metrics.rejected_envelopes += len(dropped)
        self.metrics.last_ack_at = self._clock.wall()
        for rid in acked_ids:
            self._record_acked(rid)
        self._update_gauges()
        self.acked.set()
        self._wake.set()

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
        self.metrics.inflight_frames = len(self._frames)
        self.metrics.inflight_envelopes = len(self._inflight)
