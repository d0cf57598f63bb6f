"""Hub failover between broker nodes (issue 15 item 3): the node list in the config, the order nodes are tried in,
and the uplink's jittered backoff between tries, on an injected clock (sim.virtual_time: the event loop's clock is
simulated, so the backoff's sleeps take no real time and land at exact instants; nothing here sleeps).

The nodes are real in-memory brokers behind the transport interface; the uplink is the real one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from community.samples import T0, bp_record
from community.wire import PlatformCodec
from gateway.config import BrokerNode, ConfigError, parse_config
from gateway.errors import UplinkError
from gateway.outbox import Lane, Outbox, OutboxItem, open_outbox
from gateway.transport import Connector, FailoverConnector, MemoryBroker, MqttConnector, Transport, TransportError
from gateway.uplink import Uplink, UplinkSettings
from gateway.uplink_settings import NODE_CURSOR, NodeStatus, mqtt_connector
from gateway.wire import HubWire
from protocols.acks import Ack
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.topics import decode_uplink
from sim.virtual_time import VirtualTimeLoop

_T = TypeVar("_T")
UP, ACK, DOWN = "carehub/v1/hub-a/up", "carehub/v1/hub-a/ack", "carehub/v1/hub-a/down"
BASE, CAP, JITTER = 0.5, 4.0, 0.5  # the uplink's backoff in these tests (seconds of simulated time)
BOUND = 600.0  # simulated seconds: an upper bound for awaited events


def play(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` on an event loop whose clock is simulated (the injected clock)."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


# ---------------------------------------------------------------------------------------------------- config

CONFIG = """
[hub]
id = "hub-a"
key_file = "hub.key"
timezone = "UTC"
[platform]
public_key_file = "platform.pub"
[storage]
path = "outbox.db"
[broker]
{broker}
"""


def broker_config(broker: str) -> Any:
    return parse_config(CONFIG.format(broker=broker), Path("/etc/carehub/hub.toml")).broker


def test_one_url_is_one_node_as_before() -> None:
    b = broker_config('url = "mqtts://nats1.example"')
    assert (b.host, b.port, b.tls, b.other_nodes) == ("nats1.example", 8883, True, ())
    assert b.nodes == (BrokerNode("nats1.example", 8883),)
    assert b.urls() == ("mqtts://nats1.example:8883",)


def test_urls_list_a_clusters_nodes_in_order() -> None:
    urls = '["mqtts://n1.example:8883", "mqtts://n2.example", "mqtts://[::1]:8884"]'
    b = broker_config(f'urls = {urls}\nca_file = "ca.pem"')
    assert b.nodes == (BrokerNode("n1.example", 8883), BrokerNode("n2.example", 8883), BrokerNode("::1", 8884))
    assert (b.host, b.port, b.tls) == ("n1.example", 8883, True)
    assert b.urls()[2] == "mqtts://[::1]:8884"
    hub = parse_config(CONFIG.format(broker=f"urls = {urls}"), Path("/etc/carehub/hub.toml"))
    assert UplinkSettings.from_config(hub).nodes == b.nodes


SEVENTEEN = "urls = [" + ", ".join(f'"mqtt://n{i}"' for i in range(17)) + "]"


@pytest.mark.parametrize(
    ("broker", "key", "says"),
    [
        ('url = "mqtt://a"\nurls = ["mqtt://b"]', "broker.urls", "not both"),
        ("urls = []", "broker.urls", "1..16"),
        (SEVENTEEN, "broker.urls", "1..16"),
        ('urls = ["mqtts://a", "mqtt://b"]', "broker.urls", "same scheme"),
        ('urls = ["mqtt://a:1883", "mqtt://a"]', "broker.urls", "each node once"),
        ('urls = ["mqtt://a", "http://b"]', "broker.urls[1]", "mqtt://HOST"),
        ('urls = ["mqtt://a", 7]', "broker.urls[1]", "non-empty string"),
        ('urls = ["mqtt://a:99999"]', "broker.urls[0]", "port out of range"),
        ('urls = "mqtt://a"', "broker.urls", "expected an array"),
        ('username = "x"', "broker.url", "missing"),
    ],
)
def test_bad_node_lists_are_refused_naming_the_key(broker: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        broker_config(broker)
    assert caught.value.key == key
    assert says in caught.value.expected


def test_settings_refuse_a_node_twice() -> None:
    with pytest.raises(UplinkError, match="each broker node once"):
        UplinkSettings(hub_id="hub-a", host="a", port=1, other_nodes=(BrokerNode("b", 1), BrokerNode("a", 1)))


def test_one_node_gets_the_plain_connector_several_get_failover_in_order() -> None:
    assert isinstance(mqtt_connector(UplinkSettings(hub_id="hub-a", host="a")), MqttConnector)
    others = (BrokerNode("b", 2), BrokerNode("c", 3))
    many = mqtt_connector(UplinkSettings(hub_id="hub-a", host="a", other_nodes=others))
    assert isinstance(many, FailoverConnector)
    assert many.nodes == ("a:1883", "b:2", "c:3")


def test_node_status_round_trips_through_its_cursor_and_refuses_garbage() -> None:
    status = NodeStatus("n2.example:8883", datetime(2026, 12, 4, 7, 0, tzinfo=UTC))
    assert NodeStatus.from_cursor(status.to_cursor()) == status
    lost = NodeStatus(status.node, status.connected_at, datetime(2026, 12, 4, 8, 0, tzinfo=UTC))
    assert NodeStatus.from_cursor(lost.to_cursor()) == lost
    assert NodeStatus.from_cursor(None) is None
    for bad in (
        "{}",
        "[]",
        "x",
        7,
        b"\x00",
        '{"node": "", "connected_at": "2026-12-04T07:00:00+00:00", "lost_at": null}',
        '{"node": "a:1", "connected_at": "2026-12-04T07:00:00", "lost_at": null}',
    ):
        with pytest.raises(ValueError, match=NODE_CURSOR):
            NodeStatus.from_cursor(bad)


# ---------------------------------------------------------------------------------------------------- rotation


@dataclass
class Nodes:
    """In-memory brokers A, B, C; every session attempt is logged with the (simulated) time it was made."""

    brokers: dict[str, MemoryBroker] = field(default_factory=dict)
    attempts: list[tuple[float, str]] = field(default_factory=list)
    attempted: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Logged:
    """A node's real connector, each attempt logged (the same interface; nothing else changed)."""

    nodes: Nodes
    name: str
    inner: Connector

    @contextlib.asynccontextmanager
    async def session(self, subscriptions: Sequence[str]) -> AsyncIterator[Transport]:
        self.nodes.attempts.append((asyncio.get_running_loop().time(), self.name))
        self.nodes.attempted.set()
        async with self.inner.session(subscriptions) as transport:
            yield transport


