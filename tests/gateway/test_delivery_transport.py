"""Contract tests for the uplink's transport: the in-memory broker and aiomqtt against a real Mosquitto must behave
alike (subscriptions, order, QoS 1 publish, refusal while down, a lost connection as one typed error)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from gateway.transport import Connector, Incoming, MemoryBroker, MqttConnector, Transport, TransportError, topic_matches
from sim.broker import MosquittoBroker, mosquitto_available

BOUND = 20  # seconds: an upper bound for awaiting events, never a sleep

_ids = itertools.count()


@dataclass
class Network:
    """A broker behind the transport interface, with a switch."""

    connector: Connector
    stop: Callable[[], Awaitable[None]]
    start: Callable[[], Awaitable[None]]


@pytest.fixture(params=["memory", "mosquitto"])
async def network(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Network]:
    if request.param == "memory":
        broker = MemoryBroker()
        yield Network(broker.connector(), broker.stop, broker.start)
        return
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (scripts/test installs it)")
    async with MosquittoBroker(tmp_path / "mosquitto") as mosquitto:

        def client() -> aiomqtt.Client:
            return aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"contract-{next(_ids)}", timeout=5)

        yield Network(MqttConnector(client), mosquitto.stop, mosquitto.start)


async def take(transport: Transport, n: int) -> list[Incoming]:
    out: list[Incoming] = []
    async with asyncio.timeout(BOUND):
        async for message in transport.incoming():
            out.append(message)
            if len(out) == n:
                break
    return out


async def test_subscribed_topics_arrive_in_order_others_do_not(network: Network) -> None:
    async with (
        network.connector.session(["t/hub-a/ack", "t/+/down"]) as receiver,
        network.connector.session([]) as sender,
    ):
        await sender.publish("t/hub-b/ack", b"not for us")
        for n in range(20):
            await sender.publish("t/hub-a/ack" if n % 2 else "t/hub-a/down", bytes([n]) * n)
        await sender.publish("t/hub-a/ack", b"\x00" * 70_000)
        got = await take(receiver, 21)
    assert [(m.topic, m.payload) for m in got[:20]] == [
        ("t/hub-a/ack" if n % 2 else "t/hub-a/down", bytes([n]) * n) for n in range(20)
    ]
    assert got[20] == Incoming("t/hub-a/ack", b"\x00" * 70_000)


async def test_a_broker_that_is_down_refuses_the_session(network: Network) -> None:
    await network.stop()
    with pytest.raises(TransportError):
        async with network.connector.session(["t/x"]):
            pass
    await network.start()
    async with network.connector.session(["t/x"]) as again, network.connector.session([]) as sender:
        await sender.publish("t/x", b"back")
        assert await take(again, 1) == [Incoming("t/x", b"back")]


async def test_a_lost_connection_ends_the_iterator_and_publish_with_transport_error(network: Network) -> None:
    # Leaving a session whose connection is gone may report the loss once more (aiomqtt does); never anything else.
    with contextlib.suppress(TransportError):
        async with network.connector.session(["t/x"]) as transport:
            reading = asyncio.create_task(take(transport, 1))
            await network.stop()
            with pytest.raises(TransportError):
                async with asyncio.timeout(BOUND):
                    await reading
            with pytest.raises(TransportError):
                async with asyncio.timeout(BOUND):
                    await transport.publish("t/x", b"into the void")
    await network.start()


def test_topic_filters() -> None:
    assert topic_matches("carehub/v1/+/up", "carehub/v1/hub-a/up")
    assert topic_matches("carehub/#", "carehub/v1/hub-a/up")
    assert topic_matches("a/b", "a/b")
    assert not topic_matches("carehub/v1/+/up", "carehub/v1/hub-a/ack")
    assert not topic_matches("a/+", "a/b/c")
    assert not topic_matches("a/b/c", "a/b")
