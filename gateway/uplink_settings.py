"""What the uplink is configured with and speaks: broker settings, the MQTT client, the wire format, refusal cursors.

* :class:`UplinkSettings`: broker address (one node, or a cluster's nodes in the order they are tried), credentials,
  TLS, window sizes and timings (validated when built).
* :func:`mqtt_client`: the aiomqtt client the uplink connects with to one node (``carehub doctor`` checks each node
  with the same one): TLS verifying the node's certificate and name unless ``tls_insecure``, TCP_NODELAY; the same
  client id on every node.
* :class:`UplinkWire`: the topics and frame/ack/down codecs the uplink needs (:class:`gateway.wire.HubWire`).
* :data:`REFUSED_CURSOR_PREFIX` and :func:`refusal_counts`: the permanent refusals the uplink records in the
  outbox's cursors, read by ``carehub doctor``.
* :data:`NODE_CURSOR` and :class:`NodeStatus`: the broker node the uplink is connected to (or was last), recorded in
  the outbox's cursors for ``carehub doctor``.
"""

from __future__ import annotations

import functools
import json
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

import aiomqtt

from gateway.config import BrokerNode, GatewayConfig
from gateway.delivery_timing import DeliveryPolicy
from gateway.errors import UplinkError
from gateway.outbox_rows import CursorValue
from gateway.transport import DEFAULT_PUBACK_TIMEOUT_S, Connector, FailoverConnector, MqttConnector
from protocols.acks import Ack
from protocols.errors import EnvelopeRejection
from protocols.messages import DownMessage

__all__ = [
    "NODE_CURSOR",
    "REFUSED_CURSOR_PREFIX",
    "BrokerNode",
    "NodeStatus",
    "UplinkSettings",
    "UplinkWire",
    "mqtt_client",
    "mqtt_connector",
    "refusal_counts",
]

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


NODE_CURSOR: Final = "uplink.node"
"""Outbox cursor: the broker node the uplink connected to last, when, and when that connection ended
(:class:`NodeStatus` as JSON text)."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The broker node the uplink is on (``lost_at`` is ``None``) or was on last, as ``carehub doctor`` shows it.

    Attributes:
        node: the node, ``HOST:PORT``.
        connected_at: when the connection was made (UTC).
        lost_at: when it ended (UTC), or ``None`` while it lasts (or when the hub stopped without noting it).
    """

    node: str
    connected_at: datetime
    lost_at: datetime | None = None

    def to_cursor(self) -> str:
        """The cursor's text (JSON; times as ISO 8601)."""
        lost = None if self.lost_at is None else self.lost_at.isoformat()
        return json.dumps({"node": self.node, "connected_at": self.connected_at.isoformat(), "lost_at": lost})

    @classmethod
    def from_cursor(cls, value: CursorValue | None) -> NodeStatus | None:
        """The status in a cursor's value; ``None`` when the uplink never connected.

        Raises:
            ValueError: the value is not what :meth:`to_cursor` writes.
        """
        if value is None:
            return None
        text = value if isinstance(value, str) else repr(value)
        try:
            data = json.loads(text)
            node, connected, lost = data["node"], data["connected_at"], data["lost_at"]
            status = cls(node, _utc(connected), None if lost is None else _utc(lost))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{NODE_CURSOR} holds {text[:80]!r}, not a node status") from None
        if not isinstance(status.node, str) or not status.node:
            raise ValueError(f"{NODE_CURSOR} holds {text[:80]!r}, not a node status")
        return status


def _utc(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"expected an ISO 8601 time, got {type(text).__name__}")
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"{text!r} names no time zone")
    return when.astimezone(UTC)