def logged(nodes: Nodes, names: Sequence[str] = ("A", "B", "C")) -> FailoverConnector:
    for name in names:
        nodes.brokers.setdefault(name, MemoryBroker(name))
    return FailoverConnector([(name, _Logged(nodes, name, nodes.brokers[name].connector())) for name in names])


async def _connect(connector: Connector) -> str:
    async with connector.session([ACK]) as transport:
        return transport.node


def test_failover_connector_tries_the_nodes_in_order_and_wraps() -> None:
    async def main() -> None:
        nodes = Nodes()
        failover = logged(nodes)
        await nodes.brokers["A"].stop()
        await nodes.brokers["B"].stop()
        for _ in range(2):  # A, B refuse; C connects; a session whose body returns keeps its node
            with pytest.raises(TransportError):
                await _connect(failover)
        assert await _connect(failover) == "C"
        assert await _connect(failover) == "C"
        assert failover.current == "C"
        # A session lost on C moves on, wrapping round to A (up again).
        await nodes.brokers["A"].start()
        with pytest.raises(TransportError):
            await _lose_c(failover, nodes.brokers["C"])
        assert failover.connected is None
        assert (failover.current, failover.moves) == ("A", 3)
        assert await _connect(failover) == "A"
        assert [name for _, name in nodes.attempts] == ["A", "B", "C", "C", "C", "A"]

    play(main())


