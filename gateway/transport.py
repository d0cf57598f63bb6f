"""The uplink's transport: a small interface, the aiomqtt adapter, and an in-memory broker behind the same interface.

The delivery core (:mod:`gateway.delivery`) and its shell (:class:`gateway.uplink.Uplink`) need four things from
MQTT: connect and subscribe (QoS 1), publish QoS 1, iterate over what arrives, and learn - as one typed error - that
the connection is gone. :class:`Connector` and :class:`Transport` are exactly that; :class:`MqttConnector` is the
real adapter (aiomqtt, where ``aiomqtt.MqttError`` and ``OSError`` are classified once into
:class:`TransportError`), :class:`MemoryBroker` an in-process broker for tests and protocol-level fleets. Both pass
the contract tests in ``tests/gateway/test_delivery_transport.py``. :class:`FailoverConnector` puts the connectors of
a broker cluster's nodes behind one: each session goes to the current node, and a session that fails or is lost
moves on to the next node (``tests/gateway/test_failover.py``).

A PUBACK is not delivery (invariant 1): :meth:`Transport.publish` returning says only that the broker took the
message; the platform's signed ack is what counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final, Protocol

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from gateway.aio import keep_cancellation
from gateway.errors import GatewayError

__all__ = [
    "DEFAULT_PUBACK_TIMEOUT_S",
    "Connector",
    "FailoverConnector",
    "Incoming",
    "MemoryBroker",
    "MqttConnector",
    "Transport",
    "TransportError",
    "topic_matches",
]

_log = logging.getLogger(__name__)

#: How long a publish waits for its PUBACK before the hub takes the session as lost: three default ack timeouts
#: (``UplinkSettings.ack_timeout``, 20 s), longer than the slowest PUBACK seen in a 10,000-hub storm (16.6 s).
DEFAULT_PUBACK_TIMEOUT_S: Final = 60.0
_MEMORY_QUEUE: Final = 1024  # messages queued per in-memory session (Mosquitto's max_queued_messages default: 1000)


class TransportError(GatewayError):
    """The broker cannot be reached, refused the session, or the connection was lost; reconnect later."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message received on a subscribed topic.

    Attributes:
        topic: the topic it was published to.
        payload: its bytes.
    """

    topic: str
    payload: bytes


class Transport(Protocol):
    """One live connection with its subscriptions in place."""

    @property
    def node(self) -> str:
        """The broker node this connection is to (``HOST:PORT``, or a memory broker's name): for logs and
        ``carehub doctor``."""
        ...

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish QoS 1; return once the broker took it.

        Raises:
            TransportError: the connection is lost.
        """
        ...

    def incoming(self) -> AsyncIterator[Incoming]:
        """Messages on the subscribed topics, in the order the broker delivers them.

        Raises:
            TransportError: (from the iterator) the connection is lost.
        """
        ...


class Connector(Protocol):
    """Opens connections: ``async with connector.session(topics) as transport``.

    ``session`` may be entered by a task that owns a task group: it never calls
    :func:`gateway.aio.raise_if_cancelling` (see that function for why).
    """

    def session(self, subscriptions: Sequence[str]) -> AbstractAsyncContextManager[Transport]:
        """Connect and subscribe QoS 1 to each of ``subscriptions`` (topic filters); closing disconnects.

        Raises:
            TransportError: the broker cannot be reached or refused the session.
        """
        ...


# ---------------------------------------------------------------------------------------------------- aiomqtt

_SUBACK_FAILURE = 0x80  # MQTT 3.1.1 §3.9.3 return code (5.0: reason codes 0x80 and above are failures)


def _code(code: int | ReasonCode) -> int:
    return code if isinstance(code, int) else code.value


class _MqttTransport:
    __slots__ = ("_client", "_puback_timeout", "node")

    def __init__(self, client: aiomqtt.Client, node: str, puback_timeout: float) -> None:
        self._client = client
        self.node = node
        self._puback_timeout = puback_timeout

    async def publish(self, topic: str, payload: bytes) -> None:
        try:
            # Not aiomqtt's default (the client's 10 s): a PUBACK slower than that is a broker busy with a storm, not
            # a lost connection, and ending the session for it resent everything in flight at once and added a
            # session set-up to the broker's load. But not forever either: a broker that answers PINGREQ yet never
            # PUBACKs (a publish it took and dropped) would hold each lane's window full with keepalive never
            # ending the session, and no frame of that lane, alarms included, would be sent again.
            await keep_cancellation(self._client.publish(topic, payload, qos=1, timeout=self._puback_timeout))
        except (aiomqtt.MqttError, OSError) as exc:
            raise TransportError(f"publish to {topic} failed: {exc}") from exc

    async def incoming(self) -> AsyncIterator[Incoming]:
        try:
            async for message in self._client.messages:
                yield Incoming(str(message.topic), bytes(message.payload))
        except (aiomqtt.MqttError, OSError) as exc:
            raise TransportError(f"connection lost: {exc}") from exc
        raise TransportError("connection closed")


class MqttConnector:
    """The real transport: aiomqtt clients made by ``client_factory`` (:func:`gateway.uplink_settings.mqtt_client`).

    Args:
        client_factory: makes a new, unconnected client for each session.
        node: the broker node the clients connect to (``HOST:PORT``), as :attr:`Transport.node` names it.
        puback_timeout: seconds a publish waits for its PUBACK before the session is taken as lost
            (:class:`TransportError`; ``math.inf``: for as long as the connection lives).
    """

    __slots__ = ("_factory", "_puback_timeout", "node")

    def __init__(
        self,
        client_factory: Callable[[], aiomqtt.Client],
        *,
        node: str = "broker",
        puback_timeout: float = DEFAULT_PUBACK_TIMEOUT_S,
    ) -> None:
        if not puback_timeout > 0:
            raise ValueError("puback_timeout must be positive")
        self._factory = client_factory
        self.node = node
        self._puback_timeout = puback_timeout

    @contextlib.asynccontextmanager
    async def session(self, subscriptions: Sequence[str]) -> AsyncIterator[Transport]:
        """Connect, subscribe QoS 1 to ``subscriptions``, and yield the transport; disconnect on exit."""
        client = self._factory()
        try:
            async with client:
                for topic in subscriptions:
                    # Not keep_cancellation: the caller may own a task group (the uplink's runner does), whose
                    # task Python 3.11 leaves looking cancelled after a child failed; it checks a flag instead.
                    granted = await client.subscribe(topic, qos=1)
                    refused = [code for code in granted if _code(code) >= _SUBACK_FAILURE]
                    if refused:
                        # A broker may refuse one subscription and keep the session (NATS's MQTT listener does
                        # when JetStream cannot create the subscription's consumer, e.g. while a node is down):
                        # without this the hub would publish on and never hear an ack.
                        raise TransportError(f"the broker refused the subscription to {topic} ({refused[0]})")
                yield _MqttTransport(client, self.node, self._puback_timeout)
        except (aiomqtt.MqttError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------------- failover


class FailoverConnector:
    """One :class:`Connector` over the nodes of a broker cluster, tried in turn (issue 15 item 3).

    Each session goes to the current node. A session that cannot be opened, or that ends in an error (the
    connection lost, a subscription refused, the caller crashed), makes the next node current, wrapping round after
    the last; one whose body returns or is cancelled (the caller closing) keeps its node. The caller's reconnect
    backoff (:class:`gateway.uplink.Uplink`'s) is unchanged: a dead node costs one failed attempt and one backoff
    delay, then the next attempt goes to the next node; while every node is down, the nodes are tried in turn with the
    delay growing to its cap.

    No I/O of its own and no clock: which node is tried is a pure function of how the sessions ended.

    Args:
        nodes: ``(name, connector)`` per node, in the order they are tried; the first is tried first.

    Raises:
        ValueError: no nodes, or a name given twice.
    """

    __slots__ = ("_connected", "_index", "_nodes", "moves")

    def __init__(self, nodes: Sequence[tuple[str, Connector]]) -> None:
        if not nodes:
            raise ValueError("a failover connector needs at least one node")
        names = [name for name, _ in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"each node once, got {', '.join(names)}")
        self._nodes = tuple(nodes)
        self._index = 0
        self._connected: str | None = None
        #: How many times a failed or lost session moved on to the next node.
        self.moves = 0

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes' names, in the order they are tried."""
        return tuple(name for name, _ in self._nodes)

    @property
    def current(self) -> str:
        """The node the next session goes to (or the open one is on)."""
        return self._nodes[self._index][0]

    @property
    def connected(self) -> str | None:
        """The node of the open session, or ``None``."""
        return self._connected

    @contextlib.asynccontextmanager
    async def session(self, subscriptions: Sequence[str]) -> AsyncIterator[Transport]:
        """A session on the current node; the next node becomes current if it fails or ends in an error."""
        index = self._index
        name, connector = self._nodes[index]
        returned = False
        try:
            async with connector.session(subscriptions) as transport:
                self._connected = name
                yield transport
            returned = True
        except asyncio.CancelledError:
            returned = True  # the caller is closing: not the node's fault
            raise
        finally:
            self._connected = None
            if not returned:
                self._index = (index + 1) % len(self._nodes)
                self.moves += 1
                _log.info("broker node %s failed or was lost; the next session goes to %s", name, self.current)


# ---------------------------------------------------------------------------------------------------- in memory


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches the MQTT topic filter (``+`` one level, ``#`` the rest; MQTT 3.1.1 §4.7)."""
    levels = topic.split("/")
    parts = topic_filter.split("/")
    for n, part in enumerate(parts):
        if part == "#":
            return True
        if n >= len(levels) or (part != "+" and part != levels[n]):
            return False
    return len(parts) == len(levels)


class _Closed:
    """Queued to wake a session's reader when the broker goes away."""


_CLOSED: Final = _Closed()


class _MemorySession:
    __slots__ = ("_broker", "_filters", "_queue", "node", "open")

    def __init__(self, broker: MemoryBroker, filters: Sequence[str]) -> None:
        self._broker = broker
        self._filters = tuple(filters)
        self._queue: asyncio.Queue[Incoming | _Closed] = asyncio.Queue(maxsize=_MEMORY_QUEUE + 1)
        self.open = True
        self.node = broker.name

    def wants(self, topic: str) -> bool:
        return any(topic_matches(f, topic) for f in self._filters)

    def deliver(self, message: Incoming) -> bool:
        if not self.open or self._queue.qsize() >= _MEMORY_QUEUE:
            return False
        self._queue.put_nowait(message)
        return True

    def close(self) -> None:
        if self.open:
            self.open = False
            self._queue.put_nowait(_CLOSED)  # the one slot above _MEMORY_QUEUE is kept for this

    async def publish(self, topic: str, payload: bytes) -> None:
        if not self.open:
            raise TransportError(f"publish to {topic} failed: not connected")
        self._broker.route(Incoming(topic, bytes(payload)))
        await asyncio.sleep(0)  # a broker round trip: let subscribers run, as a PUBACK would

    async def incoming(self) -> AsyncIterator[Incoming]:
        while True:
            message = await self._queue.get()
            if isinstance(message, _Closed):
                raise TransportError("connection lost: the broker went away")
            yield message


class _MemoryConnector:
    __slots__ = ("_broker",)

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    @contextlib.asynccontextmanager
    async def session(self, subscriptions: Sequence[str]) -> AsyncIterator[Transport]:
        session = self._broker.attach(subscriptions)
        try:
            yield session
        finally:
            self._broker.detach(session)


class MemoryBroker:
    """An in-process broker: QoS 1 routing by topic filter between sessions, which :meth:`stop` drops at once.

    Like Mosquitto without persistence: messages for a session that is gone are lost, a stopped broker refuses new
    sessions, and each session queues at most 1,024 messages (more are dropped and counted in :attr:`dropped`).

    Args:
        name: the node name its sessions report (:attr:`Transport.node`).
    """

    def __init__(self, name: str = "memory") -> None:
        #: The node name its sessions report.
        self.name = name
        self._sessions: set[_MemorySession] = set()
        self._running = True
        #: Messages dropped because a subscriber's queue was full.
        self.dropped = 0

    @property
    def running(self) -> bool:
        """Whether sessions can connect."""
        return self._running

    def connector(self) -> Connector:
        """A :class:`Connector` to this broker."""
        return _MemoryConnector(self)

    async def stop(self) -> None:
        """Take the broker down: every session is disconnected, new ones are refused."""
        self._running = False
        for session in list(self._sessions):
            session.close()
        self._sessions.clear()

    async def start(self) -> None:
        """Bring the broker back up."""
        self._running = True

    def attach(self, subscriptions: Sequence[str]) -> _MemorySession:
        """A new session (used by the connector)."""
        if not self._running:
            raise TransportError("connection refused: the broker is down")
        session = _MemorySession(self, subscriptions)
        self._sessions.add(session)
        return session

    def detach(self, session: _MemorySession) -> None:
        """End a session (used by the connector)."""
        session.close()
        self._sessions.discard(session)

    def route(self, message: Incoming) -> None:
        """Hand ``message`` to every session subscribed to its topic."""
        for session in self._sessions:
            if session.wants(message.topic) and not session.deliver(message):
                self.dropped += 1
                _log.warning("memory broker: a subscriber's queue is full; dropped a message on %s", message.topic)