class UplinkWire(Protocol):
    """The wire format the uplink speaks: topics, frames, and verification of what the platform sends.

    :class:`gateway.wire.HubWire` implements it over :mod:`protocols.topics`, :mod:`protocols.acks` and
    :mod:`protocols.messages`.
    """

    def up_topic(self) -> str:
        """This hub's uplink topic."""
        ...

    def alarm_topic(self) -> str:
        """This hub's uplink topic for priority-lane frames."""
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
        """Verify and decode an ack.

        Raises:
            protocols.errors.ProtocolError: it is not from the platform, or not for this hub.
        """
        ...

    def open_down(self, payload: bytes) -> DownMessage:
        """Verify and decode a down-message.

        Raises:
            protocols.errors.ProtocolError: it is not authentic, or a replay.
        """
        ...


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    """How to reach the broker and how hard to push.

    Attributes:
        hub_id: this hub's id (also the MQTT client id suffix).
        host: broker host name (the first node of a cluster).
        port: broker port.
        other_nodes: a cluster's further nodes, tried in this order after ``host:port`` (then round again) whenever
            a connection cannot be made or is lost; credentials, TLS and client id are the same for every node.
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
        puback_timeout: seconds a publish waits for the broker's PUBACK before the session is taken as lost and
            everything in flight is sent again on a new one (a broker that answers PINGREQ but dropped the publish).
    """

    hub_id: str
    host: str
    port: int = 1883
    other_nodes: tuple[BrokerNode, ...] = ()
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
    puback_timeout: float = DEFAULT_PUBACK_TIMEOUT_S

    def __post_init__(self) -> None:
        try:
            self.policy()
        except ValueError as exc:
            raise UplinkError(str(exc)) from exc
        if not (0 < self.backoff_base <= self.backoff_cap) or not 0.0 <= self.backoff_jitter <= 1.0:
            raise UplinkError("reconnect backoff needs 0 < backoff_base <= backoff_cap and a jitter in [0, 1]")
        if self.client_key is not None and self.client_cert is None:
            raise UplinkError("client_key given without client_cert")
        if not self.puback_timeout > 0:
            raise UplinkError("puback_timeout must be positive")
        try:
            nodes = self.nodes
        except ValueError as exc:
            raise UplinkError(str(exc)) from exc
        if len(set(nodes)) != len(nodes):
            raise UplinkError(f"each broker node once, got {', '.join(str(n) for n in nodes)}")

    @property
    def nodes(self) -> tuple[BrokerNode, ...]:
        """Every broker node in the order the uplink tries them: ``host:port`` first."""
        return (BrokerNode(self.host, self.port), *self.other_nodes)

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
            other_nodes=b.other_nodes,
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
    settings: UplinkSettings,
    *,
    node: BrokerNode | None = None,
    identifier: str | None = None,
    timeout: float | None = None,
) -> aiomqtt.Client:
    """The MQTT client the uplink connects to ``node`` with (default: the first); ``carehub doctor`` checks each
    node with the same one.

    TLS verifies the node's certificate against ``ca_file`` (or the system's CAs) and its name or address against
    the node's host, unless ``tls_insecure``; TCP_NODELAY, as acks are small. The client id is
    ``carehub-hub-<hub>`` on every node: a cluster sees one client whichever node it comes through.

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
    where = node or s.nodes[0]
    return aiomqtt.Client(
        where.host,
        where.port,
        username=s.username,
        password=s.password,
        identifier=identifier or f"carehub-hub-{s.hub_id}",
        clean_session=True,
        keepalive=s.keepalive,
        tls_params=tls_params,
        tls_insecure=s.tls_insecure if s.tls else None,
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        max_queued_incoming_messages=1024,
        # Every frame the uplink hands over goes on the wire at once: paho holds back QoS 1 publishes beyond its
        # in-flight limit (20 by default), which would queue an alarm behind routine frames awaiting their PUBACK.
        max_inflight_messages=s.max_inflight_frames + s.max_inflight_priority_frames,
        timeout=timeout,
    )


def mqtt_connector(settings: UplinkSettings) -> Connector:
    """The uplink's transport to the broker: one :class:`MqttConnector` for one node, a :class:`FailoverConnector`
    over one per node (tried in ``settings.nodes`` order) for a cluster."""
    connectors: list[tuple[str, Connector]] = [
        (
            str(node),
            MqttConnector(
                functools.partial(mqtt_client, settings, node=node),
                node=str(node),
                puback_timeout=settings.puback_timeout,
            ),
        )
        for node in settings.nodes
    ]
    if len(connectors) == 1:
        return connectors[0][1]
    return FailoverConnector(connectors)