async def _lose_c(failover: FailoverConnector, c: MemoryBroker) -> None:
    async with failover.session([ACK]) as transport:
        assert failover.connected == "C"
        await c.stop()
        async for _ in transport.incoming():
            pass


def test_failover_connector_refuses_no_nodes_and_a_node_twice() -> None:
    broker = MemoryBroker()
    with pytest.raises(ValueError, match="at least one"):
        FailoverConnector([])
    with pytest.raises(ValueError, match="each node once"):
        FailoverConnector([("a", broker.connector()), ("a", broker.connector())])


# ---------------------------------------------------------------------------------------------------- the uplink


def _item(wire: HubWire, seq: int) -> OutboxItem:
    rec = bp_record("hub-a", seq)
    return OutboxItem(seq, wire.seal(seq, [rec], T0), Lane.ROUTINE, "measurement", (rec.record_id.hex(),), 0.0)


async def _platform(broker: MemoryBroker, codec: PlatformCodec, known: dict[str, Any]) -> None:
    """A platform on one node: acks every envelope it receives (for as long as that node is up)."""
    with contextlib.suppress(TransportError):  # its node went down
        async with broker.connector().session([UP]) as session:
            async for message in session.incoming():
                seqs = tuple(codec.open(e, known, "hub-a").seq for e in decode_uplink(message.payload))
                await session.publish(ACK, codec.encode_ack(Ack("hub-a", 1, T0, seqs, ())))


async def _attempt(nodes: Nodes, n: int) -> None:
    async with asyncio.timeout(BOUND):
        while len(nodes.attempts) < n:
            nodes.attempted.clear()
            await nodes.attempted.wait()


def _gaps(since: float, attempts: list[tuple[float, str]]) -> list[float]:
    """The time from ``since`` (a loss) to the first attempt, then between attempts."""
    times = [since, *(t for t, _ in attempts)]
    return [b - a for a, b in itertools.pairwise(times)]


def _check_backoff(gaps: list[float]) -> None:
    """Each gap is the uplink's backoff for that attempt: (1 - jitter) * d .. d, d = min(cap, base * 2**attempt)."""
    for attempt, gap in enumerate(gaps):
        ceiling = min(CAP, BASE * 2**attempt)
        assert ceiling * (1 - JITTER) <= gap <= ceiling, (attempt, gap)


def test_uplink_moves_to_the_next_node_with_its_jittered_backoff(tmp_path: Path) -> None:
    """The hub is on A; A dies (B is down too): the uplink tries B after one backoff delay, then C after a doubled
    one, and delivers through C; an envelope put meanwhile is acked by the platform on C. Then every node is down:
    the nodes are tried in turn (C, A, B, C, ...) with the delay doubling up to its cap, never past it; the first node
    back (B) takes the hub, and the outbox cursor says which node the hub is on."""

    async def main() -> None:
        platform = PlatformIdentity.generate()
        hub = HubIdentity.generate("hub-a")
        wire = HubWire(hub, platform.public)
        codec, known = PlatformCodec(platform), {"hub-a": hub.verify_key}
        nodes = Nodes()
        failover = logged(nodes)
        settings = UplinkSettings(
            hub_id="hub-a", host="unused", backoff_base=BASE, backoff_cap=CAP, backoff_jitter=JITTER
        )
        async with (
            open_outbox(tmp_path / "outbox.db") as ob,
            asyncio.TaskGroup() as platforms,
            Uplink(settings, ob, wire, connector=failover, rng=random.Random(15)) as up,  # noqa: S311 - jitter
        ):
            for name in ("B", "C"):  # a platform worker behind each surviving node
                platforms.create_task(_platform(nodes.brokers[name], codec, known))
            async with asyncio.timeout(BOUND):
                await up.connected.wait()
            assert up.node == "A"
            await nodes.brokers["B"].stop()
            lost_at = asyncio.get_running_loop().time()
            await nodes.brokers["A"].stop()  # A dies with the hub on it
            await ob.put(_item(wire, 1))
            await _until_empty(up, ob)
            assert up.node == "C"
            assert [name for _, name in nodes.attempts] == ["A", "B", "C"]
            _check_backoff(_gaps(lost_at, nodes.attempts[1:]))  # the loss itself takes no simulated time
            status = NodeStatus.from_cursor(await ob.get_cursor(NODE_CURSOR))
            assert status is not None
            assert (status.node, status.lost_at) == ("C", None)

            # Every node down: round and round, the delay growing to the cap.
            lost_at = asyncio.get_running_loop().time()
            await nodes.brokers["C"].stop()
            await _attempt(nodes, 3 + 8)
            assert [name for _, name in nodes.attempts[3:]] == ["A", "B", "C", "A", "B", "C", "A", "B"]
            gaps = _gaps(lost_at, nodes.attempts[3:])
            _check_backoff(gaps)
            assert gaps[-1] >= CAP * (1 - JITTER)  # at the cap by now
            lost = NodeStatus.from_cursor(await ob.get_cursor(NODE_CURSOR))
            assert lost is not None
            assert lost.node == "C"
            assert lost.lost_at is not None
            assert up.node is None

            await nodes.brokers["B"].start()
            platforms.create_task(_platform(nodes.brokers["B"], codec, known))
            await ob.put(_item(wire, 2))
            await _until_empty(up, ob)
            assert up.node == "B"
            assert up.metrics.connects == 3
            for broker in nodes.brokers.values():
                await broker.stop()  # ends the platforms

    play(main())


