"""The hub's aiomqtt transport against NATS's MQTT listener (issue 15 item 3): the transport contract tests of
``tests/gateway/test_delivery_transport.py`` run here against a real nats-server (JetStream + MQTT), and a refused
subscription (SUBACK 0x80, which NATS sends when JetStream cannot create the subscription's consumer) is a
:class:`TransportError`, so the hub reconnects instead of publishing on without ever hearing an ack."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import aiomqtt
import pytest
from nats_server import NatsNode, nats_server_path

from community.samples import T0, bp_record, panic_record
from community.wire import PlatformCodec
from gateway.outbox import Lane, OutboxItem, open_outbox
from gateway.transport import MemoryBroker, MqttConnector, TransportError
from gateway.uplink import Uplink, UplinkSettings
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.topics import decode_uplink

pytestmark = pytest.mark.integration

_ids = itertools.count()


def _contract() -> ModuleType:
    """The transport contract tests, loaded from their file (test directories are not packages)."""
    path = Path(__file__).resolve().parents[1] / "gateway" / "test_delivery_transport.py"
    spec = importlib.util.spec_from_file_location("carehub_transport_contract", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_c = _contract()
# The contract's tests, collected here with this module's ``network`` fixture (a NATS node). Its order test asks for
# one order across two subscriptions, more than MQTT promises (§4.6: per topic); NATS keeps each QoS 1 subscription
# in a JetStream consumer of its own, so that one is replaced by a per-topic version below.
test_a_broker_that_is_down_refuses_the_session = _c.test_a_broker_that_is_down_refuses_the_session
test_a_lost_connection_ends_the_iterator_and_publish_with_transport_error = (
    _c.test_a_lost_connection_ends_the_iterator_and_publish_with_transport_error
)


async def test_subscribed_topics_arrive_in_order_per_topic_others_do_not(network) -> None:
    async with (
        network.connector.session(["t/hub-a/ack", "t/+/down"]) as receiver,
        network.connector.session([]) as sender,
    ):
        await sender.publish("t/hub-b/ack", b"not for us")
        for n in range(20):
            await sender.publish("t/hub-a/ack" if n % 2 else "t/hub-a/down", bytes([n]) * n)
        await sender.publish("t/hub-a/ack", b"\x00" * 70_000)
        got = await _c.take(receiver, 21)
    by_topic: dict[str, list[bytes]] = {}
    for m in got:
        by_topic.setdefault(m.topic, []).append(m.payload)
    assert by_topic == {
        "t/hub-a/ack": [bytes([n]) * n for n in range(1, 20, 2)] + [b"\x00" * 70_000],
        "t/hub-a/down": [bytes([n]) * n for n in range(0, 20, 2)],
    }


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[object]:
    if nats_server_path() is None:
        pytest.skip("nats-server is not installed (scripts/test installs it)")
    async with NatsNode(tmp_path / "nats") as node:

        def client() -> aiomqtt.Client:
            return aiomqtt.Client(node.host, node.mqtt_port, identifier=f"contract-{next(_ids)}", timeout=5)

        yield _c.Network(MqttConnector(client), node.stop, node.start)


# One JetStream consumer allowed: NATS's MQTT listener grants the first QoS 1 subscription and refuses the next.
_ONE_CONSUMER = """no_auth_user: hub
accounts {
  HUBS: { jetstream: { max_mem: 64MB, max_file: 256MB, max_streams: 10, max_consumers: 1 },
          users: [{user: hub, password: pw}] }
}
"""


async def test_a_refused_subscription_is_a_transport_error(tmp_path):
    """NATS refuses the second subscription (SUBACK 0x80: JetStream cannot create its consumer) and keeps the
    connection: the session must not be handed out as if the hub were subscribed to its down topic."""
    if nats_server_path() is None:
        pytest.skip("nats-server is not installed (scripts/test installs it)")
    async with NatsNode(tmp_path / "nats", extra=_ONE_CONSUMER) as node:

        def client() -> aiomqtt.Client:
            return aiomqtt.Client(node.host, node.mqtt_port, identifier=f"hub-a-{next(_ids)}", timeout=5)

        connector = MqttConnector(client)
        with pytest.raises(TransportError, match="refused the subscription to carehub/v1/hub-a/down"):
            async with connector.session(["carehub/v1/hub-a/ack", "carehub/v1/hub-a/down"]):
                pass
        async with connector.session(["carehub/v1/hub-a/ack"]):
            pass  # one consumer is allowed: granted


async def test_priority_frames_go_to_the_alarm_topic_routine_frames_to_up(tmp_path):
    """Protocol revision 6 (issue 15 item 4): the hub publishes its priority lane on ``carehub/v1/<hub>/alarm``."""
    platform_id = PlatformIdentity.generate()
    hub_id = HubIdentity.generate("hub-a")
    wire = HubWire(hub_id, platform_id.public)
    broker = MemoryBroker()
    settings = UplinkSettings(hub_id="hub-a", host="127.0.0.1", backoff_base=0.05, backoff_cap=0.5)
    records = {1: bp_record("hub-a", 1), 2: panic_record("hub-a", "pendant-1", 1, "panic-1", 2)}
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        broker.connector().session(["carehub/v1/hub-a/up", "carehub/v1/hub-a/alarm"]) as platform,
    ):
        for seq, lane in ((1, Lane.ROUTINE), (2, Lane.PRIORITY)):
            rec = records[seq]
            await ob.put(OutboxItem(seq, wire.seal(seq, [rec], T0), lane, rec.kind.value, (rec.record_id.hex(),), 0.0))
        async with Uplink(settings, ob, wire, connector=broker.connector()):
            got: dict[str, list[int]] = {}
            async with asyncio.timeout(20):
                async for message in platform.incoming():
                    codec = PlatformCodec(platform_id)
                    keys = {"hub-a": hub_id.public.verify_key}
                    seqs = [codec.open(e, keys, "hub-a").seq for e in decode_uplink(message.payload)]
                    got.setdefault(message.topic, []).extend(seqs)
                    if sum(map(len, got.values())) == 2:
                        break
    assert got == {"carehub/v1/hub-a/alarm": [2], "carehub/v1/hub-a/up": [1]}