async def _until_empty(up: Uplink, ob: Outbox) -> None:
    async with asyncio.timeout(BOUND):
        while (await ob.stats()).rows:
            up.acked.clear()
            if (await ob.stats()).rows:
                await up.acked.wait()


# ---------------------------------------------------------------------------------------------------- properties


class _LostError(Exception):
    """A session body ending in an error (as the uplink's does when its connection is lost)."""


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5), ends=st.lists(st.sampled_from(["refused", "lost", "returned"]), max_size=30))
def test_the_node_tried_is_the_count_of_failed_sessions_round_the_list(n: int, ends: list[str]) -> None:
    """Whatever the sequence of outcomes, each session goes to node (failed or lost sessions so far) mod n."""

    async def main() -> list[str]:
        brokers = [MemoryBroker(f"n{i}") for i in range(n)]
        failover = FailoverConnector([(b.name, b.connector()) for b in brokers])
        tried: list[str] = []
        for end in ends:
            broker = brokers[[b.name for b in brokers].index(failover.current)]
            if end == "refused":
                await broker.stop()
            with contextlib.suppress(TransportError, _LostError):
                async with failover.session([ACK]) as transport:
                    tried.append(transport.node)
                    if end == "lost":
                        raise _LostError
            if end == "refused":
                tried.append(broker.name)
                await broker.start()
        return tried

    tried = asyncio.run(main())
    failed = 0
    for end, node in zip(ends, tried, strict=True):
        assert node == f"n{failed % n}"
        failed += end != "returned"


@given(
    node=st.text(min_size=1, max_size=40),
    connected=st.datetimes(timezones=st.just(UTC)),
    lost=st.none() | st.datetimes(timezones=st.just(UTC)),
)
def test_node_status_round_trips_any_value(node: str, connected: datetime, lost: datetime | None) -> None:
    status = NodeStatus(node, connected, lost)
    assert NodeStatus.from_cursor(status.to_cursor()) == status


def test_a_cancelled_session_keeps_its_node() -> None:
    """The caller closing (its task cancelled) is not the node's fault: the next session goes to the same node."""

    async def main() -> None:
        brokers = [MemoryBroker("A"), MemoryBroker("B")]
        failover = FailoverConnector([(b.name, b.connector()) for b in brokers])
        entered = asyncio.Event()

        async def hold() -> None:
            async with failover.session([ACK]):
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(hold())
        await entered.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert (failover.current, failover.moves) == ("A", 0)

    asyncio.run(main())
